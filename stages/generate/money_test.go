package generate

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

const h100 = 0.001525 // SPEC's price of gpu-h100, USD per second

// withSettings sets replicate block attributes beside the harness's destination.
func withSettings(req *pipeline.Request, set map[string]cty.Value) *pipeline.Request {
	m := map[string]cty.Value{"destination": cty.StringVal(model)}
	for k, v := range set {
		m[k] = v
	}
	req.Settings = map[string]cty.Value{"replicate": cty.ObjectVal(m)}
	return req
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// Plan prices the predictions apply would start at SPEC's 8 s each on gpu-h100, counting the
// comparison's runs when it knows (or cannot rule out) a previous version.
func TestPlanEstimatesCost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	ids := h.srv.VersionIDs("acme", "ana-lora") // newest first
	plan := func(set, settings map[string]cty.Value) *pipeline.Result {
		t.Helper()
		if set["prompts"] == cty.NilVal {
			set["prompts"], set["seeds"] = strList("a photo of TOK", "TOK smiling"), numList(1, 2)
		}
		res, err := Kind{}.Plan(context.Background(), withSettings(h.request(set, nil, &recorder{}), settings))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, c := range []struct {
		name      string
		set       map[string]cty.Value
		n         int
		basisHas  string
		basisLack string
	}{
		{"new version unknown: the comparison counted", map[string]cty.Value{"version": cty.UnknownVal(cty.String)}, 8, "counting the previous version's runs", ""},
		{"a previous version exists", map[string]cty.Value{"version": cty.StringVal(model + ":" + ids[0])}, 8, "8 prediction(s)", "counting"},
		{"no older version", map[string]cty.Value{"version": cty.StringVal(model + ":" + ids[1])}, 4, "4 prediction(s)", "counting"},
		{"compare_previous off", map[string]cty.Value{"version": cty.UnknownVal(cty.String), "compare_previous": cty.False}, 4, "4 prediction(s)", "counting"},
	} {
		res := plan(c.set, nil)
		if res.Cost == nil || !res.Cost.Estimate || !near(res.Cost.USD, float64(c.n)*8*h100) {
			t.Errorf("%s: cost %+v, want %d × 8 s × $%g", c.name, res.Cost, c.n, h100)
			continue
		}
		for _, want := range []string{"× 8.0 s (SPEC's default", "on gpu-h100 at $0.001525/s", c.basisHas} {
			if !strings.Contains(res.Cost.Basis, want) {
				t.Errorf("%s: basis %q lacks %q", c.name, res.Cost.Basis, want)
			}
		}
		if c.basisLack != "" && strings.Contains(res.Cost.Basis, c.basisLack) {
			t.Errorf("%s: basis %q", c.name, res.Cost.Basis)
		}
		if res.CostLimit != nil {
			t.Errorf("%s: a limit %v without max_cost_usd", c.name, *res.CostLimit)
		}
	}
	// The replicate block's hardware, prices and limit.
	res := plan(map[string]cty.Value{"version": cty.UnknownVal(cty.String), "compare_previous": cty.False}, map[string]cty.Value{
		"prediction_hardware": cty.StringVal("gpu-l40s"), "prices": cty.MapVal(map[string]cty.Value{"gpu-l40s": cty.NumberFloatVal(0.002)}),
		"max_cost_usd": cty.NumberFloatVal(0.5)})
	if res.Cost == nil || !near(res.Cost.USD, 4*8*0.002) || !strings.Contains(res.Cost.Basis, "gpu-l40s at $0.002/s") || res.CostLimit == nil || *res.CostLimit != 0.5 {
		t.Errorf("with settings: cost %+v limit %v", res.Cost, res.CostLimit)
	}
	res = plan(map[string]cty.Value{"version": cty.UnknownVal(cty.String)}, map[string]cty.Value{"prediction_hardware": cty.StringVal("gpu-z9")})
	if res.Cost != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], `no price for prediction_hardware "gpu-z9"`) {
		t.Errorf("unknown hardware: cost %+v warnings %q", res.Cost, res.Warnings)
	}
	if h.srv.Count("created prediction") != 0 {
		t.Error("plan created predictions")
	}
}

// tick is a server clock that moves on 100 ms each time it is read, so predictions take a
// predict_time of whole ticks (the test server's predictions last from one GET to the next).
type tick struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tick) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(100 * time.Millisecond)
	return c.t
}

// billed is what the server says the recorded predictions ran for, in seconds.
func (h *harness) billed(runs []*run) float64 {
	h.t.Helper()
	var s float64
	for _, r := range runs {
		p, err := h.c.GetPrediction(context.Background(), r.PredictionID)
		if err != nil {
			h.t.Fatal(err)
		}
		if p.PredictTime <= 0 {
			h.t.Fatalf("prediction %s has no predict_time", p.ID)
		}
		s += p.PredictTime
	}
	return s
}

// Apply's cost is each prediction's metrics.predict_time × the price, reported once: a reused
// prediction costs nothing new, and plan's next estimate uses this subject's measured seconds.
func TestCostFromPredictTime(t *testing.T) {
	t.Parallel()
	h := newHarnessWith(t, "astronaut", 1, replicatetest.Options{Clock: &tick{t: time.Now()}})
	version := h.train(natural)
	set := func(seeds ...int64) map[string]cty.Value {
		return map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
			"seeds": numList(seeds...), "reference": h.ref}
	}
	rec := &recorder{}
	res, err := h.apply(h.request(set(1, 2), nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	runs := rec.record().Runs
	secs := h.billed(runs)
	if len(runs) != 4 || res.Cost == nil || res.Cost.Estimate || !near(res.Cost.USD, secs*h100) || !strings.Contains(res.Cost.Basis, "4 prediction(s)") {
		t.Fatalf("cost %+v, want 4 predictions, %.1f s × $%g", res.Cost, secs, h100)
	}
	if r := rec.record(); !near(r.SecondsPerPrediction, secs/4) || r.PredictionsMeasured != 4 {
		t.Errorf("recorded %.3f s per prediction over %d, want %.3f over 4", r.SecondsPerPrediction, r.PredictionsMeasured, secs/4)
	}

	// Plan: nothing to start with the same inputs; one more seed starts 2 (one per version),
	// at the measured mean.
	p, err := Kind{}.Plan(context.Background(), h.request(set(1, 2), rec.prior(pipeline.StatusComplete), &recorder{}))
	if err != nil || p.Cost != nil {
		t.Errorf("plan with everything reusable: cost %+v, %v", p.Cost, err)
	}
	p, err = Kind{}.Plan(context.Background(), h.request(set(1, 2, 3), rec.prior(pipeline.StatusComplete), &recorder{}))
	if err != nil || p.Cost == nil || !near(p.Cost.USD, 2*secs/4*h100) || !strings.Contains(p.Cost.Basis, "the mean of 4 earlier prediction(s)") ||
		!strings.Contains(p.Cost.Basis, "4 reused") {
		t.Errorf("plan with one more seed: cost %+v, %v; want 2 × %.2f s", p.Cost, err, secs/4)
	}

	// Apply again: the same predictions, nothing new to pay.
	rec2 := &recorder{}
	res, err = h.apply(h.request(set(1, 2), rec.prior(pipeline.StatusComplete), rec2))
	if err != nil {
		t.Fatal(err)
	}
	if res.Cost == nil || res.Cost.USD != 0 || !strings.Contains(res.Cost.Basis, "4 reused") || h.srv.Count("created prediction") != 4 {
		t.Errorf("reused: cost %+v, %d predictions", res.Cost, h.srv.Count("created prediction"))
	}
	// One more seed: only its two predictions are paid.
	rec3 := &recorder{}
	res, err = h.apply(h.request(set(1, 2, 3), rec2.prior(pipeline.StatusComplete), rec3))
	if err != nil {
		t.Fatal(err)
	}
	var fresh []*run
	for _, r := range rec3.record().Runs {
		if r.Seed == 3 {
			fresh = append(fresh, r)
		}
	}
	if res.Cost == nil || len(fresh) != 2 || !near(res.Cost.USD, h.billed(fresh)*h100) || !strings.Contains(res.Cost.Basis, "2 prediction(s)") {
		t.Errorf("one more seed: cost %+v, want the 2 new predictions' predict_time", res.Cost)
	}
}

// An apply interrupted while the predictions run reports no cost; the apply that re-attaches to
// them reports all of it, once.
func TestCostOfInterruptedPredictionsIsReportedOnce(t *testing.T) {
	t.Parallel()
	h := newHarnessWith(t, "astronaut", 0, replicatetest.Options{Clock: &tick{t: time.Now()}})
	version := h.train(natural)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"), "seeds": numList(1, 2, 3), "reference": h.ref}
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{OnProgress: func(p pipeline.Progress) {
		if p.Total > 0 {
			cancel()
		}
	}}
	_, err := Kind{}.Apply(ctx, h.request(set, nil, rec))
	cancel()
	if err == nil {
		t.Fatal("the interrupted apply succeeded")
	}
	rec2 := &recorder{}
	res, err := h.apply(h.request(set, rec.prior(pipeline.StatusInterrupted), rec2))
	if err != nil {
		t.Fatal(err)
	}
	runs := rec2.record().Runs
	if h.srv.Count("created prediction") != 3 || res.Cost == nil || !near(res.Cost.USD, h.billed(runs)*h100) {
		t.Errorf("resumed: %d predictions, cost %+v; want 3 and all of their predict_time", h.srv.Count("created prediction"), res.Cost)
	}
	res, err = h.apply(h.request(set, rec2.prior(pipeline.StatusComplete), &recorder{}))
	if err != nil || res.Cost == nil || res.Cost.USD != 0 {
		t.Errorf("after it was reported: cost %+v, %v; want 0", res.Cost, err)
	}
}

// A recorded prediction whose image is gone and that finished over an hour ago has lost its
// output on Replicate: plan counts it as run again.
func TestPlanCountsExpiredPredictions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"), "seeds": numList(1, 2), "reference": h.ref}
	rec := &recorder{}
	if _, err := h.apply(h.request(set, nil, rec)); err != nil {
		t.Fatal(err)
	}
	r := rec.record()
	r.Runs[0].IntentAt = time.Now().Add(-2 * time.Hour) // finished long ago, image still on disk: reusable
	r.Runs[1].IntentAt = time.Now().Add(-2 * time.Hour) // finished long ago, image gone: runs again
	if err := os.Remove(filepath.Join(h.dir, r.Runs[1].File)); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(r)
	p, err := Kind{}.Plan(context.Background(), h.request(set, &pipeline.Prior{Status: pipeline.StatusComplete, Data: data}, &recorder{}))
	if err != nil || p.Cost == nil || !strings.Contains(p.Cost.Basis, "1 prediction(s)") || !strings.Contains(p.Cost.Basis, "1 reused") {
		t.Errorf("plan: cost %+v, %v; want 1 to run again and 1 reused", p.Cost, err)
	}
}

// Plan names the comparison and prices the runs from the record when this version ran before,
// and reads nothing remote under -refresh=false (SPEC: such a plan makes no request).
func TestPlanReadsNothingRemoteWhenItNeedNot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	version := h.train(natural)
	set := func() map[string]cty.Value {
		return map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"), "seeds": numList(1, 2), "reference": h.ref}
	}
	rec := &recorder{}
	res, err := h.apply(h.request(set(), nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	prev := str(res.Outputs["previous_version"])
	before := h.srv.Stats().Requests
	p, err := Kind{}.Plan(context.Background(), h.request(set(), rec.prior(pipeline.StatusComplete), &recorder{}))
	if err != nil || p.Cost != nil || !strings.Contains(strings.Join(p.Notes, "\n"), "previous version "+prev) {
		t.Errorf("plan after apply: cost %+v notes %q, %v", p.Cost, p.Notes, err)
	}
	h.env.NoRefresh = true
	s := set()
	s["seeds"] = numList(1, 2, 3)
	p, err = Kind{}.Plan(context.Background(), h.request(s, nil, &recorder{}))
	if err != nil || p.Cost == nil || !strings.Contains(p.Cost.Basis, "counting the previous version's runs") {
		t.Errorf("-refresh=false without a record: cost %+v, %v; want both sides counted", p.Cost, err)
	}
	if n := h.srv.Stats().Requests - before; n != 0 {
		t.Errorf("plans made %d API requests, want 0", n)
	}
}
