// Package config parses pipeline HCL files into typed blocks without evaluating any expression:
// variables, locals, the batch block, top-level settings blocks (e.g. "replicate"), the state block,
// stages and outputs. Evaluation is the job of package lang.
//
// Parsing reports every problem it finds (duplicate names, unknown block types, bad labels), each
// as an hcl.Diagnostic whose ranges point into Config.Files so hcl's diagnostic writer can print
// file:line:col and a source snippet:
//
//	cfg, diags := config.Load([]string{"retrain.hcl"})
//	if diags.HasErrors() {
//		wr := hcl.NewDiagnosticTextWriter(os.Stderr, cfg.Files, 100, true)
//		wr.WriteDiagnostics(diags)
//	}
//	for _, st := range cfg.Stages {
//		fmt.Println(st.Kind + "." + st.Name)
//	}
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Config is the parsed, not yet evaluated, content of one or more pipeline files.
type Config struct {
	// Files holds every parsed file by name, for hcl's diagnostic writer (snippets).
	Files map[string]*hcl.File
	// Variables in file order; names are unique.
	Variables []*Variable
	Locals    []*Local
	// Batch is nil when the configuration has no batch block; there is at most one.
	Batch *Batch
	// Settings holds the top-level settings blocks (e.g. "replicate") by block type.
	Settings map[string]*Settings
	// State is the `state { url = "..." }` block, nil when absent.
	State *StateBlock
	// Stages in file order.
	Stages  []*Stage
	Outputs []*Output

	baseDirs     map[string]string
	syntaxErrors bool
}

// HasSyntaxErrors reports whether a file failed to parse; checks beyond the structure would only
// report follow-on noise then.
func (c *Config) HasSyntaxErrors() bool { return c.syntaxErrors }

// Variable is a `variable "NAME" { ... }` block.
type Variable struct {
	Name string
	// Type is the declared type constraint; cty.DynamicPseudoType when `type` is unset or `any`.
	Type cty.Type
	// TypeSet reports whether `type` was written; an untyped variable takes -var and environment
	// values literally as strings.
	TypeSet bool
	// TypeDefaults holds the defaults of optional(TYPE, DEFAULT) object attributes (nil when there
	// are none); apply them to a value before converting it to Type.
	TypeDefaults *typeexpr.Defaults
	// Default is the default converted to Type; cty.NilVal when there is none.
	Default     cty.Value
	Sensitive   bool
	Description string
	Validations []*Validation
	DeclRange   hcl.Range
}

// Validation is a `validation { condition = ..., error_message = ... }` block inside a variable.
type Validation struct {
	Condition, ErrorMessage hcl.Expression
	DeclRange               hcl.Range
}

// Local is one attribute of a `locals { ... }` block.
type Local struct {
	Name      string
	Expr      hcl.Expression
	DeclRange hcl.Range
}

// Batch is the `batch { for_each = ... }` block.
type Batch struct {
	ForEach   hcl.Expression
	DeclRange hcl.Range
}

// Settings is a top-level settings block such as `replicate { ... }`; its attributes are generic.
type Settings struct {
	Name      string
	Body      hcl.Body
	DeclRange hcl.Range
}

// StateBlock is the `state { url = "..." }` block.
type StateBlock struct {
	URL       hcl.Expression
	DeclRange hcl.Range
}

// Stage is a `stage "KIND" "NAME" { ... }` block.
type Stage struct {
	Kind, Name string
	// Body is the block body without depends_on.
	Body hcl.Body
	// DependsOn holds the depends_on entries; each is a KIND.NAME traversal.
	DependsOn []hcl.Traversal
	// DeclRange covers `stage "KIND" "NAME"`; TypeRange is the KIND label and NameRange the NAME
	// label.
	DeclRange, TypeRange, NameRange hcl.Range
	// BaseDir is the absolute directory of the declaring file: relative paths resolve against it.
	BaseDir string
}

// Addr is the stage address "KIND.NAME".
func (s *Stage) Addr() string { return s.Kind + "." + s.Name }

// Output is an `output "NAME" { value = ... }` block.
type Output struct {
	Name        string
	Expr        hcl.Expression
	Sensitive   bool
	Description string
	DeclRange   hcl.Range
}

// DefaultSettingsBlocks are the settings block types Load accepts.
var DefaultSettingsBlocks = []string{"replicate"}

// Options tunes LoadWith and LoadSourcesWith.
type Options struct {
	// SettingsBlocks are the accepted top-level settings block types; nil means
	// DefaultSettingsBlocks. lang passes the union of its kinds' Schema.Settings.
	SettingsBlocks []string
}

// BaseDirOf returns the absolute directory of a loaded file (by the name used in Files), so
// relative paths in locals and outputs resolve like those in stages. Unknown names resolve
// against the working directory.
func (c *Config) BaseDirOf(filename string) string {
	if d, ok := c.baseDirs[filename]; ok {
		return d
	}
	return absDir(filename)
}

// Load reads and parses the given files (".json" files use HCL's JSON syntax).
func Load(paths []string) (*Config, hcl.Diagnostics) {
	return LoadWith(paths, Options{})
}

// LoadWith is Load with options.
func LoadWith(paths []string, opts Options) (*Config, hcl.Diagnostics) {
	p := hclparse.NewParser()
	var files []*hcl.File
	var names []string
	var diags hcl.Diagnostics
	syntaxErrors := false
	if len(paths) == 0 {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No configuration files",
			Detail:   "Give at least one pipeline file, e.g. pipeline validate retrain.hcl.",
		})
	}
	for _, path := range paths {
		src, err := os.ReadFile(path)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read configuration file",
				Detail:   fmt.Sprintf("Reading %s: %s. Check the path and its permissions.", path, unwrapPathErr(err)),
			})
			continue
		}
		f, d := parse(p, src, path)
		diags = append(diags, d...)
		syntaxErrors = syntaxErrors || d.HasErrors()
		if f != nil {
			files = append(files, f)
			names = append(names, path)
		}
	}
	cfg, d := decode(p.Files(), files, names, opts)
	cfg.syntaxErrors = syntaxErrors
	return cfg, append(diags, d...)
}

// LoadSources parses in-memory files keyed by file name, in name order; BaseDir is the directory
// of the given name. It is meant for tests and fuzzing.
func LoadSources(srcs map[string][]byte) (*Config, hcl.Diagnostics) {
	return LoadSourcesWith(srcs, Options{})
}

// LoadSourcesWith is LoadSources with options.
func LoadSourcesWith(srcs map[string][]byte, opts Options) (*Config, hcl.Diagnostics) {
	p := hclparse.NewParser()
	keys := make([]string, 0, len(srcs))
	for k := range srcs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var files []*hcl.File
	var names []string
	var diags hcl.Diagnostics
	syntaxErrors := false
	for _, name := range keys {
		f, d := parse(p, srcs[name], name)
		diags = append(diags, d...)
		syntaxErrors = syntaxErrors || d.HasErrors()
		if f != nil {
			files = append(files, f)
			names = append(names, name)
		}
	}
	cfg, d := decode(p.Files(), files, names, opts)
	cfg.syntaxErrors = syntaxErrors
	return cfg, append(diags, d...)
}

func parse(p *hclparse.Parser, src []byte, name string) (*hcl.File, hcl.Diagnostics) {
	if strings.HasSuffix(name, ".json") {
		return p.ParseJSON(src, name)
	}
	return p.ParseHCL(src, name)
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func absDir(filename string) string {
	d := filepath.Dir(filename)
	if a, err := filepath.Abs(d); err == nil {
		return a
	}
	return d
}

var topSchemaBase = []hcl.BlockHeaderSchema{
	{Type: "variable", LabelNames: []string{"name"}},
	{Type: "locals"},
	{Type: "batch"},
	{Type: "state"},
	{Type: "stage", LabelNames: []string{"kind", "name"}},
	{Type: "output", LabelNames: []string{"name"}},
}

var reservedBlocks = map[string]bool{
	"variable": true, "locals": true, "batch": true, "state": true, "stage": true, "output": true,
}

func decode(all map[string]*hcl.File, files []*hcl.File, names []string, opts Options) (*Config, hcl.Diagnostics) {
	cfg := &Config{
		Files:    all,
		Settings: map[string]*Settings{},
		baseDirs: map[string]string{},
	}
	if cfg.Files == nil {
		cfg.Files = map[string]*hcl.File{}
	}
	settingsNames := opts.SettingsBlocks
	if settingsNames == nil {
		settingsNames = DefaultSettingsBlocks
	}
	schema := &hcl.BodySchema{Blocks: append([]hcl.BlockHeaderSchema(nil), topSchemaBase...)}
	seenSettings := map[string]bool{}
	for _, n := range settingsNames {
		if reservedBlocks[n] || seenSettings[n] || !hclsyntax.ValidIdentifier(n) {
			continue
		}
		seenSettings[n] = true
		schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: n})
	}

	var diags hcl.Diagnostics
	vars := map[string]*Variable{}
	locals := map[string]*Local{}
	stages := map[string]*Stage{}
	outputs := map[string]*Output{}

	for i, f := range files {
		name := names[i]
		baseDir := absDir(name)
		cfg.baseDirs[name] = baseDir
		content, d := f.Body.Content(schema)
		diags = append(diags, d...)
		if content == nil {
			continue
		}
		for _, blk := range content.Blocks {
			switch blk.Type {
			case "variable":
				v, d := decodeVariable(blk)
				diags = append(diags, d...)
				if v == nil {
					continue
				}
				if prev, ok := vars[v.Name]; ok {
					diags = append(diags, duplicate("variable", v.Name, v.DeclRange, prev.DeclRange))
					continue
				}
				vars[v.Name] = v
				cfg.Variables = append(cfg.Variables, v)
			case "locals":
				attrs, d := blk.Body.JustAttributes()
				diags = append(diags, d...)
				for _, a := range sortedAttrs(attrs) {
					if prev, ok := locals[a.Name]; ok {
						diags = append(diags, duplicate("local value", a.Name, a.NameRange, prev.DeclRange))
						continue
					}
					l := &Local{Name: a.Name, Expr: a.Expr, DeclRange: a.NameRange}
					locals[a.Name] = l
					cfg.Locals = append(cfg.Locals, l)
				}
			case "batch":
				b, d := decodeBatch(blk)
				diags = append(diags, d...)
				if b == nil {
					continue
				}
				if cfg.Batch != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Duplicate batch block",
						Detail:   fmt.Sprintf("A configuration has at most one batch block; the first is at %s. Merge the keys into one for_each.", cfg.Batch.DeclRange),
						Subject:  blk.DefRange.Ptr(),
					})
					continue
				}
				cfg.Batch = b
			case "state":
				s, d := decodeState(blk)
				diags = append(diags, d...)
				if s == nil {
					continue
				}
				if cfg.State != nil {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Duplicate state block",
						Detail:   fmt.Sprintf("A configuration has at most one state block; the first is at %s.", cfg.State.DeclRange),
						Subject:  blk.DefRange.Ptr(),
					})
					continue
				}
				cfg.State = s
			case "stage":
				s, d := decodeStage(blk, baseDir)
				diags = append(diags, d...)
				if s == nil {
					continue
				}
				if prev, ok := stages[s.Addr()]; ok {
					diags = append(diags, duplicate("stage", s.Addr(), s.DeclRange, prev.DeclRange))
					continue
				}
				stages[s.Addr()] = s
				cfg.Stages = append(cfg.Stages, s)
			case "output":
				o, d := decodeOutput(blk)
				diags = append(diags, d...)
				if o == nil {
					continue
				}
				if prev, ok := outputs[o.Name]; ok {
					diags = append(diags, duplicate("output", o.Name, o.DeclRange, prev.DeclRange))
					continue
				}
				outputs[o.Name] = o
				cfg.Outputs = append(cfg.Outputs, o)
			default:
				if prev, ok := cfg.Settings[blk.Type]; ok {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  fmt.Sprintf("Duplicate %s block", blk.Type),
						Detail:   fmt.Sprintf("A configuration has at most one %s block; the first is at %s. Merge their attributes.", blk.Type, prev.DeclRange),
						Subject:  blk.DefRange.Ptr(),
					})
					continue
				}
				cfg.Settings[blk.Type] = &Settings{Name: blk.Type, Body: blk.Body, DeclRange: blk.DefRange}
			}
		}
	}
	return cfg, diags
}

// sortedAttrs returns attributes in source order (JustAttributes returns a map).
func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Range, out[j].Range
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
	return out
}

func duplicate(what, name string, rng, prev hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Duplicate %s %q", what, name),
		Detail:   fmt.Sprintf("A %s named %q was already declared at %s. Names must be unique; rename or remove one of them.", what, name, prev),
		Subject:  rng.Ptr(),
	}
}

func checkName(what, name string, rng hcl.Range) *hcl.Diagnostic {
	if hclsyntax.ValidIdentifier(name) {
		return nil
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Invalid %s name", what),
		Detail:   fmt.Sprintf("%q is not a valid name: a name starts with a letter or underscore and contains only letters, digits, underscores and dashes.", name),
		Subject:  rng.Ptr(),
	}
}

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "type"}, {Name: "default"}, {Name: "sensitive"}, {Name: "description"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "condition", Required: true}, {Name: "error_message", Required: true},
	},
}

func decodeVariable(blk *hcl.Block) (*Variable, hcl.Diagnostics) {
	v := &Variable{Name: blk.Labels[0], Type: cty.DynamicPseudoType, DeclRange: blk.DefRange}
	var diags hcl.Diagnostics
	if d := checkName("variable", v.Name, blk.LabelRanges[0]); d != nil {
		diags = append(diags, d)
	}
	content, d := blk.Body.Content(variableSchema)
	diags = append(diags, d...)
	if a, ok := content.Attributes["type"]; ok {
		ty, defaults, d := typeexpr.TypeConstraintWithDefaults(a.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			v.Type = ty
			v.TypeSet = true
			v.TypeDefaults = defaults
		}
	}
	if a, ok := content.Attributes["description"]; ok {
		s, d := staticString(a)
		diags = append(diags, d...)
		v.Description = s
	}
	if a, ok := content.Attributes["sensitive"]; ok {
		b, d := staticBool(a)
		diags = append(diags, d...)
		v.Sensitive = b
	}
	if a, ok := content.Attributes["default"]; ok {
		val, d := a.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			if v.TypeDefaults != nil {
				val = v.TypeDefaults.Apply(val)
			}
			conv, err := convert.Convert(val, v.Type)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid default value for variable",
					Detail:   fmt.Sprintf("The default of variable %q does not match its type %s: %s.", v.Name, typeexpr.TypeString(v.Type), err),
					Subject:  a.Expr.Range().Ptr(),
				})
			} else {
				v.Default = conv
			}
		}
	}
	for _, vb := range content.Blocks {
		vc, d := vb.Body.Content(validationSchema)
		diags = append(diags, d...)
		cond, ok1 := vc.Attributes["condition"]
		msg, ok2 := vc.Attributes["error_message"]
		if ok1 && ok2 {
			v.Validations = append(v.Validations, &Validation{Condition: cond.Expr, ErrorMessage: msg.Expr, DeclRange: vb.DefRange})
		}
	}
	if diags.HasErrors() && v.Name == "" {
		return nil, diags
	}
	return v, diags
}

func staticString(a *hcl.Attribute) (string, hcl.Diagnostics) {
	val, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return "", diags
	}
	val, err := convert.Convert(val, cty.String)
	if err != nil || val.IsNull() || !val.IsKnown() {
		return "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", a.Name),
			Detail:   fmt.Sprintf("%s must be a literal string.", a.Name),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	return val.AsString(), nil
}

func staticBool(a *hcl.Attribute) (bool, hcl.Diagnostics) {
	val, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return false, diags
	}
	val, err := convert.Convert(val, cty.Bool)
	if err != nil || val.IsNull() || !val.IsKnown() {
		return false, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", a.Name),
			Detail:   fmt.Sprintf("%s must be true or false.", a.Name),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	return val.True(), nil
}

var batchSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "for_each", Required: true}}}

func decodeBatch(blk *hcl.Block) (*Batch, hcl.Diagnostics) {
	content, diags := blk.Body.Content(batchSchema)
	a, ok := content.Attributes["for_each"]
	if !ok {
		return nil, diags
	}
	return &Batch{ForEach: a.Expr, DeclRange: blk.DefRange}, diags
}

var stateSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "url", Required: true}}}

func decodeState(blk *hcl.Block) (*StateBlock, hcl.Diagnostics) {
	content, diags := blk.Body.Content(stateSchema)
	a, ok := content.Attributes["url"]
	if !ok {
		return nil, diags
	}
	return &StateBlock{URL: a.Expr, DeclRange: blk.DefRange}, diags
}

var outputSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "value", Required: true}, {Name: "sensitive"}, {Name: "description"},
	},
}

func decodeOutput(blk *hcl.Block) (*Output, hcl.Diagnostics) {
	o := &Output{Name: blk.Labels[0], DeclRange: blk.DefRange}
	var diags hcl.Diagnostics
	if d := checkName("output", o.Name, blk.LabelRanges[0]); d != nil {
		diags = append(diags, d)
	}
	content, d := blk.Body.Content(outputSchema)
	diags = append(diags, d...)
	a, ok := content.Attributes["value"]
	if !ok {
		return nil, diags
	}
	o.Expr = a.Expr
	if a, ok := content.Attributes["description"]; ok {
		s, d := staticString(a)
		diags = append(diags, d...)
		o.Description = s
	}
	if a, ok := content.Attributes["sensitive"]; ok {
		b, d := staticBool(a)
		diags = append(diags, d...)
		o.Sensitive = b
	}
	return o, diags
}

var dependsOnSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "depends_on"}}}

func decodeStage(blk *hcl.Block, baseDir string) (*Stage, hcl.Diagnostics) {
	s := &Stage{
		Kind:      blk.Labels[0],
		Name:      blk.Labels[1],
		DeclRange: blk.DefRange,
		TypeRange: blk.LabelRanges[0],
		NameRange: blk.LabelRanges[1],
		BaseDir:   baseDir,
	}
	var diags hcl.Diagnostics
	if d := checkName("stage kind", s.Kind, s.TypeRange); d != nil {
		diags = append(diags, d)
	}
	if d := checkName("stage", s.Name, s.NameRange); d != nil {
		diags = append(diags, d)
	}
	content, remain, d := blk.Body.PartialContent(dependsOnSchema)
	diags = append(diags, d...)
	s.Body = remain
	if a, ok := content.Attributes["depends_on"]; ok {
		deps, d := decodeDependsOn(a)
		diags = append(diags, d...)
		s.DependsOn = deps
	}
	if diags.HasErrors() && (s.Kind == "" || s.Name == "") {
		return nil, diags
	}
	return s, diags
}

func decodeDependsOn(a *hcl.Attribute) ([]hcl.Traversal, hcl.Diagnostics) {
	exprs, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid depends_on",
			Detail:   "depends_on must be a list of stage addresses, e.g. depends_on = [loss_gate.fit].",
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	var out []hcl.Traversal
	for _, e := range exprs {
		t, d := hcl.AbsTraversalForExpr(e)
		if d.HasErrors() || len(t) != 2 {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid depends_on entry",
				Detail:   "Each depends_on entry must be a stage address KIND.NAME (no quotes, no attribute), e.g. loss_gate.fit.",
				Subject:  e.Range().Ptr(),
			})
			continue
		}
		if _, ok := t[1].(hcl.TraverseAttr); !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid depends_on entry",
				Detail:   "Each depends_on entry must be a stage address KIND.NAME, e.g. loss_gate.fit.",
				Subject:  e.Range().Ptr(),
			})
			continue
		}
		out = append(out, t)
	}
	return out, diags
}
