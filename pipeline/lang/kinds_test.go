package lang

import (
	"context"
	"errors"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// fakeKind is a stage kind for tests: only its schema matters to lang.
type fakeKind struct {
	name   string
	schema *pipeline.Schema
}

func (k fakeKind) Name() string             { return k.name }
func (k fakeKind) Schema() *pipeline.Schema { return k.schema }
func (fakeKind) Plan(context.Context, *pipeline.Request) (*pipeline.Result, error) {
	return nil, errors.New("fake kinds never run")
}
func (fakeKind) Apply(context.Context, *pipeline.Request) (*pipeline.Result, error) {
	return nil, errors.New("fake kinds never run")
}

// testKinds are three fake kinds shaped like the real ones:
//   - check: read-only (like image_check), outputs count and accepted;
//   - work: remote (like train), reads the replicate settings, has nested blocks;
//   - gate: takes a whole stage as input (like loss_gate).
func testKinds() map[string]pipeline.Kind {
	check := fakeKind{name: "check", schema: &pipeline.Schema{
		ReadOnly: true,
		Attributes: map[string]*pipeline.Attribute{
			"dir":       {Type: cty.String, Required: true},
			"min_count": {Type: cty.Number, Default: cty.NumberIntVal(15)},
			"patterns":  {Type: cty.List(cty.String), Default: cty.ListVal([]cty.Value{cty.StringVal("*.jpg")})},
			"exposure":  {Type: cty.Object(map[string]cty.Type{"max_dark": cty.Number, "max_bright": cty.Number})},
		},
		Outputs: map[string]cty.Type{
			"count":    cty.Number,
			"accepted": cty.List(cty.String),
		},
	}}
	work := fakeKind{name: "work", schema: &pipeline.Schema{
		Remote:   true,
		Settings: []string{"replicate"},
		SettingsAttributes: map[string]map[string]*pipeline.Attribute{"replicate": {
			"trainer": {Type: cty.String}, "destination": {Type: cty.String}, "hardware": {Type: cty.String},
		}},
		Attributes: map[string]*pipeline.Attribute{
			"images":   {Type: cty.List(cty.String), Required: true},
			"input":    {Type: cty.DynamicPseudoType},
			"steps":    {Type: cty.Number},
			"hf_token": {Type: cty.String},
			"note":     {Type: cty.String, Sensitive: true},
			"label":    {Type: cty.String},
			"mode":     {Type: cty.String, OneOf: []string{"warn", "fail"}},
			"poll":     {Type: cty.String, Duration: true},
			"keep":     {Type: cty.Number, Min: pipeline.Bound(1), Max: pipeline.Bound(10)},
			"source":   {Type: cty.DynamicPseudoType, StageKind: "check"},
		},
		Blocks: map[string]*pipeline.BlockSchema{
			"rule":     {Labels: []string{"name"}, Many: true},
			"limit":    {Labels: []string{"name"}, Many: true, Attributes: map[string]*pipeline.Attribute{"min": {Type: cty.Number}, "max": {Type: cty.Number}}},
			"defaults": {},
		},
		Outputs: map[string]cty.Type{
			"version": cty.String,
			"losses":  cty.List(cty.Number),
		},
	}}
	gate := fakeKind{name: "gate", schema: &pipeline.Schema{
		Attributes: map[string]*pipeline.Attribute{
			"training": {Type: cty.DynamicPseudoType, Required: true},
			"min_loss": {Type: cty.Number, Default: cty.NumberFloatVal(0.2)},
		},
		Outputs: map[string]cty.Type{"passed": cty.Bool},
	}}
	return map[string]pipeline.Kind{"check": check, "work": work, "gate": gate}
}
