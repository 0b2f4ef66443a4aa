package lossgate

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// recorder keeps what the gate records: its private data and the subject's shared ledger.
type recorder struct {
	pipeline.MemShared
	pipeline.NoLimits
	mu    sync.Mutex
	data  json.RawMessage
	saves int
}

func (r *recorder) Save(v any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.data, r.saves = b, r.saves+1
	return nil
}
func (r *recorder) Progress(pipeline.Progress) {}
func (r *recorder) Warn(string)                {}

// ledger is the subject's version ledger as the gate left it.
func (r *recorder) ledger() *replicate.Ledger {
	return replicate.LedgerOf(pipeline.MemState{Memory: &r.MemShared})
}

// withLedger is a recorder whose ledger already holds an accepted version (an earlier pass).
func withLedger(t *testing.T, accepted string, images int) *recorder {
	t.Helper()
	rec := &recorder{}
	req := &pipeline.Request{Recorder: rec}
	if err := replicate.UpdateLedger(req, func(l *replicate.Ledger) {
		l.Produced(accepted, "tr_before", images, "sha256:before", time.Time{})
		l.Judge(accepted, replicate.Accepted)
	}); err != nil {
		t.Fatal(err)
	}
	return rec
}

// trainingVal is a train stage's output object with a loss curve settling at final.
func trainingVal(version string, final float64, imageCount int) cty.Value {
	losses := map[string]cty.Value{}
	for _, p := range curve(1000, final) {
		if p.Step%25 == 0 {
			losses[fmt.Sprint(p.Step)] = cty.NumberFloatVal(p.Loss)
		}
	}
	return cty.ObjectVal(map[string]cty.Value{
		"training_id":      cty.StringVal("tr_" + fmt.Sprint(imageCount)),
		"version":          cty.StringVal(version),
		"weights":          cty.StringVal("https://x/w.tar"),
		"losses":           cty.MapVal(losses),
		"image_count":      cty.NumberIntVal(int64(imageCount)),
		"images_digest":    cty.StringVal("sha256:abc"),
		"input":            cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(1000), "trigger_word": cty.StringVal("TOK")}),
		"previous_version": cty.StringVal(""),
	})
}

func gateInputs(training cty.Value, onFail string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"training":     training,
		"min_loss":     cty.NumberFloatVal(0.2),
		"max_loss":     cty.NullVal(cty.Number),
		"smoothing":    cty.NullVal(cty.Number),
		"cancel_early": cty.False,
		"on_fail":      cty.StringVal(onFail),
	})
}

type harness struct {
	srv *replicatetest.Server
	env *pipeline.Env
}

func newHarness(t *testing.T) *harness {
	srv := replicatetest.NewServer(replicatetest.Options{})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	replicate.Install(env, c)
	return &harness{srv: srv, env: env}
}

func (h *harness) request(inputs cty.Value, prior *pipeline.Prior, rec *recorder) *pipeline.Request {
	return &pipeline.Request{Address: "loss_gate.fit", Kind: "loss_gate", Name: "fit", Inputs: inputs, Prior: prior, Recorder: rec, Env: h.env,
		State: pipeline.MemState{Memory: &rec.MemShared}}
}

func TestGatePassesAndRecordsLastAccepted(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 2)
	ids := h.srv.VersionIDs("acme", "ana")
	rec := &recorder{}
	res, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+ids[0], 0.30, 20), OnFailDelete), nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused != "" || !res.Outputs["passed"].True() || len(res.Deletes) != 0 {
		t.Fatalf("result %+v", res)
	}
	a := rec.ledger().LastAccepted()
	if a == nil || a.Ref != "acme/ana:"+ids[0] || a.Images != 20 || a.ImagesDigest != "sha256:abc" || a.Training != "tr_20" {
		t.Fatalf("last accepted %+v", a)
	}
	if h.srv.Count("DELETE version") != 0 {
		t.Fatal("a passing gate deleted something")
	}
}

func TestOverfitIsRefusedAndOnlyTheRejectedVersionDeleted(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 3)
	before := h.srv.VersionIDs("acme", "ana")
	bad := before[0] // the newest: what the overfit training produced
	rec := withLedger(t, "acme/ana:"+before[1], 18)
	res, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+bad, 0.12, 20), OnFailDelete),
		&pipeline.Prior{Status: pipeline.StatusComplete}, rec))
	if err != nil {
		t.Fatal(err)
	}
	if res.Outputs["passed"].True() || !strings.Contains(res.Refused, "< min_loss 0.2: overfitting") {
		t.Fatalf("refused %q passed %v", res.Refused, res.Outputs["passed"])
	}
	fl, _ := res.Outputs["final_loss"].AsBigFloat().Float64()
	if fl > 0.2 || !strings.Contains(res.Refused, fmt.Sprintf("%.3g", fl)) {
		t.Fatalf("final_loss %v, reason %q", fl, res.Refused)
	}
	after := h.srv.VersionIDs("acme", "ana")
	if len(after) != 2 || after[0] != before[1] || after[1] != before[2] {
		t.Fatalf("versions after %v, before %v: only %s may go", after, before, bad)
	}
	if len(res.Deletes) != 1 || res.Deletes[0] != "acme/ana:"+bad {
		t.Fatalf("deletes %v", res.Deletes)
	}
	// The last accepted training is carried forward.
	if a := rec.ledger().LastAccepted(); a == nil || a.Ref != "acme/ana:"+before[1] || a.Images != 18 {
		t.Fatalf("last accepted %+v", a)
	}
	// Running the gate again (resume after a crash past the delete) is harmless.
	res, err = Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+bad, 0.12, 20), OnFailDelete), nil, &recorder{}))
	if err != nil || res.Refused == "" || len(h.srv.VersionIDs("acme", "ana")) != 2 {
		t.Fatalf("second run: %v %+v", err, res)
	}
}

func TestDeleteRefusalIsAWarning(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 2)
	ids := h.srv.VersionIDs("acme", "ana")
	h.srv.ForbidDelete(ids[0], "This version has predictions by other users and cannot be deleted.")
	res, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+ids[0], 0.1, 20), OnFailDelete), nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused == "" || len(res.Deletes) != 0 || !strings.Contains(strings.Join(res.Warnings, "\n"), "has predictions by other users") {
		t.Fatalf("result %+v", res)
	}
	if len(h.srv.VersionIDs("acme", "ana")) != 2 {
		t.Fatal("version count changed")
	}
}

func TestOnFailKeepAndNoLosses(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 1)
	ids := h.srv.VersionIDs("acme", "ana")
	res, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+ids[0], 0.1, 20), OnFailKeep), nil, &recorder{}))
	if err != nil || res.Refused == "" || h.srv.Count("DELETE version") != 0 {
		t.Fatalf("keep: %v %+v deletes %d", err, res, h.srv.Count("DELETE version"))
	}
	// No loss series: refused, nothing deleted, final_loss null.
	empty := cty.ObjectVal(map[string]cty.Value{
		"training_id": cty.StringVal("tr"), "version": cty.StringVal("acme/ana:" + ids[0]),
		"losses": cty.MapValEmpty(cty.Number), "image_count": cty.NumberIntVal(3), "images_digest": cty.StringVal("d"),
		"input": cty.EmptyObjectVal, "weights": cty.StringVal(""), "previous_version": cty.StringVal(""),
	})
	res, err = Kind{}.Apply(context.Background(), h.request(gateInputs(empty, OnFailDelete), nil, &recorder{}))
	if err != nil || res.Refused == "" || !res.Outputs["final_loss"].IsNull() || h.srv.Count("DELETE version") != 0 {
		t.Fatalf("no losses: %v %+v", err, res)
	}
}

func TestPlanNotesAndSettingsErrors(t *testing.T) {
	h := newHarness(t)
	in := cty.ObjectVal(map[string]cty.Value{
		"training":     cty.DynamicVal,
		"min_loss":     cty.NumberFloatVal(0.2),
		"max_loss":     cty.NumberFloatVal(0.5),
		"smoothing":    cty.NullVal(cty.Number),
		"cancel_early": cty.True,
		"on_fail":      cty.StringVal(OnFailDelete),
	})
	res, err := Kind{}.Plan(context.Background(), h.request(in, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(res.Notes, "\n")
	for _, want := range []string{"passes within [0.2, 0.5]", "deletes the rejected version", "cancel_early"} {
		if !strings.Contains(notes, want) {
			t.Errorf("missing %q in %s", want, notes)
		}
	}
	if len(res.Deletes) != 0 {
		t.Fatal("plan cannot know what it deletes")
	}
	for _, c := range []struct {
		attr string
		val  cty.Value
		want string
	}{
		{"smoothing", cty.NumberFloatVal(1.5), "smoothing = 1.5 is outside (0, 1]"},
		{"max_loss", cty.NumberFloatVal(0.1), "max_loss = 0.1 is not above min_loss = 0.2"},
		{"on_fail", cty.StringVal("delete"), `on_fail = "delete" is not one of`},
		{"min_loss", cty.NumberFloatVal(-1), "min_loss = -1 is negative"},
	} {
		m := in.AsValueMap()
		m[c.attr] = c.val
		_, err := Kind{}.Plan(context.Background(), h.request(cty.ObjectVal(m), nil, &recorder{}))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.attr, err, c.want)
		}
	}
	// A dependent's inputs may lack attributes: the defaults apply.
	s, err := ParseSettings(cty.ObjectVal(map[string]cty.Value{"cancel_early": cty.True}))
	if err != nil || !s.CancelEarly || s.MinLoss == nil || *s.MinLoss != DefaultMinLoss || s.OnFail != OnFailDelete {
		t.Fatalf("defaults: %+v %v", s, err)
	}
}

func TestLastAcceptedFromState(t *testing.T) {
	rec := withLedger(t, "acme/ana:v1", 22)
	if a := LastAccepted(pipeline.MemState{Memory: &rec.MemShared}); a == nil || a.Images != 22 {
		t.Fatalf("got %+v", a)
	}
	if a := LastAccepted(pipeline.RecordList{}); a != nil {
		t.Fatalf("empty state gave %+v", a)
	}
	// A state written before the ledger existed: the gate's old record still counts.
	old := pipeline.RecordList{{Kind: "loss_gate", Name: "fit", Status: pipeline.StatusComplete,
		Data: json.RawMessage(`{"last_accepted":{"training_id":"t1","version":"acme/ana:v0","image_count":17}}`)}}
	if a := LastAccepted(old); a == nil || a.Images != 17 || a.Ref != "acme/ana:v0" {
		t.Fatalf("legacy state gave %+v", a)
	}
}

// With cancel_early the gate is consulted on the running curve and says when to stop.
func TestCancelEarlyConsultation(t *testing.T) {
	in := gateInputs(cty.DynamicVal, OnFailDelete)
	if c := (Kind{}).Consultation(in, "train.lora"); c != nil {
		t.Fatalf("a gate without cancel_early asked to be consulted: %+v", c)
	}
	m := in.AsValueMap()
	m["cancel_early"] = cty.True
	c := (Kind{}).Consultation(cty.ObjectVal(m), "train.lora")
	if c == nil || !strings.Contains(c.Note, "min_loss 0.2") {
		t.Fatalf("consultation %+v", c)
	}
	observed := func(final float64, upTo int) cty.Value {
		losses := map[string]cty.Value{}
		for _, p := range curve(1000, final) {
			if p.Step <= upTo {
				losses[fmt.Sprint(p.Step)] = cty.NumberFloatVal(p.Loss)
			}
		}
		return cty.ObjectVal(map[string]cty.Value{"step": cty.NumberIntVal(int64(upTo)), "total": cty.NumberIntVal(1000), "losses": cty.MapVal(losses)})
	}
	if stop, err := c.Consult(observed(0.05, 900)); err != nil || !strings.Contains(stop, "overfitting") || !strings.Contains(stop, "900/1000") {
		t.Errorf("an overfit curve: stop %q, err %v", stop, err)
	}
	if stop, err := c.Consult(observed(0.35, 900)); err != nil || stop != "" {
		t.Errorf("a healthy curve: stop %q, err %v", stop, err)
	}
}

func TestNoVersionIsNeverAccepted(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	res, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("", 0.30, 20), OnFailDelete), nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused == "" || !strings.Contains(res.Refused, "produced no version") || rec.ledger().LastAccepted() != nil {
		t.Fatalf("result %+v data %s", res, rec.data)
	}
}

func TestDeleteOutageIsAnErrorButOutcomeIsRecorded(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "ana", 2)
	ids := h.srv.VersionIDs("acme", "ana")
	h.srv.Fail("DELETE", "/v1/models/acme/ana/versions/", 503, 50)
	rec := withLedger(t, "acme/ana:"+ids[1], 20)
	_, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+ids[0], 0.1, 20), OnFailDelete),
		&pipeline.Prior{Status: pipeline.StatusComplete}, rec))
	if err == nil || !strings.Contains(err.Error(), "run apply again to retry the delete") || !strings.Contains(err.Error(), "overfitting") {
		t.Fatalf("err %v", err)
	}
	l := rec.ledger()
	if a := l.LastAccepted(); a == nil || a.Ref != "acme/ana:"+ids[1] {
		t.Fatalf("last accepted not carried forward: %+v", l)
	}
	// The rejected version is marked before the delete is tried, so no stage takes it for a good
	// one and prune finishes the delete.
	if u := l.Unfinished("acme/ana"); len(u) != 1 || u[0].Ref != "acme/ana:"+ids[0] {
		t.Fatalf("rejected version not recorded before the delete: %+v", l)
	}
	if !l.Gone()[ids[0]] {
		t.Error("a rejected version must be skipped by stages that pick versions")
	}
}

// Version deletion is asynchronous on Replicate: the gate records what it deleted (and carries it
// forward when a later training passes) so generate, train and prune skip a version still listed.
func TestDeletedVersionIsRecordedForOthers(t *testing.T) {
	h := newHarness(t)
	h.srv.DeleteDelay(3)
	h.srv.AddModel("acme", "ana", 2)
	ids := h.srv.VersionIDs("acme", "ana")
	rec := &recorder{}
	res, err := Kind{}.Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+ids[0], 0.12, 20), OnFailDelete), nil, rec))
	if err != nil || res.Refused == "" {
		t.Fatalf("refused %q, %v", res.Refused, err)
	}
	if got := h.srv.VersionIDs("acme", "ana"); len(got) != 2 {
		t.Fatalf("the delete took effect at once (%v): the test server should delay it", got)
	}
	del := rec.ledger().Gone()
	if !del[ids[0]] || del[ids[1]] {
		t.Fatalf("versions gone = %v", del)
	}
	// A later training passes: the record of the deleted version is kept.
	prior := &pipeline.Prior{Status: pipeline.StatusRefused}
	if _, err := (Kind{}).Apply(context.Background(), h.request(gateInputs(trainingVal("acme/ana:"+ids[1], 0.3, 20), OnFailDelete), prior, rec)); err != nil {
		t.Fatal(err)
	}
	if l := rec.ledger(); !l.Gone()[ids[0]] || l.LastAccepted() == nil {
		t.Fatalf("after a pass: %+v", l)
	}
}
