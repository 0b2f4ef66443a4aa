package lossgate

import (
	"fmt"
	"math"
	"strconv"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// DefaultMinLoss is the smoothed loss under which a LoRA counts as overfit: it has memorised the
// training photos (plastic skin, the same pose in every image). The research the project follows
// puts it at 0.2 for Flux LoRAs trained with ai-toolkit.
const DefaultMinLoss = 0.2

// Config is what the gate judges against.
type Config struct {
	// MinLoss: a smoothed final loss below it is overfitting. nil = no lower bound.
	MinLoss *float64
	// MaxLoss: a smoothed final loss above it is underfitting. nil = no upper bound.
	MaxLoss *float64
	// Alpha is the EMA smoothing factor in (0, 1]; 0 means automatic: an EMA whose span is ~10% of
	// the steps (alpha = 2 / (span + 1)), so the final figure reflects the last tenth of the training.
	Alpha float64
	// TotalSteps is the number of steps the training will run, when known. While a training is still
	// running it sizes the automatic smoothing window as it will be at the end.
	TotalSteps int
}

// DefaultConfig is the gate with its defaults: min_loss 0.2, no max_loss, automatic smoothing.
func DefaultConfig() Config {
	m := DefaultMinLoss
	return Config{MinLoss: &m}
}

// Verdict is the gate's judgement of a loss series.
type Verdict struct {
	// Judged is false when there was nothing to judge (no loss values).
	Judged bool
	Passed bool
	// Overfit: the smoothed loss is below MinLoss. Underfit: above MaxLoss.
	Overfit, Underfit bool
	// FinalLoss is the smoothed loss at the last step; Step is that step.
	FinalLoss float64
	Step      int
	// Alpha is the smoothing factor used.
	Alpha float64
	// Reason says why, with the figures ("smoothed loss 0.142 < min_loss 0.2: overfitting").
	Reason string
}

// sortedPoints copies the series ordered by step, one point per step (the last one wins).
func sortedPoints(losses []replicate.LossPoint) []replicate.LossPoint {
	return replicate.SortedLosses(losses)
}

// alphaFor returns the smoothing factor for a series.
func alphaFor(pts []replicate.LossPoint, cfg Config) float64 {
	return replicate.LossAlpha(pts, cfg.Alpha, cfg.TotalSteps)
}

// Smooth returns the EMA of the series (ordered by step) with the gate's smoothing: one value per point.
func Smooth(losses []replicate.LossPoint, cfg Config) []float64 {
	return replicate.SmoothLosses(losses, cfg.Alpha, cfg.TotalSteps)
}

// fmtLoss prints a loss with three significant digits (0.142, 0.2, 1.05e-05).
func fmtLoss(v float64) string { return strconv.FormatFloat(v, 'g', 3, 64) }

// Judge smooths the loss series and judges the final smoothed value against the bounds.
func Judge(losses []replicate.LossPoint, cfg Config) Verdict {
	pts := sortedPoints(losses)
	if len(pts) == 0 {
		return Verdict{Reason: "no loss values in the training's logs: nothing to judge (does the trainer print `loss: ...` in its progress lines?)"}
	}
	for _, p := range pts {
		if math.IsNaN(p.Loss) || math.IsInf(p.Loss, 0) {
			return Verdict{Judged: true, Step: p.Step, FinalLoss: p.Loss, Underfit: true,
				Reason: fmt.Sprintf("loss is %v at step %d: the training diverged (lower learning_rate)", p.Loss, p.Step)}
		}
	}
	alpha := alphaFor(pts, cfg)
	sm := Smooth(pts, cfg)
	v := Verdict{Judged: true, FinalLoss: sm[len(sm)-1], Step: pts[len(pts)-1].Step, Alpha: alpha}
	switch {
	case cfg.MinLoss != nil && v.FinalLoss < *cfg.MinLoss:
		v.Overfit = true
		v.Reason = fmt.Sprintf("smoothed loss %s < min_loss %s: overfitting (at step %d; fewer steps, a lower learning_rate or lora_rank, or more photos)",
			fmtLoss(v.FinalLoss), fmtLoss(*cfg.MinLoss), v.Step)
	case cfg.MaxLoss != nil && v.FinalLoss > *cfg.MaxLoss:
		v.Underfit = true
		v.Reason = fmt.Sprintf("smoothed loss %s > max_loss %s: underfitting (at step %d; more steps or a higher learning_rate)",
			fmtLoss(v.FinalLoss), fmtLoss(*cfg.MaxLoss), v.Step)
	default:
		v.Passed = true
		switch {
		case cfg.MinLoss != nil && cfg.MaxLoss != nil:
			v.Reason = fmt.Sprintf("smoothed loss %s within [%s, %s]", fmtLoss(v.FinalLoss), fmtLoss(*cfg.MinLoss), fmtLoss(*cfg.MaxLoss))
		case cfg.MinLoss != nil:
			v.Reason = fmt.Sprintf("smoothed loss %s >= min_loss %s", fmtLoss(v.FinalLoss), fmtLoss(*cfg.MinLoss))
		case cfg.MaxLoss != nil:
			v.Reason = fmt.Sprintf("smoothed loss %s <= max_loss %s", fmtLoss(v.FinalLoss), fmtLoss(*cfg.MaxLoss))
		default:
			v.Reason = fmt.Sprintf("smoothed loss %s (no bounds set)", fmtLoss(v.FinalLoss))
		}
	}
	return v
}

// minEarlyPoints is the fewest loss values before an early cancel is considered: a handful of noisy
// first steps must never cancel a paid training.
const minEarlyPoints = 10

// ShouldCancel judges a running training's series for cancel_early. Only overfitting cancels: the loss
// of a LoRA training falls as it goes, so a smoothed loss already under min_loss only gets lower,
// while a loss still above max_loss early on is normal. It waits until the EMA has warmed up (three
// spans of the final smoothing window and at least 10 points) so the start of the curve cannot
// trigger it. cfg.TotalSteps should be the training's total steps.
func ShouldCancel(losses []replicate.LossPoint, cfg Config) (bool, Verdict) {
	if cfg.MinLoss == nil {
		return false, Verdict{}
	}
	pts := sortedPoints(losses)
	if len(pts) < minEarlyPoints {
		return false, Verdict{}
	}
	alpha := alphaFor(pts, cfg)
	span := 2/alpha - 1
	if float64(len(pts)) < 3*span {
		return false, Verdict{}
	}
	v := Judge(pts, cfg)
	return v.Overfit, v
}
