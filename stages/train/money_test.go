package train

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// timedHarness is a harness whose trainings take T of a discrete-event clock the server and the
// client share, so metrics.predict_time is exactly what a training of length T reports (0.9 T:
// the first tenth is starting).
func timedHarness(t *testing.T, T time.Duration) *harness {
	t.Helper()
	h := newHarness(t)
	clk := replicatetest.NewSteppedClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	srv := replicatetest.NewServer(replicatetest.Options{Clock: clk, Auto: true, TrainingTime: T})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithTime(clk), replicate.WithHTTPClient(&http.Client{Transport: clk.Transport(nil)}))
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.env = &pipeline.Env{Getenv: func(string) string { return "" }, CacheDir: t.TempDir()}
	replicate.Install(h.env, c)
	return h
}

func withSettings(req *pipeline.Request, kv map[string]cty.Value) {
	m := req.Settings["replicate"].AsValueMap()
	for k, v := range kv {
		m[k] = v
	}
	req.Settings["replicate"] = cty.ObjectVal(m)
}

func setInput(req *pipeline.Request, name string, v cty.Value) {
	m := req.Inputs.AsValueMap()
	m[name] = v
	req.Inputs = cty.ObjectVal(m)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// Plan estimates a new training from its steps: SPEC's 1.3 s per step plus 90 s on gpu-h100 at
// the built-in price, or this subject's measured speed, on the configured hardware at the
// configured price; max_cost_usd is the limit; money never enters the digest.
func TestPlanEstimatesTheTrainingsCost(t *testing.T) {
	h := newHarness(t)
	req := h.request(input("steps", 1000, "lora_rank", 16), nil, &recorder{})
	res, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Cost
	if c == nil || !c.Estimate || !near(c.USD, (1000*1.3+90)*0.001525) ||
		c.Basis != "1000 steps × 1.30 s/step + 90 s on gpu-h100 at $0.001525/s" || res.CostLimit != nil {
		t.Fatalf("estimate %+v limit %v", c, res.CostLimit)
	}
	digest := res.Digest

	// The subject's last training measured 1.5 s per step; another GPU at another price; a limit.
	prior := &pipeline.Prior{Status: pipeline.StatusComplete, Data: json.RawMessage(`{"seconds_per_step":1.5}`)}
	req = h.request(input("steps", 1200, "lora_rank", 16), prior, &recorder{})
	withSettings(req, map[string]cty.Value{
		"training_hardware": cty.StringVal("gpu-a100-large"),
		"prices":            cty.MapVal(map[string]cty.Value{"gpu-a100-large": cty.NumberFloatVal(0.002)}),
		"max_cost_usd":      cty.NumberIntVal(5),
	})
	res, err = Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Cost; c == nil || !near(c.USD, (1200*1.5+90)*0.002) || !strings.Contains(c.Basis, "1.50 s/step (measured on this subject's last training)") ||
		!strings.Contains(c.Basis, "gpu-a100-large at $0.002/s") || res.CostLimit == nil || *res.CostLimit != 5 {
		t.Fatalf("measured estimate %+v limit %v", res.Cost, res.CostLimit)
	}
	if res.Digest["images"] != digest["images"] || len(res.Digest) != 1 {
		t.Fatalf("money reached the digest: %v vs %v", res.Digest, digest)
	}

	// Hardware without a price: no figure, and a warning saying how to add one.
	req = h.request(input("steps", 1000), nil, &recorder{})
	withSettings(req, map[string]cty.Value{"training_hardware": cty.StringVal("gpu-b200")})
	res, _ = Kind{}.Plan(context.Background(), req)
	if res.Cost != nil || !strings.Contains(strings.Join(res.Warnings, "\n"), `prices = { "gpu-b200" = USD_PER_SECOND }`) {
		t.Fatalf("unknown hardware: cost %+v warnings %q", res.Cost, res.Warnings)
	}
}

// Apply reports what the training cost: its metrics.predict_time on the training hardware; the
// speed it measured is kept for the next plan's estimate.
func TestApplyReportsTheActualCostAndKeepsTheMeasuredSpeed(t *testing.T) {
	h := timedHarness(t, 1000*time.Second) // predict_time 900 s
	rec := &recorder{}
	req := h.request(input("steps", 1000, "lora_rank", 16, "trigger_word", "TOK"), nil, rec)
	setInput(req, "poll_interval", cty.StringVal("30s")) // virtual time: a few dozen looks
	res, err := h.apply(req)
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Cost; c == nil || c.Estimate || !near(c.USD, 900*0.001525) || c.Basis != "predict_time 900.0 s on gpu-h100 at $0.001525/s" {
		t.Fatalf("actual cost %+v", res.Cost)
	}
	r := rec.record()
	if r.PredictTime != 900 || !near(r.SecondsPerStep, (900-90)/1000.0) {
		t.Fatalf("recorded predict_time %v, s/step %v", r.PredictTime, r.SecondsPerStep)
	}
	next, err := Kind{}.Plan(context.Background(), h.request(input("steps", 1000, "lora_rank", 16, "trigger_word", "TOK"),
		&pipeline.Prior{Status: pipeline.StatusComplete, Data: rec.data}, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if !near(next.Cost.USD, 900*0.001525) || !strings.Contains(next.Cost.Basis, "0.81 s/step (measured") {
		t.Fatalf("estimate after a measured training: %+v", next.Cost)
	}
}

// A training an interrupted run started is followed again, never paid for again: plan counts
// nothing new for it, and names as previous_version the one read before it started, not the
// version it is producing (it may have finished meanwhile and be the model's latest).
func TestResumedTrainingCostsNothingNewAndKeepsItsPreviousVersion(t *testing.T) {
	h := newHarness(t)
	h.lockstep()
	h.srv.AddModel("acme", "ana-lora", 1)
	before := "acme/ana-lora:" + h.srv.VersionIDs("acme", "ana-lora")[0]
	in := input(goodInput...)
	rec := &recorder{CancelAfterProgress: 4} // Ctrl-C while it runs
	if _, err := h.apply(h.request(in, nil, rec)); err != context.Canceled {
		t.Fatalf("interrupt: %v", err)
	}
	// It finishes on Replicate while nobody follows it: its version is now the model's latest.
	c, _ := replicate.New(h.srv.URL(), h.srv.Token()) // another client: not in lockstep
	for i := 0; i < 10 && h.srv.TrainingStatus(rec.record().TrainingID) != "succeeded"; i++ {
		if _, err := c.GetTraining(context.Background(), rec.record().TrainingID); err != nil {
			t.Fatal(err)
		}
	}
	if ids := h.srv.VersionIDs("acme", "ana-lora"); len(ids) != 2 {
		t.Fatalf("versions %v: the training did not finish", ids)
	}
	res, err := Kind{}.Plan(context.Background(), h.request(in, resume(rec, pipeline.StatusInterrupted), &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(res.Notes, "\n")
	if res.Cost == nil || res.Cost.USD != 0 || !strings.Contains(res.Cost.Basis, "re-attaches to training "+rec.record().TrainingID) {
		t.Fatalf("cost of a re-attach %+v", res.Cost)
	}
	if !strings.Contains(notes, "re-attaches to training") || !strings.Contains(notes, "previous_version stays "+before) || strings.Contains(notes, "becomes previous_version") {
		t.Fatalf("notes:\n%s", notes)
	}
	out, err := h.apply(h.request(in, resume(rec, pipeline.StatusInterrupted), &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := str(out.Outputs["previous_version"]); got != before || h.srv.Count("created training") != 1 {
		t.Fatalf("previous_version %s, want %s; trainings %d", got, before, h.srv.Count("created training"))
	}
}
