// Package params is the `params` stage kind: it chooses the LoRA training parameters from the
// dataset (photo count, diversity) with declared rules, defaults and hard limits, keeps only the
// inputs the configured trainer accepts, and says for every value why it was chosen. It also flags a
// retrain on fewer photos than the last accepted training.
//
//	stage "params" "tuned" {
//	  image_count = image_check.photos.count
//	  diversity   = image_check.photos.diversity
//	  rule "small set" {
//	    when      = image_check.photos.count < 12
//	    lora_rank = 8
//	  }
//	  defaults { trigger_word = "TOK" }
//	  limit "lora_rank" { max = 32 }
//	}
//
// For each value the first matching `rule` wins, then `defaults`, then the built-in rules from the
// research (rank 16, 8 under 10 photos; alpha = rank; repeats 5–10; steps 1000–1200; learning rate
// 1e-4–4e-4; weight decay 0.01; dropout 0.1). A value outside its `limit` (built-in: lora_rank ≤ 32,
// num_repeats ≤ 12, from package limits) refuses the run (exit 3) before anything is spent; the limits
// the values were held to are published as `limits`, so the train stage holds its input to them.
package params

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Kind implements pipeline.Kind for `stage "params"`.
type Kind struct{}

var _ pipeline.Kind = Kind{}

// Name is the stage kind's name in HCL.
func (Kind) Name() string { return "params" }

// DefaultTrainer is the trainer assumed when the replicate block names none.
const DefaultTrainer = "ostris/flux-dev-lora-trainer"

// ostrisInputs are the inputs of ostris/flux-dev-lora-trainer (every version): known without a token.
var ostrisInputs = []string{"steps", "lora_rank", "learning_rate", "batch_size", "resolution",
	"caption_dropout_rate", "optimizer", "trigger_word", "autocaption"}

// minimalInputs are kept for a trainer whose schema cannot be read: every Flux LoRA trainer has them.
var minimalInputs = []string{"lora_rank", "steps", "learning_rate"}

// knobs are parameters the research speaks of that some trainers lack; for those trainers they are
// reported in reasons rather than passed.
var knobs = map[string]bool{"num_repeats": true, "network_alpha": true, "dropout": true, "weight_decay": true}

var schema = &pipeline.Schema{
	ReadOnly: true,
	Settings: []string{"replicate"},
	Attributes: map[string]*pipeline.Attribute{
		"image_count":          {Type: cty.Number, Required: true, Min: pipeline.Bound(0), Whole: true, Description: "accepted photos (image_check.NAME.count)"},
		"diversity":            {Type: cty.Number, Min: pipeline.Bound(0), Max: pipeline.Bound(1), Description: "the set's diversity 0–1 (image_check.NAME.diversity); a uniform set trains fewer steps"},
		"previous_image_count": {Type: cty.Number, Min: pipeline.Bound(0), Whole: true, Description: "photos of the last accepted training; default: from state (the subject's version ledger)"},
		"on_fewer_images":      {Type: cty.String, Default: cty.StringVal("warn"), OneOf: []string{"warn", "fail"}, Description: `"warn" or "fail" when image_count < previous_image_count`},
	},
	Blocks: map[string]*pipeline.BlockSchema{
		"rule":     {Labels: []string{"name"}, Many: true},
		"defaults": {},
		"limit":    limits.Block,
	},
	SettingsAttributes: map[string]map[string]*pipeline.Attribute{"replicate": replicate.SettingsSchema},
	Summary:            []pipeline.SummaryColumn{{Title: "rank", Path: "values.lora_rank", Order: 20}, {Title: "steps", Path: "values.steps", Order: 30}},
	Outputs: map[string]cty.Type{
		// values is an object whose attributes keep their types; its attributes depend on the rules
		// and the trainer, so its type is only known when it is computed.
		"values":               cty.DynamicPseudoType,
		"reasons":              cty.List(cty.String),
		"passes_per_image":     cty.Number,
		"previous_image_count": cty.Number,
		// limits are the bounds the values were held to (built-in ones and this stage's limit
		// blocks), published so that a train stage reading values holds its input to them too.
		"limits": limits.Type,
	},
}

// Schema declares the attributes, blocks and outputs.
func (Kind) Schema() *pipeline.Schema { return schema }

// Plan is Apply: choosing parameters has no side effects.
func (k Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	return k.Apply(ctx, req)
}

// choice is one chosen value and where it came from.
type choice struct {
	val    cty.Value
	source string // `rule "x"`, "defaults" or "built-in"
	why    string // for built-ins: the research behind it
}

// Apply chooses the parameters.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	res, err := choose(ctx, req)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// attrs are the stage's attributes as the schema decodes them.
type attrs struct {
	ImageCount    int      `cty:"image_count"`
	Diversity     *float64 `cty:"diversity"`
	PreviousCount *int     `cty:"previous_image_count"`
	OnFewer       string   `cty:"on_fewer_images"`
}

func choose(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	if !req.Known("image_count") || !req.Known("diversity") {
		return &pipeline.Result{}, nil
	}
	if req.Input("image_count").IsNull() {
		return nil, fmt.Errorf("image_count is null: set it to the accepted photo count, e.g. image_check.photos.count")
	}
	var a attrs
	if err := pipeline.Err(schema.Decode(req, &a)); err != nil {
		return nil, err
	}
	n, diversity, onFewer := a.ImageCount, -1.0, a.OnFewer
	if a.Diversity != nil {
		diversity = *a.Diversity
	}

	// The first matching rule, then defaults.
	var matched *pipeline.Block
	var defaults map[string]cty.Value
	for i := range req.Blocks {
		b := &req.Blocks[i]
		switch b.Type {
		case "rule":
			if matched != nil {
				continue
			}
			w, ok := b.Attrs["when"]
			if !ok {
				return nil, fmt.Errorf("%s: rule %q has no `when`: add when = <condition>, e.g. when = image_check.photos.count < 12", rangeOf(b), label(b))
			}
			if !w.IsKnown() {
				return &pipeline.Result{Notes: []string{fmt.Sprintf("rule %q depends on values known after apply", label(b))}}, nil
			}
			bw, err := convert.Convert(w, cty.Bool)
			if err != nil || bw.IsNull() {
				return nil, fmt.Errorf("%s: rule %q: when must be true or false, got %s", rangeOf(b), label(b), friendly(w))
			}
			if bw.True() {
				matched = b
			}
		case "defaults":
			defaults = b.Attrs
		}
	}
	chosen := map[string]*choice{}
	for k, v := range defaults {
		chosen[k] = &choice{val: v, source: "defaults"}
	}
	if matched != nil {
		for k, v := range matched.Attrs {
			if k != "when" {
				chosen[k] = &choice{val: v, source: fmt.Sprintf("rule %q", label(matched))}
			}
		}
	}
	for k, c := range chosen {
		if !c.val.IsWhollyKnown() {
			return &pipeline.Result{Notes: []string{fmt.Sprintf("%s (%s) is known only after apply", k, c.source)}}, nil
		}
		if c.val.IsNull() {
			delete(chosen, k) // null means "not set here": fall through to the next source
		}
	}
	for k, c := range builtins(n, diversity) {
		if _, ok := chosen[k]; !ok {
			chosen[k] = c
		}
	}
	// Alpha follows the rank unless a rule or the defaults set it.
	if c := chosen["network_alpha"]; c.source == "built-in" {
		c.val = chosen["lora_rank"].val
		c.why = "alpha = rank (the research's advice: a larger alpha scales the update up and overfits)"
	}

	var warnings, notes []string
	trainer, inputs, how, warn := trainerInputs(ctx, req)
	if trainer == "" {
		return &pipeline.Result{Notes: []string{"the trainer is known only after apply"}}, nil
	}
	if warn != "" {
		warnings = append(warnings, warn)
	}
	notes = append(notes, how)

	keys := make([]string, 0, len(chosen))
	for k := range chosen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values := map[string]cty.Value{}
	var reasons []string
	// details carry the reasons for plan: each shows when its value changes (or with -details).
	var details []pipeline.Detail
	for _, k := range keys {
		c := chosen[k]
		line := fmt.Sprintf("%s = %s: %s", k, show(c.val), c.source)
		if c.why != "" {
			line += ": " + c.why
		}
		switch {
		case inputs[k]:
			values[k] = c.val
		case knobs[k]:
			line += "; not passed: " + trainer + " has no " + k + " input"
			if k == "network_alpha" && isOstris(trainer) {
				line += " (its alpha always equals lora_rank)"
			}
		default:
			line += "; not passed: " + trainer + " has no such input"
			if c.source != "built-in" {
				w := fmt.Sprintf("%s sets %s, which %s does not accept", c.source, k, trainer)
				if s := suggest(k, inputs); s != "" {
					w += fmt.Sprintf(" (did you mean %s?)", s)
				}
				warnings = append(warnings, w+": it is left out of values")
			}
		}
		reasons = append(reasons, line)
		about := ""
		if _, passed := values[k]; passed {
			about = "values." + k
		}
		details = append(details, pipeline.Detail{About: about, Text: line})
	}

	// Passes per photo: how often training sees each photo.
	passes := -1.0
	if st, ok := number(chosen["steps"]); ok && n > 0 {
		bs := 1.0
		if b, ok := number(chosen["batch_size"]); ok && b > 0 {
			bs = b
		}
		passes = math.Round(st*bs/float64(n)*10) / 10
		reasons = append(reasons, fmt.Sprintf("passes per photo = %g steps × batch %g ÷ %d photos = %.1f", st, bs, n, passes))
		details = append(details, pipeline.Detail{About: "passes_per_image", Text: reasons[len(reasons)-1]})
	}

	// Limits: config blocks replace the built-in limit of the same name.
	declared, unknownLimit, err := limits.FromBlocks(req.Blocks)
	if err != nil {
		return nil, err
	}
	if unknownLimit != "" {
		return &pipeline.Result{Notes: []string{fmt.Sprintf("limit %q is known only after apply", unknownLimit)}}, nil
	}
	for _, name := range declared.Names() {
		if _, ok := chosen[name]; !ok {
			warnings = append(warnings, fmt.Sprintf("limit %q bounds no chosen value: check its name against the values (%s)", name, strings.Join(keys, ", ")))
		}
	}
	bounds := limits.Builtin().Over(declared)
	var escapes []string
	for _, k := range bounds.Names() {
		c, ok := chosen[k]
		if !ok {
			continue
		}
		v, isNum := number(c)
		if !isNum {
			return nil, fmt.Errorf("limit %q: %s = %s (%s) is not a number", k, k, show(c.val), c.source)
		}
		b := bounds[k]
		raise := ""
		if b.Source == limits.BuiltIn {
			raise = fmt.Sprintf("; if you mean it, raise it with limit %q { max = %s }", k, show(c.val))
		}
		if b.Max != nil && v > *b.Max {
			escapes = append(escapes, fmt.Sprintf("%s = %s (%s) > max %g (%s)%s", k, show(c.val), c.source, *b.Max, b.Source, raise))
		}
		if b.Min != nil && v < *b.Min {
			escapes = append(escapes, fmt.Sprintf("%s = %s (%s) < min %g (%s)", k, show(c.val), c.source, *b.Min, b.Source))
		}
	}

	// A retrain on fewer photos than the last accepted training.
	prev, prevFrom := previousCount(req, a.PreviousCount)
	var refused []string
	if len(escapes) > 0 {
		refused = append(refused, "parameters escape their limits: "+strings.Join(escapes, "; "))
	}
	if prev >= 0 {
		details = append(details, pipeline.Detail{About: "previous_image_count", Text: fmt.Sprintf("previous accepted training: %d photos (%s)", prev, prevFrom)})
		if n < prev {
			msg := fmt.Sprintf("retrain on %d photos < %d in the last accepted training (%s): fewer photos overfit sooner; add photos back", n, prev, prevFrom)
			if onFewer == "fail" {
				refused = append(refused, msg+` (on_fewer_images = "fail")`)
			} else {
				warnings = append(warnings, msg+` or set on_fewer_images = "fail" to stop such runs`)
			}
		}
	}

	valuesVal := cty.EmptyObjectVal
	if len(values) > 0 {
		valuesVal = cty.ObjectVal(values)
	}
	reasonVals := make([]cty.Value, len(reasons))
	for i, r := range reasons {
		reasonVals[i] = cty.StringVal(r)
	}
	prevVal := cty.NullVal(cty.Number)
	if prev >= 0 {
		prevVal = cty.NumberIntVal(int64(prev))
	}
	passVal := cty.NumberIntVal(-1)
	if passes >= 0 {
		passVal = cty.NumberFloatVal(passes)
	}
	return &pipeline.Result{
		Outputs: map[string]cty.Value{
			"values":               valuesVal,
			"reasons":              listOrEmpty(reasonVals),
			"passes_per_image":     passVal,
			"previous_image_count": prevVal,
			"limits":               bounds.Value(),
		},
		Warnings: warnings,
		Refused:  strings.Join(refused, "; "),
		Notes:    notes,
		Details:  details,
	}, nil
}

// builtins are the research's rules for a set of n photos (diversity < 0 when unknown).
func builtins(n int, diversity float64) map[string]*choice {
	c := map[string]*choice{}
	if n < 10 {
		c["lora_rank"] = &choice{val: cty.NumberIntVal(8), source: "built-in", why: fmt.Sprintf("rank 8 for a set under 10 photos (%d): a small set is memorised at higher ranks", n)}
	} else {
		c["lora_rank"] = &choice{val: cty.NumberIntVal(16), source: "built-in", why: "rank 16 learns a face; rank 32 and up memorises the photos (plastic skin)"}
	}
	c["network_alpha"] = &choice{source: "built-in"}
	repeats := int(math.Round(10 - float64(n-10)*5/30))
	repeats = min(10, max(5, repeats))
	c["num_repeats"] = &choice{val: cty.NumberIntVal(int64(repeats)), source: "built-in", why: fmt.Sprintf("repeats 5–10 scaled to the set: 10 at ≤10 photos down to 5 at ≥40; %d photos", n)}
	steps := 1000 + 50*int(math.Round(float64(min(max(n, 15), 30)-15)*200/15/50))
	why := fmt.Sprintf("steps 1000–1200 scaled to the set: 1000 at ≤15 photos up to 1200 at ≥30; %d photos", n)
	if diversity >= 0 && diversity < 0.25 {
		steps = 1000
		why = fmt.Sprintf("low diversity %.2f: the low end of 1000–1200 steps, so the model learns the face rather than the one setting", diversity)
	}
	c["steps"] = &choice{val: cty.NumberIntVal(int64(steps)), source: "built-in", why: why}
	switch {
	case n < 10:
		c["learning_rate"] = &choice{val: cty.NumberFloatVal(1e-4), source: "built-in", why: "1e-4, the low end of 1e-4–4e-4, for a set under 10 photos"}
	case n < 15:
		c["learning_rate"] = &choice{val: cty.NumberFloatVal(2e-4), source: "built-in", why: "2e-4 within 1e-4–4e-4 for a set under 15 photos"}
	default:
		c["learning_rate"] = &choice{val: cty.NumberFloatVal(4e-4), source: "built-in", why: "4e-4, the top of 1e-4–4e-4, for 15+ photos"}
	}
	c["batch_size"] = &choice{val: cty.NumberIntVal(1), source: "built-in", why: "batch 1, the trainer's tested setting"}
	c["weight_decay"] = &choice{val: cty.NumberFloatVal(0.01), source: "built-in", why: "weight decay 0.01 from the research"}
	c["dropout"] = &choice{val: cty.NumberFloatVal(0.1), source: "built-in", why: "dropout 0.1 from the research"}
	return c
}

// trainerInputs names the trainer and the inputs it accepts, with a line saying how that is known
// and a warning when it had to be guessed. trainer is "" while the trainer itself is unknown.
func trainerInputs(ctx context.Context, req *pipeline.Request) (trainer string, inputs map[string]bool, how, warn string) {
	ref := DefaultTrainer
	if s, ok := req.Settings["replicate"]; ok && s != cty.NilVal && !s.IsNull() {
		if !s.IsKnown() {
			return "", nil, "", ""
		}
		if s.Type().IsObjectType() && s.Type().HasAttribute("trainer") {
			t := s.GetAttr("trainer")
			if !t.IsKnown() {
				return "", nil, "", ""
			}
			if !t.IsNull() && t.Type() == cty.String && strings.TrimSpace(t.AsString()) != "" {
				ref = strings.TrimSpace(t.AsString())
			}
		}
	}
	trainer, _, _ = strings.Cut(ref, ":")
	set := func(names []string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	if isOstris(trainer) {
		return trainer, set(ostrisInputs), "trainer " + trainer + ": values holds its inputs (" + strings.Join(ostrisInputs, ", ") + ")", ""
	}
	if replicate.HasToken(req.Env) {
		c, err := replicate.FromEnv(req.Env)
		if err == nil {
			var specs map[string]replicate.InputSpec
			specs, err = c.PlanTrainerInputs(ctx, req.Env, ref)
			if err == nil {
				m := map[string]bool{}
				names := make([]string, 0, len(specs))
				for k := range specs {
					m[k] = true
					names = append(names, k)
				}
				sort.Strings(names)
				return trainer, m, "trainer " + trainer + ": inputs read from its schema (" + strings.Join(names, ", ") + ")", ""
			}
		}
		return trainer, set(minimalInputs), "trainer " + trainer + ": inputs unknown; values keeps " + strings.Join(minimalInputs, ", "),
			fmt.Sprintf("could not read the inputs of %s (%v): values keeps only %s", ref, err, strings.Join(minimalInputs, ", "))
	}
	return trainer, set(minimalInputs), "trainer " + trainer + ": inputs unknown without REPLICATE_API_TOKEN; values keeps " + strings.Join(minimalInputs, ", "),
		fmt.Sprintf("the inputs of %s are unknown without REPLICATE_API_TOKEN: values keeps only %s", trainer, strings.Join(minimalInputs, ", "))
}

func isOstris(trainer string) bool { return strings.EqualFold(trainer, DefaultTrainer) }

// previousCount returns the photo count of the last accepted training (-1 if none) and where it
// comes from: the attribute when set, else the subject's version ledger.
func previousCount(req *pipeline.Request, set *int) (int, string) {
	if set != nil {
		return *set, "previous_image_count"
	}
	a := replicate.LedgerOf(req.State).LastAccepted()
	if a == nil || a.Images <= 0 {
		return -1, ""
	}
	return a.Images, "version " + a.Ref
}

func number(c *choice) (float64, bool) {
	if c == nil || c.val == cty.NilVal || c.val.IsNull() || !c.val.IsKnown() || c.val.Type() != cty.Number {
		return 0, false
	}
	f, _ := c.val.AsBigFloat().Float64()
	return f, true
}

func wholeNumber(name string, v cty.Value) (int, error) {
	i, acc := v.AsBigFloat().Int64()
	if acc != big.Exact || i < 0 || i > math.MaxInt32 {
		return 0, fmt.Errorf("%s = %s: must be a whole number ≥ 0", name, v.AsBigFloat().Text('g', -1))
	}
	return int(i), nil
}

// show renders a value as HCL would write it.
func show(v cty.Value) string {
	if v == cty.NilVal || v.IsNull() {
		return "null"
	}
	switch v.Type() {
	case cty.Number:
		return v.AsBigFloat().Text('g', -1)
	case cty.String:
		return fmt.Sprintf("%q", v.AsString())
	case cty.Bool:
		return fmt.Sprint(v.True())
	}
	return friendly(v)
}

func friendly(v cty.Value) string {
	if v == cty.NilVal {
		return "nothing"
	}
	return v.Type().FriendlyName()
}

// suggest is pipeline.Suggest over a set of names.
func suggest(name string, inputs map[string]bool) string {
	names := make([]string, 0, len(inputs))
	for k := range inputs {
		names = append(names, k)
	}
	return pipeline.Suggest(name, names)
}

func label(b *pipeline.Block) string {
	if len(b.Labels) > 0 {
		return b.Labels[0]
	}
	return b.Type
}

func rangeOf(b *pipeline.Block) string {
	if b.Range.Filename == "" {
		return b.Type
	}
	return fmt.Sprintf("%s:%d", b.Range.Filename, b.Range.Start.Line)
}

func listOrEmpty(vs []cty.Value) cty.Value {
	if len(vs) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	return cty.ListVal(vs)
}
