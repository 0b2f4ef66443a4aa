package generate

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/disintegration/imaging"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

var errKilled = errors.New("killed: state write failed")

// recorder keeps saved data in memory like the engine's state. It can simulate a crash: Save
// number FailOn returns an error without storing (the process died before the write); OnProgress
// runs on every progress report (a test cancels the context there: Ctrl-C mid-wait).
type recorder struct {
	pipeline.MemShared
	pipeline.NoLimits
	mu         sync.Mutex
	data       json.RawMessage
	saves      int
	FailOn     int
	OnProgress func(p pipeline.Progress)
	progress   []pipeline.Progress
	warns      []string
}

func (r *recorder) Save(v any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.saves++
	if r.saves == r.FailOn {
		return errKilled
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.data = b
	return nil
}

func (r *recorder) Progress(p pipeline.Progress) {
	r.mu.Lock()
	r.progress = append(r.progress, p)
	hook := r.OnProgress
	r.mu.Unlock()
	if hook != nil {
		hook(p)
	}
}

func (r *recorder) Warn(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warns = append(r.warns, msg)
}

func (r *recorder) record() record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rec record
	if len(r.data) > 0 {
		_ = json.Unmarshal(r.data, &rec)
	}
	return rec
}

// prior is what the engine hands the next apply after this one.
func (r *recorder) prior(status pipeline.Status) *pipeline.Prior {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &pipeline.Prior{Status: status, SameInputs: true, Data: append(json.RawMessage(nil), r.data...)}
}

// stateView is the engine's view of the other stages of this batch instance.
type stateView = pipeline.RecordList

// harness is a Replicate test server with the subject's model, a client bound to it, the
// subject's photos and their image_check figures.
type harness struct {
	t      *testing.T
	srv    *replicatetest.Server
	c      *replicate.Client
	env    *pipeline.Env
	dir    string
	photos map[string]image.Image
	ref    cty.Value
}

const model = "acme/ana-lora"

// subject is one person's training photos and the reference object image_check would output for
// them (stats: path → figures; texture and face_sharpness -1 when unscored).
type subject struct {
	photos map[string]image.Image
	ref    cty.Value
}

var (
	subjectsMu sync.Mutex
	subjects   = map[string]*subject{}
)

// loadSubject returns the named test subject, made from the public-domain faces in
// ../lib/skin/testdata with ordinary variations (mirror, exposure, crop):
//   - "astronaut": the NASA portrait enlarged to 1024² (face ~200 px, as in a half-body photo);
//   - "hopper": the US Navy portrait as shipped, 512×600 (face ~230 px, a head-and-shoulders shot).
func loadSubject(t *testing.T, name string) *subject {
	t.Helper()
	subjectsMu.Lock()
	defer subjectsMu.Unlock()
	if s := subjects[name]; s != nil {
		return s
	}
	file := map[string]string{"astronaut": "astronaut.jpg", "hopper": "grace_hopper.jpg"}[name]
	src, err := imaging.Open(filepath.Join("..", "lib", "skin", "testdata", file))
	if err != nil {
		t.Fatalf("test photos: %v", err)
	}
	if name == "astronaut" {
		src = imaging.Resize(src, 1024, 1024, imaging.Lanczos)
	}
	b := src.Bounds()
	s := &subject{photos: map[string]image.Image{
		"photos/01.jpg": src,
		"photos/02.jpg": imaging.FlipH(src),
		"photos/03.jpg": imaging.AdjustBrightness(src, -12),
		"photos/04.jpg": imaging.Crop(src, image.Rect(b.Dx()/16, b.Dy()/32, b.Dx()-b.Dx()/16, b.Dy()-b.Dy()/16)),
	}}
	stats := map[string]cty.Value{}
	var accepted []cty.Value
	var names []string
	for p := range s.photos {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		f := skin.Measure(s.photos[p])
		tex, sharp := -1.0, -1.0
		if f.Scored {
			tex, sharp = f.Texture, f.Sharpness
		}
		stats[p] = cty.ObjectVal(map[string]cty.Value{
			"accepted":       cty.True,
			"faces":          cty.NumberIntVal(int64(f.Faces)),
			"texture":        cty.NumberFloatVal(tex),
			"face_sharpness": cty.NumberFloatVal(sharp),
		})
		accepted = append(accepted, cty.StringVal(p))
	}
	s.ref = cty.ObjectVal(map[string]cty.Value{
		"count":    cty.NumberIntVal(int64(len(accepted))),
		"accepted": cty.ListVal(accepted),
		"stats":    cty.MapVal(stats),
	})
	subjects[name] = s
	return s
}

// newHarness starts a test server whose acme/ana-lora has `older` versions before anything trains.
func newHarness(t *testing.T, older int) *harness {
	t.Helper()
	return newHarnessFor(t, "astronaut", older)
}

func newHarnessFor(t *testing.T, who string, older int) *harness {
	t.Helper()
	return newHarnessWith(t, who, older, replicatetest.Options{})
}

// newHarnessWith starts the test server with opts (a clock, say).
func newHarnessWith(t *testing.T, who string, older int, opts replicatetest.Options) *harness {
	t.Helper()
	sub := loadSubject(t, who)
	srv := replicatetest.NewServer(opts)
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(6, time.Millisecond),
		replicate.WithSleep(func(ctx context.Context, d time.Duration) error { return ctx.Err() }))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	replicate.Install(env, c)
	srv.AddModel("acme", "ana-lora", older)
	return &harness{t: t, srv: srv, c: c, env: env, dir: t.TempDir(), photos: sub.photos, ref: sub.ref}
}

// train runs a training of the subject's photos into acme/ana-lora with the given trainer input
// and returns the new version ("owner/name:id"). Aggressive inputs (lora_rank 48) give an overfit
// version whose outputs the test server smooths: plastic skin.
func (h *harness) train(input map[string]any) string {
	h.t.Helper()
	ctx := context.Background()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var names []string
	for p := range h.photos {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		w, err := zw.Create(filepath.Base(p))
		if err != nil {
			h.t.Fatal(err)
		}
		if err := jpeg.Encode(w, h.photos[p], &jpeg.Options{Quality: 95}); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		h.t.Fatal(err)
	}
	f, err := h.c.UploadFile(ctx, "photos.zip", buf.Bytes(), "application/zip")
	if err != nil {
		h.t.Fatal(err)
	}
	in := map[string]any{"input_images": f.URL, "trigger_word": "TOK"}
	for k, v := range input {
		in[k] = v
	}
	tr, err := h.c.CreateTraining(ctx, replicatetest.Trainer, model, in)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; !tr.Terminal(); i++ {
		if i > 50 {
			h.t.Fatalf("training %s still %s after %d polls", tr.ID, tr.Status, i)
		}
		if tr, err = h.c.GetTraining(ctx, tr.ID); err != nil {
			h.t.Fatal(err)
		}
	}
	if tr.Status != "succeeded" || tr.Output.Version == "" {
		h.t.Fatalf("training %s: %s %s", tr.ID, tr.Status, tr.Error)
	}
	return tr.Output.Version
}

// inputs builds the stage's inputs as the engine does: every attribute, defaults filled in.
func inputs(set map[string]cty.Value) cty.Value {
	m := map[string]cty.Value{}
	for name, a := range schema.Attributes {
		switch {
		case set[name] != cty.NilVal:
			m[name] = set[name]
		case a.Default != cty.NilVal:
			m[name] = a.Default
		default:
			m[name] = cty.NullVal(a.Type)
		}
	}
	return cty.ObjectVal(m)
}

func strList(ss ...string) cty.Value {
	vs := make([]cty.Value, len(ss))
	for i, s := range ss {
		vs[i] = cty.StringVal(s)
	}
	return cty.ListVal(vs)
}

func numList(ns ...int64) cty.Value {
	vs := make([]cty.Value, len(ns))
	for i, n := range ns {
		vs[i] = cty.NumberIntVal(n)
	}
	return cty.ListVal(vs)
}

// losses is a train stage record for version with a short decaying loss series.
// gateVal is a loss_gate's output object (what `gate = loss_gate.fit` hands generate): a curve
// of 21 points settling at 0.3, judged against min_loss 0.2.
func gateVal() cty.Value {
	l := map[string]cty.Value{}
	for step := 0; step <= 1000; step += 50 {
		l[fmt.Sprint(step)] = cty.NumberFloatVal(0.3 + 0.55*float64(1000-step)/1000*float64(1000-step)/1000)
	}
	return cty.ObjectVal(map[string]cty.Value{"passed": cty.True, "final_loss": cty.NumberFloatVal(0.3), "reason": cty.StringVal("ok"),
		"min_loss": cty.NumberFloatVal(0.2), "max_loss": cty.NullVal(cty.Number), "losses": cty.MapVal(l)})
}

// request is what the engine passes for `generate.check`.
func (h *harness) request(set map[string]cty.Value, prior *pipeline.Prior, rec *recorder) *pipeline.Request {
	if set["poll_interval"] == cty.NilVal {
		set["poll_interval"] = cty.StringVal("1ms")
	}
	if set["gate"] == cty.NilVal {
		set["gate"] = gateVal()
	}
	st := pipeline.MemState{Memory: &rec.MemShared}
	return &pipeline.Request{
		Address: "generate.check", Kind: "generate", Name: "check",
		Inputs:   inputs(set),
		Settings: map[string]cty.Value{"replicate": cty.ObjectVal(map[string]cty.Value{"destination": cty.StringVal(model)})},
		BaseDir:  h.dir,
		Prior:    prior,
		State:    st,
		Recorder: rec,
		Env:      h.env,
	}
}

func (h *harness) apply(req *pipeline.Request) (*pipeline.Result, error) {
	return Kind{}.Apply(context.Background(), req)
}

func str(v cty.Value) string {
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() {
		return ""
	}
	return v.AsString()
}

func number(v cty.Value) float64 {
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() {
		return -1
	}
	f, _ := v.AsBigFloat().Float64()
	return f
}

func fileExists(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("expected file: %v", err)
	}
	return b
}

// paramsVal is a params stage's output object (`params = params.tuned`): values and reasons as
// that kind words them.
func paramsVal() cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"values": cty.ObjectVal(map[string]cty.Value{"lora_rank": cty.NumberIntVal(16), "steps": cty.NumberIntVal(1200), "learning_rate": cty.NumberFloatVal(0.0004)}),
		"reasons": strList(
			"learning_rate = 0.0004: built-in: 4e-4 for a small set",
			"lora_rank = 16: built-in: rank 16, the research's default for 10 photos or more",
			"num_repeats = 8: built-in: 5–10 repeats; not passed: ostris/flux-dev-lora-trainer has no num_repeats input",
			"steps = 1200: built-in: 1000–1200 steps for a diverse set",
			"passes per photo = 1200 steps × batch 1 ÷ 4 photos = 300.0"),
		"passes_per_image":     cty.NumberFloatVal(300),
		"previous_image_count": cty.NullVal(cty.Number),
	})
}

// trainingVal is a train stage's output object (`training = train.lora`): what was sent, with a
// merge that overrode params' steps, a credential that must never show, and the training's cost
// when cost is set.
func trainingVal(version string, cost cty.Value) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"version": cty.StringVal(version), "training_id": cty.StringVal("t123"),
		"input": cty.ObjectVal(map[string]cty.Value{"lora_rank": cty.NumberIntVal(16), "steps": cty.NumberIntVal(1000),
			"learning_rate": cty.NumberFloatVal(0.0004), "trigger_word": cty.StringVal("TOK"), "hf_token": cty.StringVal("hf_abc123secret")}),
		"cost_usd": cost,
	})
}

// withRejections adds what image_check says of the photos it refused to a reference object.
func withRejections(ref cty.Value) cty.Value {
	m := ref.AsValueMap()
	m["rejected"] = cty.MapVal(map[string]cty.Value{"photos/05-blurry.jpg": cty.StringVal("blurred: sharpness 12 < 40% of the set's median 88")})
	return cty.ObjectVal(m)
}

// gateWithMax is gateVal with a max_loss above the curve (both thresholds drawn).
func gateWithMax(max float64) cty.Value {
	m := gateVal().AsValueMap()
	m["max_loss"] = cty.NumberFloatVal(max)
	return cty.ObjectVal(m)
}
