package prune_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
	"github.com/pipeline-dev/pipeline/stages/prune"
	"github.com/pipeline-dev/pipeline/stages/train"
)

// upstreamRuns is what the engine hands prune when train and the gate run before it: their
// actions, and the effects their plans announced.
var upstreamRuns = []pipeline.Upstream{
	{Kind: "train", Name: "lora", Action: pipeline.ActionRerun, Effects: []string{replicate.AddsVersionTo("acme/ana-lora")}},
	{Kind: "loss_gate", Name: "fit", Action: pipeline.ActionRerun, Effects: []string{replicate.JudgesVersions}},
}

// planPrune plans the chain's prune stage as the engine would, with the given upstream runs.
func planPrune(t *testing.T, env *pipeline.Env, state records, keepLast int64, up []pipeline.Upstream) *pipeline.Result {
	t.Helper()
	req := pruneRequest(env, state, keepLast)
	req.Upstream = up
	req.Planning = true
	res, err := prune.Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range res.Deletes {
		if strings.ContainsRune(id, 0) {
			t.Fatalf("plan lists the placeholder of the new version among deletes: %q", res.Deletes)
		}
	}
	return res
}

// sameIDs compares deletion lists regardless of order (plan lists newest first, apply deletes
// oldest first).
func sameIDs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return reflect.DeepEqual(a, b)
}

// cancelOnTraining cancels the apply once the training id is recorded: the process "dies" with
// the training running on Replicate.
type cancelOnTraining struct {
	memRecorder
	cancel context.CancelFunc
}

func (c *cancelOnTraining) Save(v any) error {
	err := c.memRecorder.Save(v)
	if strings.Contains(string(c.data), `"training_id"`) {
		c.cancel()
	}
	return err
}

func TestPlanDeletesWhatApplyDeletesWhenTrainRuns(t *testing.T) {
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }, Simulated: true, CacheDir: t.TempDir()}
	replicate.Install(env, c)
	dir := t.TempDir()
	for i, n := range []string{"a.jpg", "b.jpg"} {
		if err := os.WriteFile(filepath.Join(dir, n), trainPhoto(i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv.AddModel("acme", "ana-lora", 4)
	old := srv.VersionIDs("acme", "ana-lora")
	state := newRecords()
	input := func(steps int64) cty.Value {
		return cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(steps), "lora_rank": cty.NumberIntVal(16), "trigger_word": cty.StringVal("TOK")})
	}

	// First run: no record yet. keep_last 2 keeps the new version and the newest old one.
	firstRuns := []pipeline.Upstream{upstreamRuns[0], upstreamRuns[1]}
	firstRuns[0].Action, firstRuns[1].Action = pipeline.ActionRun, pipeline.ActionRun
	plan := planPrune(t, env, state, 2, firstRuns)
	without := planPrune(t, env, state, 2, nil)
	if !reflect.DeepEqual(plan.Deletes, old[1:]) {
		t.Fatalf("plan with train upstream deletes %v, want %v (the new version counts in keep_last)", plan.Deletes, old[1:])
	}
	if !reflect.DeepEqual(without.Deletes, old[2:]) {
		t.Fatalf("plan without upstream runs deletes %v, want %v", without.Deletes, old[2:])
	}
	// A training re-attached after an interrupt adds its version just the same.
	reattached := []pipeline.Upstream{firstRuns[0], firstRuns[1]}
	reattached[0].Action = pipeline.ActionReattach
	if again := planPrune(t, env, state, 2, reattached); !reflect.DeepEqual(again.Deletes, plan.Deletes) {
		t.Fatalf("plan with a re-attached training deletes %v, want %v", again.Deletes, plan.Deletes)
	}
	notes := strings.Join(plan.Notes, "\n")
	if !strings.Contains(notes, "train.lora runs first in this apply") || !strings.Contains(notes, "+1 added first") {
		t.Fatalf("notes do not say that train.lora's version counts:\n%s", notes)
	}
	if strings.ContainsRune(notes, 0) {
		t.Fatalf("notes show the placeholder id: %q", notes)
	}
	_, _, pres := applyChain(t, env, dir, input(1000), state, chainOpts{keepLast: 2})
	if !sameIDs(plan.Deletes, pres.Deletes) {
		t.Fatalf("first run: plan deletes %v, apply deleted %v", plan.Deletes, pres.Deletes)
	}
	v1 := srv.VersionIDs("acme", "ana-lora")[0]

	// A retrain with other inputs and keep_last 1: the version train.lora and the gate recorded
	// loses its pins, because after this apply both name the new version.
	plan = planPrune(t, env, state, 1, upstreamRuns)
	if want := []string{v1, old[0]}; !reflect.DeepEqual(plan.Deletes, want) {
		t.Fatalf("retrain plan deletes %v, want %v", plan.Deletes, want)
	}
	if nothing := planPrune(t, env, state, 1, nil); len(nothing.Deletes) != 1 || nothing.Deletes[0] != old[0] {
		t.Fatalf("without a retrain the recorded version stays pinned: plan deletes %v", nothing.Deletes)
	}
	_, _, pres = applyChain(t, env, dir, input(1100), state, chainOpts{keepLast: 1})
	if !sameIDs(plan.Deletes, pres.Deletes) {
		t.Fatalf("retrain: plan deletes %v, apply deleted %v", plan.Deletes, pres.Deletes)
	}
	v2 := srv.VersionIDs("acme", "ana-lora")[0]

	// A run cancelled once the training was created; the training finishes on Replicate while no
	// process follows it. The next plan finds its version listed already and counts it, not a
	// second new one; apply re-attaches and deletes exactly what the plan said.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &cancelOnTraining{memRecorder: memRecorder{MemShared: state.mem}, cancel: cancel}
	treq := trainRequest(env, dir, input(1200), state, rec, gateInputs())
	treq.Prior = &pipeline.Prior{Status: pipeline.StatusComplete, Data: state.byKind["train"][0].Data}
	if _, err := (train.Kind{}).Apply(ctx, treq); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted train: %v", err)
	}
	state.byKind["train"] = []pipeline.StageRecord{{Kind: "train", Name: "lora", Status: pipeline.StatusInterrupted, Data: rec.data}}
	trainings := srv.Count("POST /v1/trainings")
	deadline := time.Now().Add(20 * time.Second)
	for len(srv.VersionIDs("acme", "ana-lora")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the interrupted training never finished on the test server")
		}
		time.Sleep(20 * time.Millisecond) // the simulator's trainings advance with wall time
	}
	v3 := srv.VersionIDs("acme", "ana-lora")[0]
	plan = planPrune(t, env, state, 1, upstreamRuns)
	if want := []string{v2}; !reflect.DeepEqual(plan.Deletes, want) {
		t.Fatalf("resume plan deletes %v, want %v (never the finished version %s)", plan.Deletes, want, v3)
	}
	if notes := strings.Join(plan.Notes, "\n"); !strings.Contains(notes, "re-attaches") || !strings.Contains(notes, v3) {
		t.Fatalf("resume notes:\n%s", notes)
	}
	prior := &pipeline.Prior{Status: pipeline.StatusInterrupted, SameInputs: true, Data: rec.data}
	tres, _, pres := applyChain(t, env, dir, input(1200), state, chainOpts{keepLast: 1, trainPrior: prior})
	if got := tres.Outputs["version"].AsString(); got != "acme/ana-lora:"+v3 {
		t.Fatalf("resumed train produced %s, want the re-attached %s", got, v3)
	}
	if n := srv.Count("POST /v1/trainings"); n != trainings {
		t.Fatalf("resume created %d more trainings", n-trainings)
	}
	if !sameIDs(plan.Deletes, pres.Deletes) {
		t.Fatalf("resume: plan deletes %v, apply deleted %v", plan.Deletes, pres.Deletes)
	}
	if left := srv.VersionIDs("acme", "ana-lora"); !reflect.DeepEqual(left, []string{v3}) {
		t.Fatalf("versions left %v, want only %s", left, v3)
	}
}

func TestPlanIgnoresTrainOfAnotherModel(t *testing.T) {
	srv := replicatetest.NewServer(replicatetest.Options{})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	replicate.Install(env, c)
	srv.AddModel("acme", "ana-lora", 3)
	ids := srv.VersionIDs("acme", "ana-lora")
	req := pruneRequest(env, newRecords(), 2)
	req.Upstream = []pipeline.Upstream{{Kind: "train", Name: "lora", Action: pipeline.ActionRun, Effects: []string{replicate.AddsVersionTo("acme/bob-lora")}}}
	res, err := prune.Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Deletes, ids[2:]) {
		t.Fatalf("plan deletes %v, want %v (train.lora trains acme/bob-lora)", res.Deletes, ids[2:])
	}
	if notes := strings.Join(res.Notes, "\n"); !strings.Contains(notes, "trains acme/bob-lora, not acme/ana-lora") {
		t.Fatalf("notes:\n%s", notes)
	}
	// A skipped or deleted upstream stage adds nothing.
	req.Upstream = []pipeline.Upstream{{Kind: "train", Name: "lora", Action: pipeline.ActionSkip, Effects: []string{replicate.AddsVersionTo("acme/ana-lora")}}}
	if res, err = (prune.Kind{}).Plan(context.Background(), req); err != nil || !reflect.DeepEqual(res.Deletes, ids[2:]) {
		t.Fatalf("skipped train: %v %v", err, res.Deletes)
	}
}
