package main

import (
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
)

// The job summary has a cost column: what each subject's paid jobs cost in this apply, and the
// total under the table; a subject whose stages reported no cost leaves the cell empty.
func TestStepSummaryHasACostColumn(t *testing.T) {
	out := &engine.Outcome{Instances: []*engine.InstanceOutcome{
		{Key: "ana", Batch: true, Stages: []*engine.StageOutcome{
			{Address: `train.lora["ana"]`, Kind: "train", Status: engine.StatusComplete, Cost: &pipeline.Cost{USD: 2.05}},
			{Address: `generate.check["ana"]`, Kind: "generate", Status: engine.StatusComplete, Cost: &pipeline.Cost{USD: 0.0732}},
		}},
		{Key: "ben", Batch: true, Stages: []*engine.StageOutcome{{Address: `train.lora["ben"]`, Kind: "train", Status: engine.StatusNoop}}},
	}}
	s := stepSummary([]string{"retrain.hcl"}, false, nil, out)
	for _, want := range []string{"| subject | outcome | cost |\n|---|---|---|\n", "| ana | up to date | $2.12 |\n", "| ben | up to date |  |\n",
		"Cost $2.12 (from the jobs' run time)."} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}
