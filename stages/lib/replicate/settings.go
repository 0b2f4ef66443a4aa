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
}

// SettingsSchema declares the `replicate` block once, for every kind that reads it
// (pipeline.Schema.SettingsAttributes["replicate"]): validate checks names and values from it.
var SettingsSchema = map[string]*pipeline.Attribute{
	"trainer":     {Type: cty.String, Check: CheckTrainer, Description: `trainer version "owner/name:version"`},
	"destination": {Type: cty.String, Check: CheckModel("destination", "no version: trainings add versions to it"), Description: `model "owner/name" that receives new versions`},
	"hardware":    {Type: cty.String, Description: `hardware a missing destination is created on ["gpu-t4"]`},
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
