package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/state"
	"github.com/pipeline-dev/pipeline/pipeline/view"
)

// The report tests check what people and machines are told: the actions and their words, the
// counts, what is folded, and the money.

// paid is the chain with prices: work.train and work.gate estimate their jobs, gen spends nothing.
const paid = `
variable "n" {
  type    = number
  default = 1
}
variable "price" {
  type    = number
  default = 1.5
}
variable "max" {
  type    = number
  default = 100
}
variable "refuse_gen" {
  type    = bool
  default = false
}
stage "check" "c" {
  items = ["a", "b"]
}
stage "work" "train" {
  input        = { rank = var.n, count = check.c.count }
  price        = var.price
  max_cost_usd = var.max
}
stage "work" "gate" {
  input = work.train.result
  price = 0.25
}
stage "work" "gen" {
  input      = "gen"
  refuse     = var.refuse_gen
  depends_on = [work.gate]
}
output "job" {
  value = work.train.job
}
`

// render plans (and applies, with apply) with a human and a JSON view, returning both texts.
func render(t *testing.T, f *fixture, ctx context.Context, apply bool, opt view.Options, vars ...string) (human, js string, plan *engine.Plan) {
	t.Helper()
	e, _ := f.engine(vars...)
	var h, j bytes.Buffer
	e.Sink = multi{view.NewHuman(&h, opt), view.NewJSON(&j)}
	if apply {
		plan, _ = f.apply(ctx, e)
	} else {
		var err error
		if plan, err = e.Plan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return h.String(), timestamp.ReplaceAllString(j.String(), `"@timestamp":"T"`), plan
}

// jsonEvents decodes -json lines of one type.
func jsonEvents(t *testing.T, js, typ string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(js), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// interrupt applies until step of work.train, where Ctrl-C arrives.
func interrupt(t *testing.T, f *fixture, step string, vars ...string) (human, js string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.work.onStep = func(a, s string) error {
		if a == "work.train" && s == step {
			cancel()
			return ctx.Err()
		}
		return nil
	}
	defer func() { f.work.onStep = nil }()
	human, js, _ = render(t, f, ctx, true, view.Options{}, vars...)
	return human, js
}

// TestPlanAfterInterruptReattaches: a job recorded by its id is re-attached (↻, action reattach,
// a change), never shown as a new run; an interrupt is "interrupted", not "failed".
func TestPlanAfterInterruptReattaches(t *testing.T) {
	f := newFixture(t, chain)
	human, js := interrupt(t, f, "saved-id")
	if !strings.Contains(human, "‖ work.train interrupted: recorded in state; the next apply resumes it") || strings.Contains(human, "failed") {
		t.Errorf("the interrupt should read as interrupted, not failed:\n%s", human)
	}
	if ev := jsonEvents(t, js, "stage_failed"); len(ev) != 1 || ev[0]["interrupted"] != true {
		t.Errorf("stage_failed of an interrupt should say interrupted: %v", ev)
	}
	human, js, plan := render(t, f, context.Background(), false, view.Options{})
	golden(t, "plan_after_interrupt_human.golden", []byte(human))
	golden(t, "plan_after_interrupt_json.golden", []byte(js))
	if a := findStage(plan, "work.train").Action; a != pipeline.ActionReattach {
		t.Fatalf("work.train: %s after an interrupt with its job recorded, want reattach", a)
	}
	if plan.Changes() != 3 || !errors.As(plan.Err(true), new(*engine.ChangesPendingError)) {
		t.Errorf("a re-attach is a change for -detailed-exitcode: %d changes, err %v", plan.Changes(), plan.Err(true))
	}
	if sum := jsonEvents(t, js, "change_summary"); len(sum) != 1 || sum[0]["reattach"] != 1.0 || sum[0]["run"] != 2.0 {
		t.Errorf("change_summary = %v, want reattach 1 and run 2", sum)
	}
	if !strings.Contains(human, "↻ work.train will re-attach") || !strings.Contains(human, "↻ re-attach") {
		t.Errorf("the plan should show ↻ and name it in the legend:\n%s", human)
	}
	// The resumed apply follows the recorded job and creates none.
	e, _ := f.engine()
	f.apply(context.Background(), e)
	if n := f.work.created("work.train"); n != 1 {
		t.Errorf("work.train created %d jobs across the interrupt, want 1", n)
	}
}

// An intent saved without an id is not a re-attach: apply looks the job up first, so plan says run.
func TestInterruptBeforeTheIDIsRecordedPlansARun(t *testing.T) {
	f := newFixture(t, chain)
	interrupt(t, f, "saved-intent")
	human, _, plan := render(t, f, context.Background(), false, view.Options{})
	train := findStage(plan, "work.train")
	if train.Action != pipeline.ActionRun || len(train.Reasons) != 1 || !strings.Contains(train.Reasons[0], "looks for the job first") {
		t.Errorf("work.train: %s %q, want run with a reason that apply looks the job up first", train.Action, train.Reasons)
	}
	if strings.Contains(human, "↻") {
		t.Errorf("no re-attach without a recorded id:\n%s", human)
	}
}

// TestNoChangePlanTakesOneLinePerStage: after an apply, every stage is one line and the plan ends
// with "No changes."; -details shows every note and detail again.
func TestNoChangePlanTakesOneLinePerStage(t *testing.T) {
	f := newFixture(t, `
batch { for_each = toset(["ana", "ben", "cyd"]) }
stage "check" "c" { items = ["x", each.key] }
stage "work" "train" { input = check.c.accepted }
stage "work" "gen" { input = work.train.job }
`)
	render(t, f, context.Background(), true, view.Options{})
	human, js, _ := render(t, f, context.Background(), false, view.Options{})
	golden(t, "plan_no_changes_human.golden", []byte(human))
	lines := strings.Split(strings.TrimSpace(human), "\n")
	if len(lines) != 12 || lines[len(lines)-1] != "No changes." {
		t.Errorf("a no-change plan of 3 subjects × 3 stages should be 9 stage lines, a blank, the summary and No changes.:\n%s", human)
	}
	for _, ev := range jsonEvents(t, js, "planned_change") {
		want := map[bool]string{true: "read", false: "noop"}[ev["kind"] == "check"]
		if ev["action"] != want {
			t.Errorf("%s: action %v, want %s", ev["address"], ev["action"], want)
		}
	}
	full, _, _ := render(t, f, context.Background(), false, view.Options{Details: true})
	for _, want := range []string{"2 accepted", "count = 2: every item counts", "checked by the test rules", "would start a job"} {
		if !strings.Contains(full, want) {
			t.Errorf("-details should show %q:\n%s", want, full)
		}
	}
}

// Details show when the output they explain changes against the recorded run, not otherwise.
func TestDetailsShowWhenTheirValueChanges(t *testing.T) {
	f := newFixture(t, `
variable "items" {
  type    = list(string)
  default = ["a", "b"]
}
stage "check" "c" { items = var.items }
stage "work" "train" { input = check.c.count }
`)
	first, _, _ := render(t, f, context.Background(), true, view.Options{})
	if strings.Contains(first, "every item counts") {
		t.Errorf("a first plan has no recorded value to change from: details stay hidden:\n%s", first)
	}
	changed, js, _ := render(t, f, context.Background(), false, view.Options{}, `items=["a","b","c"]`)
	if !strings.Contains(changed, "count = 3: every item counts") || strings.Contains(changed, "checked by the test rules") {
		t.Errorf("the count's detail should show (its value changed), the other not:\n%s", changed)
	}
	if ev := jsonEvents(t, js, "planned_change"); !strings.Contains(ev[0]["details"].([]any)[0].(string), "test rules") {
		t.Errorf("-json keeps the hidden details: %v", ev[0])
	}
}

// TestMoneyInPlanAndApply: plan shows each stage's estimate and the total, labelled estimates;
// apply shows and emits the actual cost; an up-to-date stage costs nothing; a price change (a
// money setting) re-runs nothing.
func TestMoneyInPlanAndApply(t *testing.T) {
	f := newFixture(t, paid)
	human, js, plan := render(t, f, context.Background(), false, view.Options{})
	for _, want := range []string{"estimated cost $1.50 (an estimate: 1 job at $1.5)", "estimated cost $0.25 (an estimate: 1 job at $0.25)",
		"Estimated cost $1.75 (max_cost_usd $100.00): an estimate."} {
		if !strings.Contains(human, want) {
			t.Errorf("plan lacks %q:\n%s", want, human)
		}
	}
	if m := plan.Money(); m.EstimateUSD != 1.75 || !m.Estimated {
		t.Errorf("Money() = %+v, want an estimate of 1.75", m)
	}
	sum := jsonEvents(t, js, "change_summary")[0]
	if sum["estimated_cost_usd"] != 1.75 || sum["max_cost_usd"] != 100.0 {
		t.Errorf("plan change_summary = %v, want estimated_cost_usd 1.75 and max_cost_usd 100", sum)
	}
	for _, ev := range jsonEvents(t, js, "planned_change") {
		if ev["address"] == "work.train" && (ev["estimated_cost_usd"] != 1.5 || ev["cost_basis"] != "1 job at $1.5") {
			t.Errorf("work.train's planned_change should carry its estimate: %v", ev)
		}
	}

	human, js, _ = render(t, f, context.Background(), true, view.Options{})
	if !strings.Contains(human, "✓ work.train complete: job=job-work.train-1") || !strings.Contains(human, "(cost $1.35)") ||
		!strings.Contains(human, "Cost $1.57 (from the jobs' run time).") {
		t.Errorf("apply should show each stage's actual cost and the total:\n%s", human)
	}
	var costs []any
	for _, ev := range jsonEvents(t, js, "stage_complete") {
		if c, ok := ev["cost_usd"]; ok {
			costs = append(costs, ev["address"], c)
		}
	}
	if want := []any{"work.train", 1.35, "work.gate", 0.225}; !equalAny(costs, want) {
		t.Errorf("stage_complete cost_usd = %v, want %v", costs, want)
	}
	if sums := jsonEvents(t, js, "change_summary"); sums[len(sums)-1]["cost_usd"] != 1.575 {
		t.Errorf("apply change_summary = %v, want cost_usd 1.575", sums[len(sums)-1])
	}

	human, js, plan = render(t, f, context.Background(), false, view.Options{}, "price=9")
	if plan.Changes() != 0 || strings.Contains(human, "estimated cost") {
		t.Errorf("a price change must re-run nothing, and an up-to-date stage costs nothing:\n%s", human)
	}
	if sum := jsonEvents(t, js, "change_summary")[0]; sum["estimated_cost_usd"] != 0.0 {
		t.Errorf("estimated_cost_usd of a no-change plan = %v, want 0", sum["estimated_cost_usd"])
	}
}

// TestMaxCostUSDRefusesThePlan: over the smallest limit a stage returned, plan exits 3 with the
// figure, the limit and how to proceed, and apply starts nothing.
func TestMaxCostUSDRefusesThePlan(t *testing.T) {
	f := newFixture(t, paid)
	human, js, plan := render(t, f, context.Background(), false, view.Options{}, "max=1")
	err := plan.Err(false)
	var over *engine.CostLimitError
	if !errors.As(err, &over) || engine.CodeOf(err) != 3 {
		t.Fatalf("plan over max_cost_usd: err %v (exit %d), want a refusal with exit 3", err, engine.CodeOf(err))
	}
	for _, want := range []string{"Estimated cost over max_cost_usd", "$1.75", "max_cost_usd = $1.00", "raise max_cost_usd", "-shard"} {
		if !strings.Contains(human, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, human)
		}
	}
	if d := jsonEvents(t, js, "diagnostic"); len(d) != 1 || d[0]["severity"] != "error" {
		t.Errorf("-json should carry the refusal as a diagnostic: %v", d)
	}
	e, _ := f.engine("max=1")
	p, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(context.Background(), p); engine.CodeOf(err) != 3 {
		t.Errorf("Apply over max_cost_usd: %v, want a refusal", err)
	}
	if n := f.work.totalCreated(); n != 0 {
		t.Errorf("%d jobs started over max_cost_usd", n)
	}
	if _, _, p := render(t, f, context.Background(), false, view.Options{}, "max=1.75"); p.Err(false) != nil {
		t.Errorf("an estimate equal to the limit is allowed: %v", p.Err(false))
	}
}

// TestEventGoldens keeps one golden file per -json event type, from a run that produces each.
func TestEventGoldens(t *testing.T) {
	f := newFixture(t, paid)
	var all []string
	add := func(js string) { all = append(all, strings.Split(strings.TrimSpace(js), "\n")...) }
	_, js, _ := render(t, f, context.Background(), false, view.Options{}, "max=1") // diagnostic
	add(js)
	_, js, _ = render(t, f, context.Background(), true, view.Options{}) // a first apply
	add(js)
	f.work.fail["work.gate"] = true
	_, js, _ = render(t, f, context.Background(), true, view.Options{}, "n=2") // failed, skipped
	add(js)
	delete(f.work.fail, "work.gate")
	_, js, _ = render(t, f, context.Background(), true, view.Options{}, "n=3", "refuse_gen=true") // refused
	add(js)
	_, js = interrupt(t, f, "saved-id", "n=4") // interrupted
	add(js)
	_, js, _ = render(t, f, context.Background(), false, view.Options{}, "n=4") // reattach
	add(js)
	f.work.warn["work.gen"] = "3 of 3 images look plastic"
	e, _ := f.engine("n=5")
	e.Store = notedStore{e.Store} // a lock whose taking broke a dead process's one: a log line
	var j bytes.Buffer
	e.Sink = view.NewJSON(&j)
	f.apply(context.Background(), e) // stage_warning, log
	add(timestamp.ReplaceAllString(j.String(), `"@timestamp":"T"`))
	for _, typ := range []string{"diagnostic", "planned_change", "stage_outputs", "stage_start", "stage_progress", "stage_warning",
		"stage_complete", "stage_failed", "stage_skipped", "change_summary", "outputs", "log"} {
		var b strings.Builder
		for _, line := range all {
			if strings.Contains(line, `"type":"`+typ+`"`) {
				b.WriteString(line + "\n")
			}
		}
		if b.Len() == 0 {
			t.Errorf("no %s event in the run", typ)
		}
		golden(t, filepath.Join("events", typ+".golden"), []byte(b.String()))
	}
}

func equalAny(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A refused check is still a read ("refused": true in -json), counted as read and as refused;
// people see it with !, in the legend too.
func TestRefusedCheckIsAReadThatRefused(t *testing.T) {
	f := newFixture(t, `
stage "check" "c" {
  items     = ["a"]
  min_count = 3
}
stage "work" "train" { input = check.c.count }
`)
	human, js, _ := render(t, f, context.Background(), false, view.Options{})
	ev := jsonEvents(t, js, "planned_change")
	if ev[0]["action"] != "read" || ev[0]["refused"] != true || ev[1]["action"] != "skip" {
		t.Errorf("planned_change = %v, want a read with refused: true, then a skip", ev)
	}
	if sum := jsonEvents(t, js, "change_summary")[0]; sum["read"] != 1.0 || sum["refused"] != 1.0 || sum["skip"] != 1.0 || sum["run"] != 0.0 {
		t.Errorf("change_summary = %v, want read 1, refused 1, skip 1, run 0", sum)
	}
	for _, want := range []string{"Symbols: / skipped, ! refused", "! check.c refused\n      only 1 items (min_count 3)", "/ work.train skipped\n      upstream check.c refused"} {
		if !strings.Contains(human, want) {
			t.Errorf("plan lacks %q:\n%s", want, human)
		}
	}
	if strings.Contains(human, "No changes.") {
		t.Errorf("a refusal is not 'No changes.':\n%s", human)
	}
}

// notedStore hands out locks with a note, as a remote store does after breaking the lock of a
// process that no longer runs.
type notedStore struct{ state.Store }

func (s notedStore) Lock(ctx context.Context, key string, info state.LockInfo, timeout time.Duration) (state.Lock, error) {
	l, err := s.Store.Lock(ctx, key, info, timeout)
	if err != nil {
		return nil, err
	}
	return notedLock{l}, nil
}

type notedLock struct{ state.Lock }

func (notedLock) Note() string {
	return "broke the lock of pid 4242 on this host: that process no longer runs"
}
