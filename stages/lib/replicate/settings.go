package replicate

import (
	"fmt"
	"strings"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Settings are the attributes of the `replicate` block that the remote kinds read; a kind
// decodes them with its schema's DecodeSettings(req, "replicate", &s).
type Settings struct {
	Trainer     string `cty:"trainer"`
	Destination string `cty:"destination"`
	Hardware    string `cty:"hardware"`
	// Money: where the default trainer's trainings and the predictions run, price overrides
	// (hardware → USD per second over BuiltinPrices) and the most a process may start.
	TrainingHardware   string             `cty:"training_hardware"`
	PredictionHardware string             `cty:"prediction_hardware"`
	Prices             map[string]float64 `cty:"prices"`
	MaxCostUSD         *float64           `cty:"max_cost_usd"`
}

// SettingsSchema declares the `replicate` block once, for every kind that reads it
// (pipeline.Schema.SettingsAttributes["replicate"]): validate checks names and values from it.
var SettingsSchema = map[string]*pipeline.Attribute{
	"trainer":     {Type: cty.String, Check: CheckTrainer, Description: `trainer version "owner/name:version"`},
	"destination": {Type: cty.String, Check: CheckModel("destination", "no version: trainings add versions to it"), Description: `model "owner/name" that receives new versions`},
	"hardware":    {Type: cty.String, NoDigest: true, Description: `hardware a missing destination is created on ["gpu-t4"]`},
	"training_hardware": {Type: cty.String, NoDigest: true,
		Description: `where the default trainer's trainings run, for cost figures ["gpu-h100"]`},
	"prediction_hardware": {Type: cty.String, NoDigest: true,
		Description: `where predictions run, for cost figures ["gpu-h100"]`},
	"prices": {Type: cty.Map(cty.Number), NoDigest: true, Check: checkPrices,
		Description: "USD per second by hardware, over the built-in table from Replicate's pricing page"},
	"max_cost_usd": {Type: cty.Number, NoDigest: true, Min: pipeline.Bound(0),
		Description: "plan refuses (exit 3) when the estimated cost of the paid work this process would start exceeds it"},
}

// checkPrices: a price is a rate in USD per second, never negative.
func checkPrices(v, _ cty.Value) error {
	for k, p := range v.AsValueMap() {
		if f, _ := p.AsBigFloat().Float64(); f < 0 {
			return fmt.Errorf("prices[%q] = %g is negative: a price is USD per second", k, f)
		}
	}
	return nil
}

// CheckTrainer is an attribute check: a training runs on one exact trainer version.
func CheckTrainer(v, _ cty.Value) error {
	ref := strings.TrimSpace(v.AsString())
	if ref == "" {
		return nil // unset: another place may name it
	}
	if owner, name, version, err := SplitVersion(ref); err != nil || owner == "" || name == "" || version == "" {
		return fmt.Errorf(`trainer %q is not "owner/name:version": a training runs on one exact trainer version (copy it from the trainer's page on replicate.com)`, ref)
	}
	return nil
}

// CheckModel is an attribute check for a model "owner/name"; why says what a version would mean.
func CheckModel(attr, why string) func(v, _ cty.Value) error {
	return func(v, _ cty.Value) error {
		ref := strings.TrimSpace(v.AsString())
		if ref == "" {
			return nil
		}
		if _, _, ok := SplitModel(ref); !ok {
			return fmt.Errorf(`%s %q is not "owner/name" (%s)`, attr, ref, why)
		}
		return nil
	}
}

// SplitModel splits "owner/name" (no version).
func SplitModel(ref string) (owner, name string, ok bool) {
	owner, name, ok = strings.Cut(ref, "/")
	if !ok || owner == "" || name == "" || strings.ContainsAny(name, "/:") || strings.ContainsAny(owner, ":") {
		return "", "", false
	}
	return owner, name, true
}
