// Package caption is a worked example of adding a stage kind, kept as small as a paid remote kind
// can be: `stage "caption" "NAME"` runs one prediction on a model version and outputs what the
// model answered (a captioning model answers text; an image model, an image's URL).
//
//	stage "caption" "cover" {
//	  version = train.lora.version
//	  prompt  = "a photo of TOK, for the app's cover"
//	}
//
// Everything it needs comes from the house: the schema declares and checks its inputs
// (Schema.Decode), replicate.CreateOnce creates the prediction exactly once however the process
// dies, Recorder.Wait hands its -parallelism slot back while the prediction runs. Registering it
// is one line in cmd/pipeline (the tests of that package do it); it is not part of the shipped
// binary.
package caption

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Kind is the caption stage kind.
type Kind struct{}

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"version": {Type: cty.String, Required: true, Check: checkVersion, Description: `the model version to run, "owner/name:id"`},
		"prompt":  {Type: cty.String, Required: true, Description: "what to ask the model"},
	},
	Outputs:  map[string]cty.Type{"prediction_id": cty.String, "output": cty.String},
	Remote:   true,
	Settings: []string{"replicate"},
}

// Name implements pipeline.Kind.
func (Kind) Name() string { return "caption" }

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

func checkVersion(v, _ cty.Value) error {
	if owner, name, id, err := replicate.SplitVersion(v.AsString()); err != nil || owner == "" || name == "" || id == "" {
		return fmt.Errorf("version %q is not \"owner/name:id\"", v.AsString())
	}
	return nil
}

type config struct {
	Version string `cty:"version"`
	Prompt  string `cty:"prompt"`
}

// record is the stage's private data: the prediction's intent and id.
type record struct {
	Intent replicate.Intent `json:"intent"`
}

// Plan implements pipeline.Kind.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	var c config
	if err := pipeline.Err(schema.Decode(req, &c)); err != nil {
		return nil, err
	}
	version := c.Version
	if !req.Known("version") {
		version = "(known after apply)"
	}
	return &pipeline.Result{Notes: []string{fmt.Sprintf("runs %q on %s once", c.Prompt, version)}}, nil
}

// Apply implements pipeline.Kind.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	var c config
	if err := pipeline.Err(schema.Decode(req, &c)); err != nil {
		return nil, err
	}
	cl, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, err
	}
	var rec record
	if req.Prior != nil && req.Prior.SameInputs {
		if _, err := req.Prior.Decode(&rec); err != nil {
			return nil, err
		}
	}
	save := func() error { return req.Recorder.Save(rec) }
	input := map[string]any{"prompt": c.Prompt}
	p, err := start(ctx, cl, &rec.Intent, save, c.Version, input)
	if err != nil {
		return nil, err
	}
	done, err := req.Recorder.Wait(ctx)
	if err != nil {
		return nil, err
	}
	p, err = wait(ctx, cl, p)
	done()
	if err != nil {
		return nil, err
	}
	if p.Status != "succeeded" || len(p.Output) == 0 {
		return nil, fmt.Errorf("prediction %s %s: %s; hint: run apply again to retry", p.ID, p.Status, p.Error)
	}
	return &pipeline.Result{Outputs: map[string]cty.Value{
		"prediction_id": cty.StringVal(p.ID), "output": cty.StringVal(strings.Join(p.Output, "\n")),
	}}, nil
}

// start re-attaches to the recorded prediction, or creates it exactly once.
func start(ctx context.Context, cl *replicate.Client, in *replicate.Intent, save func() error, version string, input map[string]any) (*replicate.Prediction, error) {
	if in.ID != "" {
		return cl.GetPrediction(ctx, in.ID)
	}
	p, _, err := replicate.CreateOnce(ctx, cl, in, save,
		func(ctx context.Context) (*replicate.Prediction, string, error) {
			p, err := cl.CreatePrediction(ctx, version, input)
			if err != nil {
				return nil, "", err
			}
			return p, p.ID, nil
		},
		func(ctx context.Context, after time.Time) (*replicate.Prediction, string, bool, error) {
			p, err := cl.FindPrediction(ctx, version, input, after)
			if err != nil || p == nil {
				return nil, "", false, err
			}
			return p, p.ID, true, nil
		})
	return p, err
}

// wait polls the prediction to its end; Ctrl-C stops the wait, never the prediction.
func wait(ctx context.Context, cl *replicate.Client, p *replicate.Prediction) (*replicate.Prediction, error) {
	poll := replicate.Poller{Initial: 200 * time.Millisecond, Max: 5 * time.Second}
	for !p.Terminal() {
		if err := replicate.Sleep(ctx, poll.Next()); err != nil {
			return nil, err
		}
		np, err := cl.GetPrediction(ctx, p.ID)
		if err != nil {
			if errors.Is(err, ctx.Err()) {
				return nil, err
			}
			return nil, fmt.Errorf("following prediction %s: %w; hint: run apply again to re-attach", p.ID, err)
		}
		p = np
	}
	return p, nil
}
