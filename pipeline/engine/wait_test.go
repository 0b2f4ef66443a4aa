package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// waitKind stands for a paid remote job: Apply works locally, then waits (Recorder.Wait) until
// the test lets the "job" finish, then works locally again.
type waitKind struct {
	mu                  sync.Mutex
	waiting, maxWaiting int
	working, maxWorking int
	reached             chan struct{} // closed once `want` stages wait at once
	want                int
	finish              chan struct{} // closed by the test: every job ends
	once                sync.Once
}

func (*waitKind) Name() string { return "wait" }
func (*waitKind) Schema() *pipeline.Schema {
	return &pipeline.Schema{Remote: true, Attributes: map[string]*pipeline.Attribute{"x": {Type: cty.String}},
		Outputs: map[string]cty.Type{"ok": cty.Bool}}
}
func (*waitKind) Plan(context.Context, *pipeline.Request) (*pipeline.Result, error) {
	return &pipeline.Result{}, nil
}

func (k *waitKind) work(delta int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.working += delta
	k.maxWorking = max(k.maxWorking, k.working)
}

func (k *waitKind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	k.work(1) // local work before the job: holds a -parallelism slot
	k.work(-1)
	done, err := req.Recorder.Wait(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.waiting++
	k.maxWaiting = max(k.maxWaiting, k.waiting)
	if k.waiting == k.want {
		k.once.Do(func() { close(k.reached) })
	}
	k.mu.Unlock()
	<-k.finish
	k.mu.Lock()
	k.waiting--
	k.mu.Unlock()
	done()
	k.work(1) // local work after the job: a slot again
	k.work(-1)
	return &pipeline.Result{Outputs: map[string]cty.Value{"ok": cty.True}}, nil
}

func waitConfig(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%q", fmt.Sprintf("k%02d", i))
	}
	return "batch { for_each = toset([" + strings.Join(keys, ", ") + "]) }\nstage \"wait\" \"job\" {\n  x = each.key\n}\n"
}

// Stages waiting on paid work hold no -parallelism slot: with -parallelism 1, ten jobs are
// followed at once.
func TestWaitingStagesHoldNoSlot(t *testing.T) {
	k := &waitKind{reached: make(chan struct{}), want: 10, finish: make(chan struct{})}
	f := newFixture(t, waitConfig(10))
	f.extra = k
	e, _ := f.engine()
	e.Parallelism, e.MaxInFlight = 1, 100
	go func() {
		select {
		case <-k.reached:
		case <-time.After(30 * time.Second): // a watchdog, not a synchronisation
		}
		close(k.finish)
	}()
	_, out := f.apply(context.Background(), e)
	if code := out.ExitStatus(); code != 0 {
		t.Fatalf("exit %d: %v", code, out.Counts())
	}
	if k.maxWaiting != 10 {
		t.Errorf("at most %d jobs were followed at once with -parallelism 1, want all 10", k.maxWaiting)
	}
	if k.maxWorking > 1 {
		t.Errorf("%d stages did local work at once, -parallelism is 1", k.maxWorking)
	}
}

// -max-in-flight bounds the jobs followed at once.
func TestMaxInFlightBoundsTheWaitingStages(t *testing.T) {
	k := &waitKind{reached: make(chan struct{}), want: 3, finish: make(chan struct{})}
	f := newFixture(t, waitConfig(10))
	f.extra = k
	e, _ := f.engine()
	e.Parallelism, e.MaxInFlight = 4, 3
	go func() {
		<-k.reached // three wait at once: then let every job end
		close(k.finish)
	}()
	_, out := f.apply(context.Background(), e)
	if code := out.ExitStatus(); code != 0 {
		t.Fatalf("exit %d: %v", code, out.Counts())
	}
	if c := out.Counts(); c["complete"] != 10 {
		t.Fatalf("counts %v, want 10 complete", c)
	}
	if k.maxWaiting != 3 {
		t.Errorf("%d jobs were followed at once, -max-in-flight is 3", k.maxWaiting)
	}
}
