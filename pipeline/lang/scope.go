package lang

import (
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Instance is one batch instance (or the single instance of a configuration without batch).
type Instance struct {
	// Key is the batch key ("" outside a batch).
	Key   string
	Batch bool
	// Value is each.value (the key itself for a set of keys).
	Value cty.Value
	// Vars are the variable values from Module.Variables.
	Vars map[string]cty.Value
}

// Scope evaluates expressions for one instance. Stage outputs arrive through SetStage as stages
// finish; until then references to a stage are unknown of its declared output types. A Scope is
// safe for concurrent use.
type Scope struct {
	m      *Module
	inst   Instance
	vars   cty.Value
	each   cty.Value
	locals map[string]cty.Value

	mu     sync.Mutex
	stages map[string]cty.Value
}

// NewScope evaluates the locals for one instance and returns a scope with no stage outputs yet.
// Variables missing from inst.Vars are unknown of their declared type.
func (m *Module) NewScope(inst Instance) (*Scope, hcl.Diagnostics) {
	s := &Scope{m: m, inst: inst, stages: map[string]cty.Value{}}
	s.vars = m.varsObject(inst.Vars)
	switch {
	case inst.Batch:
		val := inst.Value
		if val == cty.NilVal {
			val = cty.StringVal(inst.Key)
		}
		s.each = cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(inst.Key), "value": val})
	case m.HasBatch():
		s.each = unknownEach
	default:
		s.each = cty.NilVal
	}
	var diags hcl.Diagnostics
	s.locals, diags = m.evalLocals(s.vars, s.each)
	return s, scrub(diags)
}

var unknownEach = cty.ObjectVal(map[string]cty.Value{"key": cty.UnknownVal(cty.String), "value": cty.DynamicVal})

// varsObject builds the `var` object; undeclared names are dropped, missing ones are unknown.
func (m *Module) varsObject(vals map[string]cty.Value) cty.Value {
	attrs := map[string]cty.Value{}
	for _, v := range m.cfg.Variables {
		val, ok := vals[v.Name]
		if !ok || val == cty.NilVal {
			val = cty.UnknownVal(v.Type)
			if v.Sensitive {
				val = val.Mark(SensitiveMark)
			}
		}
		attrs[v.Name] = val
	}
	return objectOf(attrs)
}

// evalLocals evaluates the locals in dependency order; a local that fails is unknown.
func (m *Module) evalLocals(vars, each cty.Value) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	locals := map[string]cty.Value{}
	for _, l := range m.localOrder {
		ctx := m.evalContext(m.cfg.BaseDirOf(l.DeclRange.Filename), evalEnv{vars: vars, locals: locals, each: each})
		v, d := l.Expr.Value(ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			v = cty.DynamicVal
		}
		locals[l.Name] = v
	}
	return locals, diags
}

// SetStage records the whole output object of a stage (it may be unknown or partly unknown).
// Declared outputs missing from a known object become unknown; after apply, pass nulls explicitly.
func (s *Scope) SetStage(addr string, outputs cty.Value) {
	v := completeOutputs(s.m.byAddr[addr], outputs)
	s.mu.Lock()
	s.stages[addr] = v
	s.mu.Unlock()
}

func (s *Scope) stageValue(st *Stage) cty.Value {
	s.mu.Lock()
	v, ok := s.stages[st.Addr]
	s.mu.Unlock()
	if !ok {
		return unknownOutputs(st)
	}
	return v
}

func (s *Scope) env(withStages bool) evalEnv {
	e := evalEnv{vars: s.vars, locals: s.locals, each: s.each}
	if withStages {
		e.stage = s.stageValue
	}
	return e
}

// EvalStage evaluates a stage body against its kind's schema: every declared attribute converted
// to its type (defaults filled in), nested blocks in file order. Values come back unmarked;
// sensitive lists the paths to redact: those that carried SensitiveMark and attributes declared
// Sensitive or named like a secret (token, key, secret). A path starting with GetAttrStep points
// into inputs; one starting with IndexStep{i} points into blocks[i].Attrs (then GetAttrStep{attr}).
func (s *Scope) EvalStage(st *Stage) (inputs cty.Value, blocks []pipeline.Block, sensitive []cty.Path, diags hcl.Diagnostics) {
	if st == nil || st.Schema == nil || st.Config == nil {
		addr := "<nil>"
		if st != nil {
			addr = st.Addr
		}
		return cty.DynamicVal, nil, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Stage cannot be evaluated",
			Detail:   fmt.Sprintf("Stage %s has no registered kind; fix the configuration errors reported by validate first.", addr),
		}}
	}
	ctx := s.m.evalContext(st.Config.BaseDir, s.env(true))
	inputs, blocks, diags = evalStageBody(st.Config.Body, st.Schema, ctx, nil)
	inputs, sensitive = unmarkPaths(inputs, nil)
	for _, name := range sortedKeys(st.Schema.Attributes) {
		if a := st.Schema.Attributes[name]; (a != nil && a.Sensitive) || sensitiveName(name) {
			sensitive = addPath(sensitive, cty.GetAttrPath(name))
		}
	}
	for _, p := range secretNamedPaths(inputs, nil) {
		sensitive = addPath(sensitive, p)
	}
	for i := range blocks {
		b := &blocks[i]
		var declared map[string]*pipeline.Attribute
		if bs := st.Schema.Blocks[b.Type]; bs != nil {
			declared = bs.Attributes
		}
		for _, name := range sortedKeys(b.Attrs) {
			prefix := cty.Path{cty.IndexStep{Key: cty.NumberIntVal(int64(i))}, cty.GetAttrStep{Name: name}}
			v, paths := unmarkPaths(b.Attrs[name], prefix)
			b.Attrs[name] = v
			for _, p := range paths {
				sensitive = addPath(sensitive, p)
			}
			if a := declared[name]; (a != nil && a.Sensitive) || sensitiveName(name) {
				sensitive = addPath(sensitive, prefix)
			}
			for _, p := range secretNamedPaths(v, prefix) {
				sensitive = addPath(sensitive, p)
			}
		}
	}
	return inputs, blocks, sensitive, scrub(diags)
}

// secretNamedPaths finds object attributes and map keys named like secrets (token, key, secret)
// anywhere inside v, e.g. input.hf_token in a train stage's free-form input map. A path already
// inside such a value is not descended into.
func secretNamedPaths(v cty.Value, prefix cty.Path) []cty.Path {
	if !v.IsKnown() || v.IsNull() {
		return nil
	}
	ty := v.Type()
	var out []cty.Path
	switch {
	case ty.IsObjectType() || ty.IsMapType():
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			name := k.AsString()
			var step cty.PathStep = cty.IndexStep{Key: k}
			if ty.IsObjectType() {
				step = cty.GetAttrStep{Name: name}
			}
			p := append(prefix.Copy(), step)
			if sensitiveName(name) {
				out = append(out, p)
				continue
			}
			out = append(out, secretNamedPaths(e, p)...)
		}
	case ty.IsListType() || ty.IsTupleType():
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			out = append(out, secretNamedPaths(e, append(prefix.Copy(), cty.IndexStep{Key: k}))...)
		}
	}
	return out
}

func addPath(paths []cty.Path, p cty.Path) []cty.Path {
	for _, q := range paths {
		if q.Equals(p) {
			return paths
		}
	}
	return append(paths, p)
}

// EvalSettings evaluates a top-level settings block (e.g. "replicate") into an object of its
// attributes, unmarked; cty.EmptyObjectVal when the block is absent.
func (s *Scope) EvalSettings(name string) (cty.Value, hcl.Diagnostics) {
	set := s.m.cfg.Settings[name]
	if set == nil {
		return cty.EmptyObjectVal, nil
	}
	ctx := s.m.evalContext(s.m.cfg.BaseDirOf(set.DeclRange.Filename), s.env(false))
	attrs, diags := evalAnyAttrs(set.Body, ctx, name+".", nil)
	obj, _ := unmarkPaths(objectOf(attrs), nil)
	return obj, scrub(diags)
}

// EvalOutputs evaluates the output blocks. Values keep their marks: outputs declared sensitive
// and values derived from sensitive variables carry SensitiveMark.
func (s *Scope) EvalOutputs() (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	out := map[string]cty.Value{}
	for _, o := range s.m.cfg.Outputs {
		ctx := s.m.evalContext(s.m.cfg.BaseDirOf(o.DeclRange.Filename), s.env(true))
		v, d := o.Expr.Value(ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			v = cty.DynamicVal
		}
		if o.Sensitive {
			v = v.Mark(SensitiveMark)
		}
		out[o.Name] = v
	}
	return out, scrub(diags)
}

// EvalStateURL evaluates `state { url = ... }`; "" when there is no state block.
func (s *Scope) EvalStateURL() (string, hcl.Diagnostics) {
	st := s.m.cfg.State
	if st == nil {
		return "", nil
	}
	ctx := s.m.evalContext(s.m.cfg.BaseDirOf(st.DeclRange.Filename), s.env(false))
	v, diags := evalExpr(st.URL, ctx, cty.String, "url", "the state url", nil)
	if diags.HasErrors() {
		return "", scrub(diags)
	}
	v, _ = v.UnmarkDeep()
	if !v.IsKnown() || v.IsNull() {
		return "", append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "State url must be known",
			Detail:   "The state url must be a string known before anything runs: give the variables it uses a value.",
			Subject:  st.URL.Range().Ptr(),
		})
	}
	return v.AsString(), diags
}

// BatchKeys evaluates batch.for_each: a set or list of strings (each.value is the key) or a map
// or object (each.value is the element, which may be unknown or carry SensitiveMark; the keys
// may not). Keys come back sorted. Without a batch block it returns no keys and no error.
func (m *Module) BatchKeys(vars map[string]cty.Value) (keys []string, values map[string]cty.Value, diags hcl.Diagnostics) {
	b := m.cfg.Batch
	if b == nil {
		return nil, nil, nil
	}
	varsObj := m.varsObject(vars)
	locals, diags := m.evalLocals(varsObj, unknownEach)
	ctx := m.evalContext(m.cfg.BaseDirOf(b.DeclRange.Filename), evalEnv{vars: varsObj, locals: locals})
	val, d := b.ForEach.Value(ctx)
	diags = append(diags, d...)
	if d.HasErrors() {
		return nil, nil, scrub(diags)
	}
	keys, values, d = batchKeysOf(val, b.ForEach)
	return keys, values, scrub(append(diags, d...))
}

func batchKeysOf(val cty.Value, expr hcl.Expression) ([]string, map[string]cty.Value, hcl.Diagnostics) {
	fail := func(summary, detail string) ([]string, map[string]cty.Value, hcl.Diagnostics) {
		return nil, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   detail,
			Subject:  expr.Range().Ptr(),
		}}
	}
	const sensitiveKeys = "for_each must not depend on sensitive values: batch keys appear in addresses, output and state."
	const unknownKeys = "The batch keys must be known at plan time, but for_each depends on a value that is not known yet (a variable without a value, or a stage output). Give the variables it uses a value with -var, -var-file or PIPELINE_VAR_NAME."
	if val.IsMarked() {
		return fail("Invalid batch keys", sensitiveKeys)
	}
	if !val.IsKnown() {
		return fail("Invalid batch keys", unknownKeys)
	}
	if val.IsNull() {
		return fail("Invalid batch keys", "for_each must not be null: give a set or list of strings, or a map.")
	}
	ty := val.Type()
	values := map[string]cty.Value{}
	var keys []string
	add := func(k string, v cty.Value) *hcl.Diagnostic {
		if k == "" {
			return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid batch keys", Detail: "A batch key must not be empty.", Subject: expr.Range().Ptr()}
		}
		if _, dup := values[k]; dup {
			return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid batch keys", Detail: fmt.Sprintf("The batch key %q appears twice; keys must be unique (wrap the list in toset() to drop duplicates).", k), Subject: expr.Range().Ptr()}
		}
		values[k] = v
		keys = append(keys, k)
		return nil
	}
	switch {
	case ty.IsSetType() || ty.IsListType() || ty.IsTupleType():
		// The elements are the keys: each must be known and not sensitive.
		if val.ContainsMarked() {
			return fail("Invalid batch keys", sensitiveKeys)
		}
		if !val.IsWhollyKnown() {
			return fail("Invalid batch keys", unknownKeys)
		}
		for it := val.ElementIterator(); it.Next(); {
			_, e := it.Element()
			s, err := convert.Convert(e, cty.String)
			if err != nil || s.IsNull() {
				return fail("Invalid batch keys", fmt.Sprintf("for_each is a collection, so its elements must be strings (the keys); found %s.", describeType(e)))
			}
			if d := add(s.AsString(), s); d != nil {
				return nil, nil, hcl.Diagnostics{d}
			}
		}
	case ty.IsMapType() || ty.IsObjectType():
		for it := val.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if d := add(k.AsString(), e); d != nil {
				return nil, nil, hcl.Diagnostics{d}
			}
		}
	default:
		return fail("Invalid batch keys", fmt.Sprintf("for_each must be a set or list of strings, or a map; found %s.", describeType(val)))
	}
	sort.Strings(keys)
	return keys, values, nil
}

func describeType(v cty.Value) string {
	if v.IsNull() {
		return "null"
	}
	return v.Type().FriendlyName()
}
