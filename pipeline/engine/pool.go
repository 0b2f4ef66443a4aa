package engine

import (
	"context"
	"sync"
)

// pool is a counting semaphore whose waiters are served in two classes: a stage coming back from
// waiting on paid remote work (its job finished: outputs to fetch before they expire, results to
// record) goes before a stage that has not started yet. Draining finished work first keeps a
// large batch from piling finished jobs behind new ones.
type pool struct {
	mu        sync.Mutex
	free      int
	high, low []chan struct{}
}

func newPool(n int) *pool { return &pool{free: n} }

// acquire takes a place, waiting in its class; it gives up when ctx ends.
func (p *pool) acquire(ctx context.Context, high bool) error {
	p.mu.Lock()
	if p.free > 0 && len(p.high) == 0 && (high || len(p.low) == 0) {
		p.free--
		p.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	if high {
		p.high = append(p.high, ch)
	} else {
		p.low = append(p.low, ch)
	}
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.drop(ch) {
			return ctx.Err()
		}
		// Granted while giving up: pass the place on.
		p.releaseLocked()
		return ctx.Err()
	}
}

// release gives a place back, to the first waiter of the higher class.
func (p *pool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked()
}

func (p *pool) releaseLocked() {
	switch {
	case len(p.high) > 0:
		ch := p.high[0]
		p.high = p.high[1:]
		close(ch)
	case len(p.low) > 0:
		ch := p.low[0]
		p.low = p.low[1:]
		close(ch)
	default:
		p.free++
	}
}

// drop removes a waiter that gave up; false when it was already granted.
func (p *pool) drop(ch chan struct{}) bool {
	for _, q := range []*[]chan struct{}{&p.high, &p.low} {
		for i, c := range *q {
			if c == ch {
				*q = append((*q)[:i], (*q)[i+1:]...)
				return true
			}
		}
	}
	return false
}
