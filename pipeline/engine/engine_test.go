package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
	"github.com/pipeline-dev/pipeline/pipeline/state"
	"github.com/pipeline-dev/pipeline/pipeline/view"
)

// recorder collects events.
type events struct {
	mu  sync.Mutex
	all []pipeline.Event
}

func (e *events) Emit(ev pipeline.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) ofType(t pipeline.EventType) []pipeline.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []pipeline.Event
	for _, ev := range e.all {
		if ev.Type == t {
			out = append(out, ev)
		}
	}
	return out
}

type fixture struct {
	t     *testing.T
	dir   string
	src   string
	check *checkKind
	work  *workKind
	extra pipeline.Kind // one more kind a test registers
}

func newFixture(t *testing.T, src string) *fixture {
	t.Helper()
	return &fixture{t: t, dir: t.TempDir(), src: src, check: &checkKind{}, work: newWork()}
}

func (f *fixture) kinds() map[string]pipeline.Kind {
	m := map[string]pipeline.Kind{"check": f.check, "work": f.work}
	if f.extra != nil {
		m[f.extra.Name()] = f.extra
	}
	return m
}

// engine loads the config with -var style values and opens the fixture's local state.
func (f *fixture) engine(vars ...string) (*engine.Engine, *events) {
	f.t.Helper()
	path := filepath.Join(f.dir, "p.hcl")
	if err := os.WriteFile(path, []byte(f.src), 0o644); err != nil {
		f.t.Fatal(err)
	}
	mod, diags := lang.Load([]string{path}, f.kinds())
	if diags.HasErrors() {
		f.t.Fatalf("load: %s", diags.Error())
	}
	vals, diags := mod.Variables(lang.VarInputs{Vars: vars})
	if diags.HasErrors() {
		f.t.Fatalf("variables: %s", diags.Error())
	}
	st, err := state.Open(context.Background(), "", path)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	ev := &events{}
	return &engine.Engine{Module: mod, Vars: vals, Store: st, Sink: ev,
		Env: &pipeline.Env{Getenv: func(string) string { return "" }, CacheDir: filepath.Join(f.dir, "cache")}}, ev
}

// apply runs lock + plan + apply as the CLI does.
func (f *fixture) apply(ctx context.Context, e *engine.Engine) (*engine.Plan, *engine.Outcome) {
	f.t.Helper()
	release, err := e.Acquire(ctx, "apply")
	if err != nil {
		f.t.Fatalf("acquire: %v", err)
	}
	defer release()
	plan, err := e.Plan(ctx)
	if err != nil {
		f.t.Fatalf("plan: %v", err)
	}
	out, err := e.Apply(ctx, plan)
	if err != nil {
		f.t.Fatalf("apply: %v", err)
	}
	return plan, out
}

func actions(p *engine.Plan) map[string]string {
	m := map[string]string{}
	for _, ip := range p.Instances {
		for _, s := range ip.Stages {
			m[s.Address] = string(s.Action)
		}
	}
	return m
}

const chain = `
variable "n" {
  type    = number
  default = 1
}
stage "check" "c" {
  items = ["a", "b"]
}
stage "work" "train" {
  input = { rank = var.n, count = check.c.count }
}
stage "work" "gate" {
  input = work.train.result
}
stage "work" "gen" {
  input      = "gen"
  depends_on = [work.gate]
}
output "job" {
  value = work.train.job
}
`

func TestPlanOnFreshStateRunsEverythingAndReadOnlyStagesForReal(t *testing.T) {
	f := newFixture(t, chain)
	e, ev := f.engine()
	plan, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"check.c": "read", "work.train": "run", "work.gate": "run", "work.gen": "run"}
	if got := actions(plan); !equalMaps(got, want) {
		t.Fatalf("actions = %v, want %v", got, want)
	}
	if f.check.runs.Load() != 1 {
		t.Errorf("read-only check ran %d times in plan, want 1", f.check.runs.Load())
	}
	if f.work.applies.Load() != 0 {
		t.Errorf("plan applied a remote stage %d times", f.work.applies.Load())
	}
	if plan.Changes() != 3 {
		t.Errorf("Changes() = %d, want 3 (read-only stages never count)", plan.Changes())
	}
	outs := ev.ofType(pipeline.EventStageOutputs)
	if len(outs) != 1 || outs[0].Address != "check.c" || outs[0].Outputs["count"] != json.Number("2") {
		t.Errorf("stage_outputs events = %+v, want one for check.c with count 2", outs)
	}
	// work.gate's input depends on work.train's result: unknown in plan.
	for _, ip := range plan.Instances {
		for _, s := range ip.Stages {
			if s.Address == "work.gate" && s.Inputs.GetAttr("input").IsKnown() {
				t.Errorf("work.gate input should be unknown during plan, got %#v", s.Inputs.GetAttr("input"))
			}
		}
	}
	if _, err := os.Stat(filepath.Join(f.dir, ".pipeline", "p.state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plan must not write state (stat err = %v)", err)
	}
}

func TestApplyThenPlanIsUpToDate(t *testing.T) {
	f := newFixture(t, chain)
	e, _ := f.engine()
	_, out := f.apply(context.Background(), e)
	if code := out.ExitStatus(); code != 0 {
		t.Fatalf("exit status %d, outcome %+v", code, out.Counts())
	}
	if f.work.totalCreated() != 3 {
		t.Fatalf("created %d remote jobs, want 3", f.work.totalCreated())
	}
	e2, _ := f.engine()
	plan, err := e2.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for addr, a := range actions(plan) {
		if want := map[bool]string{true: "read", false: "noop"}[addr == "check.c"]; a != want {
			t.Errorf("%s: action %s after apply, want %s", addr, a, want)
		}
	}
	if c := findStage(plan, "check.c"); !c.Unchanged {
		t.Errorf("check.c: a read with the recorded result should be unchanged")
	}
	if plan.Changes() != 0 {
		t.Errorf("Changes() = %d after apply", plan.Changes())
	}
	// A second apply does nothing.
	e3, _ := f.engine()
	_, again := f.apply(context.Background(), e3)
	if c := again.Counts(); c["complete"] != 0 || c["noop"] != 3 || f.work.totalCreated() != 3 {
		t.Errorf("second apply: %v, %d jobs; want nothing done", c, f.work.totalCreated())
	}
	// Root outputs were recorded.
	inst, _ := e2.Store.Get(context.Background(), "")
	if !strings.Contains(string(inst.Outputs), "job-work.train-1") {
		t.Errorf("root outputs = %s, want the job id", inst.Outputs)
	}
}

func TestChangedInputReRunsWithOldToNewReasonAndDownstream(t *testing.T) {
	f := newFixture(t, chain)
	e, _ := f.engine()
	f.apply(context.Background(), e)
	e2, _ := f.engine("n=2")
	plan, err := e2.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := actions(plan)
	want := map[string]string{"check.c": "read", "work.train": "rerun", "work.gate": "rerun", "work.gen": "rerun"}
	if !equalMaps(got, want) {
		t.Fatalf("actions = %v, want %v", got, want)
	}
	train := findStage(plan, "work.train")
	if len(train.Reasons) != 1 || train.Reasons[0] != "input.rank: 1 → 2" {
		t.Errorf("reasons = %q, want [input.rank: 1 → 2]", train.Reasons)
	}
	if up := f.work.upstream["work.gen"]; len(up) != 2 || up[0].Name != "gate" || up[1].Name != "train" || up[1].Action != pipeline.ActionRerun {
		t.Errorf("work.gen's Upstream = %+v, want gate and train re-running", up)
	}
	if up := f.work.upstream["work.train"]; len(up) != 0 {
		t.Errorf("work.train's Upstream = %+v, want none (check.c is read-only)", up)
	}
	// The read-only stage it references is handed over with the outputs plan evaluated.
	if r := f.work.reads["work.train"]; len(r) != 1 || !r["check.c"].GetAttr("count").RawEquals(cty.NumberIntVal(2)) {
		t.Errorf("work.train's Reads = %#v, want check.c's outputs", r)
	}
	if r := f.work.reads["work.gen"]; len(r) != 0 {
		t.Errorf("work.gen's Reads = %#v, want none (it depends on no read-only stage directly)", r)
	}
	gen := findStage(plan, "work.gen")
	if len(gen.Reasons) == 0 || !strings.Contains(gen.Reasons[0], "upstream work.gate re-runs") {
		t.Errorf("gen reasons = %q, want an upstream reason", gen.Reasons)
	}
}

func TestFailureSkipsDownstreamOnlyAndOtherInstancesGoOn(t *testing.T) {
	f := newFixture(t, `
batch { for_each = toset(["ana", "ben"]) }
stage "work" "train" { input = each.key }
stage "work" "gen" { input = work.train.result }
`)
	f.work.fail[`work.train["ana"]`] = true
	e, ev := f.engine()
	_, out := f.apply(context.Background(), e)
	if code := out.ExitStatus(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	c := out.Counts()
	if c["failed"] != 1 || c["skipped"] != 1 || c["complete"] != 2 {
		t.Errorf("counts = %v, want 1 failed, 1 skipped, 2 complete", c)
	}
	sk := ev.ofType(pipeline.EventStageSkipped)
	if len(sk) != 1 || sk[0].Address != `work.gen["ana"]` {
		t.Errorf("skipped events = %+v", sk)
	}
	if f.work.created(`work.gen["ben"]`) != 1 {
		t.Errorf("ben's downstream did not run")
	}
}

func TestRefusalExitsThreeAndSkipsDownstream(t *testing.T) {
	f := newFixture(t, `
stage "check" "c" {
  items     = ["a"]
  min_count = 3
}
stage "work" "train" { input = check.c.count }
`)
	e, _ := f.engine()
	release, err := e.Acquire(context.Background(), "apply")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	plan, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Refused() {
		t.Fatal("plan should report the refusal")
	}
	if a := actions(plan)["work.train"]; a != "skip" {
		t.Errorf("work.train action %s, want skip", a)
	}
	out, _ := e.Apply(context.Background(), plan)
	if code := out.ExitStatus(); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	if f.work.applies.Load() != 0 {
		t.Errorf("a refused check must stop downstream work")
	}
}

// A sensitive value never reaches state, events or root outputs, whichever way it flows: through a
// secret-named input, an ordinary input a kind echoes in its outputs, or an output block.
func TestSecretsNeverReachStateOrEvents(t *testing.T) {
	f := newFixture(t, `
variable "tok" {
  type      = string
  sensitive = true
}
variable "hf" {
  type = string
}
stage "work" "train" {
  input     = "plain-${var.tok}"
  api_token = var.hf
}
stage "work" "gate" {
  input = work.train.result
}
output "direct" {
  value = var.tok
}
output "derived" {
  value = "x-${var.tok}"
}
output "job" {
  value = work.train.result
}
`)
	e, _ := f.engine("tok=r8_SuperSecretValue", "hf=hf_NotDeclaredSensitive")
	var js bytes.Buffer
	e.Sink = view.NewJSON(&js)
	f.apply(context.Background(), e)
	b, err := os.ReadFile(filepath.Join(f.dir, ".pipeline", "p.state.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"SuperSecret", "hf_NotDeclared"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("state contains %s:\n%s", secret, b)
		}
		if strings.Contains(js.String(), secret) {
			t.Errorf("events contain %s:\n%s", secret, js.String())
		}
	}
	if !strings.Contains(js.String(), `"direct":"(sensitive)"`) {
		t.Errorf("the sensitive output should show as (sensitive):\n%s", js.String())
	}
	got := strings.Join(e.Secrets(), "\n")
	if !strings.Contains(got, "r8_SuperSecretValue") || !strings.Contains(got, "hf_NotDeclaredSensitive") {
		t.Errorf("Secrets() should hold the sensitive variable's value and the secret-named input's")
	}
}

func TestShardsPartitionKeysStablyAndCompletely(t *testing.T) {
	seen := map[string]int{}
	keys := make([]string, 500)
	for i := range keys {
		keys[i] = "subject-" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + string(rune('0'+i%10)) + string(rune('A'+i/26%26))
	}
	for i := 1; i <= 4; i++ {
		s, err := engine.ParseShard(string(rune('0'+i)) + "/4")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, k := range keys {
			if s.Has(k) {
				seen[k]++
				n++
			}
		}
		if n < 60 || n > 190 {
			t.Errorf("shard %d/4 has %d of 500 keys: badly balanced", i, n)
		}
	}
	for _, k := range keys {
		if seen[k] != 1 {
			t.Fatalf("key %s in %d shards, want exactly 1", k, seen[k])
		}
	}
	for _, bad := range []string{"0/4", "5/4", "x", "1/0", "2"} {
		if _, err := engine.ParseShard(bad); err == nil {
			t.Errorf("ParseShard(%q) accepted", bad)
		}
	}
}

func TestOnlyAndShardSelectInstances(t *testing.T) {
	f := newFixture(t, `
batch { for_each = toset(["ana", "ben", "cyd"]) }
stage "work" "train" { input = each.key }
`)
	e, _ := f.engine()
	e.Only = []string{"ben"}
	plan, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Instances) != 1 || plan.Instances[0].Key != "ben" {
		t.Fatalf("-only ben planned %d instances", len(plan.Instances))
	}
	e.Only = []string{"zed"}
	if _, err := e.Plan(context.Background()); err == nil || !strings.Contains(err.Error(), "zed") {
		t.Errorf("-only with an unknown key: err = %v", err)
	}
}

func findStage(p *engine.Plan, addr string) *engine.StagePlan {
	for _, ip := range p.Instances {
		for _, s := range ip.Stages {
			if s.Address == addr {
				return s
			}
		}
	}
	return nil
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

var _ = cty.NilVal

func TestSimulatedResultsNeverPassForRealOnes(t *testing.T) {
	f := newFixture(t, chain)
	e, _ := f.engine()
	e.Env.Simulated = true
	f.apply(context.Background(), e)
	sim, _ := f.engine()
	sim.Env.Simulated = true
	plan, err := sim.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if plan.Changes() != 0 {
		t.Errorf("a second simulated plan has %d changes, want 0", plan.Changes())
	}
	real, _ := f.engine()
	plan, err = real.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	train := findStage(plan, "work.train")
	if train.Action != pipeline.ActionRerun || len(train.Reasons) != 1 || !strings.Contains(train.Reasons[0], "recorded run was simulated") {
		t.Errorf("real plan after a simulated apply: %s %q, want a re-run because the record is simulated", train.Action, train.Reasons)
	}
	if c := findStage(plan, "check.c"); c.Action != pipeline.ActionRead || !c.Unchanged {
		t.Errorf("read-only stages do not depend on the simulator: %s", c.Action)
	}
}

func TestReplaceAndShardArgumentsAreChecked(t *testing.T) {
	f := newFixture(t, chain)
	e, _ := f.engine()
	f.apply(context.Background(), e)
	for _, tc := range []struct {
		replace []string
		shard   engine.Shard
		want    string
	}{
		{replace: []string{"work.trian"}, want: "did you mean work.train"},
		{replace: []string{`work.train["ana"]`}, want: "has no batch"},
		{shard: engine.Shard{Index: 1, Count: 2}, want: "-shard needs a batch block"},
	} {
		e, _ := f.engine()
		e.Replace, e.Shard = tc.replace, tc.shard
		if _, err := e.Plan(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("replace %v shard %v: err = %v, want %q", tc.replace, tc.shard, err, tc.want)
		}
	}
	e2, _ := f.engine()
	e2.Replace = []string{"work.gate"}
	plan, err := e2.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(plan); got["work.gate"] != "rerun" || got["work.train"] != "noop" || got["work.gen"] != "rerun" {
		t.Errorf("-replace work.gate: %v, want gate and its downstream to re-run, train untouched", got)
	}
}

// An instance with a stage that cannot be planned is left out whole: its upstream (paid) stages do
// not run, while other instances do.
func TestInstanceThatCannotBePlannedIsLeftOutWhole(t *testing.T) {
	f := newFixture(t, `
batch { for_each = toset(["ana", "ben"]) }
stage "work" "train" { input = each.key }
stage "work" "gen" { input = work.train.result }
`)
	f.work.planFail[`work.gen["ana"]`] = true
	e, ev := f.engine()
	_, out := f.apply(context.Background(), e)
	if code := out.ExitStatus(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if n := f.work.created(`work.train["ana"]`); n != 0 {
		t.Errorf("ana's training ran %d times although ana's pipeline cannot finish", n)
	}
	if n := f.work.created(`work.gen["ben"]`); n != 1 {
		t.Errorf("ben was not applied")
	}
	skipped := 0
	for _, s := range ev.ofType(pipeline.EventStageSkipped) {
		if s.Address == `work.train["ana"]` && strings.Contains(s.Message, "left out") {
			skipped++
		}
	}
	if skipped != 1 {
		t.Errorf("work.train[\"ana\"] should be reported skipped (left out)")
	}
}

// Changing the inputs of a stage whose last run was interrupted mid-flight warns that its remote
// work is abandoned (and may still be billed).
func TestPlanWarnsWhenNewInputsAbandonInFlightWork(t *testing.T) {
	f := newFixture(t, chain)
	e, _ := f.engine()
	ctx, cancel := context.WithCancel(context.Background())
	f.work.onStep = func(a, s string) error {
		if a == "work.train" && s == "saved-id" {
			cancel()
			return ctx.Err()
		}
		return nil
	}
	f.apply(ctx, e)
	f.work.onStep = nil
	e2, _ := f.engine("n=2")
	plan, err := e2.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	train := findStage(plan, "work.train")
	if train.Action != pipeline.ActionRerun || len(train.Warnings) != 1 || !strings.Contains(train.Warnings[0], "abandoned") {
		t.Errorf("plan of work.train: %s %q, want a re-run with a warning about the abandoned work", train.Action, train.Warnings)
	}
}
