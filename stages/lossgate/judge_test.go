package lossgate

import (
	"math"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// curve is a loss decaying from 0.85 towards final with small alternating noise.
func curve(steps int, final float64) []replicate.LossPoint {
	var pts []replicate.LossPoint
	for s := 1; s <= steps; s++ {
		l := final + (0.85-final)*math.Exp(-float64(s)/250)
		if s%2 == 0 {
			l += 0.01
		} else {
			l -= 0.01
		}
		pts = append(pts, replicate.LossPoint{Step: s, Loss: l})
	}
	return pts
}

func f(v float64) *float64 { return &v }

func TestJudgeOverfitUnderfitPass(t *testing.T) {
	v := Judge(curve(1000, 0.14), DefaultConfig())
	if v.Passed || !v.Overfit || !strings.Contains(v.Reason, "< min_loss 0.2: overfitting") {
		t.Fatalf("overfit curve: %+v", v)
	}
	if math.Abs(v.FinalLoss-0.14) > 0.025 {
		t.Fatalf("smoothed final %v, want ~0.14", v.FinalLoss)
	}
	v = Judge(curve(1000, 0.30), DefaultConfig())
	if !v.Passed || !strings.Contains(v.Reason, ">= min_loss 0.2") {
		t.Fatalf("good curve: %+v", v)
	}
	cfg := DefaultConfig()
	cfg.MaxLoss = f(0.25)
	v = Judge(curve(1000, 0.30), cfg)
	if v.Passed || !v.Underfit || !strings.Contains(v.Reason, "> max_loss 0.25: underfitting") {
		t.Fatalf("underfit: %+v", v)
	}
	if v := Judge(nil, DefaultConfig()); v.Passed || v.Judged {
		t.Fatalf("empty series must not pass: %+v", v)
	}
	if v := Judge([]replicate.LossPoint{{Step: 1, Loss: 0.5}, {Step: 2, Loss: math.NaN()}}, DefaultConfig()); v.Passed || !strings.Contains(v.Reason, "diverged") {
		t.Fatalf("NaN: %+v", v)
	}
}

func TestSmoothingFollowsLastTenthNotLastPoint(t *testing.T) {
	// A final spike must not decide the verdict alone: the EMA spans ~10% of the steps.
	pts := curve(1000, 0.30)
	pts[len(pts)-1].Loss = 0.05
	v := Judge(pts, DefaultConfig())
	if !v.Passed {
		t.Fatalf("a single low last point flipped the verdict: %+v", v)
	}
	// With alpha = 1 (no smoothing) the last point decides.
	cfg := DefaultConfig()
	cfg.Alpha = 1
	if v := Judge(pts, cfg); v.Passed || v.FinalLoss != 0.05 {
		t.Fatalf("alpha 1: %+v", v)
	}
	// Order in the input does not matter, and for a step logged twice the later value wins.
	rev := append([]replicate.LossPoint(nil), pts...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if got := Judge(rev, cfg); got.FinalLoss != 0.05 {
		t.Fatalf("reordered series: %+v", got)
	}
	dup := append(append([]replicate.LossPoint(nil), pts...), replicate.LossPoint{Step: 1000, Loss: 0.7})
	if got := Judge(dup, cfg); got.FinalLoss != 0.7 {
		t.Fatalf("redrawn last step: %+v", got)
	}
}

func TestShouldCancelWaitsForWarmupAndOnlyOverfit(t *testing.T) {
	over := curve(1000, 0.10)
	cfg := DefaultConfig()
	cfg.TotalSteps = 1000
	// Early steps: loss is high, nothing to cancel.
	if c, _ := ShouldCancel(over[:100], cfg); c {
		t.Fatal("cancelled at step 100 while the loss is still high")
	}
	cancelAt := 0
	for n := 10; n <= 1000; n++ {
		if c, v := ShouldCancel(over[:n], cfg); c {
			cancelAt = n
			if !v.Overfit {
				t.Fatalf("cancel without overfit verdict: %+v", v)
			}
			break
		}
	}
	if cancelAt == 0 || cancelAt >= 1000 {
		t.Fatalf("overfit curve never cancelled early (at %d)", cancelAt)
	}
	// The final verdict agrees with the early decision.
	if v := Judge(over, DefaultConfig()); !v.Overfit {
		t.Fatalf("final verdict %+v", v)
	}
	// A healthy curve is never cancelled, nor one above max_loss.
	good := curve(1000, 0.30)
	cfg.MaxLoss = f(0.25)
	for n := 10; n <= 1000; n += 10 {
		if c, v := ShouldCancel(good[:n], cfg); c {
			t.Fatalf("healthy curve cancelled at %d: %+v", n, v)
		}
	}
	// Too few points never cancel, whatever their value.
	few := []replicate.LossPoint{{Step: 1, Loss: 0.01}, {Step: 2, Loss: 0.01}, {Step: 3, Loss: 0.01}}
	if c, _ := ShouldCancel(few, DefaultConfig()); c {
		t.Fatal("cancelled on 3 points")
	}
	// Without min_loss there is nothing to cancel on.
	if c, _ := ShouldCancel(over, Config{}); c {
		t.Fatal("cancelled without min_loss")
	}
}
