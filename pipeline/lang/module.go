// Package lang evaluates pipeline configurations: it checks a parsed config.Config against the
// registered stage kinds (references, attributes, types, cycles), resolves variable values, and
// evaluates stage bodies, settings and outputs for one batch instance at a time.
//
//	m, diags := lang.Load([]string{"retrain.hcl"}, kinds) // every static error, with ranges
//	vars, d := m.Variables(lang.VarInputs{Environ: os.Environ(), Vars: flagVars})
//	keys, values, d := m.BatchKeys(vars)
//	for _, key := range keys {
//		scope, d := m.NewScope(lang.Instance{Key: key, Batch: true, Value: values[key], Vars: vars})
//		for _, st := range m.Stages() { // topological order
//			inputs, blocks, sensitive, d := scope.EvalStage(st)
//			// ... run the stage, then:
//			scope.SetStage(st.Addr, outputs)
//		}
//	}
//
// Values derived from sensitive variables carry the cty mark SensitiveMark; EvalStage strips marks
// and reports the paths that carried them so callers can redact.
package lang

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty/function"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/config"
	"github.com/pipeline-dev/pipeline/pipeline/dag"
)

// SensitiveMark is the cty mark on values derived from sensitive variables or outputs.
const SensitiveMark = "sensitive"

// Module is a loaded and statically checked configuration bound to the stage kinds.
type Module struct {
	cfg    *config.Config
	kinds  map[string]pipeline.Kind
	stages []*Stage // topological order
	byAddr map[string]*Stage
	graph  *dag.Graph

	vars       map[string]*config.Variable
	localOrder []*config.Local // every local after the locals it uses

	mu    sync.Mutex
	funcs map[string]map[string]function.Function // by base directory
}

// Stage is one declared stage bound to its kind.
type Stage struct {
	// Addr is "KIND.NAME".
	Addr, Kind, Name string
	// Impl is the registered kind; nil only when Load reported the kind as unknown.
	Impl   pipeline.Kind
	Schema *pipeline.Schema
	Config *config.Stage
	// Deps are the stages this one depends on directly, Dependents those depending on it directly
	// (addresses, in file order).
	Deps, Dependents []string
	// AttrRanges are the source ranges of the attribute expressions written in the block.
	AttrRanges map[string]hcl.Range
}

// Load parses the files and checks them against kinds (keyed by kind name). The module is
// returned even with errors (for graph rendering or partial inspection), but must not be run then.
func Load(paths []string, kinds map[string]pipeline.Kind) (*Module, hcl.Diagnostics) {
	cfg, diags := config.LoadWith(paths, config.Options{SettingsBlocks: settingsBlocks(kinds)})
	m, d := build(cfg, kinds)
	diags = append(diags, d...)
	sortDiags(diags)
	return m, diags
}

// LoadSources is Load over in-memory files keyed by name (for tests and fuzzing).
func LoadSources(files map[string][]byte, kinds map[string]pipeline.Kind) (*Module, hcl.Diagnostics) {
	cfg, diags := config.LoadSourcesWith(files, config.Options{SettingsBlocks: settingsBlocks(kinds)})
	m, d := build(cfg, kinds)
	diags = append(diags, d...)
	sortDiags(diags)
	return m, diags
}

// settingsBlocks is "replicate" plus every settings block a kind reads.
func settingsBlocks(kinds map[string]pipeline.Kind) []string {
	names := append([]string(nil), config.DefaultSettingsBlocks...)
	for _, k := range sortedKinds(kinds) {
		if s := schemaOf(kinds[k]); s != nil {
			names = append(names, s.Settings...)
		}
	}
	return names
}

func sortedKinds(kinds map[string]pipeline.Kind) []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// emptySchema stands in for a kind that returns no schema.
var emptySchema = &pipeline.Schema{}

func schemaOf(k pipeline.Kind) *pipeline.Schema {
	if k == nil {
		return nil
	}
	if s := k.Schema(); s != nil {
		return s
	}
	return emptySchema
}

// Config returns the parsed configuration.
func (m *Module) Config() *config.Config { return m.cfg }

// Files returns the parsed files for hcl's diagnostic writer (the configuration, and the var files
// Variables has read).
func (m *Module) Files() map[string]*hcl.File { return m.cfg.Files }

// Graph returns the stage graph.
func (m *Module) Graph() *dag.Graph { return m.graph }

// Stages returns the stages in topological order (dependencies first, ties in file order).
func (m *Module) Stages() []*Stage { return append([]*Stage(nil), m.stages...) }

// Stage returns the stage at addr ("KIND.NAME"), or nil.
func (m *Module) Stage(addr string) *Stage { return m.byAddr[addr] }

// HasBatch reports whether the configuration has a batch block.
func (m *Module) HasBatch() bool { return m.cfg.Batch != nil }

// functions returns the (cached) function table for a base directory.
func (m *Module) functions(baseDir string) map[string]function.Function {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.funcs[baseDir]; ok {
		return f
	}
	f := Functions(baseDir)
	m.funcs[baseDir] = f
	return f
}

func (m *Module) functionsFor(rng hcl.Range) map[string]function.Function {
	return m.functions(m.cfg.BaseDirOf(rng.Filename))
}

// stageKindRoots lists the roots that name stage kinds: registered kinds and the kinds of declared
// stages (an unknown kind is reported once, at its declaration).
func (m *Module) stageKindRoots() map[string]bool {
	roots := map[string]bool{}
	for k := range m.kinds {
		roots[k] = true
	}
	for _, st := range m.cfg.Stages {
		roots[st.Kind] = true
	}
	for _, reserved := range []string{"var", "local", "each"} {
		delete(roots, reserved)
	}
	return roots
}

func build(cfg *config.Config, kinds map[string]pipeline.Kind) (*Module, hcl.Diagnostics) {
	if kinds == nil {
		kinds = map[string]pipeline.Kind{}
	}
	m := &Module{
		cfg:    cfg,
		kinds:  kinds,
		byAddr: map[string]*Stage{},
		graph:  dag.New(),
		vars:   map[string]*config.Variable{},
		funcs:  map[string]map[string]function.Function{},
	}
	var diags hcl.Diagnostics
	for _, v := range cfg.Variables {
		m.vars[v.Name] = v
	}

	kindNames := sortedKinds(kinds)
	var all []*Stage
	for _, cs := range cfg.Stages {
		st := &Stage{Addr: cs.Addr(), Kind: cs.Kind, Name: cs.Name, Config: cs}
		if impl, ok := kinds[cs.Kind]; ok && impl != nil {
			st.Impl = impl
			st.Schema = schemaOf(impl)
			st.AttrRanges = attrRanges(cs.Body, st.Schema)
		} else {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Unknown stage kind %q", cs.Kind),
				Detail: fmt.Sprintf("There is no stage kind named %q.%s The kinds are: %s.",
					cs.Kind, didYouMean(cs.Kind, kindNames), strings.Join(kindNames, ", ")),
				Subject: cs.TypeRange.Ptr(),
				Context: cs.DeclRange.Ptr(),
			})
		}
		m.byAddr[st.Addr] = st
		m.graph.AddNode(st.Addr)
		switch {
		case st.Schema != nil && st.Schema.ReadOnly:
			m.graph.SetNodeAttrs(st.Addr, map[string]string{"style": "rounded,dashed", "tooltip": "read-only: runs during plan"})
		case st.Schema != nil && st.Schema.Remote:
			m.graph.SetNodeAttrs(st.Addr, map[string]string{"style": "rounded,bold", "tooltip": "remote: runs on Replicate"})
		}
		all = append(all, st)
	}

	m.stages = all // file order while checking; evalContext needs every stage
	if cfg.HasSyntaxErrors() {
		// A half-parsed file would only add follow-on errors; report the syntax first.
		return m, diags
	}
	c := &checker{m: m, roots: m.stageKindRoots()}
	diags = append(diags, c.checkAll(all)...)

	order, cycles := m.graph.TopoSort()
	if len(cycles) > 0 {
		diags = append(diags, m.graph.CycleDiagnostics()...)
	}
	placed := map[string]bool{}
	m.stages = nil
	for _, addr := range order {
		placed[addr] = true
		m.stages = append(m.stages, m.byAddr[addr])
	}
	for _, st := range all { // stages on a cycle, in file order, so Stages() lists every stage
		if !placed[st.Addr] {
			m.stages = append(m.stages, st)
		}
	}
	for _, st := range m.stages {
		st.Deps = m.graph.Deps(st.Addr)
		st.Dependents = m.graph.Dependents(st.Addr)
	}
	return m, diags
}

// attrRanges finds where each declared attribute of a stage body is written.
func attrRanges(body hcl.Body, schema *pipeline.Schema) map[string]hcl.Range {
	if body == nil || schema == nil {
		return nil
	}
	content, _, _ := body.PartialContent(bodySchema(schema.Attributes, nil))
	if content == nil {
		return nil
	}
	out := make(map[string]hcl.Range, len(content.Attributes))
	for name, a := range content.Attributes {
		out[name] = a.Expr.Range()
	}
	return out
}
