package train

import (
	"context"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// A no-change plan reads next to nothing: a stage state recorded as complete with the same
// inputs (Request.Unchanged) reads no destination and prepares no photo; -refresh=false reads
// nothing remote at all.
func TestPlanOfAnUpToDateStageReadsNothingRemote(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	in := input(goodInput...)
	if _, err := h.apply(h.request(in, nil, rec)); err != nil {
		t.Fatal(err)
	}
	prior := &pipeline.Prior{Status: pipeline.StatusComplete, Data: rec.data}

	before := h.srv.Stats().Requests
	req := h.request(in, prior, &recorder{})
	req.Unchanged = true
	res, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Stats().Requests - before; n != 0 {
		t.Errorf("an unchanged stage's plan made %d requests (the schema is cached, the destination need not be read)", n)
	}
	if notes := strings.Join(res.Notes, "\n"); !strings.Contains(notes, "reuses upload") || strings.Contains(notes, "destination") {
		t.Errorf("notes:\n%s", notes)
	}

	// -refresh=false on a fresh process (no schema in memory): still no request.
	h2 := newHarness(t)
	h2.env.NoRefresh = true
	before = h2.srv.Stats().Requests
	res, err = Kind{}.Plan(context.Background(), h2.request(in, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := h2.srv.Stats().Requests - before; n != 0 {
		t.Errorf("plan -refresh=false made %d requests, want none", n)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "-refresh=false: destination acme/ana-lora is not read") {
		t.Errorf("notes %q", res.Notes)
	}
}
