package lang

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// load is LoadSources with the test kinds for a single file; it fails the test on any error.
func load(t *testing.T, src string) *Module {
	t.Helper()
	m, diags := LoadSources(map[string][]byte{"main.hcl": []byte(src)}, testKinds())
	if diags.HasErrors() {
		t.Fatalf("unexpected diagnostics:\n%s", describe(diags))
	}
	return m
}

func scope(t *testing.T, m *Module, inst Instance) *Scope {
	t.Helper()
	s, diags := m.NewScope(inst)
	if diags.HasErrors() {
		t.Fatalf("NewScope: %s", describe(diags))
	}
	return s
}

func evalStage(t *testing.T, s *Scope, addr string) cty.Value {
	t.Helper()
	st := s.m.Stage(addr)
	if st == nil {
		t.Fatalf("no stage %s", addr)
	}
	in, _, _, diags := s.EvalStage(st)
	if diags.HasErrors() {
		t.Fatalf("EvalStage(%s): %s", addr, describe(diags))
	}
	return in
}

const pipelineSrc = `
stage "check" "photos" {
  dir = "data"
}

stage "work" "lora" {
  images = check.photos.accepted
  steps  = check.photos.count * 100
  input  = { rank = 16, trigger = "TOK" }
}

stage "gate" "fit" {
  training = work.lora
}

stage "work" "after" {
  images     = []
  steps      = gate.fit.passed ? 1 : 2
  label      = work.lora.version
  depends_on = [gate.fit]
}
`

// A stage's inputs see the outputs of the stages set so far; a stage not set yet (a remote
// stage during plan) is an object of unknowns of its declared output types.
func TestReferencesFlowAndUnknowns(t *testing.T) {
	m := load(t, pipelineSrc)
	s := scope(t, m, Instance{})

	check := evalStage(t, s, "check.photos")
	if got := check.GetAttr("dir").AsString(); got != "data" {
		t.Errorf("dir = %q", got)
	}
	if got := check.GetAttr("min_count"); !got.RawEquals(cty.NumberIntVal(15)) {
		t.Errorf("min_count default = %#v, want 15", got)
	}

	// Before check.photos has run, work.lora's inputs that use it are unknown of the right type.
	work := evalStage(t, s, "work.lora")
	if work.GetAttr("images").IsKnown() || !work.GetAttr("images").Type().Equals(cty.List(cty.String)) {
		t.Errorf("images before check ran = %#v, want unknown list(string)", work.GetAttr("images"))
	}
	if !work.GetAttr("input").IsWhollyKnown() {
		t.Errorf("input does not depend on a stage and should be known")
	}

	s.SetStage("check.photos", cty.ObjectVal(map[string]cty.Value{
		"count":    cty.NumberIntVal(2),
		"accepted": cty.ListVal([]cty.Value{cty.StringVal("a.jpg"), cty.StringVal("b.jpg")}),
	}))
	work = evalStage(t, s, "work.lora")
	if got := work.GetAttr("images"); !got.RawEquals(cty.ListVal([]cty.Value{cty.StringVal("a.jpg"), cty.StringVal("b.jpg")})) {
		t.Errorf("images = %#v", got)
	}
	if got := work.GetAttr("steps"); !got.RawEquals(cty.NumberIntVal(200)) {
		t.Errorf("steps = %#v, want 200", got)
	}

	// A remote stage's outputs during plan: unknown. The whole-stage reference is an object
	// whose attributes are unknown, and expressions over it stay unknown.
	s.SetStage("work.lora", cty.UnknownVal(cty.Object(map[string]cty.Type{"version": cty.String, "losses": cty.List(cty.Number)})))
	gate := evalStage(t, s, "gate.fit")
	if gate.GetAttr("training").IsKnown() {
		t.Errorf("training = %#v, want unknown", gate.GetAttr("training"))
	}
	after := evalStage(t, s, "work.after")
	if after.GetAttr("steps").IsKnown() || after.GetAttr("label").IsKnown() {
		t.Errorf("steps/label = %#v/%#v, want unknown (gate.fit and work.lora have not run)", after.GetAttr("steps"), after.GetAttr("label"))
	}

	// A partial object: the missing declared outputs become unknown, the given ones are used.
	s.SetStage("work.lora", cty.ObjectVal(map[string]cty.Value{"version": cty.StringVal("v1")}))
	after = evalStage(t, s, "work.after")
	if got := after.GetAttr("label"); !got.RawEquals(cty.StringVal("v1")) {
		t.Errorf("label = %#v, want v1", got)
	}
	s.SetStage("gate.fit", cty.ObjectVal(map[string]cty.Value{"passed": cty.True}))
	after = evalStage(t, s, "work.after")
	if got := after.GetAttr("steps"); !got.RawEquals(cty.NumberIntVal(1)) {
		t.Errorf("steps = %#v, want 1", got)
	}
}

// Stages come in topological order with ties in file order, and every edge knows its origin.
func TestGraphOrderAndEdges(t *testing.T) {
	src := `
stage "work" "late" {
  images = check.b.accepted
}
stage "check" "b" {
  dir = "b"
}
stage "check" "a" {
  dir = "a"
}
stage "gate" "g" {
  training   = work.late
  depends_on = [check.a]
}
`
	m := load(t, src)
	var order []string
	for _, st := range m.Stages() {
		order = append(order, st.Addr)
	}
	if got, want := strings.Join(order, " "), "check.b work.late check.a gate.g"; got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	g := m.Stage("gate.g")
	if got := strings.Join(g.Deps, ","); got != "work.late,check.a" {
		t.Errorf("gate.g deps = %s", got)
	}
	if got := strings.Join(m.Stage("check.b").Dependents, ","); got != "work.late" {
		t.Errorf("check.b dependents = %s", got)
	}
	edges := m.Graph().EdgesBetween("gate.g", "check.a")
	if len(edges) != 1 || edges[0].Label != "depends_on" || edges[0].Origin.Start.Line != 13 || edges[0].Origin.Filename != "main.hcl" {
		t.Errorf("depends_on edge = %+v", edges)
	}
	edges = m.Graph().EdgesBetween("work.late", "check.b")
	if len(edges) != 1 || edges[0].Label != "images" || edges[0].Origin.Start.Line != 3 || edges[0].Origin.Start.Column != 12 {
		t.Errorf("reference edge = %+v", edges)
	}
	dot := m.Graph().DOT()
	for _, want := range []string{`"check.b" -> "work.late" [label = "images"];`, `"check.a" -> "gate.g" [label = "depends_on", style = dashed];`} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %s:\n%s", want, dot)
		}
	}
}

// Nested blocks: label and attributes evaluated in file order, declared ones converted.
func TestNestedBlocks(t *testing.T) {
	m := load(t, `
stage "work" "lora" {
  images = []
  rule "big" {
    when = true
    rank = 32
  }
  limit "steps" {
    min = "500"
  }
  rule "small" {
    when = false
  }
}
`)
	s := scope(t, m, Instance{})
	_, blocks, _, diags := s.EvalStage(m.Stage("work.lora"))
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	var got []string
	for _, b := range blocks {
		got = append(got, b.Type+":"+strings.Join(b.Labels, ","))
	}
	if strings.Join(got, " ") != "rule:big limit:steps rule:small" {
		t.Errorf("blocks = %v", got)
	}
	if v := blocks[1].Attrs["min"]; !v.RawEquals(cty.NumberIntVal(500)) {
		t.Errorf(`limit min = %#v, want the number 500 converted from "500"`, v)
	}
	if v := blocks[1].Attrs["max"]; !v.IsNull() {
		t.Errorf("absent limit max = %#v, want null", v)
	}
	if v := blocks[0].Attrs["rank"]; !v.RawEquals(cty.NumberIntVal(32)) {
		t.Errorf("free-form rule attribute rank = %#v", v)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const varsSrc = `
variable "subject" {
  type    = string
  default = "ana"
}
variable "steps" {
  type    = number
  default = 1000
  validation {
    condition     = var.steps >= 100
    error_message = "steps must be at least 100, got ${var.steps}."
  }
}
variable "tags" {
  type    = list(string)
  default = []
}
variable "loose" {
  default = "x"
}
variable "required" {
  type = number
}
variable "anyval" {
  type    = any
  default = null
}
variable "opts" {
  type    = object({ rank = optional(number, 16), steps = number })
  default = { steps = 1000 }
}
`

// Precedence, later wins: default < PIPELINE_VAR_x < -var-file (in order) < -var (in order).
func TestVariablePrecedence(t *testing.T) {
	dir := t.TempDir()
	file1 := writeFile(t, dir, "one.hcl", "subject = \"file1\"\nsteps = 300\nrequired = 1\n")
	file2 := writeFile(t, dir, "two.hcl", "subject = \"file2\"\n")
	jsonFile := writeFile(t, dir, "three.json", `{"tags": ["j1", "j2"], "required": 2}`)
	m := load(t, varsSrc)

	tests := []struct {
		name string
		in   VarInputs
		want map[string]cty.Value
	}{
		{"defaults", VarInputs{Vars: []string{"required=0"}}, map[string]cty.Value{
			"subject": cty.StringVal("ana"), "steps": cty.NumberIntVal(1000), "tags": cty.ListValEmpty(cty.String), "loose": cty.StringVal("x"),
		}},
		{"environment beats default; numbers and lists parsed as HCL", VarInputs{
			Environ: []string{"PIPELINE_VAR_subject=env", "PIPELINE_VAR_steps=200", `PIPELINE_VAR_tags=["a", "b"]`, "PIPELINE_VAR_required=7", "PIPELINE_VAR_undeclared=ignored", "HOME=/root"},
		}, map[string]cty.Value{
			"subject": cty.StringVal("env"), "steps": cty.NumberIntVal(200), "tags": cty.ListVal([]cty.Value{cty.StringVal("a"), cty.StringVal("b")}), "required": cty.NumberIntVal(7),
		}},
		{"var-file beats environment, later file beats earlier", VarInputs{
			Environ:  []string{"PIPELINE_VAR_subject=env", "PIPELINE_VAR_steps=200"},
			VarFiles: []string{file1, file2, jsonFile},
		}, map[string]cty.Value{
			"subject": cty.StringVal("file2"), "steps": cty.NumberIntVal(300), "tags": cty.ListVal([]cty.Value{cty.StringVal("j1"), cty.StringVal("j2")}), "required": cty.NumberIntVal(2),
		}},
		{"-var beats var-file, later -var wins", VarInputs{
			VarFiles: []string{file1},
			Vars:     []string{"subject=cli1", "subject=cli2", "steps=150", `tags=["x"]`},
		}, map[string]cty.Value{
			"subject": cty.StringVal("cli2"), "steps": cty.NumberIntVal(150), "tags": cty.ListVal([]cty.Value{cty.StringVal("x")}), "required": cty.NumberIntVal(1),
		}},
		{"string and untyped variables take -var literally", VarInputs{Vars: []string{`subject=["not", "a", "list"]`, "loose=[1]", "required=3"}}, map[string]cty.Value{
			"subject": cty.StringVal(`["not", "a", "list"]`), "loose": cty.StringVal("[1]"),
		}},
		{"type any parses HCL and falls back to a string", VarInputs{Vars: []string{"required=1", "anyval=hello"}}, map[string]cty.Value{
			"anyval": cty.StringVal("hello"),
		}},
		{"type any keeps HCL values", VarInputs{Vars: []string{"required=1", "anyval={ a = 1 }"}}, map[string]cty.Value{
			"anyval": cty.ObjectVal(map[string]cty.Value{"a": cty.NumberIntVal(1)}),
		}},
		{"optional attributes take their defaults", VarInputs{Vars: []string{"required=1"}}, map[string]cty.Value{
			"opts": cty.ObjectVal(map[string]cty.Value{"rank": cty.NumberIntVal(16), "steps": cty.NumberIntVal(1000)}),
		}},
		{"optional attributes from -var", VarInputs{Vars: []string{"required=1", "opts={ steps = 5 }"}}, map[string]cty.Value{
			"opts": cty.ObjectVal(map[string]cty.Value{"rank": cty.NumberIntVal(16), "steps": cty.NumberIntVal(5)}),
		}},
		{"AllowUnset makes a required variable unknown", VarInputs{AllowUnset: true}, map[string]cty.Value{
			"required": cty.UnknownVal(cty.Number),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, diags := m.Variables(tt.in)
			if diags.HasErrors() {
				t.Fatal(describe(diags))
			}
			for name, want := range tt.want {
				if !got[name].RawEquals(want) {
					t.Errorf("%s = %#v, want %#v", name, got[name], want)
				}
			}
		})
	}
}

// Bad variable values are errors that say where the value came from and what is expected.
func TestVariableErrors(t *testing.T) {
	dir := t.TempDir()
	badFile := writeFile(t, dir, "bad.hcl", "steps = \"many\"\nstep = 3\nrequired = 1\n")
	m := load(t, varsSrc)
	tests := []struct {
		name string
		in   VarInputs
		want []string // substrings of the errors, in order
	}{
		{"missing required", VarInputs{}, []string{`No value for required variable: Variable "required" has no default`}},
		{"undeclared -var", VarInputs{Vars: []string{"required=1", "stpes=3"}}, []string{`-var sets "stpes"`, `Did you mean "steps"?`}},
		{"malformed -var", VarInputs{Vars: []string{"required=1", "steps"}}, []string{"not of the form NAME=VALUE"}},
		{"wrong type from -var", VarInputs{Vars: []string{"required=1", "steps=lots"}}, []string{`The value from -var steps for variable "steps" is not a number`}},
		{"bad list syntax", VarInputs{Vars: []string{"required=1", "tags=[a"}}, []string{`type list(string)) is not a valid HCL expression`}},
		{"validation", VarInputs{Vars: []string{"required=1", "steps=5"}}, []string{"steps must be at least 100, got 5."}},
		{"wrong type in var file", VarInputs{VarFiles: []string{badFile}}, []string{`is not a number`}},
		{"missing var file", VarInputs{Vars: []string{"required=1"}, VarFiles: []string{filepath.Join(dir, "nope.hcl")}}, []string{"Cannot read variable file", "nope.hcl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := m.Variables(tt.in)
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			text := describe(diags)
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("diagnostics lack %q:\n%s", w, text)
				}
			}
		})
	}
	// An undeclared name in a var file is only a warning, pointing at the file.
	_, diags := m.Variables(VarInputs{VarFiles: []string{writeFile(t, dir, "warn.hcl", "required = 1\nstep = 3\n")}})
	if diags.HasErrors() || len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || diags[0].Subject.Start.Line != 2 {
		t.Errorf("want one warning on line 2, got:\n%s", describe(diags))
	}
	// The var file's source is available for snippets.
	var buf strings.Builder
	hcl.NewDiagnosticTextWriter(&buf, m.Files(), 100, false).WriteDiagnostics(diags)
	if !strings.Contains(buf.String(), "2: step = 3") {
		t.Errorf("no snippet of the var file:\n%s", buf.String())
	}
}

// Sensitive values: marked in Variables, stripped by EvalStage and reported as paths, together
// with attributes declared sensitive or named like secrets.
func TestSensitive(t *testing.T) {
	m := load(t, `
variable "secret" {
  type      = string
  default   = "hunter2"
  sensitive = true
}
variable "public" {
  type    = string
  default = "ok"
}
stage "work" "lora" {
  images = []
  label  = "prefix-${var.secret}"
  input  = { visible = var.public, hidden = var.secret, hf_token = "t", nested = [{ wandb_api_key = "k" }] }
  rule "r" {
    when   = true
    pass   = var.secret
    api_key = "k"
  }
}
output "leak" {
  value = var.secret
}
output "declared" {
  value     = "plain"
  sensitive = true
}
output "plain" {
  value = var.public
}
`)
	vars, diags := m.Variables(VarInputs{})
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	if !vars["secret"].HasMark(SensitiveMark) || vars["public"].IsMarked() {
		t.Fatalf("marks: secret %v public %v", vars["secret"].HasMark(SensitiveMark), vars["public"].IsMarked())
	}
	s := scope(t, m, Instance{Vars: vars})
	in, blocks, sensitive, diags := s.EvalStage(m.Stage("work.lora"))
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	if in.ContainsMarked() || blocks[0].Attrs["pass"].ContainsMarked() {
		t.Fatal("EvalStage must return unmarked values")
	}
	if got := in.GetAttr("label").AsString(); got != "prefix-hunter2" {
		t.Errorf("label = %q", got)
	}
	var got []string
	for _, p := range sensitive {
		got = append(got, formatPath(p))
	}
	want := []string{"label", "input.hidden", "hf_token", "note", "[0].pass", "[0].api_key", "input.hf_token", "input.nested[0].wandb_api_key"}
	if !sameSet(got, want) {
		t.Errorf("sensitive paths = %v, want %v", got, want)
	}
	outs, diags := s.EvalOutputs()
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	if !outs["leak"].HasMark(SensitiveMark) || !outs["declared"].HasMark(SensitiveMark) || outs["plain"].IsMarked() {
		t.Errorf("output marks: leak %v declared %v plain %v", outs["leak"].HasMark(SensitiveMark), outs["declared"].HasMark(SensitiveMark), outs["plain"].IsMarked())
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

// each.key and each.value: keys sorted; sets and lists give the key as value, maps the element.
func TestBatchKeys(t *testing.T) {
	tests := []struct {
		name      string
		forEach   string
		vars      VarInputs
		keys      string
		valueOfB  cty.Value
		wantError string
		atLoad    bool // the keys are known without variables, so validate already reports it
	}{
		{name: "set", forEach: `toset(["c", "a", "b"])`, keys: "a b c", valueOfB: cty.StringVal("b")},
		{name: "list", forEach: `["b", "a"]`, keys: "a b", valueOfB: cty.StringVal("b")},
		{name: "map", forEach: `{ b = { steps = 2 }, a = { steps = 1 } }`, keys: "a b", valueOfB: cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(2)})},
		{name: "from a variable", forEach: `var.people`, vars: VarInputs{Vars: []string{`people=["b"]`}}, keys: "b", valueOfB: cty.StringVal("b")},
		{name: "unknown", forEach: `var.people`, vars: VarInputs{AllowUnset: true}, wantError: "must be known at plan time"},
		{name: "sensitive", forEach: `var.hidden`, wantError: "must not depend on sensitive values"},
		{name: "sensitive keys in a list", forEach: `[for h in var.hidden : h]`, wantError: "must not depend on sensitive values"},
		{name: "map values may be unknown", forEach: `{ a = var.people, b = "b" }`, vars: VarInputs{AllowUnset: true}, keys: "a b", valueOfB: cty.StringVal("b")},
		{name: "map values may be sensitive", forEach: `{ a = var.hidden, b = "b" }`, keys: "a b", valueOfB: cty.StringVal("b")},
		{name: "null", forEach: `null`, wantError: "must not be null", atLoad: true},
		{name: "empty key", forEach: `[""]`, wantError: "must not be empty", atLoad: true},
		{name: "not a collection", forEach: `var.hidden == null ? 1 : 2`, wantError: "must be a set or list of strings, or a map", atLoad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := `
variable "people" {
  type = list(string)
}
variable "hidden" {
  type      = set(string)
  default   = ["x"]
  sensitive = true
}
batch {
  for_each = ` + tt.forEach + `
}
stage "check" "photos" {
  dir = "data/${each.key}"
}
`
			m, diags := LoadSources(map[string][]byte{"main.hcl": []byte(src)}, testKinds())
			if tt.atLoad {
				if !strings.Contains(describe(diags), tt.wantError) || diags[0].Subject.Start.Line != 11 {
					t.Fatalf("want error %q on line 11 at load, got:\n%s", tt.wantError, describe(diags))
				}
				return
			}
			if diags.HasErrors() {
				t.Fatal(describe(diags))
			}
			if tt.vars.Vars == nil && !tt.vars.AllowUnset {
				tt.vars.Vars = []string{`people=[]`}
			}
			vars, diags := m.Variables(tt.vars)
			if diags.HasErrors() {
				t.Fatal(describe(diags))
			}
			keys, values, diags := m.BatchKeys(vars)
			if tt.wantError != "" {
				if !strings.Contains(describe(diags), tt.wantError) {
					t.Fatalf("want error %q, got:\n%s", tt.wantError, describe(diags))
				}
				if diags[0].Subject == nil || diags[0].Subject.Start.Line != 11 {
					t.Errorf("the error should point at for_each (line 11): %+v", diags[0].Subject)
				}
				return
			}
			if diags.HasErrors() {
				t.Fatal(describe(diags))
			}
			if got := strings.Join(keys, " "); got != tt.keys {
				t.Errorf("keys = %q, want %q", got, tt.keys)
			}
			if !values["b"].RawEquals(tt.valueOfB) {
				t.Errorf("value of b = %#v, want %#v", values["b"], tt.valueOfB)
			}
			// each.key reaches the stage.
			k := keys[0]
			s := scope(t, m, Instance{Key: k, Batch: true, Value: values[k], Vars: vars})
			if got := evalStage(t, s, "check.photos").GetAttr("dir").AsString(); got != "data/"+k {
				t.Errorf("dir = %q", got)
			}
		})
	}

	m := load(t, `stage "check" "photos" { dir = "x" }`)
	if keys, _, diags := m.BatchKeys(nil); keys != nil || diags != nil || m.HasBatch() {
		t.Errorf("without batch: keys %v diags %v", keys, diags)
	}
}

// Locals, settings and the state url see var, local and each but no stage.
func TestLocalsSettingsState(t *testing.T) {
	m := load(t, `
variable "bucket" {
  type    = string
  default = "b"
}
locals {
  model = "${local.owner}/${each.key}-lora"
  owner = "acme"
  shout = upper(each.value.name)
}
batch {
  for_each = { ana = { name = "Ana" } }
}
replicate {
  destination = local.model
  hardware    = "gpu-t4"
}
state {
  url = "s3://${var.bucket}/pipelines"
}
stage "check" "photos" {
  dir = local.shout
}
`)
	vars, _ := m.Variables(VarInputs{})
	keys, values, diags := m.BatchKeys(vars)
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	s := scope(t, m, Instance{Key: keys[0], Batch: true, Value: values[keys[0]], Vars: vars})
	rep, diags := s.EvalSettings("replicate")
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	if got := rep.GetAttr("destination").AsString(); got != "acme/ana-lora" {
		t.Errorf("destination = %q", got)
	}
	if v, _ := s.EvalSettings("absent"); !v.RawEquals(cty.EmptyObjectVal) {
		t.Errorf("absent settings = %#v", v)
	}
	url, diags := s.EvalStateURL()
	if diags.HasErrors() || url != "s3://b/pipelines" {
		t.Errorf("state url = %q %s", url, describe(diags))
	}
	if got := evalStage(t, s, "check.photos").GetAttr("dir").AsString(); got != "ANA" {
		t.Errorf("dir = %q", got)
	}
}

// Type errors point at the offending expression exactly, so the snippet underlines it.
func TestTypeErrorRange(t *testing.T) {
	_, diags := LoadSources(map[string][]byte{"main.hcl": []byte(`stage "check" "photos" {
  dir       = "x"
  min_count = "many"
}
`)}, testKinds())
	if len(diags) != 1 {
		t.Fatalf("want one diagnostic, got:\n%s", describe(diags))
	}
	r := diags[0].Subject
	if r.Start.Line != 3 || r.Start.Column != 15 || r.End.Column != 21 {
		t.Errorf("range = %s, want main.hcl:3,15-21", r)
	}
	if diags[0].Detail != `Inappropriate value for attribute "min_count": a number is required.` {
		t.Errorf("detail = %q", diags[0].Detail)
	}
}

// File functions resolve relative paths against the directory of the declaring file.
func TestFileFunctions(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "cfg/data/a.jpg", "")
	writeFile(t, dir, "cfg/data/x/b.jpg", "")
	writeFile(t, dir, "cfg/data/x/c.png", "")
	writeFile(t, dir, "cfg/prompt.tpl", "a photo of ${word}")
	path := writeFile(t, dir, "cfg/main.hcl", `
locals {
  jpgs   = fileset("data", "**/*.jpg")
  top    = fileset("data", "*")
  prompt = templatefile("prompt.tpl", { word = "TOK" })
  exists = [fileexists("data/a.jpg"), fileexists("data/none.jpg")]
  abs    = abspath("data")
  base   = basename("data/x/b.jpg")
}
output "all" {
  value = {
    jpgs   = local.jpgs
    top    = local.top
    prompt = local.prompt
    exists = local.exists
    abs    = local.abs
    base   = local.base
  }
}
`)
	m, diags := Load([]string{path}, testKinds())
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	s := scope(t, m, Instance{})
	outs, diags := s.EvalOutputs()
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	all := outs["all"]
	check := func(name string, want cty.Value) {
		t.Helper()
		if got := all.GetAttr(name); !got.RawEquals(want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	check("jpgs", cty.SetVal([]cty.Value{cty.StringVal("a.jpg"), cty.StringVal("x/b.jpg")}))
	check("top", cty.SetVal([]cty.Value{cty.StringVal("a.jpg")}))
	check("prompt", cty.StringVal("a photo of TOK"))
	check("exists", cty.TupleVal([]cty.Value{cty.True, cty.False}))
	check("abs", cty.StringVal(filepath.Join(dir, "cfg", "data")))
	check("base", cty.StringVal("b.jpg"))

	writeFile(t, dir, "cfg/bin.dat", "\xff\xfe")
	for _, tt := range []struct{ expr, want string }{
		{`templatefile("prompt.tpl", {})`, `uses "word", which is not in the vars`},
		{`file("missing.txt")`, "reading missing.txt: no such file or directory (relative paths resolve against the directory of the configuration file)"},
		{`file("bin.dat")`, "bin.dat is not valid UTF-8 text; use filebase64"},
		{`fileexists("data")`, "data is not a regular file"},
		{`fileset("data", "[")`, `invalid pattern "["`},
	} {
		_, diags = LoadSources(map[string][]byte{filepath.Join(dir, "cfg", "bad.hcl"): []byte("locals {\n  t = " + tt.expr + "\n}\n")}, testKinds())
		if !strings.Contains(describe(diags), tt.want) {
			t.Errorf("%s: want an error containing %q, got:\n%s", tt.expr, tt.want, describe(diags))
		}
	}
	m, diags = LoadSources(map[string][]byte{filepath.Join(dir, "cfg", "b.hcl"): []byte(`output "b" {
  value = [filebase64("bin.dat"), filesha256("prompt.tpl")]
}`)}, testKinds())
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	outs, _ = scope(t, m, Instance{}).EvalOutputs()
	want := cty.TupleVal([]cty.Value{cty.StringVal("//4="), cty.StringVal("936625f5b3bb8e354dc52b316a708859bb806a356655b98d41dcbd661a4e951e")})
	if got := outs["b"]; !got.RawEquals(want) {
		t.Errorf("filebase64/filesha256 = %#v, want %#v", got, want)
	}
}

// Diagnostics never carry a context that would let hcl's writer print a sensitive value, and a
// validation message that uses one is not shown.
func TestSensitiveNeverInDiagnostics(t *testing.T) {
	m := load(t, `
variable "secret" {
  type      = string
  sensitive = true
  validation {
    condition     = length(var.secret) > 3
    error_message = "too short: ${var.secret}"
  }
}
variable "count" {
  type = string
}
locals {
  cfg = { n = var.count, s = var.secret }
}
stage "check" "photos" {
  dir       = "x"
  min_count = local.cfg.n
}
`)
	_, diags := m.Variables(VarInputs{Vars: []string{"secret=ab", "count=1"}})
	if text := describe(diags); !strings.Contains(text, "it is not shown") || strings.Contains(text, "ab\n") || strings.Contains(text, "too short: ab") {
		t.Errorf("validation message leaks or is missing:\n%s", text)
	}
	vars, diags := m.Variables(VarInputs{Vars: []string{"secret=hunter2", "count=many"}})
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	s := scope(t, m, Instance{Vars: vars})
	_, _, _, diags = s.EvalStage(m.Stage("check.photos"))
	if !diags.HasErrors() {
		t.Fatal("want a conversion error for min_count = \"many\"")
	}
	for _, d := range diags {
		if d.EvalContext != nil || d.Expression != nil {
			t.Errorf("diagnostic %q keeps an evaluation context holding a sensitive value", d.Summary)
		}
	}
	var buf strings.Builder
	hcl.NewDiagnosticTextWriter(&buf, m.Files(), 100, false).WriteDiagnostics(diags)
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("secret printed:\n%s", buf.String())
	}
}

// As in Terraform, an attribute set to null is unset: its default applies.
func TestNullMeansDefault(t *testing.T) {
	m := load(t, `
stage "check" "photos" {
  dir       = "x"
  min_count = null
  patterns  = null
}
`)
	in := evalStage(t, scope(t, m, Instance{}), "check.photos")
	if got := in.GetAttr("min_count"); !got.RawEquals(cty.NumberIntVal(15)) {
		t.Errorf("min_count = %#v, want the default 15", got)
	}
	if got := in.GetAttr("patterns"); got.LengthInt() != 1 {
		t.Errorf("patterns = %#v, want the default", got)
	}
}

// Where each.key may appear: anywhere evaluated per instance when there is a batch block; never
// in for_each itself, the state block, or without a batch.
func TestEachPlacement(t *testing.T) {
	const batch = "batch {\n  for_each = [\"a\"]\n}\n"
	tests := []struct {
		name, src, wantError string
	}{
		{"stage without batch", `stage "check" "p" { dir = each.key }`, "each.key is only available inside a batch"},
		{"local without batch", "locals {\n  x = each.value\n}", "each.key is only available inside a batch"},
		{"output without batch", "output \"o\" {\n  value = each.key\n}", "each.key is only available inside a batch"},
		{"for_each", "batch {\n  for_each = [each.key]\n}", "cannot use each.key or each.value itself"},
		{"state block", batch + "state {\n  url = each.key\n}", "shared by every batch instance"},
		{"unknown attribute", batch + `stage "check" "p" { dir = each.name }`, "nothing else is under each"},
		{"stage in batch", batch + `stage "check" "p" { dir = each.key }`, ""},
		{"local in batch", batch + "locals {\n  x = each.value\n}", ""},
		{"settings in batch", batch + "replicate {\n  destination = \"acme/${each.key}\"\n}", ""},
		{"output in batch", batch + "output \"o\" {\n  value = each.key\n}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := LoadSources(map[string][]byte{"main.hcl": []byte(tt.src)}, testKinds())
			text := describe(diags)
			switch {
			case tt.wantError == "" && len(diags) > 0:
				t.Errorf("unexpected diagnostics:\n%s", text)
			case tt.wantError != "" && (len(diags) != 1 || !strings.Contains(text, tt.wantError)):
				t.Errorf("want exactly one error containing %q, got:\n%s", tt.wantError, text)
			}
		})
	}
}

// Type errors are found before anything runs, with variables and stage outputs unknown of their
// declared types, and point at the offending expression.
func TestTypeErrors(t *testing.T) {
	const vars = "variable \"n\" {\n  type = number\n}\nvariable \"l\" {\n  type = list(string)\n}\n"
	tests := []struct {
		name, body, want string // body goes into stage "check" "p" on line 10
	}{
		{"string literal for a number", `min_count = "many"`, `attribute "min_count": a number is required`},
		{"number variable is fine for a number", `min_count = var.n`, ""},
		{"numeric string converts", `min_count = "12"`, ""},
		{"list variable for a number", `min_count = var.l`, `number required, but have list of string`},
		{"stage output of the wrong type", `dir = check.q.accepted`, `string required, but have list of string`},
		{"object attribute of the wrong type", `exposure = { max_dark = [1], max_bright = 1 }`, `"max_dark": number required`},
		{"missing object attribute", `exposure = { max_dark = 1 }`, `attribute "max_bright" is required`},
		{"operator on a string", `min_count = "a" + 1`, `Unsuitable value for left operand`},
		{"function argument", `min_count = max("x", 1)`, `Invalid function argument`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := vars + "\nstage \"check\" \"p\" {\n  dir = \"d\"\n  " + tt.body + "\n}\nstage \"check\" \"q\" {\n  dir = \"d\"\n}\n"
			wantLine := 10
			if strings.HasPrefix(tt.body, "dir =") {
				src = strings.Replace(src, "  dir = \"d\"\n  dir", "  dir", 1)
				wantLine = 9
			}
			_, diags := LoadSources(map[string][]byte{"main.hcl": []byte(src)}, testKinds())
			text := describe(diags)
			if tt.want == "" {
				if len(diags) > 0 {
					t.Errorf("unexpected diagnostics:\n%s", text)
				}
				return
			}
			if len(diags) != 1 || !strings.Contains(text, tt.want) {
				t.Fatalf("want one error containing %q, got:\n%s", tt.want, text)
			}
			if line := diags[0].Subject.Start.Line; line != wantLine {
				t.Errorf("error on line %d, want %d", line, wantLine)
			}
		})
	}
}

// A configuration may span files: references cross them, names are unique across them, and
// each stage resolves relative paths against its own file's directory.
func TestMultipleFiles(t *testing.T) {
	files := map[string][]byte{
		"a/one.hcl": []byte("stage \"check\" \"photos\" {\n  dir = abspath(\"data\")\n}\n"),
		"b/two.hcl": []byte("stage \"work\" \"lora\" {\n  images = check.photos.accepted\n  label  = abspath(\"x\")\n}\n"),
	}
	m, diags := LoadSources(files, testKinds())
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	if got := strings.Join(m.Stage("work.lora").Deps, ","); got != "check.photos" {
		t.Errorf("cross-file deps = %q", got)
	}
	s := scope(t, m, Instance{})
	wantA, _ := filepath.Abs("a/data")
	wantB, _ := filepath.Abs("b/x")
	if got := evalStage(t, s, "check.photos").GetAttr("dir").AsString(); got != wantA {
		t.Errorf("dir = %q, want %q", got, wantA)
	}
	if got := evalStage(t, s, "work.lora").GetAttr("label").AsString(); got != wantB {
		t.Errorf("label = %q, want %q", got, wantB)
	}

	files["b/two.hcl"] = append(files["b/two.hcl"], []byte("stage \"check\" \"photos\" {\n  dir = \"y\"\n}\n")...)
	_, diags = LoadSources(files, testKinds())
	if len(diags) != 1 || diags[0].Subject.Filename != "b/two.hcl" || !strings.Contains(diags[0].Detail, "already declared at a/one.hcl:1,1") {
		t.Errorf("want one duplicate error in b/two.hcl naming a/one.hcl, got:\n%s", describe(diags))
	}
}
