package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
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
	pipeline.NoLimits
	mu                  sync.Mutex
	data                json.RawMessage
	saves, progresses   int
	FailOn              int
	CancelAfter         int
	CancelAfterProgress int
	OnProgress          func(n int)
	cancel              context.CancelFunc
	progress            []pipeline.Progress
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
	if n == r.CancelAfterProgress && r.cancel != nil {
		r.cancel()
	}
	hook := r.OnProgress
	r.mu.Unlock()
	if hook != nil {
		hook(n)
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
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := replicatetest.NewServer(replicatetest.Options{})
	t.Cleanup(srv.Close)
	fs := &fastSleep{}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(6, time.Millisecond), replicate.WithSleep(fs.sleep),
		replicate.WithCreateRetry(3, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	replicate.Install(env, c)
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("photo%d.jpg", i)), []byte(strings.Repeat(fmt.Sprint(i), 100)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &harness{t: t, srv: srv, env: env, dir: dir, sleep: fs}
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
		r.mu.Unlock()
	}
	return Kind{}.Apply(ctx, req)
}

// resume is the Prior the engine would hand the next apply after an interrupted one.
func resume(rec *recorder, status pipeline.Status) *pipeline.Prior {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return &pipeline.Prior{Status: status, SameInputs: true, Data: append(json.RawMessage(nil), rec.data...)}
}

func str(v cty.Value) string {
	if v.IsNull() || !v.IsKnown() {
		return ""
	}
	return v.AsString()
}
