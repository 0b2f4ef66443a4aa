package engine_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/view"
)

var update = flag.Bool("update", false, "rewrite golden files")

// multi sends events to several sinks.
type multi []pipeline.Sink

func (m multi) Emit(e pipeline.Event) {
	for _, s := range m {
		s.Emit(e)
	}
}

var timestamp = regexp.MustCompile(`"@timestamp":"[^"]*"`)

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// TestPlanOutputGolden renders the plans of a fresh run and of a changed variable after an apply,
// as people and as -json see them.
func TestPlanOutputGolden(t *testing.T) {
	f := newFixture(t, chain)
	var human, js bytes.Buffer
	render := func(vars ...string) {
		e, _ := f.engine(vars...)
		e.Sink = multi{view.NewHuman(&human, view.Options{}), view.NewJSON(&js)}
		if _, err := e.Plan(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	render()
	e, _ := f.engine()
	f.apply(context.Background(), e)
	human.WriteString("---- after apply, with -var n=2\n")
	render("n=2")
	golden(t, "plan_human.golden", human.Bytes())
	golden(t, "plan_json.golden", timestamp.ReplaceAll(js.Bytes(), []byte(`"@timestamp":"T"`)))
}

// TestLargeBatchPlanIsSummarisedPerStage: 500 subjects print one line per stage, plus the
// instances that need attention, unless -details asks for everything.
func TestLargeBatchPlanIsSummarisedPerStage(t *testing.T) {
	var keys []string
	for i := 0; i < 500; i++ {
		keys = append(keys, `"s`+strings.Repeat("0", 3-len(itoa(i)))+itoa(i)+`"`)
	}
	f := newFixture(t, `
batch { for_each = toset([`+strings.Join(keys, ",")+`]) }
stage "check" "c" {
  items     = ["a", "b"]
  min_count = each.key == "s007" ? 3 : 1
}
stage "work" "train" { input = check.c.count }
`)
	e, _ := f.engine()
	var out bytes.Buffer
	e.Sink = view.NewHuman(&out, view.Options{})
	if _, err := e.Plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(out.String(), "\n")
	if lines > 15 {
		t.Errorf("500-subject plan printed %d lines, want a per-stage summary:\n%s", lines, out.String())
	}
	for _, want := range []string{"check.c: 499 read, 1 refused", `check.c["s007"]: only 2 items (min_count 3)`, "work.train: 499 will run, 1 skipped", "Plan: 499 to run"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	var full bytes.Buffer
	e.Sink = view.NewHuman(&full, view.Options{Details: true})
	if _, err := e.Plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(full.String(), "will run"); n != 499 {
		t.Errorf("-details printed %d 'will run' lines, want 499", n)
	}
}

func itoa(i int) string {
	const d = "0123456789"
	if i < 10 {
		return d[i : i+1]
	}
	return itoa(i/10) + d[i%10:i%10+1]
}
