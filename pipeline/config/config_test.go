package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

const full = `
variable "subject" {
  type        = string
  description = "Who the LoRA is of."
}

variable "steps" {
  type      = number
  default   = "1000"
  sensitive = true

  validation {
    condition     = var.steps > 0
    error_message = "steps must be positive."
  }
}

variable "anything" {}

locals {
  b = 2
  a = 1
}

batch {
  for_each = toset(["ana"])
}

replicate {
  trainer = "owner/model:v"
}

state {
  url = "mem://"
}

stage "image_check" "photos" {
  dir = "data"
}

stage "train" "lora" {
  images     = image_check.photos.accepted
  depends_on = [image_check.photos]
}

output "version" {
  value       = train.lora.version
  description = "The new version."
  sensitive   = true
}
`

func TestLoadSourcesDecodesEveryBlock(t *testing.T) {
	cfg, diags := LoadSources(map[string][]byte{"dir/main.hcl": []byte(full)})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(cfg.Variables) != 3 {
		t.Fatalf("variables = %d", len(cfg.Variables))
	}
	subject, steps, anything := cfg.Variables[0], cfg.Variables[1], cfg.Variables[2]
	if subject.Name != "subject" || subject.Type != cty.String || subject.Default != cty.NilVal || subject.Description != "Who the LoRA is of." || !subject.TypeSet {
		t.Errorf("subject = %+v", subject)
	}
	if !steps.Default.RawEquals(cty.NumberIntVal(1000)) || !steps.Sensitive || len(steps.Validations) != 1 {
		t.Errorf("steps: default %#v (want converted to the number 1000), sensitive %v, validations %d", steps.Default, steps.Sensitive, len(steps.Validations))
	}
	if anything.Type != cty.DynamicPseudoType || anything.TypeSet {
		t.Errorf("untyped variable type = %#v", anything.Type)
	}
	if len(cfg.Locals) != 2 || cfg.Locals[0].Name != "b" || cfg.Locals[1].Name != "a" {
		t.Errorf("locals must keep file order: %+v", cfg.Locals)
	}
	if cfg.Batch == nil || cfg.State == nil || cfg.Settings["replicate"] == nil {
		t.Errorf("batch %v state %v replicate %v", cfg.Batch, cfg.State, cfg.Settings["replicate"])
	}
	if len(cfg.Stages) != 2 {
		t.Fatalf("stages = %d", len(cfg.Stages))
	}
	train := cfg.Stages[1]
	if train.Addr() != "train.lora" || len(train.DependsOn) != 1 || train.DependsOn[0].RootName() != "image_check" {
		t.Errorf("train = %+v", train)
	}
	wantDir, _ := filepath.Abs("dir")
	if train.BaseDir != wantDir {
		t.Errorf("BaseDir = %q, want %q", train.BaseDir, wantDir)
	}
	if train.TypeRange.Start.Line != 41 || train.TypeRange.Start.Column != 7 || train.NameRange.Start.Column != 15 {
		t.Errorf("label ranges: %s %s", train.TypeRange, train.NameRange)
	}
	// depends_on is not part of the body handed to the kind.
	attrs, _ := train.Body.JustAttributes()
	if _, ok := attrs["depends_on"]; ok || attrs["images"] == nil {
		t.Errorf("body attributes = %v", attrs)
	}
	if o := cfg.Outputs[0]; o.Name != "version" || !o.Sensitive || o.Description != "The new version." {
		t.Errorf("output = %+v", o)
	}
	if cfg.Files["dir/main.hcl"] == nil {
		t.Error("Files lacks the source for snippets")
	}
}

// Every structural error is reported, each with its location.
func TestLoadReportsAllStructuralErrors(t *testing.T) {
	src := `
variable "x" {}
variable "x" {}
stage "a" {}
stage "k" "n" {}
stage "k" "n" {}
stage "k" "m" {
  depends_on = [k.n.out, "k.n", k]
}
unknown {}
output "o" {}
batch {}
variable "t" {
  type = strng
}
`
	_, diags := LoadSources(map[string][]byte{"main.hcl": []byte(src)})
	want := map[int]string{
		3:  `Duplicate variable "x"`,
		4:  "Missing name for stage",
		6:  `Duplicate stage "k.n"`,
		8:  "Invalid depends_on entry",
		10: "Unsupported block type",
		11: "Missing required argument",
		12: "Missing required argument",
		14: `The keyword "strng" is not a valid type specification.`,
	}
	got := map[int][]string{}
	for _, d := range diags {
		if d.Subject == nil {
			t.Errorf("no range: %s", d.Summary)
			continue
		}
		got[d.Subject.Start.Line] = append(got[d.Subject.Start.Line], d.Summary+": "+d.Detail)
	}
	for line, w := range want {
		if !strings.Contains(strings.Join(got[line], "\n"), w) {
			t.Errorf("line %d: want %q, got %q", line, w, got[line])
		}
	}
	if n := len(got[8]); n != 3 {
		t.Errorf("each bad depends_on entry is its own error, got %d: %v", n, got[8])
	}
	if len(got) != len(want) {
		t.Errorf("errors on lines %v, want only %v", keys(got), want)
	}
}

func keys(m map[int][]string) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestLoadFilesAndSettingsBlocks(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.hcl")
	b := filepath.Join(dir, "sub", "b.hcl")
	os.MkdirAll(filepath.Dir(b), 0o755)
	os.WriteFile(a, []byte("stage \"k\" \"one\" {}\nnotify {\n  url = \"x\"\n}\n"), 0o644)
	os.WriteFile(b, []byte("stage \"k\" \"two\" {}\n"), 0o644)

	cfg, diags := Load([]string{a, b})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), `Blocks of type "notify" are not expected here`) {
		t.Errorf("notify is not a default settings block: %v", diags)
	}
	cfg, diags = LoadWith([]string{a, b}, Options{SettingsBlocks: []string{"replicate", "notify"}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if cfg.Settings["notify"] == nil || len(cfg.Stages) != 2 {
		t.Fatalf("settings %v stages %d", cfg.Settings, len(cfg.Stages))
	}
	if cfg.Stages[1].BaseDir != filepath.Dir(b) || cfg.BaseDirOf(a) != dir {
		t.Errorf("base dirs: %q %q", cfg.Stages[1].BaseDir, cfg.BaseDirOf(a))
	}

	_, diags = Load([]string{filepath.Join(dir, "missing.hcl")})
	if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "missing.hcl") {
		t.Errorf("missing file: %v", diags)
	}
}

func TestJSONSyntax(t *testing.T) {
	cfg, diags := LoadSources(map[string][]byte{"p.hcl.json": []byte(`{"stage": {"k": {"n": {"x": 1, "depends_on": ["k.m"]}}}}`)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if len(cfg.Stages) != 1 || cfg.Stages[0].Addr() != "k.n" || len(cfg.Stages[0].DependsOn) != 1 {
		t.Errorf("stages = %+v", cfg.Stages)
	}
}
