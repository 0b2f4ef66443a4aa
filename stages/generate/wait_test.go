package generate

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// timeline is one apply's events in order: the recorder's Wait and done, and the requests.
type timeline struct {
	mu     sync.Mutex
	events []string
}

func (tl *timeline) add(e string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, e)
}

func (tl *timeline) list() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.events)
}

// logged names each request: "create", "poll", "download" (others by method and path).
type logged struct {
	base http.RoundTripper
	tl   *timeline
}

func (l logged) RoundTrip(r *http.Request) (*http.Response, error) {
	switch p := r.URL.Path; {
	case r.Method == "POST" && p == "/v1/predictions":
		l.tl.add("create")
	case r.Method == "GET" && strings.HasPrefix(p, "/v1/predictions/"):
		l.tl.add("poll")
	case strings.Contains(p, "/delivery/"):
		l.tl.add("download")
	default:
		l.tl.add(r.Method + " " + p)
	}
	return l.base.RoundTrip(r)
}

// waitRecorder logs Wait and done; fail, when set, is what Wait returns.
type waitRecorder struct {
	recorder
	tl   *timeline
	fail func() error
}

func (w *waitRecorder) Wait(ctx context.Context) (func(), error) {
	w.tl.add("wait")
	if w.fail != nil {
		if err := w.fail(); err != nil {
			return func() {}, err
		}
	}
	return func() { w.tl.add("done") }, nil
}

func (h *harness) logClient(tl *timeline) {
	h.t.Helper()
	c, err := replicate.New(h.srv.URL(), h.srv.Token(), replicate.WithRetry(6, time.Millisecond),
		replicate.WithHTTPClient(&http.Client{Transport: logged{http.DefaultTransport, tl}}))
	if err != nil {
		h.t.Fatal(err)
	}
	replicate.Install(h.env, c)
}

// Issue 10: the predictions run on Replicate while the stage holds Wait (no -parallelism slot);
// it creates them before, and takes a slot back (done) before downloading anything.
func TestWaitingOnPredictionsHoldsNoSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	version := h.train(natural)
	tl := &timeline{}
	h.logClient(tl)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref}
	rec := &waitRecorder{tl: tl}
	req := h.request(set, nil, &rec.recorder) // the state view over rec's shared records
	req.Recorder = rec
	if _, err := h.apply(req); err != nil {
		t.Fatal(err)
	}
	ev := tl.list()
	wait, done := slices.Index(ev, "wait"), slices.Index(ev, "done")
	if wait < 0 || done < wait || strings.Count(strings.Join(ev, ","), "wait") != 1 {
		t.Fatalf("Wait/done not called once, in order: %v", ev)
	}
	lastCreate := -1
	for i, e := range ev {
		if e == "create" {
			lastCreate = i
		}
	}
	if n := strings.Count(strings.Join(ev, ","), "create"); n != 6 || lastCreate > wait {
		t.Errorf("%d creates, the last at %d: all 6 are local work before Wait (%d): %v", n, lastCreate, wait, ev)
	}
	if !slices.Contains(ev[wait:done], "poll") {
		t.Errorf("no poll between Wait and done: %v", ev)
	}
	if slices.Contains(ev[:done], "download") || !slices.Contains(ev[done:], "download") {
		t.Errorf("downloads must follow done: %v", ev)
	}

	// Everything reused: nothing runs on Replicate, so nothing to wait for.
	tl3 := &timeline{}
	rec3 := &waitRecorder{tl: tl3}
	req = h.request(set, rec.prior(pipeline.StatusComplete), &rec3.recorder)
	req.Recorder = rec3
	if _, err := h.apply(req); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tl3.list(), "wait") {
		t.Errorf("waited with nothing running: %v", tl3.list())
	}
}

// Ctrl-C while Wait blocks for a -max-in-flight place: the stage stops with every prediction id
// recorded, and the next apply re-attaches instead of creating them again.
func TestInterruptedWhileWaitingForAPlace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2), "reference": h.ref}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &waitRecorder{tl: &timeline{}, fail: func() error { cancel(); return ctx.Err() }}
	req := h.request(set, nil, &rec.recorder)
	req.Recorder = rec
	_, err := Kind{}.Apply(ctx, req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("apply interrupted in Wait: %v, want context.Canceled", err)
	}
	runs := rec.record().Runs
	if len(runs) != 2 || runs[0].PredictionID == "" || runs[1].PredictionID == "" {
		t.Fatalf("recorded runs %+v: want both prediction ids", runs)
	}
	if _, err := h.apply(h.request(set, rec.prior(pipeline.StatusInterrupted), &recorder{})); err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created prediction"); n != 2 {
		t.Errorf("%d predictions, want 2 (re-attached, not created again)", n)
	}
}
