package lang

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// exprCheck runs before an expression is evaluated (the static checker uses it to validate
// references and record edges); false skips the evaluation, whose errors would only repeat it.
type exprCheck func(expr hcl.Expression, label string) bool

// unknownOutputs is the value of a stage whose outputs are not known yet: an object with every
// declared output unknown of its declared type.
func unknownOutputs(st *Stage) cty.Value {
	if st == nil || st.Schema == nil {
		return cty.DynamicVal
	}
	if len(st.Schema.Outputs) == 0 {
		return cty.EmptyObjectVal
	}
	attrs := make(map[string]cty.Value, len(st.Schema.Outputs))
	for name, ty := range st.Schema.Outputs {
		attrs[name] = cty.UnknownVal(ty)
	}
	return cty.ObjectVal(attrs)
}

// completeOutputs fills declared outputs missing from a known object with unknowns, so a
// reference to one of them is "known after apply" rather than an error.
func completeOutputs(st *Stage, v cty.Value) cty.Value {
	if v == cty.NilVal {
		return unknownOutputs(st)
	}
	if st == nil || st.Schema == nil || !v.IsKnown() || v.IsNull() || !v.Type().IsObjectType() {
		return v
	}
	missing := false
	for name := range st.Schema.Outputs {
		if !v.Type().HasAttribute(name) {
			missing = true
			break
		}
	}
	if !missing {
		return v
	}
	v, marks := v.Unmark()
	attrs := v.AsValueMap()
	if attrs == nil {
		attrs = map[string]cty.Value{}
	}
	for name, ty := range st.Schema.Outputs {
		if _, ok := attrs[name]; !ok {
			attrs[name] = cty.UnknownVal(ty)
		}
	}
	return cty.ObjectVal(attrs).WithMarks(marks)
}

// evalEnv is what an expression can see.
type evalEnv struct {
	vars   cty.Value // object
	locals map[string]cty.Value
	each   cty.Value // cty.NilVal outside a batch
	// stage returns a stage's current value; nil means stages are not in scope.
	stage func(st *Stage) cty.Value
}

func (m *Module) evalContext(baseDir string, env evalEnv) *hcl.EvalContext {
	vars := map[string]cty.Value{
		"var":   env.vars,
		"local": cty.ObjectVal(env.locals),
	}
	if env.vars == cty.NilVal {
		vars["var"] = cty.EmptyObjectVal
	}
	if len(env.locals) == 0 {
		vars["local"] = cty.EmptyObjectVal
	}
	if env.each != cty.NilVal {
		vars["each"] = env.each
	}
	if env.stage != nil {
		byKind := map[string]map[string]cty.Value{}
		for _, st := range m.stages {
			if byKind[st.Kind] == nil {
				byKind[st.Kind] = map[string]cty.Value{}
			}
			byKind[st.Kind][st.Name] = env.stage(st)
		}
		for kind, names := range byKind {
			if kind == "var" || kind == "local" || kind == "each" {
				continue
			}
			vars[kind] = cty.ObjectVal(names)
		}
	}
	return &hcl.EvalContext{Variables: vars, Functions: m.functions(baseDir)}
}

// bodySchema turns a kind's attribute and block declarations into an hcl schema.
func bodySchema(attrs map[string]*pipeline.Attribute, blocks map[string]*pipeline.BlockSchema) *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, name := range sortedKeys(attrs) {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: name, Required: attrs[name] != nil && attrs[name].Required})
	}
	for _, name := range sortedKeys(blocks) {
		var labels []string
		if b := blocks[name]; b != nil {
			labels = b.Labels
		}
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: name, LabelNames: labels})
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// evalExpr evaluates expr, or returns an unknown of want when check refuses it or evaluation fails.
func evalExpr(expr hcl.Expression, ctx *hcl.EvalContext, want cty.Type, label, what string, check exprCheck) (cty.Value, hcl.Diagnostics) {
	if check != nil && !check(expr, label) {
		return cty.UnknownVal(want), nil
	}
	val, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return cty.UnknownVal(want), diags
	}
	conv, err := convert.Convert(val, want)
	if err != nil {
		return cty.UnknownVal(want), append(diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Incorrect attribute value type",
			Detail:      fmt.Sprintf("Inappropriate value for %s: %s.", what, convertErr(err)),
			Subject:     expr.Range().Ptr(),
			Expression:  expr,
			EvalContext: ctx,
		})
	}
	return conv, diags
}

// convertErr makes cty's conversion error read like a sentence fragment.
func convertErr(err error) string {
	if pe, ok := err.(cty.PathError); ok && len(pe.Path) > 0 {
		return fmt.Sprintf("%s: %s", formatPath(pe.Path), pe.Error())
	}
	return err.Error()
}

// formatPath renders a cty path like an HCL traversal: .a[0]["k"].
func formatPath(p cty.Path) string {
	var b strings.Builder
	for _, step := range p {
		switch s := step.(type) {
		case cty.GetAttrStep:
			b.WriteString("." + s.Name)
		case cty.IndexStep:
			switch {
			case !s.Key.IsKnown():
				b.WriteString("[?]")
			case s.Key.Type() == cty.String:
				fmt.Fprintf(&b, "[%q]", s.Key.AsString())
			case s.Key.Type() == cty.Number:
				fmt.Fprintf(&b, "[%s]", s.Key.AsBigFloat().Text('f', -1))
			default:
				b.WriteString("[?]")
			}
		}
	}
	return strings.TrimPrefix(b.String(), ".")
}

// evalAnyAttrs evaluates a body of free-form attributes (settings, blocks declared without
// attributes), each as it is.
func evalAnyAttrs(body hcl.Body, ctx *hcl.EvalContext, prefix string, check exprCheck) (map[string]cty.Value, hcl.Diagnostics) {
	out := map[string]cty.Value{}
	attrs, diags := body.JustAttributes()
	for _, name := range sortedKeys(attrs) {
		a := attrs[name]
		v, d := evalExpr(a.Expr, ctx, cty.DynamicPseudoType, prefix+name, fmt.Sprintf("attribute %q", name), check)
		diags = append(diags, d...)
		out[name] = v
	}
	return out, diags
}

// evalStageBody evaluates a stage body against its kind's schema: the inputs object (every
// declared attribute, defaults filled in) and the nested blocks in file order.
func evalStageBody(body hcl.Body, schema *pipeline.Schema, ctx *hcl.EvalContext, check exprCheck) (cty.Value, []pipeline.Block, hcl.Diagnostics) {
	content, diags := body.Content(bodySchema(schema.Attributes, schema.Blocks))
	listNames(diags, "Unsupported argument", "attributes", sortedKeys(schema.Attributes))
	listNames(diags, "Unsupported block type", "nested blocks", sortedKeys(schema.Blocks))
	if content == nil {
		return cty.DynamicVal, nil, diags
	}
	inputs, d := evalDeclared(content.Attributes, schema.Attributes, ctx, "", check)
	diags = append(diags, d...)

	var blocks []pipeline.Block
	seen := map[string]hcl.Range{}
	for _, blk := range content.Blocks {
		bs := schema.Blocks[blk.Type]
		if bs == nil {
			bs = &pipeline.BlockSchema{}
		}
		if prev, dup := seen[blk.Type]; dup && !bs.Many {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Duplicate %s block", blk.Type),
				Detail:   fmt.Sprintf("Only one %s block is allowed here; the first is at %s.", blk.Type, prev),
				Subject:  blk.DefRange.Ptr(),
			})
			continue
		}
		seen[blk.Type] = blk.DefRange
		var attrs map[string]cty.Value
		if bs.Attributes == nil {
			var d hcl.Diagnostics
			attrs, d = evalAnyAttrs(blk.Body, ctx, blk.Type+".", check)
			diags = append(diags, d...)
		} else {
			c, d := blk.Body.Content(bodySchema(bs.Attributes, nil))
			listNames(d, "Unsupported argument", "attributes", sortedKeys(bs.Attributes))
			listNames(d, "Unsupported block type", "nested blocks", nil)
			diags = append(diags, d...)
			if c == nil {
				continue
			}
			obj, d := evalDeclared(c.Attributes, bs.Attributes, ctx, blk.Type+".", check)
			diags = append(diags, d...)
			attrs = obj
		}
		blocks = append(blocks, pipeline.Block{
			Type:   blk.Type,
			Labels: append([]string(nil), blk.Labels...),
			Attrs:  attrs,
			Range:  blk.DefRange,
		})
	}
	return objectOf(inputs), blocks, diags
}

func objectOf(attrs map[string]cty.Value) cty.Value {
	if len(attrs) == 0 {
		return cty.EmptyObjectVal
	}
	return cty.ObjectVal(attrs)
}

func evalDeclared(attrs hcl.Attributes, declared map[string]*pipeline.Attribute, ctx *hcl.EvalContext, prefix string, check exprCheck) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	out := make(map[string]cty.Value, len(declared))
	evaluated := map[string]bool{} // written in the block and evaluated without error
	for _, name := range sortedKeys(declared) {
		decl := declared[name]
		if decl == nil {
			decl = &pipeline.Attribute{Type: cty.DynamicPseudoType}
		}
		ty := decl.Type
		if ty == cty.NilType {
			ty = cty.DynamicPseudoType
		}
		a, ok := attrs[name]
		if !ok {
			if decl.Default != cty.NilVal {
				out[name] = decl.Default
			} else {
				out[name] = cty.NullVal(ty)
			}
			continue
		}
		if decl.StageKind != "" {
			if d := checkStageRef(name, decl.StageKind, a.Expr); d != nil {
				diags = append(diags, d)
				out[name] = cty.DynamicVal
				continue
			}
		}
		v, d := evalExpr(a.Expr, ctx, ty, prefix+name, fmt.Sprintf("attribute %q", name), check)
		diags = append(diags, d...)
		if v.IsNull() && !decl.Required && decl.Default != cty.NilVal {
			// As in Terraform, null means "not set": the default applies.
			v = decl.Default.WithMarks(v.Marks())
		}
		if !d.HasErrors() {
			evaluated[name] = true
		}
		if !d.HasErrors() && decl.Required && v.IsNull() {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Required attribute is null",
				Detail:   fmt.Sprintf("Attribute %q is required and must not be null.", name),
				Subject:  a.Expr.Range().Ptr(),
			})
		}
		out[name] = v
	}
	// Constraints last: a rule may compare attributes (max_loss above min_loss).
	in := objectOf(out)
	for _, name := range sortedKeys(evaluated) {
		if msg := declared[name].Problem(name, out[name], in); msg != "" {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for " + name, Detail: msg,
				Subject: attrs[name].Expr.Range().Ptr()})
		}
	}
	return out, diags
}

// checkStageRef requires expr to name a whole stage of the given kind (KIND.NAME).
func checkStageRef(name, kind string, expr hcl.Expression) *hcl.Diagnostic {
	tr, diags := hcl.AbsTraversalForExpr(expr)
	if !diags.HasErrors() && len(tr) == 2 && tr.RootName() == kind {
		if _, ok := tr[1].(hcl.TraverseAttr); ok {
			return nil
		}
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Invalid value for " + name,
		Detail:   fmt.Sprintf("%s must name a whole %s stage, e.g. %s = %s.NAME (the stage itself, not one of its outputs).", name, kind, name, kind),
		Subject:  expr.Range().Ptr(),
	}
}

// sensitiveName reports whether an attribute name marks it as secret by convention.
func sensitiveName(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "token") || strings.Contains(n, "key") || strings.Contains(n, "secret")
}

// unmarkPaths strips every mark from v and returns the paths (prefixed) that carried SensitiveMark.
func unmarkPaths(v cty.Value, prefix cty.Path) (cty.Value, []cty.Path) {
	uv, pvm := v.UnmarkDeepWithPaths()
	var paths []cty.Path
	for _, pm := range pvm {
		if _, ok := pm.Marks[SensitiveMark]; ok {
			paths = append(paths, append(prefix.Copy(), pm.Path...))
		}
	}
	return uv, paths
}

// scrub drops the expression context of diagnostics evaluated in a context that holds sensitive
// values: hcl's diagnostic writer prints the values an expression used ("with var.x as ..."),
// and it skips only values marked at the top level, not a secret nested in an object.
func scrub(diags hcl.Diagnostics) hcl.Diagnostics {
	for _, d := range diags {
		if d.EvalContext != nil && contextHasMarks(d.EvalContext) {
			d.Expression = nil
			d.EvalContext = nil
		}
	}
	return diags
}

func contextHasMarks(ctx *hcl.EvalContext) bool {
	for c := ctx; c != nil; c = c.Parent() {
		for _, v := range c.Variables {
			if v.ContainsMarked() {
				return true
			}
		}
	}
	return false
}

// sortDiags orders diagnostics by file and position (those without a range first), so
// `pipeline validate` reads top to bottom.
func sortDiags(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
}

// listNames completes hcl's "not expected here" errors that found nothing close enough to suggest
// with the names that are expected.
func listNames(diags hcl.Diagnostics, summary, what string, names []string) {
	for _, d := range diags {
		if d.Summary != summary || strings.Contains(d.Detail, "Did you mean") {
			continue
		}
		if len(names) == 0 {
			d.Detail += fmt.Sprintf(" No %s are accepted here.", what)
		} else {
			d.Detail += fmt.Sprintf(" The %s accepted here are: %s.", what, strings.Join(names, ", "))
		}
	}
}
