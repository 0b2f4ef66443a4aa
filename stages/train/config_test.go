package train

import (
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

func fp(v float64) *float64 { return &v }

var specs = map[string]replicate.InputSpec{
	"input_images":  {Type: "string", Format: "uri", Required: true},
	"steps":         {Type: "integer", Minimum: fp(3), Maximum: fp(6000), Default: 1000.0},
	"lora_rank":     {Type: "integer", Minimum: fp(1), Maximum: fp(128), Default: 16.0},
	"learning_rate": {Type: "number", Default: 4e-4},
	"optimizer":     {Type: "string", Enum: []any{"adamw8bit", "prodigy"}, Default: "adamw8bit"},
	"autocaption":   {Type: "boolean", Default: true},
	"trigger_word":  {Type: "string", Default: "TOK"},
	"hf_token":      {Type: "string", Format: "password"},
	"resolution":    {Type: "string", Required: true},
}

func TestCheckInputs(t *testing.T) {
	ok := map[string]any{"steps": 1000.0, "lora_rank": 16.0, "optimizer": "prodigy", "autocaption": false, "resolution": "1024", "hf_token": "hf_secretvalue"}
	if err := checkInputs("o/t:v", specs, ok); err != nil {
		t.Fatalf("valid input refused: %v", err)
	}
	bad := map[string]any{
		"lora_rnak":   16.0,    // typo
		"steps":       7000.0,  // above max
		"lora_rank":   16.5,    // not whole
		"optimizer":   "sgd",   // not in enum
		"autocaption": "yes",   // wrong type
		"num_repeats": 10.0,    // knob this trainer lacks, nothing close
		"hf_token":    12345.0, // wrong type, value must not be shown
	}
	err := checkInputs("o/t:v", specs, bad)
	if err == nil {
		t.Fatal("bad input accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`input "lora_rnak" is not an input of trainer o/t:v (did you mean "lora_rank"?)`,
		"steps = 7000 is above the trainer's maximum 6000",
		"lora_rank = 16.5 must be a whole number",
		`optimizer = "sgd" is not one of "adamw8bit", "prodigy"`,
		`autocaption = "yes" must be true or false`,
		`input "num_repeats" is not an input of trainer o/t:v (it accepts: `,
		"hf_token = (sensitive) must be a string",
		`input "resolution" is required`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "12345") {
		t.Errorf("secret value shown: %s", msg)
	}
}

func req(inputs map[string]cty.Value, settings map[string]cty.Value) *pipeline.Request {
	return &pipeline.Request{
		Address:  "train.lora",
		Inputs:   cty.ObjectVal(inputs),
		Settings: map[string]cty.Value{"replicate": cty.ObjectVal(settings)},
		Env:      &pipeline.Env{Getenv: func(string) string { return "" }},
	}
}

func TestParseConfig(t *testing.T) {
	old := minPoll
	minPoll = time.Second
	defer func() { minPoll = old }()
	dir := t.TempDir()
	writePhotos(t, dir, map[string]int{"a.jpg": 1})
	r := req(map[string]cty.Value{
		"images":        cty.ListVal([]cty.Value{cty.StringVal("a.jpg")}),
		"trainer":       cty.NullVal(cty.String),
		"destination":   cty.NullVal(cty.String),
		"input":         cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(1000), "hf_token": cty.StringVal("hf_x"), "lora_rank": cty.NullVal(cty.Number)}),
		"poll_interval": cty.StringVal("2s"),
	}, map[string]cty.Value{
		"trainer":     cty.StringVal("ostris/flux-dev-lora-trainer:abc"),
		"destination": cty.StringVal("acme/ana-lora"),
	})
	r.BaseDir = dir
	cfg, err := parseConfig(r)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Trainer != "ostris/flux-dev-lora-trainer:abc" || cfg.TrainerVersion != "abc" || cfg.DestOwner != "acme" || cfg.DestName != "ana-lora" || cfg.Hardware != "gpu-t4" {
		t.Fatalf("cfg %+v", cfg)
	}
	if cfg.Poll.Initial != 2*time.Second || cfg.Poll.Max != 24*time.Second {
		t.Fatalf("poll %+v", cfg.Poll)
	}
	if _, set := cfg.Input["lora_rank"]; cfg.Input["steps"] != 1000.0 || set || len(cfg.Images) != 1 {
		t.Fatalf("input %v images %v", cfg.Input, cfg.Images)
	}
	// The input output keeps the values' types and drops secrets and input_images.
	out := inputOutput(trainerInput(cfg.Input, "https://x/file"))
	if !out.Equals(cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(1000)})).True() {
		t.Fatalf("input output %#v", out)
	}
	if d := describeInput(cfg.Input); strings.Contains(d, "hf_x") || !strings.Contains(d, "hf_token=(sensitive)") {
		t.Fatalf("describe %s", d)
	}

	// Errors: no trainer version, bad destination, input_images set, bad poll interval.
	r = req(map[string]cty.Value{
		"images":        cty.ListVal([]cty.Value{cty.StringVal("a.jpg")}),
		"trainer":       cty.StringVal("ostris/flux-dev-lora-trainer"),
		"destination":   cty.StringVal("acme/ana:123"),
		"input":         cty.ObjectVal(map[string]cty.Value{"input_images": cty.StringVal("x")}),
		"poll_interval": cty.StringVal("10ms"),
	}, map[string]cty.Value{})
	r.BaseDir = dir
	_, err = parseConfig(r)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{`trainer "ostris/flux-dev-lora-trainer" is not "owner/name:version"`, `destination "acme/ana:123" is not "owner/name"`, "input sets input_images", "poll_interval 10ms is below 1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}

	// Unknown values (plan) are not errors.
	r = req(map[string]cty.Value{
		"images":        cty.UnknownVal(cty.List(cty.String)),
		"trainer":       cty.NullVal(cty.String),
		"destination":   cty.NullVal(cty.String),
		"input":         cty.UnknownVal(cty.DynamicPseudoType),
		"poll_interval": cty.StringVal("5s"),
	}, map[string]cty.Value{"trainer": cty.StringVal("o/t:v"), "destination": cty.UnknownVal(cty.String)})
	cfg, err = parseConfig(r)
	if err != nil || cfg.ImagesKnown || cfg.InputKnown || cfg.Destination != "" {
		t.Fatalf("unknowns: %+v %v", cfg, err)
	}
}
