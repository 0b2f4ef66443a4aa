package replicate

import (
	"math"
	"sort"
)

// SortedLosses copies a loss series ordered by step, one point per step (the last one wins).
func SortedLosses(losses []LossPoint) []LossPoint {
	pts := append([]LossPoint(nil), losses...)
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].Step < pts[j].Step })
	out := pts[:0]
	for _, p := range pts {
		if len(out) > 0 && out[len(out)-1].Step == p.Step {
			out[len(out)-1] = p
			continue
		}
		out = append(out, p)
	}
	return out
}

// LossAlpha is the EMA factor that smooths a series: alpha itself when it is in (0, 1], else
// automatic, an EMA whose span is ~10% of the points the finished training will have
// (totalSteps, when known, scales the points seen so far), so the final figure reflects its
// last tenth. losses must be sorted (SortedLosses).
func LossAlpha(losses []LossPoint, alpha float64, totalSteps int) float64 {
	if alpha > 0 && alpha <= 1 {
		return alpha
	}
	n := len(losses)
	if n > 0 {
		if last := losses[n-1].Step; totalSteps > 0 && last > 0 && last < totalSteps {
			n = int(math.Ceil(float64(n) * float64(totalSteps) / float64(last)))
		}
	}
	span := max(1, int(math.Ceil(float64(n)/10)))
	return 2 / (float64(span) + 1)
}

// SmoothLosses is the EMA of a series with LossAlpha's factor: one value per point, in step order.
// The loss gate judges this curve; the train stage shows its last value as the running loss.
func SmoothLosses(losses []LossPoint, alpha float64, totalSteps int) []float64 {
	pts := SortedLosses(losses)
	if len(pts) == 0 {
		return nil
	}
	a := LossAlpha(pts, alpha, totalSteps)
	out := make([]float64, len(pts))
	ema := pts[0].Loss
	for i, p := range pts {
		if i > 0 {
			ema = a*p.Loss + (1-a)*ema
		}
		out[i] = ema
	}
	return out
}
