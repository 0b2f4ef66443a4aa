// Package limits holds the hard limits on training parameters that the research sets (a rank of
// 32 and up, or more than 12 repeats, memorises the photos), in the one place both kinds that
// enforce them read: params when it chooses values, train when the money is spent.
//
//	stage "params" "tuned" {
//	  limit "lora_rank" { max = 48 } # replaces the built-in max 32
//	}
//
// A `limit "NAME" { min = …, max = … }` block (Block) replaces the bound of that name. params
// publishes the limits it enforces as its `limits` output (Value, of type Type), so a train stage
// that reads params' values holds them to the same bounds (FromValue) without reading params'
// records.
package limits

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Bound is the range one parameter must stay in (a nil end is open).
type Bound struct {
	Min, Max *float64
	// Source says where the bound is declared: "built-in", or `limit "lora_rank" at retrain.hcl:40`.
	Source string
	// Why is the research behind a built-in bound ("" for a declared one).
	Why string
}

// BuiltIn is the Source of the research limits.
const BuiltIn = "built-in"

// Set maps a parameter's name (a trainer input, a params `values` key) to its bound.
type Set map[string]Bound

// Builtin returns the research limits: lora_rank ≤ 32, num_repeats ≤ 12.
func Builtin() Set {
	return Set{
		"lora_rank":   {Max: ptr(32), Source: BuiltIn, Why: "rank 32 and up memorises the photos (plastic skin)"},
		"num_repeats": {Max: ptr(12), Source: BuiltIn, Why: "more than 12 repeats of each photo overfits the set"},
	}
}

// Block is the `limit "NAME" { min = …, max = … }` block a stage kind declares in its schema.
var Block = &pipeline.BlockSchema{
	Labels: []string{"name"},
	Many:   true,
	// A limit guards the runs to come: adding or raising one never re-runs a finished training.
	NoDigest: true,
	Attributes: map[string]*pipeline.Attribute{
		"min": {Type: cty.Number, Description: "the least value allowed"},
		"max": {Type: cty.Number, Description: "the greatest value allowed"},
	},
}

// Type is the type of params' `limits` output: name → {min, max, source} (an open end is null).
var Type = cty.Map(cty.Object(map[string]cty.Type{"min": cty.Number, "max": cty.Number, "source": cty.String}))

// FromBlocks reads the stage's limit blocks (other blocks are ignored). While a bound is not known
// yet (plan), unknown names its limit and s is nil.
func FromBlocks(blocks []pipeline.Block) (s Set, unknown string, err error) {
	s = Set{}
	for i := range blocks {
		b := &blocks[i]
		if b.Type != "limit" {
			continue
		}
		name := Label(b)
		bound := Bound{Source: fmt.Sprintf("limit %q at %s", name, Where(b))}
		for _, end := range []string{"min", "max"} {
			v, ok := b.Attrs[end]
			if !ok || v.IsNull() {
				continue
			}
			if !v.IsKnown() {
				return nil, name, nil
			}
			if v.Type() != cty.Number {
				return nil, "", fmt.Errorf("%s: limit %q: %s must be a number", Where(b), name, end)
			}
			f, _ := v.AsBigFloat().Float64()
			if end == "min" {
				bound.Min = ptr(f)
			} else {
				bound.Max = ptr(f)
			}
		}
		s[name] = bound
	}
	return s, "", nil
}

// Over returns s with o's bounds replacing those of the same name.
func (s Set) Over(o Set) Set {
	out := make(Set, len(s)+len(o))
	for k, b := range s {
		out[k] = b
	}
	for k, b := range o {
		out[k] = b
	}
	return out
}

// Names lists the bounded names in order.
func (s Set) Names() []string {
	names := make([]string, 0, len(s))
	for k := range s {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Value is s as params publishes it (of type Type).
func (s Set) Value() cty.Value {
	if len(s) == 0 {
		return cty.MapValEmpty(Type.ElementType())
	}
	m := make(map[string]cty.Value, len(s))
	for k, b := range s {
		m[k] = cty.ObjectVal(map[string]cty.Value{"min": num(b.Min), "max": num(b.Max), "source": cty.StringVal(b.Source)})
	}
	return cty.MapVal(m)
}

// FromValue reads a published Set (ok false when v is not one, or not known yet). A bound
// published without its reason keeps the research's reason when it is the built-in one.
func FromValue(v cty.Value) (s Set, ok bool) {
	v, _ = v.UnmarkDeep()
	if v == cty.NilVal || v.IsNull() || !v.IsWhollyKnown() || !(v.Type().IsMapType() || v.Type().IsObjectType()) {
		return nil, false
	}
	builtin := Builtin()
	s = Set{}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if !e.Type().IsObjectType() {
			return nil, false
		}
		b := Bound{Min: float(e, "min"), Max: float(e, "max")}
		if e.Type().HasAttribute("source") && e.GetAttr("source").Type() == cty.String && !e.GetAttr("source").IsNull() {
			b.Source = e.GetAttr("source").AsString()
		}
		if b.Source == BuiltIn {
			b.Why = builtin[k.AsString()].Why
		}
		s[k.AsString()] = b
	}
	return s, true
}

// Escape says how v escapes b ("> max 32"), or "" when it stays inside.
func (b Bound) Escape(v float64) string {
	switch {
	case b.Max != nil && v > *b.Max:
		return "> max " + Show(*b.Max)
	case b.Min != nil && v < *b.Min:
		return "< min " + Show(*b.Min)
	}
	return ""
}

// Raise is the block that allows v on purpose: limit "lora_rank" { max = 48 }.
func (b Bound) Raise(name string, v float64) string {
	if b.Min != nil && v < *b.Min {
		return fmt.Sprintf("limit %q { min = %s }", name, Show(v))
	}
	return fmt.Sprintf("limit %q { max = %s }", name, Show(v))
}

// Show writes a number as HCL would (16, 0.0004).
func Show(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Label is a block's first label (its type when it has none).
func Label(b *pipeline.Block) string {
	if len(b.Labels) > 0 {
		return b.Labels[0]
	}
	return b.Type
}

// Where is a block's file:line, for messages (its type when the range is unknown).
func Where(b *pipeline.Block) string {
	if b.Range.Filename == "" {
		return b.Type
	}
	return fmt.Sprintf("%s:%d", b.Range.Filename, b.Range.Start.Line)
}

func num(f *float64) cty.Value {
	if f == nil {
		return cty.NullVal(cty.Number)
	}
	return cty.NumberFloatVal(*f)
}

func float(obj cty.Value, name string) *float64 {
	if !obj.Type().HasAttribute(name) {
		return nil
	}
	v := obj.GetAttr(name)
	if v.IsNull() || v.Type() != cty.Number {
		return nil
	}
	f, _ := v.AsBigFloat().Float64()
	return &f
}

func ptr(f float64) *float64 { return &f }
