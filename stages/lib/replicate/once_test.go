package replicate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// onceHarness creates trainings through CreateOnce against the test server, on a fake clock.
type onceHarness struct {
	t      *testing.T
	srv    *replicatetest.Server
	c      *replicate.Client
	clk    *fakeClock
	input  map[string]any
	in     replicate.Intent
	saves  int
	finds  int
	before []int // the finds made before each create
}

const createPrefix = "/v1/models/ostris"

func newOnceHarness(t *testing.T) *onceHarness {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 0)
	clk := &fakeClock{t: time.Now()}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithSleep(clk.sleep), replicate.WithClock(clk.now),
		replicate.WithRetry(5, 100*time.Millisecond), replicate.WithCreateRetry(3, 2*time.Second), replicate.WithCreateConfirm(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	h := &onceHarness{t: t, srv: srv, c: c, clk: clk}
	h.input = map[string]any{"input_images": upload(t, c).URL, "steps": 1000}
	return h
}

func (h *onceHarness) create(ctx context.Context) (*replicate.Training, string, error) {
	h.before = append(h.before, h.finds)
	tr, err := h.c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", h.input)
	if err != nil {
		return nil, "", err
	}
	return tr, tr.ID, nil
}

func (h *onceHarness) find(ctx context.Context, after time.Time) (*replicate.Training, string, bool, error) {
	h.finds++
	tr, err := h.c.FindTraining(ctx, replicatetest.Trainer, h.input, after)
	if err != nil || tr == nil {
		return nil, "", false, err
	}
	return tr, tr.ID, true, nil
}

func (h *onceHarness) save() error { h.saves++; return nil }

func (h *onceHarness) run() (*replicate.Training, bool, error) {
	return replicate.CreateOnce(context.Background(), h.c, &h.in, h.save, h.create, h.find)
}

// waited is the fake time the client slept in all.
func (h *onceHarness) waited() time.Duration {
	var d time.Duration
	for _, s := range h.clk.sleeps {
		d += s
	}
	return d
}

func TestAJobListedLateAfterAnUnclearCreateIsAdoptedNotPaidTwice(t *testing.T) {
	h := newOnceHarness(t)
	h.srv.FailAfter("POST", createPrefix, 502, 1) // created, but the answer is a 502
	h.srv.ListLag(3)                              // and the list shows it only from the 4th look
	tr, found, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	if !found || tr == nil || h.in.ID != tr.ID {
		t.Fatalf("found %v, training %v, recorded id %q: want the late training adopted", found, tr, h.in.ID)
	}
	if n := h.srv.Count("created training"); n != 1 {
		t.Fatalf("%d trainings created, want 1: one look and a second create pays twice", n)
	}
	if n := h.srv.Count("POST /v1/trainings"); n != 1 {
		t.Fatalf("%d create requests, want 1", n)
	}
	if h.finds != 4 {
		t.Fatalf("%d looks, want 4 (the training is missing from the first 3 lists)", h.finds)
	}
}

func TestACreateIsRepeatedOnlyAfterTheConfirmWindowShowedNoJob(t *testing.T) {
	h := newOnceHarness(t)
	h.srv.Fail("POST", createPrefix, 503, 1) // refused before anything was created
	tr, found, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	if found || tr == nil {
		t.Fatalf("found %v, training %v: want a training created by the second try", found, tr)
	}
	if n := h.srv.Count("POST /v1/trainings"); n != 2 {
		t.Fatalf("%d create requests, want 2", n)
	}
	// Looks at 0, 2, 6, 14, 30 and 62 s: the second create only once a minute showed nothing.
	if h.before[1] != 6 || h.waited() < time.Minute {
		t.Fatalf("second create after %d looks and %s of waiting, want 6 looks over at least 1m", h.before[1], h.waited())
	}
}

func TestAJobNeverSeenLeavesTheIntentRecordedAndSaysSo(t *testing.T) {
	h := newOnceHarness(t)
	h.srv.Fail("POST", createPrefix, 503, 3)
	_, _, err := h.run()
	if err == nil {
		t.Fatal("three unclear creates succeeded")
	}
	if !h.in.Pending() {
		t.Fatalf("intent %+v: want it still pending, so the next run looks before creating", h.in)
	}
	msg := err.Error()
	if strings.Contains(msg, "nothing was created") || !strings.Contains(msg, "next run looks for it again") {
		t.Fatalf("error %q: must not claim nothing was created, and must say the next run looks first", msg)
	}
	if n := h.srv.Count("POST /v1/trainings"); n != 3 {
		t.Fatalf("%d create requests, want 3", n)
	}
}

func TestAdoptKeepsLookingWhileTheIntentIsYoungerThanTheWindow(t *testing.T) {
	h := newOnceHarness(t)
	h.srv.ListLag(2)
	if _, err := h.c.CreateTraining(context.Background(), replicatetest.Trainer, "acme/ana-lora", h.input); err != nil {
		t.Fatal(err) // the create an earlier run made before it was killed
	}
	h.in = replicate.Intent{At: h.clk.now().Add(-time.Second)}
	tr, ok, err := replicate.Adopt(context.Background(), h.c, &h.in, h.save, h.find)
	if err != nil || !ok || h.in.ID != tr.ID {
		t.Fatalf("adopt: ok %v, err %v: want the training the killed run created", ok, err)
	}

	// An intent older than the window is looked for once: its create has long been listed.
	h2 := newOnceHarness(t)
	h2.in = replicate.Intent{At: h2.clk.now().Add(-time.Hour)}
	if _, ok, err := replicate.Adopt(context.Background(), h2.c, &h2.in, h2.save, h2.find); err != nil || ok {
		t.Fatalf("adopt of an old intent without a job: ok %v, err %v", ok, err)
	}
	if h2.finds != 1 {
		t.Fatalf("%d looks for an hour-old intent, want 1", h2.finds)
	}
}

func TestAJobOnAServerWhoseClockIsMinutesBehindIsStillFound(t *testing.T) {
	local := time.Now()
	srv := replicatetest.NewServer(replicatetest.Options{Clock: replicatetest.NewClock(local.Add(-5*time.Minute), 0)})
	t.Cleanup(srv.Close)
	srv.AddModel("acme", "ana-lora", 0)
	clk := &fakeClock{t: local}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithSleep(clk.sleep), replicate.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	input := map[string]any{"input_images": upload(t, c).URL, "steps": 1000}
	srv.Drop("POST", createPrefix, 1)
	if _, err := c.CreateTraining(context.Background(), replicatetest.Trainer, "acme/ana-lora", input); !replicate.IsMaybeCreated(err) {
		t.Fatalf("err = %v, want an unclear create", err)
	}
	// The intent was read on this machine's clock, 5 minutes ahead of the API's created_at.
	got, err := c.FindTraining(context.Background(), replicatetest.Trainer, input, local)
	if err != nil || got == nil {
		t.Fatalf("training created 5 minutes \"before\" the intent by the server's clock not found (err %v): it would be paid twice", err)
	}
}
