package prune_test

import (
	"context"
	"encoding/json"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
	"github.com/pipeline-dev/pipeline/stages/lossgate"
	"github.com/pipeline-dev/pipeline/stages/prune"
	"github.com/pipeline-dev/pipeline/stages/train"
)

// memRecorder keeps the last saved data as JSON, as state would, and writes the instance's
// shared records (the version ledger) where every stage of the chain reads them.
type memRecorder struct {
	*pipeline.MemShared
	pipeline.NoLimits
	data json.RawMessage
}

func (m *memRecorder) Save(v any) error {
	b, err := json.Marshal(v)
	m.data = b
	return err
}
func (m *memRecorder) Progress(pipeline.Progress) {}
func (m *memRecorder) Warn(string)                {}

// records is the instance's state: stage records by kind, and the shared records.
type records struct {
	byKind map[string][]pipeline.StageRecord
	mem    *pipeline.MemShared
}

func newRecords() records {
	return records{byKind: map[string][]pipeline.StageRecord{}, mem: &pipeline.MemShared{}}
}

func (r records) Records(kind string) []pipeline.StageRecord {
	if kind == "" {
		var all []pipeline.StageRecord
		for _, rs := range r.byKind {
			all = append(all, rs...)
		}
		return all
	}
	return r.byKind[kind]
}

func (r records) Shared(name string) json.RawMessage { return r.mem.Shared(name) }

// runChain runs train → loss_gate → prune the way the engine hands values along (the gate gets
// the train stage's whole output object), against the simulator in auto mode.
func runChain(t *testing.T, srv *replicatetest.Server, env *pipeline.Env, dir string, in cty.Value, state records) (trainOut, gate *pipeline.Result, pruned *pipeline.Result) {
	t.Helper()
	return applyChain(t, env, dir, in, state, chainOpts{keepLast: 2})
}

// chainOpts vary a chain run: prune's keep_last, and the train stage's prior record (a resume).
type chainOpts struct {
	keepLast   int64
	trainPrior *pipeline.Prior
}

// trainRequest is the train stage's request in the chain.
func trainRequest(env *pipeline.Env, dir string, in cty.Value, state records, rec pipeline.Recorder, gateIn map[string]cty.Value) *pipeline.Request {
	return &pipeline.Request{
		Address: "train.lora", Kind: "train", Name: "lora",
		Inputs: cty.ObjectVal(map[string]cty.Value{
			"images":        cty.ListVal([]cty.Value{cty.StringVal("a.jpg"), cty.StringVal("b.jpg")}),
			"trainer":       cty.NullVal(cty.String),
			"destination":   cty.NullVal(cty.String),
			"input":         in,
			"poll_interval": cty.StringVal("5s"),
		}),
		// The chain trains an overfit model (rank 48) on purpose, for the gate to refuse.
		Blocks:   []pipeline.Block{{Type: "limit", Labels: []string{"lora_rank"}, Attrs: map[string]cty.Value{"max": cty.NumberIntVal(64)}}},
		Settings: map[string]cty.Value{"replicate": replicateSettings},
		BaseDir:  dir, Recorder: rec, Env: env, State: state,
	}
}

// replicateSettings is the chain's `replicate` block.
var replicateSettings = cty.ObjectVal(map[string]cty.Value{
	"trainer": cty.StringVal(replicatetest.Trainer), "destination": cty.StringVal("acme/ana-lora"),
})

// pruneRequest is the prune stage's request in the chain.
func pruneRequest(env *pipeline.Env, state records, keepLast int64) *pipeline.Request {
	return &pipeline.Request{Address: "prune.old", Kind: "prune", Name: "old",
		Inputs: cty.ObjectVal(map[string]cty.Value{
			"model": cty.StringVal("acme/ana-lora"), "keep_last": cty.NumberIntVal(keepLast), "keep": cty.ListValEmpty(cty.String),
		}),
		Settings: map[string]cty.Value{"replicate": replicateSettings},
		Recorder: &memRecorder{MemShared: state.mem}, Env: env, State: state}
}

func gateInputs() map[string]cty.Value {
	return map[string]cty.Value{
		"min_loss": cty.NumberFloatVal(0.2), "max_loss": cty.NullVal(cty.Number), "smoothing": cty.NullVal(cty.Number),
		"cancel_early": cty.False, "on_fail": cty.StringVal("delete_version"),
	}
}

func applyChain(t *testing.T, env *pipeline.Env, dir string, in cty.Value, state records, o chainOpts) (trainOut, gate *pipeline.Result, pruned *pipeline.Result) {
	t.Helper()
	ctx := context.Background()
	gateIn := gateInputs()
	trec := &memRecorder{MemShared: state.mem}
	treq := trainRequest(env, dir, in, state, trec, gateIn)
	if treq.Prior = o.trainPrior; treq.Prior != nil {
		trec.data = treq.Prior.Data
	}
	tres, err := train.Kind{}.Apply(ctx, treq)
	if err != nil {
		t.Fatal(err)
	}
	trainObj := cty.ObjectVal(tres.Outputs)
	state.byKind["train"] = []pipeline.StageRecord{{Kind: "train", Name: "lora", Status: pipeline.StatusComplete, Outputs: trainObj, Data: trec.data}}

	gateIn["training"] = trainObj
	var prior *pipeline.Prior
	if rs := state.byKind["loss_gate"]; len(rs) > 0 {
		prior = &pipeline.Prior{Status: rs[0].Status, Data: rs[0].Data}
	}
	grec := &memRecorder{MemShared: state.mem}
	gres, err := lossgate.Kind{}.Apply(ctx, &pipeline.Request{Address: "loss_gate.fit", Kind: "loss_gate", Name: "fit",
		Inputs: cty.ObjectVal(gateIn), Recorder: grec, Env: env, Prior: prior, State: state})
	if err != nil {
		t.Fatal(err)
	}
	status := pipeline.StatusComplete
	if gres.Refused != "" {
		status = pipeline.StatusRefused
	}
	state.byKind["loss_gate"] = []pipeline.StageRecord{{Kind: "loss_gate", Name: "fit", Status: status, Data: grec.data, Outputs: cty.ObjectVal(gres.Outputs)}}

	pres, err := prune.Kind{}.Apply(ctx, pruneRequest(env, state, o.keepLast))
	if err != nil {
		t.Fatal(err)
	}
	return tres, gres, pres
}

func TestTrainGatePruneChain(t *testing.T) {
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }, Simulated: true, CacheDir: t.TempDir()}
	replicate.Install(env, c)
	dir := t.TempDir()
	for i, n := range []string{"a.jpg", "b.jpg"} {
		if err := os.WriteFile(filepath.Join(dir, n), trainPhoto(i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv.AddModel("acme", "ana-lora", 3)
	old := srv.VersionIDs("acme", "ana-lora")
	state := newRecords()

	good := cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(1000), "lora_rank": cty.NumberIntVal(16), "trigger_word": cty.StringVal("TOK")})
	tres, gres, pres := runChain(t, srv, env, dir, good, state)
	v1 := tres.Outputs["version"].AsString()
	if gres.Refused != "" || !gres.Outputs["passed"].True() {
		t.Fatalf("good training refused: %s", gres.Refused)
	}
	if tres.Outputs["previous_version"].AsString() != "acme/ana-lora:"+old[0] {
		t.Fatalf("previous_version %s", tres.Outputs["previous_version"].AsString())
	}
	// keep_last 2: the new version and the newest old one stay.
	if pres.Refused != "" || len(pres.Outputs["deleted"].AsValueSlice()) != 2 {
		t.Fatalf("prune after a good training: %+v", pres)
	}
	left := srv.VersionIDs("acme", "ana-lora")
	if len(left) != 2 || "acme/ana-lora:"+left[0] != v1 || left[1] != old[0] {
		t.Fatalf("versions left %v", left)
	}

	// An aggressive retrain overfits: the gate refuses and deletes only its version, so the
	// model's latest version is the last good one again, and prune does not run.
	over := cty.ObjectVal(map[string]cty.Value{"steps": cty.NumberIntVal(1000), "lora_rank": cty.NumberIntVal(48), "trigger_word": cty.StringVal("TOK")})
	tres, gres, pres = runChain(t, srv, env, dir, over, state)
	if gres.Refused == "" || !strings.Contains(gres.Refused, "overfitting") {
		t.Fatalf("overfit passed: %+v", gres.Outputs)
	}
	if got := srv.VersionIDs("acme", "ana-lora"); len(got) != 2 || "acme/ana-lora:"+got[0] != v1 {
		t.Fatalf("after the refusal the versions are %v, latest must be %s", got, v1)
	}
	if pres.Refused == "" || len(pres.Outputs["deleted"].AsValueSlice()) != 0 {
		t.Fatalf("prune ran after a refused gate: %+v", pres)
	}
	// The subject's ledger still says which training was accepted last.
	if a := replicate.LedgerOf(state).LastAccepted(); a == nil || a.Ref != v1 || a.Images != 2 {
		t.Fatalf("last accepted %+v", a)
	}
	_ = tres
}

// trainPhoto is a small JPEG the train stage can prepare (it zips prepared copies, so its photos
// must decode).
func trainPhoto(seed int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = uint8(i*7 + seed*31)
	}
	return phototest.JPEG(img, 90)
}
