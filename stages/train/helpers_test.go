package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

func init() {
	// The test server advances a training one step per GET: poll as fast as it answers.
	minPoll = time.Millisecond
}

var errKilled = errors.New("killed: state write failed")

// recorder keeps saved data in memory like the engine's state and can simulate a crash: Save
// number FailOn returns an error without storing (the process died before the write), and after
// Save number CancelAfter is stored, or after Progress report number CancelAfterProgress, it
// cancels the context (Ctrl-C / kill right there).
type recorder struct {
	pipeline.MemShared
	mu                  sync.Mutex
	data                json.RawMessage
	saves, progresses   int
	FailOn              int
	CancelAfter         int
	CancelAfterProgress int
	OnProgress          func(n int)
	cancel              context.CancelFunc
	tick                func() // told after every progress report (lockstep)
	progress            []pipeline.Progress
	events              []string // "wait", "done" and progress messages, in order
	warns               []string
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
	if r.saves == r.CancelAfter && r.cancel != nil {
		r.cancel()
	}
	return nil
}

func (r *recorder) Progress(p pipeline.Progress) {
	r.mu.Lock()
	r.progresses++
	n := r.progresses
	r.progress = append(r.progress, p)
	r.events = append(r.events, p.Message)
	if n == r.CancelAfterProgress && r.cancel != nil {
		r.cancel()
	}
	hook, tick := r.OnProgress, r.tick
	r.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	if tick != nil {
		tick()
	}
}

// Wait records the trade of the -parallelism slot ("wait") and its return ("done") among the
// progress reports (events), and never blocks.
func (r *recorder) Wait(ctx context.Context) (func(), error) {
	r.mu.Lock()
	r.events = append(r.events, "wait")
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.events = append(r.events, "done")
		r.mu.Unlock()
	}, ctx.Err()
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

// fastSleep makes the client's retry and Retry-After waits instant (recorded, not slept).
type fastSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (f *fastSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.delays = append(f.delays, d)
	f.mu.Unlock()
	return ctx.Err()
}

// harness is a test server, a client bound to it and a directory of photos.
type harness struct {
	t     *testing.T
	srv   *replicatetest.Server
	env   *pipeline.Env
	dir   string
	sleep *fastSleep
	gate  *lockstep
}

// lockstep lets a GET of a training through only after the stage took in what the last one
// showed (its progress report). The test server advances a training one step per GET and the
// client's watcher looks on its own schedule, so without it the watcher could run a training to
// its end before the stage saw, or judged, a single step. Only for tests without faults on
// training GETs: a retried GET waits for a turn too.
type lockstep struct {
	base http.RoundTripper
	on   atomic.Bool
	turn chan struct{}
}

func (l *lockstep) RoundTrip(req *http.Request) (*http.Response, error) {
	if l.on.Load() && req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/v1/trainings/") {
		select {
		case <-l.turn:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return l.base.RoundTrip(req)
}

// next gives the watcher its turn (one at most is banked).
func (l *lockstep) next() {
	select {
	case l.turn <- struct{}{}:
	default:
	}
}

// lockstep turns lockstep on for the rest of the test.
func (h *harness) lockstep() { h.gate.on.Store(true) }

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := replicatetest.NewServer(replicatetest.Options{})
	t.Cleanup(srv.Close)
	fs := &fastSleep{}
	gate := &lockstep{base: http.DefaultTransport, turn: make(chan struct{}, 1)}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(6, time.Millisecond), replicate.WithSleep(fs.sleep),
		replicate.WithCreateRetry(3, time.Millisecond), replicate.WithHTTPClient(&http.Client{Transport: gate}))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }, CacheDir: t.TempDir()}
	replicate.Install(env, c)
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		writePhoto(t, filepath.Join(dir, fmt.Sprintf("photo%d.jpg", i)), i)
	}
	return &harness{t: t, srv: srv, env: env, dir: dir, sleep: fs, gate: gate}
}

// input builds a trainer input object.
func input(kv ...any) cty.Value {
	m := map[string]cty.Value{}
	for i := 0; i+1 < len(kv); i += 2 {
		switch v := kv[i+1].(type) {
		case string:
			m[kv[i].(string)] = cty.StringVal(v)
		case int:
			m[kv[i].(string)] = cty.NumberIntVal(int64(v))
		case float64:
			m[kv[i].(string)] = cty.NumberFloatVal(v)
		case bool:
			m[kv[i].(string)] = cty.BoolVal(v)
		}
	}
	return cty.ObjectVal(m)
}

// request builds the Request the engine would pass for `train.lora` into acme/ana-lora.
func (h *harness) request(in cty.Value, prior *pipeline.Prior, rec *recorder) *pipeline.Request {
	return &pipeline.Request{
		Address: "train.lora", Kind: "train", Name: "lora",
		Inputs: cty.ObjectVal(map[string]cty.Value{
			"images":        cty.ListVal([]cty.Value{cty.StringVal("photo2.jpg"), cty.StringVal("photo0.jpg"), cty.StringVal("photo1.jpg")}),
			"trainer":       cty.NullVal(cty.String),
			"destination":   cty.NullVal(cty.String),
			"input":         in,
			"poll_interval": cty.StringVal("1ms"),
		}),
		Settings: map[string]cty.Value{"replicate": cty.ObjectVal(map[string]cty.Value{
			"trainer":     cty.StringVal(replicatetest.Trainer),
			"destination": cty.StringVal("acme/ana-lora"),
		})},
		BaseDir:  h.dir,
		Prior:    prior,
		Recorder: rec,
		Env:      h.env,
	}
}

// apply runs Apply with a context the recorder can cancel.
func (h *harness) apply(req *pipeline.Request) (*pipeline.Result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if r, ok := req.Recorder.(*recorder); ok {
		r.mu.Lock()
		r.cancel = cancel
		r.tick = h.gate.next
		r.mu.Unlock()
	}
	h.gate.next() // an apply's first look (re-attaching) needs no report before it
	return Kind{}.Apply(ctx, req)
}

// resume is the Prior the engine would hand the next apply after an interrupted one.
func resume(rec *recorder, status pipeline.Status) *pipeline.Prior {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return &pipeline.Prior{Status: status, SameInputs: true, Data: append(json.RawMessage(nil), rec.data...)}
}

// testSerial is the camera serial every test photo carries in its EXIF, with a GPS position.
const testSerial = "SN-4242-CAMERA"

// jpegPhoto is a w×h photo whose pixels depend on seed, carrying the metadata phones write.
func jpegPhoto(seed, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x*255/w + seed*37), uint8(y*255/h + seed*11), uint8(seed * 53), 255})
		}
	}
	return phototest.WithMetadata(phototest.JPEG(img, 90), phototest.Metadata{Orientation: 1, GPS: true, Serial: testSerial})
}

func writePhoto(t *testing.T, path string, seed int) {
	t.Helper()
	if err := os.WriteFile(path, jpegPhoto(seed, 96, 64), 0o600); err != nil {
		t.Fatal(err)
	}
}

func str(v cty.Value) string {
	if v.IsNull() || !v.IsKnown() {
		return ""
	}
	return v.AsString()
}

// maxLimit is a `limit "NAME" { max = MAX }` block of the train stage.
func maxLimit(name string, max int) pipeline.Block {
	return pipeline.Block{Type: "limit", Labels: []string{name}, Attrs: map[string]cty.Value{"min": cty.NullVal(cty.Number), "max": cty.NumberIntVal(int64(max))},
		Range: hcl.Range{Filename: "retrain.hcl", Start: hcl.Pos{Line: 40}}}
}
