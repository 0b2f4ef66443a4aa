package pipeline

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// Decode copies a stage's inputs into the struct dst points to, the one path every kind decodes
// through (like gohcl, but over the values the engine evaluated). A kind decodes against its own
// schema, the one validate and plan check the config against:
//
//	type config struct {
//		Prompts  []string      `cty:"prompts"`
//		Guidance float64       `cty:"guidance_scale"`
//		Poll     time.Duration `cty:"poll_interval"`
//		Ref      cty.Value     `cty:"reference"` // any value, as it is
//	}
//	var cfg config
//	if diags := pipeline.Decode(req, &cfg); diags.HasErrors() {
//		return nil, diags
//	}
//
// Each field tagged `cty:"NAME"` receives input NAME converted by gocty (strings, bools,
// numbers, slices, maps, pointers for optional values, cty.Value for any value), a duration
// string into a time.Duration. Every known input is first held against its schema constraints
// (OneOf, Min/Max, Whole, Duration, Check; see Attribute) — the checks validate runs, so the
// two agree by construction — and a problem is a diagnostic at the attribute's source range.
// An absent or null input takes its schema default; one that is not known yet (plan) leaves its
// field unchanged: ask req.Known. A null input without a default leaves a plain field unchanged
// and sets a pointer to nil.
func (s *Schema) Decode(req *Request, dst any) hcl.Diagnostics {
	return decodeObject(req, req.Inputs, s.Attributes, dst, "")
}

// Decode decodes req against the schema the engine ran it with (req.Schema).
func Decode(req *Request, dst any) hcl.Diagnostics {
	return req.Schema.Decode(req, dst)
}

// DecodeSettings is Decode for a settings block the kind reads (Schema.Settings), e.g.
// "replicate": its attributes are checked against SettingsAttributes[name].
func (s *Schema) DecodeSettings(req *Request, name string, dst any) hcl.Diagnostics {
	v := req.Settings[name]
	if v == cty.NilVal {
		v = cty.EmptyObjectVal
	}
	return decodeObject(req, v, s.SettingsAttributes[name], dst, name+".")
}

// DiagError wraps diagnostics as an error: its message is each error's position, summary and
// detail; callers that hold the config render them with source snippets.
type DiagError struct{ Diags hcl.Diagnostics }

func (e *DiagError) Error() string {
	var msgs []string
	for _, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		if d.Subject != nil {
			msg = d.Subject.String() + ": " + msg
		}
		msgs = append(msgs, msg)
	}
	return strings.Join(msgs, "; ")
}

// Err is diags as an error (a *DiagError), nil when they hold no error.
func Err(diags hcl.Diagnostics) error {
	if !diags.HasErrors() {
		return nil
	}
	return &DiagError{Diags: diags}
}

// Known reports whether input name is wholly known (plan may still miss upstream outputs).
func (r *Request) Known(name string) bool {
	v := r.Input(name)
	return v == cty.NilVal || v.IsWhollyKnown()
}

// AttrRange is where input name is written in the config (the stage block when it is not).
func (r *Request) AttrRange(name string) hcl.Range {
	if rng, ok := r.AttrRanges[name]; ok {
		return rng
	}
	return r.DeclRange
}

// AttrError is a diagnostic about input name at its source range, for the rules a kind checks
// itself once the values are known (a file that does not exist, an API's answer).
func (r *Request) AttrError(name, summary, detail string) *hcl.Diagnostic {
	rng := r.AttrRange(name)
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail}
	if rng.Filename != "" {
		d.Subject = rng.Ptr()
	}
	return d
}

var (
	valueType    = reflect.TypeOf(cty.Value{})
	durationType = reflect.TypeOf(time.Duration(0))
)

func decodeObject(req *Request, obj cty.Value, attrs map[string]*Attribute, dst any, prefix string) hcl.Diagnostics {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("pipeline.Decode: dst must point to a struct, got %T", dst))
	}
	obj, _ = obj.UnmarkDeep()
	var diags hcl.Diagnostics
	st := rv.Elem()
	for i := 0; i < st.NumField(); i++ {
		name, ok := st.Type().Field(i).Tag.Lookup("cty")
		if !ok || name == "" || name == "-" {
			continue
		}
		v := attrOf(obj, name)
		if a := attrs[name]; (v == cty.NilVal || v.IsNull()) && a != nil && a.Default != cty.NilVal {
			v = a.Default // as the engine does: absent or null means the default
		}
		if v == cty.NilVal || !v.IsWhollyKnown() {
			continue
		}
		if a := attrs[name]; a != nil && a.Type != cty.NilType && a.Type != cty.DynamicPseudoType {
			// HCL gives `{ "gpu-h100" = 0.001 }` as an object and `[1, 2]` as a tuple: the
			// declared map or list is what the field holds. Values that do not convert are
			// left for Problem to name.
			if cv, err := convert.Convert(v, a.Type); err == nil {
				v = cv
			}
		}
		fail := func(detail string) {
			d := req.AttrError(prefix+name, "Invalid value for "+prefix+name, detail)
			if prefix != "" {
				d.Subject = nil // settings blocks have no per-attribute ranges in the request
			}
			diags = append(diags, d)
		}
		if msg := attrs[name].Problem(prefix+name, v, obj); msg != "" {
			fail(msg)
			continue
		}
		if err := setField(st.Field(i), v); err != nil {
			fail(fmt.Sprintf("%s: %v.", prefix+name, err))
		}
	}
	return diags
}

func attrOf(obj cty.Value, name string) cty.Value {
	if obj == cty.NilVal || !obj.IsKnown() || obj.IsNull() {
		return cty.NilVal
	}
	switch ty := obj.Type(); {
	case ty.IsObjectType() && ty.HasAttribute(name):
		return obj.GetAttr(name)
	case ty.IsMapType() && obj.HasIndex(cty.StringVal(name)).True():
		return obj.Index(cty.StringVal(name))
	}
	return cty.NilVal
}

// setField stores one known value into a struct field.
func setField(f reflect.Value, v cty.Value) error {
	switch {
	case f.Type() == valueType:
		f.Set(reflect.ValueOf(v))
		return nil
	case v.IsNull():
		if f.Kind() == reflect.Pointer || f.Kind() == reflect.Slice || f.Kind() == reflect.Map {
			f.Set(reflect.Zero(f.Type()))
		}
		return nil
	case f.Type() == durationType:
		if v.Type() != cty.String {
			return fmt.Errorf("a duration must be a string such as \"30s\"")
		}
		d, err := time.ParseDuration(strings.TrimSpace(v.AsString()))
		if err != nil {
			return fmt.Errorf("%q is not a duration (Go syntax: \"500ms\", \"30s\", \"2h\")", v.AsString())
		}
		f.SetInt(int64(d))
		return nil
	}
	return gocty.FromCtyValue(v, f.Addr().Interface())
}

// Problem says what is wrong with a known value of the attribute ("" when nothing is, or when a
// is nil), as one sentence naming it: "guidance_scale = 12 is outside 0–10.". in is the whole
// inputs object, for rules that compare attributes.
func (a *Attribute) Problem(name string, v, in cty.Value) string {
	if a == nil {
		return ""
	}
	v, _ = v.UnmarkDeep()
	if v == cty.NilVal || !v.IsWhollyKnown() || v.IsNull() {
		return ""
	}
	msg := ""
	switch {
	case v.Type() == cty.String && len(a.OneOf) > 0:
		msg = oneOfProblem(name, v.AsString(), a.OneOf)
	case v.Type() == cty.String && a.Duration:
		msg = durationProblem(name, v.AsString(), a.MinDuration)
	case v.Type() == cty.Number:
		f, _ := v.AsBigFloat().Float64()
		msg = a.numberProblem(name, f)
	}
	if msg == "" && a.Check != nil {
		if err := a.Check(v, in); err != nil {
			msg = err.Error()
		}
	}
	if msg != "" && !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, "?") && !strings.HasSuffix(msg, ")") {
		msg += "."
	}
	return msg
}

func oneOfProblem(name, got string, choices []string) string {
	for _, ok := range choices {
		if got == ok {
			return ""
		}
	}
	quoted := make([]string, len(choices))
	for i, o := range choices {
		quoted[i] = fmt.Sprintf("%q", o)
	}
	msg := fmt.Sprintf("%s = %q is not one of %s.", name, got, strings.Join(quoted, ", "))
	if s := Suggest(got, choices); s != "" {
		msg += fmt.Sprintf(" Did you mean %q?", s)
	}
	return msg
}

func durationProblem(name, s string, least time.Duration) string {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil || d <= 0:
		return fmt.Sprintf("%s = %q is not a positive duration in Go syntax, such as \"30s\", \"500ms\" or \"2h\"", name, s)
	case d < least:
		return fmt.Sprintf("%s %s is below %s", name, d, least)
	}
	return ""
}

// numberProblem words a bound the way people read it: "is outside -1–2 (it is above its
// maximum 2)", "is outside (0, 1]", "is negative", "is below its minimum 1".
func (a *Attribute) numberProblem(name string, f float64) string {
	lo, hi := a.Min, a.Max
	var why string
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return fmt.Sprintf("%s = %g is not a finite number", name, f)
	case lo != nil && a.ExclusiveMin && f <= *lo:
		why = fmt.Sprintf("not above %g", *lo)
	case lo != nil && f < *lo:
		why = fmt.Sprintf("below its minimum %g", *lo)
	case hi != nil && f > *hi:
		why = fmt.Sprintf("above its maximum %g", *hi)
	case a.Whole && f != math.Trunc(f):
		return fmt.Sprintf("%s = %g: must be a whole number", name, f)
	default:
		return ""
	}
	switch {
	case lo != nil && hi != nil && a.ExclusiveMin:
		return fmt.Sprintf("%s = %g is outside (%g, %g] (it is %s)", name, f, *lo, *hi, why)
	case lo != nil && hi != nil:
		return fmt.Sprintf("%s = %g is outside %g–%g (it is %s)", name, f, *lo, *hi, why)
	case lo != nil && *lo == 0 && !a.ExclusiveMin && f < 0:
		return fmt.Sprintf("%s = %g is negative", name, f)
	}
	return fmt.Sprintf("%s = %g is %s", name, f, why)
}
