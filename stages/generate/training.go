package generate

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// The report's account of the training comes only from stages the config hands generate — `params`
// (values, reasons), `training` (input, cost_usd), `gate` (min_loss, max_loss, losses, passed,
// reason), `reference` (count, rejected) — never from other kinds' records in state: what the
// report shows is what the pipeline passed along, and each kind keeps its records to itself.

// param is one training parameter as the report lists it.
type param struct {
	Name, Value string
	// Chosen is params' value when the training was sent another one (a merge overriding it).
	Chosen string
	Reason string
}

// trainingInfo is what the report says about the training behind the version.
type trainingInfo struct {
	Params []param
	// Other are params' reasons that name no sent value (knobs the trainer lacks, passes per photo).
	Other []string
	// Source says where the values come from ("" when neither params nor training was handed).
	Source string
	// Handed: a training stage was handed (training = train.NAME).
	Handed bool
	// CostUSD is the training's cost when the train stage reports one (cost_usd); HasCost false otherwise.
	CostUSD float64
	HasCost bool
}

// attr reads an attribute of a stage's output object (or map); cty.NilVal when it has none.
func attr(obj cty.Value, name string) cty.Value {
	if obj == cty.NilVal || obj.IsNull() || !obj.IsKnown() {
		return cty.NilVal
	}
	switch t := obj.Type(); {
	case t.IsObjectType() && t.HasAttribute(name):
		return obj.GetAttr(name)
	case t.IsMapType() && obj.HasIndex(cty.StringVal(name)).True():
		return obj.Index(cty.StringVal(name))
	}
	return cty.NilVal
}

// entries lists an object's or map's known attributes.
func entries(v cty.Value) map[string]cty.Value {
	if v == cty.NilVal || v.IsNull() || !v.IsWhollyKnown() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		return nil
	}
	return v.AsValueMap()
}

// numberAttr reads a known number attribute; ok false when there is none.
func numberAttr(obj cty.Value, name string) (float64, bool) {
	v := attr(obj, name)
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() || v.Type() != cty.Number {
		return 0, false
	}
	f, _ := v.AsBigFloat().Float64()
	return f, !math.IsNaN(f) && !math.IsInf(f, 0)
}

// show prints a value as HCL users wrote it: 1000, 0.0004, true, TOK.
func show(v cty.Value) string {
	if v == cty.NilVal || v.IsNull() {
		return "null"
	}
	if !v.IsWhollyKnown() {
		return "(known after apply)"
	}
	switch v.Type() {
	case cty.String:
		return v.AsString()
	case cty.Number:
		return v.AsBigFloat().Text('g', -1)
	case cty.Bool:
		return fmt.Sprint(v.True())
	}
	if v.CanIterateElements() {
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if v.Type().IsObjectType() || v.Type().IsMapType() {
				parts = append(parts, show(k)+" = "+show(e))
			} else {
				parts = append(parts, show(e))
			}
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return v.GoString()
}

// secretName: inputs named like a credential are never shown (SPEC: token, key, secret).
func secretName(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "token") || strings.Contains(n, "key") || strings.Contains(n, "secret")
}

// reasonsByName splits params' reasons ("lora_rank = 16: built-in: why") into those naming a
// value, keyed by name with the "name = value: " prefix dropped, and the others in order.
func reasonsByName(reasons cty.Value) (named map[string]string, other []string) {
	named = map[string]string{}
	if reasons == cty.NilVal || reasons.IsNull() || !reasons.IsWhollyKnown() || !reasons.CanIterateElements() {
		return named, nil
	}
	for it := reasons.ElementIterator(); it.Next(); {
		_, r := it.Element()
		if r.IsNull() || r.Type() != cty.String {
			continue
		}
		line := r.AsString()
		name, rest, ok := strings.Cut(line, " = ")
		_, why, ok2 := strings.Cut(rest, ": ")
		if !ok || !ok2 || strings.ContainsAny(name, " :") {
			other = append(other, line)
			continue
		}
		named[name] = why
	}
	return named, other
}

// trainingOf lists the training's parameters: the input the training was sent (training), each
// with params' reason; params' values alone when no training is handed.
func trainingOf(params, training cty.Value) trainingInfo {
	t := trainingInfo{Handed: training != cty.NilVal && !training.IsNull()}
	chosen := entries(attr(params, "values"))
	named, other := reasonsByName(attr(params, "reasons"))
	sent := entries(attr(training, "input"))
	values := sent
	switch {
	case sent != nil && chosen != nil:
		t.Source = "the input the training was sent, with the params stage's reasons"
	case sent != nil:
		t.Source = "the input the training was sent"
	case chosen != nil:
		t.Source = "the params stage's values (hand training = train.NAME to show what was sent)"
		values = chosen
	}
	names := make([]string, 0, len(values))
	for k := range values {
		if k != "input_images" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		p := param{Name: k, Value: show(values[k]), Reason: named[k]}
		if secretName(k) {
			p.Value, p.Reason = "(sensitive)", ""
		}
		if c, ok := chosen[k]; ok && sent != nil && show(c) != p.Value && !secretName(k) {
			p.Chosen = show(c)
		}
		delete(named, k)
		t.Params = append(t.Params, p)
	}
	rest := make([]string, 0, len(named))
	for k, why := range named { // reasons of values not sent (knobs the trainer lacks)
		rest = append(rest, k+": "+why)
	}
	sort.Strings(rest)
	t.Other = append(rest, other...)
	if usd, ok := numberAttr(training, "cost_usd"); ok {
		t.CostUSD, t.HasCost = usd, true
	}
	return t
}

// gateInfo is the loss gate's verdict and thresholds, for the chart.
type gateInfo struct {
	handed           bool
	passed           *bool
	reason           string
	minLoss, maxLoss *float64
}

func gateOf(gate cty.Value) gateInfo {
	g := gateInfo{handed: gate != cty.NilVal && !gate.IsNull()}
	if f, ok := numberAttr(gate, "min_loss"); ok {
		g.minLoss = &f
	}
	if f, ok := numberAttr(gate, "max_loss"); ok {
		g.maxLoss = &f
	}
	if p := attr(gate, "passed"); p != cty.NilVal && p.IsKnown() && !p.IsNull() && p.Type() == cty.Bool {
		b := p.True()
		g.passed = &b
	}
	if r := attr(gate, "reason"); r != cty.NilVal && r.IsKnown() && !r.IsNull() && r.Type() == cty.String {
		g.reason = r.AsString()
	}
	return g
}

// usd prints money: cents are too coarse for a few predictions.
func usd(f float64) string {
	if f != 0 && math.Abs(f) < 1 {
		return fmt.Sprintf("$%.4f", f)
	}
	return fmt.Sprintf("$%.2f", f)
}

// redact scrubs the secrets the run knows from everything the report shows of other stages.
func (t *trainingInfo) redact(env *pipeline.Env) {
	for i := range t.Params {
		p := &t.Params[i]
		p.Value, p.Chosen, p.Reason = env.RedactText(p.Value), env.RedactText(p.Chosen), env.RedactText(p.Reason)
	}
	t.Other = redactAll(env, t.Other)
}
