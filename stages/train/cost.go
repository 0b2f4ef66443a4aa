package train

import (
	"context"
	"fmt"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// assumedSteps is the step count an estimate assumes when neither the input nor the trainer's
// schema says (ostris/flux-dev-lora-trainer's default).
const assumedSteps = 1000

// trainingHardware is where the trainings run, for cost figures (replicate { training_hardware }).
func trainingHardware(cfg *config) string {
	if hw := cfg.Settings.TrainingHardware; hw != "" {
		return hw
	}
	return replicate.DefaultTrainingHardware
}

// steps is the training's step count and how it is known.
func steps(ctx context.Context, req *pipeline.Request, cfg *config) (int, string) {
	if cfg.InputKnown {
		if f, ok := cfg.Input["steps"].(float64); ok && f > 0 {
			return int(f), ""
		}
	}
	if cfg.Trainer != "" && replicate.HasToken(req.Env) {
		if c, err := replicate.FromEnv(req.Env); err == nil {
			// From memory or the disk cache only: an estimate never costs a request.
			if specs, found, err := c.CachedTrainerInputs(ctx, cfg.Trainer); err == nil && found {
				if f, ok := toFloat(specs["steps"].Default); ok && f > 0 {
					return int(f), " (the trainer's default)"
				}
			}
		}
	}
	if !cfg.InputKnown {
		return assumedSteps, " (steps known after apply: assumed)"
	}
	return assumedSteps, " (steps unset: assumed)"
}

// estimate is the cost of a new training: steps × the seconds per step this subject's last
// training took (else SPEC's 1.3 s) + 90 s of setup, on the training hardware at its price.
// A hardware without a price gives no figure and a warning saying how to add one.
func estimate(ctx context.Context, req *pipeline.Request, cfg *config, prior record) (*pipeline.Cost, string) {
	n, how := steps(ctx, req, cfg)
	hw := trainingHardware(cfg)
	per, ok := replicate.PriceTable(cfg.Settings.Prices).PerSecond(hw)
	if !ok {
		return nil, fmt.Sprintf("no price for training_hardware %q: the cost is not estimated; add it to replicate { prices = { %q = USD_PER_SECOND } }", hw, hw)
	}
	rate, measured := prior.SecondsPerStep, " (measured on this subject's last training)"
	if rate <= 0 {
		rate, measured = replicate.DefaultTrainingSecondsPerStep, ""
	}
	secs := replicate.TrainingSeconds(n, rate)
	return &pipeline.Cost{
		USD:      secs * per,
		Estimate: true,
		Basis: fmt.Sprintf("%d steps%s × %.2f s/step%s + %.0f s on %s at $%g/s",
			n, how, rate, measured, replicate.DefaultTrainingSetupSeconds, hw, per),
	}, ""
}

// actualCost is what the training cost: its metrics.predict_time on the training hardware.
func actualCost(cfg *config, t *replicate.Training) (*pipeline.Cost, string) {
	hw := trainingHardware(cfg)
	prices := replicate.PriceTable(cfg.Settings.Prices)
	usd, ok := t.Cost(prices, hw)
	if !ok {
		return nil, fmt.Sprintf("no price for training_hardware %q: the cost of training %s (%.0f s) is not reported; add it to replicate { prices }", hw, t.ID, t.PredictTime)
	}
	per, _ := prices.PerSecond(hw)
	return &pipeline.Cost{USD: usd, Basis: fmt.Sprintf("predict_time %.1f s on %s at $%g/s", t.PredictTime, hw, per)}, ""
}

// measure keeps what the ended training tells of this subject's speed, for the next estimate.
func (r *run) measure(t *replicate.Training) {
	if t.PredictTime <= 0 {
		return
	}
	r.rec.PredictTime = t.PredictTime
	if sps := replicate.MeasuredSecondsPerStep(t.PredictTime, replicate.ParseLogs(t.Logs).Step); sps > 0 {
		r.rec.SecondsPerStep = sps
	}
}
