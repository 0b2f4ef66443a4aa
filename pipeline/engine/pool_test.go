package engine

import (
	"context"
	"runtime"
	"testing"
)

// A stage coming back from waiting goes before one that has not started; a waiter that gives
// up leaves the place to the next.
func TestPoolServesReturningStagesFirst(t *testing.T) {
	p := newPool(1)
	if err := p.acquire(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 3)
	started := make(chan struct{}, 3)
	wait := func(name string, high bool, ctx context.Context) {
		started <- struct{}{}
		if p.acquire(ctx, high) == nil {
			order <- name
			p.release()
		} else {
			order <- name + " gave up"
		}
	}
	gone, cancel := context.WithCancel(context.Background())
	go wait("new", false, context.Background())
	<-started
	waitQueued(p, 0, 1)
	go wait("impatient", true, gone)
	<-started
	waitQueued(p, 1, 1)
	cancel()
	if got := <-order; got != "impatient gave up" {
		t.Fatalf("first %q, want the cancelled waiter to give up", got)
	}
	go wait("returning", true, context.Background())
	<-started
	waitQueued(p, 1, 1)
	p.release()
	if a, b := <-order, <-order; a != "returning" || b != "new" {
		t.Fatalf("order %q, %q: the returning stage must go first", a, b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free != 1 {
		t.Fatalf("%d places free at the end, want 1", p.free)
	}
}

// waitQueued blocks until the pool has high and low waiters queued (the goroutines above are
// about to block in acquire; this is their observable state, not a timed wait).
func waitQueued(p *pool, high, low int) {
	for {
		p.mu.Lock()
		h, l := len(p.high), len(p.low)
		p.mu.Unlock()
		if h == high && l == low {
			return
		}
		runtime.Gosched()
	}
}
