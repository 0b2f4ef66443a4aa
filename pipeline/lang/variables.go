package lang

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/pipeline-dev/pipeline/pipeline/config"
)

// VarInputs are the sources of variable values besides defaults.
type VarInputs struct {
	// Environ is the process environment (os.Environ()); PIPELINE_VAR_name=value sets var.name.
	Environ []string
	// VarFiles are -var-file paths, in order (".json" files use HCL's JSON syntax).
	VarFiles []string
	// Vars are -var "NAME=VALUE" options, in order.
	Vars []string
	// AllowUnset makes a variable without any value unknown instead of an error (validate, graph).
	AllowUnset bool
}

// EnvPrefix prefixes environment variables that set pipeline variables.
const EnvPrefix = "PIPELINE_VAR_"

type rawValue struct {
	val    cty.Value
	rng    *hcl.Range // where the value was written (var files), nil for env and -var
	source string     // for messages
}

// Variables resolves every declared variable. Precedence, later wins: default < PIPELINE_VAR_x <
// -var-file (in order) < -var (in order). Values from the environment and -var are taken
// literally for string (and untyped) variables and parsed as HCL expressions otherwise (for
// `type = any`, a value that does not parse, such as a bare word, is a string). Values
// are converted to the declared type and checked by the validation blocks; sensitive variables'
// values carry SensitiveMark.
func (m *Module) Variables(in VarInputs) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	raw := map[string]rawValue{}

	for _, kv := range in.Environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		vname := strings.TrimPrefix(name, EnvPrefix)
		v := m.vars[vname]
		if v == nil {
			continue // like TF_VAR_, an environment value for another configuration is not an error
		}
		source := "environment variable " + name
		parsed, d := parseCLIValue(v, val, source)
		diags = append(diags, d...)
		if !d.HasErrors() {
			raw[vname] = rawValue{val: parsed, source: source}
		}
	}

	for _, path := range in.VarFiles {
		d := m.readVarFile(path, raw)
		diags = append(diags, d...)
	}

	for _, kv := range in.Vars {
		name, val, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid -var option",
				Detail:   fmt.Sprintf("The option -var %q is not of the form NAME=VALUE, e.g. -var subject=ana.", kv),
			})
			continue
		}
		v := m.vars[name]
		if v == nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Value for undeclared variable",
				Detail:   fmt.Sprintf("-var sets %q, but the configuration declares no variable of that name.%s Declare it with a variable block.", name, didYouMean(name, sortedKeys(m.vars))),
			})
			continue
		}
		source := "-var " + name
		parsed, d := parseCLIValue(v, val, source)
		diags = append(diags, d...)
		if !d.HasErrors() {
			raw[name] = rawValue{val: parsed, source: source}
		}
	}

	out := map[string]cty.Value{}
	for _, v := range m.cfg.Variables {
		val, d := m.finalValue(v, raw, in.AllowUnset)
		diags = append(diags, d...)
		if v.Sensitive {
			val = val.Mark(SensitiveMark)
		}
		out[v.Name] = val
	}
	return out, diags
}

// parseCLIValue interprets a value given on the command line or in the environment.
func parseCLIValue(v *config.Variable, s, source string) (cty.Value, hcl.Diagnostics) {
	if v.Type == cty.String || !v.TypeSet {
		return cty.StringVal(s), nil
	}
	expr, diags := hclsyntax.ParseExpression([]byte(s), source, hcl.InitialPos)
	if !diags.HasErrors() {
		val, d := expr.Value(nil)
		if !d.HasErrors() {
			return val, nil
		}
		diags = d
	}
	if v.Type.IsPrimitiveType() || v.Type == cty.DynamicPseudoType {
		// "abc" for a number: let the conversion say what is wrong; for `any`, a bare word is a
		// string.
		return cty.StringVal(s), nil
	}
	return cty.NilVal, hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Invalid value for variable",
		Detail: fmt.Sprintf("The value from %s for variable %q (type %s) is not a valid HCL expression: %s. Write it as in a configuration, e.g. '[\"a\", \"b\"]' or '{ steps = 1000 }'.",
			source, v.Name, typeexpr.TypeString(v.Type), firstError(diags)),
	}}
}

func firstError(diags hcl.Diagnostics) string {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			if d.Detail != "" {
				return strings.TrimSuffix(d.Summary+": "+d.Detail, ".")
			}
			return d.Summary
		}
	}
	return "invalid"
}

// readVarFile reads one -var-file into raw.
func (m *Module) readVarFile(path string, raw map[string]rawValue) hcl.Diagnostics {
	src, err := os.ReadFile(path)
	if err != nil {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read variable file",
			Detail:   fmt.Sprintf("Reading -var-file %s: %s. Check the path.", path, unwrapErr(err)),
		}}
	}
	p := hclparse.NewParser()
	var f *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(path, ".json") {
		f, diags = p.ParseJSON(src, path)
	} else {
		f, diags = p.ParseHCL(src, path)
	}
	if f != nil {
		// So the diagnostic writer can show snippets of the var file too.
		m.mu.Lock()
		if _, ok := m.cfg.Files[path]; !ok {
			m.cfg.Files[path] = f
		}
		m.mu.Unlock()
	}
	if diags.HasErrors() || f == nil {
		return diags
	}
	attrs, d := f.Body.JustAttributes()
	diags = append(diags, d...)
	names := sortedKeys(attrs)
	sort.SliceStable(names, func(i, j int) bool { return attrs[names[i]].Range.Start.Byte < attrs[names[j]].Range.Start.Byte })
	for _, name := range names {
		a := attrs[name]
		if m.vars[name] == nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Value for undeclared variable",
				Detail:   fmt.Sprintf("The file sets %q, but the configuration declares no variable of that name; the value is ignored.%s", name, didYouMean(name, sortedKeys(m.vars))),
				Subject:  a.NameRange.Ptr(),
			})
			continue
		}
		val, d := a.Expr.Value(nil)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		rng := a.Expr.Range()
		raw[name] = rawValue{val: val, rng: &rng, source: "-var-file " + path}
	}
	return diags
}

func unwrapErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// finalValue picks, converts and validates one variable's value.
func (m *Module) finalValue(v *config.Variable, raw map[string]rawValue, allowUnset bool) (cty.Value, hcl.Diagnostics) {
	r, ok := raw[v.Name]
	if !ok {
		switch {
		case v.Default != cty.NilVal:
			return v.Default, m.validate(v, v.Default, nil, "its default")
		case allowUnset:
			return cty.UnknownVal(v.Type), nil
		default:
			return cty.UnknownVal(v.Type), hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "No value for required variable",
				Detail: fmt.Sprintf("Variable %q has no default, so it needs a value: -var %s=..., a -var-file, or the environment variable %s%s.",
					v.Name, v.Name, EnvPrefix, v.Name),
				Subject: v.DeclRange.Ptr(),
			}}
		}
	}
	given := r.val
	if v.TypeDefaults != nil {
		given = v.TypeDefaults.Apply(given)
	}
	val, err := convert.Convert(given, v.Type)
	if err != nil {
		subject := r.rng
		if subject == nil {
			subject = v.DeclRange.Ptr()
		}
		return cty.UnknownVal(v.Type), hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail: fmt.Sprintf("The value from %s for variable %q is not a %s: %s.",
				r.source, v.Name, typeexpr.TypeString(v.Type), convertErr(err)),
			Subject: subject,
		}}
	}
	return val, m.validate(v, val, r.rng, r.source)
}

// validate runs a variable's validation blocks; a condition that is false reports error_message.
func (m *Module) validate(v *config.Variable, val cty.Value, valRange *hcl.Range, source string) hcl.Diagnostics {
	if !val.IsWhollyKnown() {
		return nil
	}
	var diags hcl.Diagnostics
	if v.Sensitive {
		val = val.Mark(SensitiveMark)
	}
	for _, rule := range v.Validations {
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.Name: val})},
			Functions: m.functionsFor(rule.DeclRange),
		}
		cond, d := rule.Condition.Value(ctx)
		if d.HasErrors() {
			diags = append(diags, scrub(d)...)
			continue
		}
		cond, _ = cond.Unmark()
		cond, err := convert.Convert(cond, cty.Bool)
		if err != nil || cond.IsNull() {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid validation condition",
				Detail:   fmt.Sprintf("The condition must be true or false (for variable %q).", v.Name),
				Subject:  rule.Condition.Range().Ptr(),
			})
			continue
		}
		if !cond.IsKnown() {
			continue
		}
		if cond.True() {
			continue
		}
		msg := "The value does not satisfy the validation rule."
		if mv, d := rule.ErrorMessage.Value(ctx); !d.HasErrors() {
			if s, err := convert.Convert(mv, cty.String); err == nil && s.IsKnown() && !s.IsNull() {
				if s.IsMarked() {
					msg = "The value does not satisfy the validation rule (its error_message uses the sensitive value, so it is not shown)."
				} else {
					msg = s.AsString()
				}
			}
		}
		subject := valRange
		if subject == nil {
			subject = rule.Condition.Range().Ptr()
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail: fmt.Sprintf("%s\n\nThe value of var.%s (from %s) failed the validation rule at %s.",
				msg, v.Name, source, rule.DeclRange),
			Subject: subject,
		})
	}
	return diags
}
