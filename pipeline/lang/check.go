package lang

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/config"
	"github.com/pipeline-dev/pipeline/pipeline/dag"
)

// place says where an expression sits, which decides what it may reference.
type place int

const (
	inStage place = iota
	inOutput
	inLocal
	inSettings
	inState
	inForEach
	inValidation
)

// checker runs the static checks of Load.
type checker struct {
	m     *Module
	roots map[string]bool // names that denote stage kinds
	diags hcl.Diagnostics
}

func (c *checker) add(d ...*hcl.Diagnostic) { c.diags = append(c.diags, d...) }

// refSite is one expression being checked.
type refSite struct {
	place place
	stage *Stage // inStage
	owner string // for messages: `local.x`, `the replicate block`, ...
	self  string // inValidation: the variable's name
}

// checkRefs reports invalid references in expr. It returns false if any was invalid (evaluating
// the expression would only repeat the error), the locals it uses, and the stages it references
// with the traversal range (for edges).
func (c *checker) checkRefs(expr hcl.Expression, site refSite) (ok bool, locals []string, stages []stageRef) {
	ok = true
	bad := func(d *hcl.Diagnostic) {
		ok = false
		if d.Context == nil {
			d.Context = expr.Range().Ptr() // the snippet shows the whole expression
		}
		c.add(d)
	}
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		rng := tr.SourceRange()
		attr := ""
		if len(tr) > 1 {
			if a, isAttr := tr[1].(hcl.TraverseAttr); isAttr {
				attr = a.Name
			}
		}
		switch {
		case root == "var":
			if attr == "" {
				bad(invalidRef(rng, "A variable is referenced as var.NAME."))
				continue
			}
			if site.place == inValidation && attr != site.self {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid reference in variable validation",
					Detail:   fmt.Sprintf("A validation rule of variable %q can only refer to var.%s itself.", site.self, site.self),
					Subject:  rng.Ptr(),
				})
				continue
			}
			if c.m.vars[attr] == nil {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Reference to undeclared input variable",
					Detail:   fmt.Sprintf("No variable named %q is declared.%s Declare it with a variable %q block.", attr, didYouMean(attr, sortedKeys(c.m.vars)), attr),
					Subject:  rng.Ptr(),
				})
			}
		case root == "local":
			if attr == "" {
				bad(invalidRef(rng, "A local value is referenced as local.NAME."))
				continue
			}
			if site.place == inValidation {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid reference in variable validation",
					Detail:   fmt.Sprintf("A validation rule of variable %q can only refer to var.%s itself.", site.self, site.self),
					Subject:  rng.Ptr(),
				})
				continue
			}
			if c.localDecl(attr) == nil {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Reference to undeclared local value",
					Detail:   fmt.Sprintf("No local value named %q is declared.%s Declare it in a locals block.", attr, didYouMean(attr, c.localNames())),
					Subject:  rng.Ptr(),
				})
				continue
			}
			locals = append(locals, attr)
		case root == "each":
			switch {
			case c.m.cfg.Batch == nil:
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  `Reference to "each" outside a batch`,
					Detail:   "each.key is only available inside a batch: add a batch { for_each = ... } block, or use a variable instead.",
					Subject:  rng.Ptr(),
				})
			case site.place == inForEach:
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  `Reference to "each" in for_each`,
					Detail:   "for_each defines the batch keys, so it cannot use each.key or each.value itself.",
					Subject:  rng.Ptr(),
				})
			case site.place == inValidation || site.place == inState:
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  `Invalid reference to "each"`,
					Detail:   fmt.Sprintf("%s is shared by every batch instance, so it cannot use each.key or each.value.", site.owner),
					Subject:  rng.Ptr(),
				})
			case attr != "key" && attr != "value":
				bad(invalidRef(rng, "Inside a batch, each.key is the instance key and each.value its value; nothing else is under each."))
			}
		case c.roots[root]:
			if site.place != inStage && site.place != inOutput {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Stage reference not allowed here",
					Detail:   fmt.Sprintf("%s cannot refer to a stage: it is evaluated before any stage runs. Reference %s directly in the stage that needs it.", site.owner, traversalString(tr, 2)),
					Subject:  rng.Ptr(),
				})
				continue
			}
			if attr == "" {
				bad(invalidRef(rng, fmt.Sprintf("A stage is referenced as %s.NAME (its whole output object) or %s.NAME.OUTPUT.", root, root)))
				continue
			}
			addr := root + "." + attr
			target := c.m.byAddr[addr]
			if target == nil {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Reference to undeclared stage",
					Detail:   fmt.Sprintf("No stage %q is declared.%s Declare it with a stage %q %q block.", addr, didYouMean(addr, c.stageAddrs()), root, attr),
					Subject:  rng.Ptr(),
				})
				continue
			}
			if site.place == inStage && target == site.stage {
				bad(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Self-referential stage",
					Detail:   fmt.Sprintf("Stage %s refers to itself; a stage can only use the outputs of other stages.", addr),
					Subject:  rng.Ptr(),
				})
				continue
			}
			if len(tr) > 2 && target.Schema != nil {
				if out, isAttr := tr[2].(hcl.TraverseAttr); isAttr {
					if _, declared := target.Schema.Outputs[out.Name]; !declared {
						bad(&hcl.Diagnostic{
							Severity: hcl.DiagError,
							Summary:  "Unsupported stage output",
							Detail: fmt.Sprintf("Stages of kind %s have no output %q.%s Their outputs are: %s.",
								root, out.Name, didYouMean(out.Name, sortedKeys(target.Schema.Outputs)), strings.Join(sortedKeys(target.Schema.Outputs), ", ")),
							Subject: rng.Ptr(),
						})
						continue
					}
				}
			}
			stages = append(stages, stageRef{addr: addr, rng: rng})
		default:
			roots := []string{"var", "local", "each"}
			for r := range c.roots {
				roots = append(roots, r)
			}
			bad(&hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unknown reference",
				Detail: fmt.Sprintf("There is no %q: references are var.NAME, local.NAME, each.key or each.value (in a batch), or KIND.NAME of a stage.%s",
					root, didYouMean(root, roots)),
				Subject: rng.Ptr(),
			})
		}
	}
	return ok, locals, stages
}

type stageRef struct {
	addr string
	rng  hcl.Range
}

func invalidRef(rng hcl.Range, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid reference", Detail: detail, Subject: rng.Ptr()}
}

// traversalString renders the first n steps of a traversal, e.g. "train.lora".
func traversalString(tr hcl.Traversal, n int) string {
	parts := []string{tr.RootName()}
	for i := 1; i < len(tr) && i < n; i++ {
		if a, ok := tr[i].(hcl.TraverseAttr); ok {
			parts = append(parts, a.Name)
		}
	}
	return strings.Join(parts, ".")
}

func (c *checker) localDecl(name string) *config.Local {
	for _, l := range c.m.cfg.Locals {
		if l.Name == name {
			return l
		}
	}
	return nil
}

func (c *checker) localNames() []string {
	var out []string
	for _, l := range c.m.cfg.Locals {
		out = append(out, l.Name)
	}
	return out
}

func (c *checker) stageAddrs() []string {
	var out []string
	for _, st := range c.m.cfg.Stages {
		out = append(out, st.Addr())
	}
	return out
}

// checkAll runs every static check: references, locals order, types (with every variable and
// stage output unknown of its declared type), depends_on and the stage graph's edges.
func (c *checker) checkAll(stages []*Stage) hcl.Diagnostics {
	cfg := c.m.cfg

	// Locals: references first, then an order in which each follows the locals it uses.
	localOK := map[string]bool{}
	lg := dag.New()
	for _, l := range cfg.Locals {
		lg.AddNode("local." + l.Name)
	}
	for _, l := range cfg.Locals {
		ok, uses, _ := c.checkRefs(l.Expr, refSite{place: inLocal, owner: "local." + l.Name})
		localOK[l.Name] = ok
		for _, u := range uses {
			lg.AddEdge(dag.Edge{From: "local." + l.Name, To: "local." + u, Origin: l.Expr.Range()})
		}
	}
	order, cycles := lg.TopoSort()
	for _, cy := range cycles {
		first := c.localDecl(strings.TrimPrefix(cy.Nodes[0], "local."))
		c.add(&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Cycle between local values: " + cy.String(),
			Detail:   "These local values use each other, so none can be evaluated first. Remove one of the references.",
			Subject:  first.DeclRange.Ptr(),
		})
	}
	for _, name := range order {
		c.m.localOrder = append(c.m.localOrder, c.localDecl(strings.TrimPrefix(name, "local.")))
	}

	// The static environment: variables unknown of their types, each unknown, stages unknown.
	vars := map[string]cty.Value{}
	for _, v := range cfg.Variables {
		vars[v.Name] = cty.UnknownVal(v.Type)
	}
	env := evalEnv{vars: objectOf(vars), locals: map[string]cty.Value{}}
	if cfg.Batch != nil {
		env.each = unknownEach
	}
	for _, l := range c.m.localOrder {
		if !localOK[l.Name] {
			env.locals[l.Name] = cty.DynamicVal
			continue
		}
		ctx := c.m.evalContext(cfg.BaseDirOf(l.DeclRange.Filename), env)
		v, d := l.Expr.Value(ctx)
		c.add(d...)
		if d.HasErrors() {
			v = cty.DynamicVal
		}
		env.locals[l.Name] = v
	}
	for _, l := range cfg.Locals { // locals on a cycle
		if _, done := env.locals[l.Name]; !done {
			env.locals[l.Name] = cty.DynamicVal
		}
	}

	for _, v := range cfg.Variables {
		for _, rule := range v.Validations {
			site := refSite{place: inValidation, self: v.Name, owner: fmt.Sprintf("the validation of variable %q", v.Name)}
			c.checkRefs(rule.Condition, site)
			c.checkRefs(rule.ErrorMessage, site)
		}
	}

	if b := cfg.Batch; b != nil {
		if ok, _, _ := c.checkRefs(b.ForEach, refSite{place: inForEach, owner: "the batch for_each"}); ok {
			ctx := c.m.evalContext(cfg.BaseDirOf(b.DeclRange.Filename), evalEnv{vars: env.vars, locals: env.locals})
			val, d := b.ForEach.Value(ctx)
			c.add(d...)
			ty := val.Type()
			switch {
			case d.HasErrors():
			case val.IsKnown() && (ty.IsMapType() || ty.IsObjectType() || val.IsWhollyKnown()):
				_, _, d := batchKeysOf(val, b.ForEach)
				c.add(d...)
			case ty.IsPrimitiveType():
				// Unknown until variables are set, but the type is already wrong.
				c.add(&hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid batch keys",
					Detail:   fmt.Sprintf("for_each must be a set or list of strings, or a map; found %s.", ty.FriendlyName()),
					Subject:  b.ForEach.Range().Ptr(),
				})
			}
		}
	}

	for _, name := range sortedKeys(cfg.Settings) {
		set := cfg.Settings[name]
		site := refSite{place: inSettings, owner: fmt.Sprintf("the %s block", name)}
		ctx := c.m.evalContext(cfg.BaseDirOf(set.DeclRange.Filename), env)
		vals, d := evalAnyAttrs(set.Body, ctx, name+".", func(expr hcl.Expression, _ string) bool {
			ok, _, _ := c.checkRefs(expr, site)
			return ok
		})
		c.add(d...)
		c.checkSettingsAttributes(name, set, vals)
	}

	if st := cfg.State; st != nil {
		if ok, _, _ := c.checkRefs(st.URL, refSite{place: inState, owner: "the state block"}); ok {
			ctx := c.m.evalContext(cfg.BaseDirOf(st.DeclRange.Filename), env)
			_, d := evalExpr(st.URL, ctx, cty.String, "url", "the state url", nil)
			c.add(d...)
		}
	}

	withStages := env
	withStages.stage = unknownOutputs
	for _, st := range stages {
		for _, tr := range st.Config.DependsOn {
			c.checkDependsOn(st, tr)
		}
		if st.Schema == nil {
			continue // unknown kind: already reported
		}
		site := refSite{place: inStage, stage: st, owner: "stage " + st.Addr}
		ctx := c.m.evalContext(st.Config.BaseDir, withStages)
		_, _, d := evalStageBody(st.Config.Body, st.Schema, ctx, func(expr hcl.Expression, label string) bool {
			ok, _, refs := c.checkRefs(expr, site)
			for _, r := range refs {
				c.m.graph.AddEdge(dag.Edge{From: st.Addr, To: r.addr, Label: label, Origin: r.rng})
			}
			return ok
		})
		c.add(d...)
	}

	for _, o := range cfg.Outputs {
		if ok, _, _ := c.checkRefs(o.Expr, refSite{place: inOutput, owner: fmt.Sprintf("output %q", o.Name)}); ok {
			ctx := c.m.evalContext(cfg.BaseDirOf(o.DeclRange.Filename), withStages)
			_, d := o.Expr.Value(ctx)
			c.add(d...)
		}
	}
	return c.diags
}

// checkDependsOn validates one depends_on entry and records its edge.
func (c *checker) checkDependsOn(st *Stage, tr hcl.Traversal) {
	rng := tr.SourceRange()
	root := tr.RootName()
	name := tr[1].(hcl.TraverseAttr).Name // config guarantees KIND.NAME
	addr := root + "." + name
	if !c.roots[root] {
		c.add(&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid depends_on entry",
			Detail:   fmt.Sprintf("%s is not a stage address: depends_on lists stages as KIND.NAME, e.g. loss_gate.fit.%s", addr, didYouMean(addr, c.stageAddrs())),
			Subject:  rng.Ptr(),
		})
		return
	}
	target := c.m.byAddr[addr]
	switch {
	case target == nil:
		c.add(&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Reference to undeclared stage",
			Detail:   fmt.Sprintf("depends_on names %s, which is not declared.%s", addr, didYouMean(addr, c.stageAddrs())),
			Subject:  rng.Ptr(),
		})
	case target == st:
		c.add(&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Self-referential stage",
			Detail:   fmt.Sprintf("Stage %s lists itself in depends_on.", addr),
			Subject:  rng.Ptr(),
		})
	default:
		c.m.graph.AddEdge(dag.Edge{From: st.Addr, To: addr, Label: "depends_on", Origin: rng})
	}
}

// checkSettingsAttributes rejects attributes of a settings block that no registered kind reads,
// and holds the known values of those it declares to their constraints.
func (c *checker) checkSettingsAttributes(name string, set *config.Settings, vals map[string]cty.Value) {
	declared := map[string]*pipeline.Attribute{}
	for _, k := range sortedKinds(c.m.kinds) {
		s := schemaOf(c.m.kinds[k])
		if s == nil {
			continue
		}
		for attr, a := range s.SettingsAttributes[name] {
			declared[attr] = a
		}
	}
	if len(declared) == 0 {
		return // no kind describes this block: nothing to hold it against
	}
	attrs, _ := set.Body.JustAttributes()
	names := sortedKeys(declared)
	obj := objectOf(vals)
	for _, an := range sortedKeys(attrs) {
		attr := attrs[an]
		if a, ok := declared[an]; ok {
			if msg := a.Problem(name+"."+an, vals[an], obj); msg != "" {
				c.add(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for " + name + "." + an, Detail: msg,
					Subject: attr.Expr.Range().Ptr()})
			}
			continue
		}
		if _, ok := declared[an]; !ok {
			c.add(&hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unsupported argument",
				Detail:   fmt.Sprintf("An argument named %q is not expected in the %s block.%s Its arguments are: %s.", an, name, didYouMean(an, names), strings.Join(names, ", ")),
				Subject:  attr.NameRange.Ptr(),
				Context:  attr.Range.Ptr(),
			})
		}
	}
}
