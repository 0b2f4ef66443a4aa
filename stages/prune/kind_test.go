package prune

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

func init() { deleteBackoff = time.Millisecond }

// recorder keeps what prune records: its data, and the shared ledger where the view reads it.
type recorder struct {
	*pipeline.MemShared
	pipeline.NoLimits
	data []byte
}

func (r *recorder) Save(v any) error {
	b, err := json.Marshal(v)
	r.data = b
	return err
}
func (*recorder) Progress(pipeline.Progress) {}
func (*recorder) Warn(string)                {}

// stateView holds records by kind as an earlier release wrote them (the version ledger is then
// built from them, as for a state from before the ledger), plus the shared records of this run.
type stateView map[string][]pipeline.StageRecord

func (s stateView) Records(kind string) []pipeline.StageRecord {
	if kind != "" {
		return s[kind]
	}
	var all []pipeline.StageRecord
	for k, rs := range s {
		if k != "" {
			all = append(all, rs...)
		}
	}
	return all
}

// view is a stateView with the shared records a recorder wrote.
type view struct {
	stateView
	mem *pipeline.MemShared
}

func (v view) Shared(name string) json.RawMessage { return v.mem.Shared(name) }

type harness struct {
	srv *replicatetest.Server
	env *pipeline.Env
}

func newHarness(t *testing.T) *harness {
	srv := replicatetest.NewServer(replicatetest.Options{PageSize: 3})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	replicate.Install(env, c)
	return &harness{srv: srv, env: env}
}

func (h *harness) request(keepLast int, keep []string, state stateView) *pipeline.Request {
	keepVal := cty.ListValEmpty(cty.String)
	if len(keep) > 0 {
		var vs []cty.Value
		for _, k := range keep {
			vs = append(vs, cty.StringVal(k))
		}
		keepVal = cty.ListVal(vs)
	}
	mem := &pipeline.MemShared{}
	return &pipeline.Request{
		Address: "prune.old", Kind: "prune", Name: "old",
		Inputs: cty.ObjectVal(map[string]cty.Value{
			"model":     cty.StringVal("acme/ana"),
			"keep_last": cty.NumberIntVal(int64(keepLast)),
			"keep":      keepVal,
		}),
		State:    view{state, mem},
		Recorder: &recorder{MemShared: mem},
		Env:      h.env,
	}
}

// trainRecord is a train stage's record as an earlier release wrote it.
func trainRecord(status pipeline.Status, version string) pipeline.StageRecord {
	return pipeline.StageRecord{Kind: "train", Name: "lora", Status: status,
		Outputs: cty.ObjectVal(map[string]cty.Value{"version": cty.StringVal(version), "training_id": cty.StringVal("tr-" + version)})}
}

// gateRecord is a loss gate's record as an earlier release wrote it.
func gateRecord(status pipeline.Status, accepted string) pipeline.StageRecord {
	data, _ := json.Marshal(map[string]any{"last_accepted": map[string]any{"version": accepted}})
	return pipeline.StageRecord{Kind: "loss_gate", Name: "fit", Status: status, Data: data}
}

func listOf(v cty.Value) []string {
	var out []string
	for _, e := range v.AsValueSlice() {
		out = append(out, e.AsString())
	}
	return out
}

func TestPruneKeepRulesAcrossPages(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 10) // 4 pages of 3
	ids := h.srv.VersionIDs("acme", "ana")
	// ids[0] is this run's version; ids[5] is pinned; ids[7] was accepted by the gate.
	state := stateView{
		"train":     {trainRecord(pipeline.StatusComplete, "acme/ana:"+ids[0])},
		"loss_gate": {gateRecord(pipeline.StatusComplete, "acme/ana:"+ids[7])},
	}
	req := h.request(3, []string{"acme/ana:" + ids[5]}, state)
	plan, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[3], ids[4], ids[6], ids[8], ids[9]}
	if !reflect.DeepEqual(plan.Deletes, want) {
		t.Fatalf("plan deletes %v, want %v", plan.Deletes, want)
	}
	if h.srv.Count("DELETE version") != 0 {
		t.Fatal("plan deleted")
	}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	deleted := listOf(res.Outputs["deleted"])
	// Deleted oldest first.
	if !reflect.DeepEqual(deleted, []string{ids[9], ids[8], ids[6], ids[4], ids[3]}) {
		t.Fatalf("deleted %v", deleted)
	}
	if kept := listOf(res.Outputs["kept"]); !reflect.DeepEqual(kept, []string{ids[0], ids[1], ids[2], ids[5], ids[7]}) {
		t.Fatalf("kept %v", kept)
	}
	if left := h.srv.VersionIDs("acme", "ana"); !reflect.DeepEqual(left, []string{ids[0], ids[1], ids[2], ids[5], ids[7]}) {
		t.Fatalf("server has %v", left)
	}
	if h.srv.Count("GET /v1/models/{owner}/{name}/versions") < 8 {
		t.Fatalf("only %d list pages read (plan + apply need 4 each)", h.srv.Count("GET /v1/models/{owner}/{name}/versions"))
	}
	// Nothing left to do on a second run.
	res, err = Kind{}.Apply(context.Background(), req)
	if err != nil || len(listOf(res.Outputs["deleted"])) != 0 {
		t.Fatalf("second run: %v %v", err, res.Outputs)
	}
}

func TestPruneRefusalIsAWarning(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 5)
	ids := h.srv.VersionIDs("acme", "ana")
	h.srv.ForbidDelete(ids[4], "A deployment uses this version.")
	res, err := Kind{}.Apply(context.Background(), h.request(2, nil, stateView{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := listOf(res.Outputs["deleted"]); !reflect.DeepEqual(got, []string{ids[3], ids[2]}) {
		t.Fatalf("deleted %v", got)
	}
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, ids[4]) || !strings.Contains(w, "A deployment uses this version.") {
		t.Fatalf("warnings %q", w)
	}
	if kept := listOf(res.Outputs["kept"]); !reflect.DeepEqual(kept, []string{ids[0], ids[1], ids[4]}) {
		t.Fatalf("kept %v", kept)
	}
}

func TestPruneNeverRunsAfterUpstreamFailure(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 6)
	for _, st := range []stateView{
		{"loss_gate": {gateRecord(pipeline.StatusRefused, "")}},
		{"train": {trainRecord(pipeline.StatusFailed, "")}},
		{"train": {trainRecord(pipeline.StatusInterrupted, "")}},
	} {
		res, err := Kind{}.Apply(context.Background(), h.request(1, nil, st))
		if err != nil {
			t.Fatal(err)
		}
		if res.Refused == "" || len(listOf(res.Outputs["deleted"])) != 0 {
			t.Fatalf("state %v: result %+v", st, res)
		}
	}
	if h.srv.Count("DELETE version") != 0 || len(h.srv.VersionIDs("acme", "ana")) != 6 {
		t.Fatal("pruned after an upstream failure")
	}
}

func TestPrunePlanWithoutTokenAndBadSettings(t *testing.T) {
	h := newHarness(t)
	req := h.request(3, nil, stateView{})
	req.Env = &pipeline.Env{Getenv: func(string) string { return "" }}
	res, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deletes) != 0 || !strings.Contains(strings.Join(res.Notes, "\n"), "known after apply") {
		t.Fatalf("no-token plan %+v", res)
	}
	if h.srv.Count("GET /v1/models/{owner}/{name}/versions") != 0 {
		t.Fatal("read the API without a token")
	}
	if _, err := (Kind{}).Plan(context.Background(), h.request(0, nil, stateView{})); err == nil || !strings.Contains(err.Error(), "keep_last = 0") {
		t.Fatalf("keep_last 0: %v", err)
	}
	if _, err := (Kind{}).Plan(context.Background(), h.request(3, []string{"acme/bob:x"}, stateView{})); err == nil || !strings.Contains(err.Error(), "another model") {
		t.Fatalf("foreign keep: %v", err)
	}
	// A model that does not exist yet: nothing to delete.
	res, err = Kind{}.Plan(context.Background(), h.request(3, nil, stateView{}))
	if err != nil || len(res.Deletes) != 0 {
		t.Fatalf("missing model: %v %+v", err, res)
	}
}

// A version a loss gate deleted may still be listed while Replicate finishes the asynchronous
// delete: it must not count toward keep_last (that would keep one good version fewer) and is not
// deleted twice.
func TestPruneSkipsVersionsBeingDeleted(t *testing.T) {
	h := newHarness(t)
	h.srv.DeleteDelay(50)
	h.srv.AddModel("acme", "ana", 5)
	ids := h.srv.VersionIDs("acme", "ana") // newest first
	c, _ := replicate.FromEnv(h.env)
	if err := c.DeleteVersion(context.Background(), "acme", "ana", ids[0]); err != nil {
		t.Fatal(err)
	}
	gate, _ := json.Marshal(map[string]any{"deleted_versions": []string{"acme/ana:" + ids[0]}})
	rec := pipeline.StageRecord{Kind: "loss_gate", Name: "fit", Status: pipeline.StatusComplete, Data: gate}
	// The engine's view answers Records("") with every kind.
	state := stateView{"loss_gate": {rec}, "": {rec}}
	req := h.request(3, nil, state)
	plan, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{ids[4]}; !reflect.DeepEqual(plan.Deletes, want) {
		t.Fatalf("plan deletes %v, want %v (the version being deleted does not count)", plan.Deletes, want)
	}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if deleted := listOf(res.Outputs["deleted"]); !reflect.DeepEqual(deleted, []string{ids[4]}) {
		t.Fatalf("deleted %v, want only %s", deleted, ids[4])
	}
	if n := h.srv.Count("DELETE version"); n != 2 {
		t.Errorf("%d deletes, want 2 (the gate's and prune's one)", n)
	}
}

// A version the gate rejected but could not finish deleting (interrupted, failing API) is deleted
// by prune and never kept in place of a good one.
func TestPruneFinishesAnUnfinishedRejection(t *testing.T) {
	h := newHarness(t)
	ids, state := withUnfinishedRejection(h)
	req := h.request(2, nil, state)
	plan, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[3], ids[1]}
	if !sameSet(plan.Deletes, want) {
		t.Fatalf("plan deletes %v, want the rejected %s and the oldest %s", plan.Deletes, ids[1], ids[3])
	}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if deleted := listOf(res.Outputs["deleted"]); !sameSet(deleted, want) {
		t.Fatalf("deleted %v, want %v", deleted, want)
	}
	if kept := listOf(res.Outputs["kept"]); !sameSet(kept, []string{ids[0], ids[2]}) {
		t.Fatalf("kept %v, want the new version and the newest good old one", kept)
	}
}

// keep wins over a gate's verdict: a rejected version whose delete did not finish, then listed in
// keep by the user on purpose, is kept by plan and apply (it counts toward keep_last like any
// pinned one).
func TestPruneKeepsARejectedVersionListedInKeep(t *testing.T) {
	h := newHarness(t)
	ids, state := withUnfinishedRejection(h)
	req := h.request(2, []string{ids[1]}, state)
	plan, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[3], ids[2]}
	if !sameSet(plan.Deletes, want) {
		t.Fatalf("plan deletes %v, want the two oldest %v, not the kept rejected %s", plan.Deletes, want, ids[1])
	}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if deleted := listOf(res.Outputs["deleted"]); !sameSet(deleted, want) {
		t.Fatalf("deleted %v, want %v", deleted, want)
	}
	if kept := listOf(res.Outputs["kept"]); !sameSet(kept, []string{ids[0], ids[1]}) {
		t.Fatalf("kept %v, want the new version and the one listed in keep", kept)
	}
	if left := h.srv.VersionIDs("acme", "ana"); !sameSet(left, []string{ids[0], ids[1]}) {
		t.Fatalf("the model has %v left, want %v", left, []string{ids[0], ids[1]})
	}
}

// withUnfinishedRejection is a model of 4 versions, newest first: the new good one, one a gate
// rejected but did not finish deleting, two good old ones; and the state that says so.
func withUnfinishedRejection(h *harness) ([]string, stateView) {
	h.srv.AddModel("acme", "ana", 4)
	ids := h.srv.VersionIDs("acme", "ana")
	gate, _ := json.Marshal(map[string]any{"last_accepted": map[string]any{"version": "acme/ana:" + ids[0]},
		"rejected_versions": []string{"acme/ana:" + ids[1]}})
	gateRec := pipeline.StageRecord{Kind: "loss_gate", Name: "fit", Status: pipeline.StatusComplete, Data: gate}
	train := trainRecord(pipeline.StatusComplete, "acme/ana:"+ids[0])
	return ids, stateView{"loss_gate": {gateRec}, "train": {train}, "": {train, gateRec}}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// A version the API refused to delete is remembered and kept, so the next plan settles (no
// pending delete, -detailed-exitcode 0) instead of asking again on every run.
func TestRefusedVersionIsNotPlannedAgain(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 3)
	ids := h.srv.VersionIDs("acme", "ana")
	h.srv.ForbidDelete(ids[2], "Other users have made predictions with this version.")
	req := h.request(2, nil, stateView{})
	if _, err := (Kind{}).Apply(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	next := h.request(2, nil, stateView{})
	next.State, next.Recorder = req.State, req.Recorder // the same subject's state
	plan, err := Kind{}.Plan(context.Background(), next)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Deletes) != 0 {
		t.Errorf("plan deletes %v again after the API refused", plan.Deletes)
	}
}

// A destination shared by three subjects of the batch, keep_last = 1: the model's versions are
// ana's own (in her ledger), other subjects' and foreign ones (in no ledger of hers). Plan and apply
// delete only ana's own beyond the newest; every other version stays, even one her ledger marks
// rejected without having made it.
func TestSharedModelPrunesOnlyTheSubjectsOwnVersions(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 8)
	ids := h.srv.VersionIDs("acme", "ana")          // newest first
	own := []string{ids[6], ids[5], ids[3], ids[1]} // oldest first, as trained
	req := h.request(1, nil, stateView{})
	req.Shared = map[string]int{replicate.ModelResource("acme/ana"): 3}
	err := replicate.UpdateLedger(req, func(l *replicate.Ledger) {
		for i, id := range own {
			l.Produced("acme/ana:"+id, "tr-"+id, 20, "d", time.Unix(int64(i), 0))
			l.Judge("acme/ana:"+id, replicate.Accepted)
		}
		l.Judge("acme/ana:"+ids[4], replicate.Rejected) // not hers: never deleted by her prune
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[6], ids[5], ids[3]}
	plan, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(plan.Deletes, want) {
		t.Fatalf("plan deletes %v, want only ana's own older versions %v", plan.Deletes, want)
	}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if deleted := listOf(res.Outputs["deleted"]); !sameSet(deleted, want) {
		t.Fatalf("deleted %v, want %v", deleted, want)
	}
	left := []string{ids[0], ids[1], ids[2], ids[4], ids[7]}
	if got := h.srv.VersionIDs("acme", "ana"); !sameSet(got, left) {
		t.Fatalf("the model has %v left, want ana's newest and every version not hers %v", got, left)
	}
}
