package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// trivialKind does no work, so a benchmark measures the engine alone.
type trivialKind struct{ readOnly bool }

func (k trivialKind) Name() string {
	if k.readOnly {
		return "look"
	}
	return "noop"
}
func (k trivialKind) Schema() *pipeline.Schema {
	return &pipeline.Schema{ReadOnly: k.readOnly,
		Attributes: map[string]*pipeline.Attribute{"in": {Type: cty.DynamicPseudoType}},
		Outputs:    map[string]cty.Type{"out": cty.String}}
}
func (k trivialKind) Plan(context.Context, *pipeline.Request) (*pipeline.Result, error) {
	return &pipeline.Result{}, nil
}
func (k trivialKind) Apply(_ context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	return &pipeline.Result{Outputs: map[string]cty.Value{"out": cty.StringVal(req.Key)}}, nil
}

func batchConfig(keys int) string {
	var b strings.Builder
	b.WriteString("batch { for_each = toset([")
	for i := 0; i < keys; i++ {
		fmt.Fprintf(&b, "%q,", fmt.Sprintf("subject-%04d", i))
	}
	b.WriteString(`]) }
stage "look" "a" { in = each.key }
stage "look" "b" { in = look.a.out }
stage "noop" "c" { in = { x = look.b.out, n = 16 } }
stage "noop" "d" { in = noop.c.out }
stage "noop" "e" { in = noop.d.out }
stage "noop" "f" {
  in         = "f"
  depends_on = [noop.e]
}
`)
	return b.String()
}

// BenchmarkPlanApply1000 plans and applies a 1,000-key batch of a 6-stage DAG of trivial stages
// against a local state file, then re-plans (everything up to date). Reported per stage instance.
func BenchmarkPlanApply1000(b *testing.B) {
	const keys, stages = 1000, 6
	dir := b.TempDir()
	path := filepath.Join(dir, "bench.hcl")
	if err := os.WriteFile(path, []byte(batchConfig(keys)), 0o644); err != nil {
		b.Fatal(err)
	}
	kinds := map[string]pipeline.Kind{"look": trivialKind{readOnly: true}, "noop": trivialKind{}}
	mod, diags := lang.Load([]string{path}, kinds)
	if diags.HasErrors() {
		b.Fatal(diags.Error())
	}
	vars, _ := mod.Variables(lang.VarInputs{})
	b.ResetTimer()
	var peak uint64
	for i := 0; i < b.N; i++ {
		statePath := filepath.Join(dir, fmt.Sprintf("s%d.json", i))
		st, err := state.Open(context.Background(), statePath, path)
		if err != nil {
			b.Fatal(err)
		}
		e := &engine.Engine{Module: mod, Vars: vars, Store: st, Sink: pipeline.SinkFunc(func(pipeline.Event) {}),
			Env: &pipeline.Env{Getenv: os.Getenv}, Parallelism: 4}
		ctx := context.Background()
		release, err := e.Acquire(ctx, "apply")
		if err != nil {
			b.Fatal(err)
		}
		plan, err := e.Plan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		out, err := e.Apply(ctx, plan)
		if err != nil || out.ExitStatus() != 0 {
			b.Fatalf("apply: %v %v", err, out.Counts())
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak {
			peak = ms.HeapInuse
		}
		replan, err := e.Plan(ctx)
		if err != nil || replan.Changes() != 0 {
			b.Fatalf("re-plan: %v, %d changes", err, replan.Changes())
		}
		release()
		st.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys*stages)/1e3, "µs/instance")
	b.ReportMetric(float64(peak)/float64(keys*stages)/1024, "KiB-heap/instance")
}

// BenchmarkReplan1000Remote: a no-change re-plan of 1,000 subjects against remote state (file://,
// the gocloud.dev/blob code path every bucket uses), reporting wall time per plan and the
// object-store calls per subject.
func BenchmarkReplan1000Remote(b *testing.B) {
	const keys = 1000
	dir := b.TempDir()
	path := filepath.Join(dir, "bench.hcl")
	if err := os.WriteFile(path, []byte(batchConfig(keys)), 0o644); err != nil {
		b.Fatal(err)
	}
	kinds := map[string]pipeline.Kind{"look": trivialKind{readOnly: true}, "noop": trivialKind{}}
	mod, diags := lang.Load([]string{path}, kinds)
	if diags.HasErrors() {
		b.Fatal(diags.Error())
	}
	vars, _ := mod.Variables(lang.VarInputs{})
	ctx := context.Background()
	url := "file://" + filepath.Join(dir, "bucket")
	os.MkdirAll(filepath.Join(dir, "bucket"), 0o755)
	open := func() (*engine.Engine, *state.RemoteStore) {
		st, err := state.OpenRemote(ctx, url, "bench")
		if err != nil {
			b.Fatal(err)
		}
		return &engine.Engine{Module: mod, Vars: vars, Store: st, Sink: pipeline.SinkFunc(func(pipeline.Event) {}),
			Env: &pipeline.Env{Getenv: os.Getenv}, Parallelism: 16}, st
	}
	e, st := open()
	release, err := e.Acquire(ctx, "apply")
	if err != nil {
		b.Fatal(err)
	}
	plan, _ := e.Plan(ctx)
	if out, err := e.Apply(ctx, plan); err != nil || out.ExitStatus() != 0 {
		b.Fatalf("apply: %v", err)
	}
	release()
	st.Close()
	b.ResetTimer()
	var calls int64
	for i := 0; i < b.N; i++ {
		e, st := open()
		plan, err := e.Plan(ctx)
		if err != nil || plan.Changes() != 0 {
			b.Fatalf("re-plan: %v, %d changes", err, plan.Changes())
		}
		calls += st.Calls()
		st.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/plan")
	b.ReportMetric(float64(calls)/float64(b.N*keys), "store-calls/subject")
}
