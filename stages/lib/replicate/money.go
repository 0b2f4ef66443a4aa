package replicate

import "math"

// Prices are USD per second of run time by hardware name (the `hardware` of a model, e.g.
// "gpu-h100").
type Prices map[string]float64

// builtinPrices is Replicate's public price list, https://replicate.com/pricing (per second, as
// published there; the page's hourly figures are these × 3,600). Replicate bills a training or
// prediction of a public model for its run time (metrics.predict_time) on that hardware.
var builtinPrices = Prices{
	"cpu":               0.000100, // CPU, $0.36/hr
	"gpu-t4":            0.000225, // Nvidia T4, $0.81/hr
	"gpu-a40-small":     0.000575, // Nvidia A40, $2.07/hr
	"gpu-a40-large":     0.000725, // Nvidia A40 (Large), $2.61/hr
	"gpu-a40-large-2x":  0.001450,
	"gpu-a40-large-4x":  0.002900,
	"gpu-a40-large-8x":  0.005800,
	"gpu-l40s":          0.000975, // Nvidia L40S, $3.51/hr
	"gpu-2x-l40s":       0.001950,
	"gpu-4x-l40s":       0.003900,
	"gpu-8x-l40s":       0.007800,
	"gpu-a100-large":    0.001400, // Nvidia A100 (80GB), $5.04/hr
	"gpu-a100-large-2x": 0.002800,
	"gpu-a100-large-4x": 0.005600,
	"gpu-a100-large-8x": 0.011200,
	"gpu-h100":          0.001525, // Nvidia H100, $5.49/hr: where Flux fine-tunes run
	"gpu-h100-2x":       0.003050,
	"gpu-h100-4x":       0.006100,
	"gpu-h100-8x":       0.012200,
}

// BuiltinPrices returns a copy of the built-in price table.
func BuiltinPrices() Prices { return PriceTable(nil) }

// PriceTable is the built-in table with overrides (the replicate block's `prices`) on top.
func PriceTable(overrides map[string]float64) Prices {
	out := make(Prices, len(builtinPrices)+len(overrides))
	for k, v := range builtinPrices {
		out[k] = v
	}
	for k, v := range overrides {
		out[k] = v
	}
	return out
}

// PerSecond is the price of hardware; ok is false when the table does not know it.
func (p Prices) PerSecond(hardware string) (usd float64, ok bool) {
	usd, ok = p[hardware]
	return usd, ok
}

// Cost is seconds of run time on hardware in USD (ok false for unknown hardware).
func (p Prices) Cost(hardware string, seconds float64) (usd float64, ok bool) {
	per, ok := p.PerSecond(hardware)
	if !ok || seconds <= 0 || math.IsNaN(seconds) {
		return 0, ok
	}
	return per * seconds, true
}

// Estimates when a subject has no earlier job to measure (SPEC, `replicate` block): a training
// of the default trainer takes 1.3 s per step plus 90 s of setup on gpu-h100; a prediction 8 s.
const (
	DefaultTrainingHardware       = "gpu-h100"
	DefaultPredictionHardware     = "gpu-h100"
	DefaultTrainingSecondsPerStep = 1.3
	DefaultTrainingSetupSeconds   = 90.0
	DefaultPredictionSeconds      = 8.0
)

// TrainingSeconds estimates a training of steps steps from a measured seconds-per-step
// (MeasuredSecondsPerStep of an earlier training; ≤ 0: the default) plus the setup time.
func TrainingSeconds(steps int, secondsPerStep float64) float64 {
	if secondsPerStep <= 0 || math.IsNaN(secondsPerStep) {
		secondsPerStep = DefaultTrainingSecondsPerStep
	}
	return float64(max(steps, 0))*secondsPerStep + DefaultTrainingSetupSeconds
}

// MeasuredSecondsPerStep is the seconds per step a finished training took: its predict_time less
// the setup TrainingSeconds adds back, over its steps (0 when it cannot tell).
func MeasuredSecondsPerStep(predictTime float64, steps int) float64 {
	if steps <= 0 || predictTime <= DefaultTrainingSetupSeconds {
		return 0
	}
	return (predictTime - DefaultTrainingSetupSeconds) / float64(steps)
}

// Cost is what the training cost on hardware: its metrics.predict_time × the price (0, false
// for unknown hardware; 0, true before it has a predict_time).
func (t *Training) Cost(p Prices, hardware string) (float64, bool) {
	return p.Cost(hardware, t.PredictTime)
}

// Cost is what the prediction cost on hardware (see Training.Cost).
func (p *Prediction) Cost(prices Prices, hardware string) (float64, bool) {
	return prices.Cost(hardware, p.PredictTime)
}
