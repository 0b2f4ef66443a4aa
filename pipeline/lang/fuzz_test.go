package lang

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// FuzzLoad feeds arbitrary sources through LoadSources and, when they load cleanly, through
// variable resolution, batch keys and evaluation of every stage, settings and outputs: none of it
// may panic. Seeded with the fixtures (native syntax) and a JSON-syntax configuration.
//
//	go test ./pipeline/lang -run '^$' -fuzz FuzzLoad -fuzztime 30s
func FuzzLoad(f *testing.F) {
	for _, pattern := range []string{"testdata/valid/*.hcl", "testdata/invalid/*.hcl"} {
		files, _ := filepath.Glob(pattern)
		for _, p := range files {
			src, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(src, false)
		}
	}
	f.Add([]byte(pipelineSrc), false)
	f.Add([]byte(varsSrc), false)
	f.Add([]byte(`{"variable": {"n": {"type": "number", "default": 2}}, "batch": {"for_each": "${toset([\"a\"])}"},
  "stage": {"check": {"photos": {"dir": "${each.key}", "min_count": "${var.n}"}},
            "work": {"lora": {"images": "${check.photos.accepted}", "depends_on": ["check.photos"]}}}}`), true)
	kinds := testKinds()
	f.Fuzz(func(t *testing.T, src []byte, json bool) {
		if bytes.Contains(src, []byte("file")) {
			// file, fileset, templatefile...: a mutated path such as fileset("/", "**") or
			// file("/dev/stdin") would walk or block on the real filesystem, which measures the
			// machine, not the code. TestFileFunctions covers them.
			t.Skip()
		}
		// Inside testdata/valid so the file functions find the fixtures' files.
		name := "testdata/valid/fuzz.hcl"
		if json {
			name += ".json"
		}
		m, diags := LoadSources(map[string][]byte{name: src}, kinds)
		if m == nil {
			t.Fatal("nil module")
		}
		_ = m.Graph().DOT()
		if diags.HasErrors() {
			return
		}
		vars, _ := m.Variables(VarInputs{AllowUnset: true})
		inst := Instance{Vars: vars}
		if m.HasBatch() {
			keys, values, d := m.BatchKeys(vars)
			if d.HasErrors() || len(keys) == 0 {
				return
			}
			inst = Instance{Key: keys[0], Batch: true, Value: values[keys[0]], Vars: vars}
		}
		s, _ := m.NewScope(inst)
		for _, st := range m.Stages() {
			s.EvalStage(st)
			s.SetStage(st.Addr, cty.DynamicVal)
		}
		for name := range m.Config().Settings {
			s.EvalSettings(name)
		}
		s.EvalOutputs()
		s.EvalStateURL()
	})
}
