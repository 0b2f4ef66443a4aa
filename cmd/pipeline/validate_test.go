package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// validBase is the smallest valid config with one stage of every kind, each attribute on a line
// of its own so a case can replace one.
const validBase = `replicate {
  trainer     = "ostris/flux-dev-lora-trainer:abc123"
  destination = "acme/ana-lora"
}
stage "image_check" "photos" {
  dir = "photos"
}
stage "params" "tuned" {
  image_count = image_check.photos.count
}
stage "train" "lora" {
  images = image_check.photos.accepted
  input  = params.tuned.values
}
stage "loss_gate" "fit" {
  training = train.lora
}
stage "generate" "check" {
  version = train.lora.version
  prompts = ["a photo of TOK"]
}
stage "prune" "old" {
  model = "acme/ana-lora"
}
`

// checkedBad are bad values for the rules a schema states as a Check (or a stage reference):
// the generic cases below cover OneOf, bounds, whole numbers and durations from the schemas alone.
var checkedBad = map[string]string{
	"image_check.dir":       `""`,
	"image_check.patterns":  `["["]`,
	"image_check.max_count": `10`, // below the default min_count 15
	"image_check.exposure":  `{ max_dark = 2 }`,
	"train.trainer":         `"ostris/flux-dev-lora-trainer"`,
	"train.destination":     `"acme/ana:1"`,
	"train.poll_interval":   `"10ms"`,
	"loss_gate.max_loss":    `0.1`, // not above the default min_loss 0.2
	"loss_gate.training":    `image_check.photos`,
	"generate.version":      `"abc123"`,
	"generate.prompts":      `[]`,
	"generate.seeds":        `[1, 1]`,
	"generate.out_dir":      `""`,
	"generate.reference":    `image_check.photos.stats`,
	"generate.gate":         `train.lora`,
	"generate.params":       `train.lora`,
	"generate.training":     `params.tuned`,
	"prune.model":           `"acme/ana:1"`,
	"prune.keep":            `["acme/bob:x"]`,
	"replicate.trainer":     `"ostris/flux-dev-lora-trainer"`,
	"replicate.destination": `"acme/ana-lora:1"`,
	"replicate.prices":      `{ "gpu-h100" = -1 }`,
}

// badValues lists, for one attribute, the values its schema refuses.
func badValues(t *testing.T, addr string, a *pipeline.Attribute) []string {
	var out []string
	if v, ok := checkedBad[addr]; ok {
		out = append(out, v)
	} else if a.Check != nil || a.StageKind != "" {
		t.Errorf("%s has a rule the table cannot derive: add a bad value to checkedBad", addr)
	}
	if len(a.OneOf) > 0 {
		out = append(out, `"bogus"`)
	}
	if a.Duration && a.Check == nil {
		out = append(out, `"soon"`)
	}
	if a.Min != nil {
		below := *a.Min - 1
		if a.ExclusiveMin {
			below = *a.Min
		}
		out = append(out, fmt.Sprint(below))
	}
	if a.Max != nil {
		out = append(out, fmt.Sprint(*a.Max+1))
	}
	if a.Whole {
		w := 1.5
		if a.Min != nil && *a.Min > 1 {
			w = *a.Min + 0.5
		}
		out = append(out, fmt.Sprint(w))
	}
	return out
}

// withAttr writes value for attr into the block whose header starts with header (replacing the
// attribute's line when the base has it) and returns the config with the line and column where
// the value starts.
func withAttr(base, header, attr, value string) (string, int, int) {
	lines := strings.Split(base, "\n")
	var out []string
	line, col := 0, 0
	in := false
	for _, l := range lines {
		trimmed := strings.TrimSpace(l)
		if in && strings.HasPrefix(trimmed, attr+" ") {
			continue // replaced below
		}
		out = append(out, l)
		if strings.HasPrefix(l, header) {
			in = true
			prefix := "  " + attr + " = "
			out = append(out, prefix+value)
			line, col = len(out), len(prefix)+1
		} else if trimmed == "}" {
			in = false
		}
	}
	return strings.Join(out, "\n"), line, col
}

// Every constraint every kind's schema declares is enforced by validate, at the value's line and
// column, with exit 1: validate and plan hold the same rules (pipeline.Attribute.Problem).
func TestValidateRefusesEveryAttributesBadValuesAtTheirRange(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.hcl")
	if err := os.WriteFile(ok, []byte(validBase), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "validate", ok); r.code != 0 {
		t.Fatalf("the base config must be valid: %s", r)
	}
	headers := map[string]string{"replicate": "replicate {"}
	settings := map[string]*pipeline.Attribute{}
	var names []string
	for name, k := range kinds() {
		names = append(names, name)
		for attr, a := range k.Schema().SettingsAttributes["replicate"] {
			settings[attr] = a
		}
	}
	sort.Strings(names)
	type target struct {
		addr, header, attr string
		decl               *pipeline.Attribute
	}
	var targets []target
	for _, name := range names {
		st := map[string]string{"image_check": "photos", "params": "tuned", "train": "lora", "loss_gate": "fit", "generate": "check", "prune": "old"}[name]
		if st == "" {
			t.Fatalf("kind %s has no stage in the base config: add one", name)
		}
		schema := kinds()[name].Schema()
		for _, attr := range sortedAttrs(schema.Attributes) {
			targets = append(targets, target{name + "." + attr, fmt.Sprintf("stage %q %q {", name, st), attr, schema.Attributes[attr]})
		}
	}
	for _, attr := range sortedAttrs(settings) {
		targets = append(targets, target{"replicate." + attr, headers["replicate"], attr, settings[attr]})
	}
	cases := 0
	for _, tg := range targets {
		for _, bad := range badValues(t, tg.addr, tg.decl) {
			cases++
			src, line, col := withAttr(validBase, tg.header, tg.attr, bad)
			path := filepath.Join(dir, "bad.hcl")
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			r := cli(t, "validate", "-json", path)
			if r.code != 1 || !diagnosticAt(r.stdout, line, col) {
				t.Errorf("%s = %s: want exit 1 and a diagnostic at bad.hcl:%d:%d; got %s", tg.addr, bad, line, col, r)
			}
		}
	}
	if cases < 40 {
		t.Errorf("only %d cases: the schemas lost their constraints?", cases)
	}
}

func sortedAttrs(m map[string]*pipeline.Attribute) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// diagnosticAt reports whether the -json output has an error diagnostic starting at line:col.
func diagnosticAt(out string, line, col int) bool {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev struct {
			Type     string `json:"type"`
			Severity string `json:"severity"`
			Range    *struct {
				Start struct{ Line, Column int } `json:"start"`
			} `json:"range"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Type != "diagnostic" || ev.Severity != "error" || ev.Range == nil {
			continue
		}
		if ev.Range.Start.Line == line && ev.Range.Start.Column == col {
			return true
		}
	}
	return false
}
