package train

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
)

// origin says where input value name (= v) came from, as far as the stage can tell: from the
// expression written for `input` (a literal, a variable, a merge() argument), and from comparing
// it with the values of the read-only stages the stage reads (params.tuned chose 16). The stage
// sees only evaluated values, so it reads the expression's source text at its range; when that
// is not at hand (a config not on disk) only the comparison is left.
func origin(req *pipeline.Request, name string, v float64) string {
	from, expr := sourceOrigin(req, name)
	chosen, by := chosenBy(req, name)
	switch {
	case from != "" && by != "" && float64(chosen) != v && strings.Contains(expr, by):
		return fmt.Sprintf("%s, overriding the %s that %s chose", from, chosen.String(), by)
	case from != "":
		return from
	case by != "" && float64(chosen) == v:
		return by + "'s values"
	case by != "":
		return fmt.Sprintf("the input written in this stage, overriding the %s that %s chose", chosen.String(), by)
	}
	return ""
}

// number is a float64 that prints as HCL writes numbers.
type number float64

func (n number) String() string { return limits.Show(float64(n)) }

// chosenBy finds name among the `values` of the read-only stages the stage reads (a params
// stage's choice), returning the value and that stage's address ("" when none has it).
func chosenBy(req *pipeline.Request, name string) (number, string) {
	addrs := make([]string, 0, len(req.Reads))
	for a := range req.Reads {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		out := req.Reads[addr]
		if out == cty.NilVal || !out.IsWhollyKnown() || out.IsNull() || !out.Type().IsObjectType() || !out.Type().HasAttribute("values") {
			continue
		}
		e, ok := attrValue(out.GetAttr("values"), name)
		if !ok {
			continue
		}
		if e.IsNull() || e.Type() != cty.Number {
			continue
		}
		f, _ := e.AsBigFloat().Float64()
		return number(f), addr
	}
	return 0, ""
}

// attrValue is obj.name for an object or a map (ok false when it has none).
func attrValue(obj cty.Value, name string) (cty.Value, bool) {
	switch ty := obj.Type(); {
	case obj.IsNull():
	case ty.IsObjectType() && ty.HasAttribute(name):
		return obj.GetAttr(name), true
	case ty.IsMapType() && obj.HasIndex(cty.StringVal(name)).True():
		return obj.Index(cty.StringVal(name)), true
	}
	return cty.NilVal, false
}

// sourceOrigin describes where the expression written for `input` sets name, and returns that
// expression's text ("" when it cannot tell).
func sourceOrigin(req *pipeline.Request, name string) (from, text string) {
	rng, ok := req.AttrRanges["input"]
	if !ok || rng.Filename == "" {
		return "", ""
	}
	src, err := os.ReadFile(rng.Filename)
	if err != nil || rng.Start.Byte < 0 || rng.End.Byte > len(src) || rng.Start.Byte >= rng.End.Byte {
		return "", ""
	}
	text = string(src[rng.Start.Byte:rng.End.Byte])
	expr, diags := hclsyntax.ParseExpression([]byte(text), rng.Filename, rng.Start)
	if diags.HasErrors() {
		return "", ""
	}
	w := originWalker{src: src, name: name, reads: req}
	from, _ = w.walk(expr)
	return from, text
}

// originWalker looks for the part of an input expression that sets name.
type originWalker struct {
	src   []byte
	name  string
	reads *pipeline.Request
}

// walk returns what in e sets the name; found is false when e certainly does not set it (an
// object without that key, a stage's values without it).
func (w originWalker) walk(e hclsyntax.Expression) (string, bool) {
	switch x := e.(type) {
	case *hclsyntax.ObjectConsExpr:
		for i := len(x.Items) - 1; i >= 0; i-- {
			if key, ok := keyName(x.Items[i].KeyExpr); ok && key == w.name {
				return w.value(x.Items[i].ValueExpr), true
			}
		}
		return "", false
	case *hclsyntax.FunctionCallExpr:
		if x.Name != "merge" {
			return w.expression(e), true
		}
		for i := len(x.Args) - 1; i >= 0; i-- {
			from, ok := w.walk(x.Args[i])
			if !ok {
				continue
			}
			if i == 0 {
				return from + " (in merge())", true
			}
			before := make([]string, i)
			for j := range before {
				before[j] = w.text(x.Args[j])
			}
			return fmt.Sprintf("%s, a merge() argument that overrides %s", from, strings.Join(before, ", ")), true
		}
		return "", false
	case *hclsyntax.ScopeTraversalExpr:
		return w.traversal(x)
	case *hclsyntax.ParenthesesExpr:
		return w.walk(x.Expression)
	}
	return w.expression(e), true
}

// traversal describes a reference that may set the name: a variable or local (its value is not
// visible here), or a read-only stage's values (which tell whether they hold the name).
func (w originWalker) traversal(x *hclsyntax.ScopeTraversalExpr) (string, bool) {
	root := x.Traversal.RootName()
	switch root {
	case "var":
		return "variable " + w.text(x) + " (" + w.at(x) + ")", true
	case "local", "each":
		return w.text(x) + " (" + w.at(x) + ")", true
	}
	if len(x.Traversal) == 3 {
		kind, _ := x.Traversal[1].(hcl.TraverseAttr)
		out, _ := x.Traversal[2].(hcl.TraverseAttr)
		addr := root + "." + kind.Name
		if v, ok := w.reads.Reads[addr]; ok && out.Name == "values" && v.IsWhollyKnown() && !v.IsNull() && v.Type().HasAttribute("values") {
			if _, has := attrValue(v.GetAttr("values"), w.name); !has {
				return "", false
			}
			return addr + ".values", true
		}
	}
	return w.text(x) + " (" + w.at(x) + ")", true
}

// value describes the expression an object key is set to.
func (w originWalker) value(e hclsyntax.Expression) string {
	switch x := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return fmt.Sprintf("the literal %s = %s (%s)", w.name, w.text(x), w.at(x))
	case *hclsyntax.UnaryOpExpr:
		if _, lit := x.Val.(*hclsyntax.LiteralValueExpr); lit {
			return fmt.Sprintf("the literal %s = %s (%s)", w.name, w.text(x), w.at(x))
		}
	case *hclsyntax.TemplateExpr:
		if x.IsStringLiteral() {
			return fmt.Sprintf("the literal %s = %s (%s)", w.name, w.text(x), w.at(x))
		}
	case *hclsyntax.ScopeTraversalExpr:
		from, _ := w.traversal(x)
		return from
	}
	return w.expression(e)
}

func (w originWalker) expression(e hclsyntax.Expression) string {
	return fmt.Sprintf("the expression %s (%s)", w.text(e), w.at(e))
}

// text is an expression's source, shortened.
func (w originWalker) text(e hclsyntax.Expression) string {
	r := e.Range()
	if r.Start.Byte < 0 || r.End.Byte > len(w.src) || r.Start.Byte > r.End.Byte {
		return "(expression)"
	}
	s := strings.Join(strings.Fields(string(w.src[r.Start.Byte:r.End.Byte])), " ")
	if len(s) > 80 {
		s = s[:77] + "…"
	}
	return s
}

// at is where an expression starts, as HCL diagnostics say it ("retrain.hcl:53,46").
func (w originWalker) at(e hclsyntax.Expression) string {
	r := e.Range()
	return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
}

// keyName is an object key written as a name or a literal string.
func keyName(e hclsyntax.Expression) (string, bool) {
	if k, ok := e.(*hclsyntax.ObjectConsKeyExpr); ok {
		if name := hcl.ExprAsKeyword(k.Wrapped); name != "" {
			return name, true
		}
		e = k.Wrapped
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}
