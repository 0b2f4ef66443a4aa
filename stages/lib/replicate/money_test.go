package replicate_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

func TestPriceTable(t *testing.T) {
	p := replicate.BuiltinPrices()
	for hw, want := range map[string]float64{"gpu-h100": 0.001525, "gpu-a100-large": 0.0014, "gpu-l40s": 0.000975, "gpu-t4": 0.000225, "cpu": 0.0001} {
		if got, ok := p.PerSecond(hw); !ok || got != want {
			t.Errorf("%s: %v %v, want %v", hw, got, ok, want)
		}
	}
	over := replicate.PriceTable(map[string]float64{"gpu-h100": 0.002, "gpu-new": 0.01})
	if v, _ := over.PerSecond("gpu-h100"); v != 0.002 {
		t.Errorf("override: %v", v)
	}
	if v, _ := over.PerSecond("gpu-t4"); v != 0.000225 {
		t.Errorf("the built-ins stay under overrides: %v", v)
	}
	if v, _ := replicate.BuiltinPrices().PerSecond("gpu-h100"); v != 0.001525 {
		t.Errorf("an override changed the built-in table: %v", v)
	}
	if _, ok := p.Cost("gpu-unknown", 10); ok {
		t.Error("unknown hardware has no price")
	}
	// SPEC: 1,000 steps at 1.3 s plus 90 s of setup on an H100.
	if s := replicate.TrainingSeconds(1000, 0); s != 1390 {
		t.Errorf("default training estimate %v s, want 1390", s)
	}
	if s := replicate.TrainingSeconds(1000, replicate.MeasuredSecondsPerStep(1090, 1000)); s != 1090 {
		t.Errorf("an estimate from a measured training of the same steps: %v s, want 1090", s)
	}
}

// The actual cost of a training is its metrics.predict_time as the server reports it × the
// hardware's price.
func TestActualCostFromPredictTime(t *testing.T) {
	const T = 20 * time.Minute
	srv, c, _ := virtualPair(t, 0, replicatetest.Options{TrainingTime: T})
	trs := startTrainings(t, srv, c, 1)
	res := watchAll(context.Background(), nil, c, trs, func(int) replicate.WatchOptions { return replicate.WatchOptions{} })
	done := res[0].last.Training
	want := (T - T/10).Seconds() // the server's training runs T less its start
	if done == nil || math.Abs(done.PredictTime-want) > 1e-6 {
		t.Fatalf("predict_time = %+v, want %v", done, want)
	}
	cost, ok := done.Cost(replicate.BuiltinPrices(), replicate.DefaultTrainingHardware)
	if !ok || math.Abs(cost-want*0.001525) > 1e-9 {
		t.Errorf("cost = %v, want %v", cost, want*0.001525)
	}
	if running := trs[0]; running.PredictTime != 0 {
		t.Errorf("a starting training has predict_time %v", running.PredictTime)
	}
}
