package replicatetest

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// Clock is virtual time the server and a client's pacer and watcher share, so rate limits and
// training lengths are measured in the same time: pass it as Options.Clock and to the client as
// replicate.WithClock(clk.Now), replicate.WithSleep(clk.Sleep).
//
// A scaled clock (NewClock) runs Speed times faster than wall time: a batch with 25-minute
// trainings takes 25/Speed minutes of wall time plus its local work. Its sleeps overshoot by
// the timer's resolution times Speed, and a wall-time stall is Speed times longer in it.
//
// A stepped clock (NewSteppedClock) is a discrete-event clock: time stands still while anything
// runs and moves on only when every goroutine that joined (Join) is asleep in Sleep, straight to
// the earliest wake-up. Requests take no virtual time, so a server's accounting of a client's
// pacing is exact whatever the machine's load.
//
// Advance moves either kind on at once.
type Clock struct {
	mu      sync.Mutex
	speed   float64
	wall0   time.Time // wall time (monotonic) when virt0 was read
	virt0   time.Time
	changed chan struct{} // closed and replaced on every Advance

	stepped  bool
	members  int
	sleepers map[*sleeper]struct{}
	// asleep counts goroutines in Sleep (either kind), for BlockUntil.
	asleep int
	cond   *sync.Cond
}

type sleeper struct {
	until   time.Time
	wake    chan struct{}
	passive bool // After's: a member is not waiting on it
}

// NewClock returns a clock showing start that runs speed times faster than wall time (0: it
// stands still but for Advance).
func NewClock(start time.Time, speed float64) *Clock {
	c := &Clock{speed: max(speed, 0), wall0: time.Now(), virt0: start, changed: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// BlockUntil waits until n goroutines are asleep in Sleep (After's do not count), so a test can
// Advance knowing whom it wakes.
func (c *Clock) BlockUntil(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.asleep < n {
		c.cond.Wait()
	}
}

// nap counts a goroutine into (+1) or out of (-1) Sleep.
func (c *Clock) nap(delta int) {
	c.mu.Lock()
	c.asleep += delta
	c.cond.Broadcast()
	c.mu.Unlock()
}

// NewSteppedClock returns a discrete-event clock showing start (see Clock).
func NewSteppedClock(start time.Time) *Clock {
	c := NewClock(start, 0)
	c.stepped, c.sleepers = true, map[*sleeper]struct{}{}
	return c
}

// Join counts the calling goroutine (or one about to start) among those a stepped clock waits
// for; call Leave when it is done. No-op on a scaled clock.
func (c *Clock) Join() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members++
}

// Leave undoes Join.
func (c *Clock) Leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members--
	c.stepLocked()
}

// Now is the virtual time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked()
}

func (c *Clock) nowLocked() time.Time {
	return c.virt0.Add(time.Duration(float64(time.Since(c.wall0)) * c.speed))
}

// Speed is how many times faster than wall time a scaled clock runs (0 for a stepped one).
func (c *Clock) Speed() float64 { return c.speed }

// Advance moves the clock d forward at once, waking sleepers whose time has come.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.nowLocked().Add(d))
}

// setLocked moves the clock to t and wakes whoever's time has come.
func (c *Clock) setLocked(t time.Time) {
	c.virt0, c.wall0 = t, time.Now()
	close(c.changed)
	c.changed = make(chan struct{})
	for s := range c.sleepers {
		if !s.until.After(t) {
			close(s.wake)
			delete(c.sleepers, s)
		}
	}
}

// stepLocked moves a stepped clock to the earliest wake-up once every member sleeps.
func (c *Clock) stepLocked() {
	if !c.stepped || len(c.sleepers) == 0 {
		return
	}
	active := 0
	for s := range c.sleepers {
		if !s.passive {
			active++
		}
	}
	if active < c.members {
		return
	}
	var first time.Time
	for s := range c.sleepers {
		if first.IsZero() || s.until.Before(first) {
			first = s.until
		}
	}
	if first.Before(c.virt0) {
		first = c.virt0
	}
	c.setLocked(first)
}

// Sleep waits until the clock has moved d on, or ctx ends (then it returns ctx.Err()).
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.nap(+1)
	defer c.nap(-1)
	return c.sleep(ctx, d, false)
}

func (c *Clock) sleep(ctx context.Context, d time.Duration, passive bool) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.mu.Lock()
	deadline := c.nowLocked().Add(d)
	if c.stepped {
		s := &sleeper{until: deadline, wake: make(chan struct{}), passive: passive}
		c.sleepers[s] = struct{}{}
		c.stepLocked()
		c.mu.Unlock()
		select {
		case <-s.wake:
			return nil
		case <-ctx.Done():
			c.mu.Lock()
			delete(c.sleepers, s)
			c.mu.Unlock()
			return ctx.Err()
		}
	}
	c.mu.Unlock()
	for {
		c.mu.Lock()
		left := deadline.Sub(c.nowLocked())
		changed := c.changed
		c.mu.Unlock()
		if left <= 0 {
			return ctx.Err()
		}
		var timer *time.Timer
		var fired <-chan time.Time
		if c.speed > 0 {
			timer = time.NewTimer(time.Duration(float64(left) / c.speed))
			fired = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-fired:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// After returns a channel that receives the virtual time once the clock has moved d on.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		_ = c.sleep(context.Background(), d, true)
		ch <- c.Now()
	}()
	return ch
}

// Since is the virtual time elapsed since t.
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Transport makes a stepped clock stand still while a request is under way: it counts each
// request as a member (Join) until its answer's body is closed. base nil: a clone of
// http.DefaultTransport. Use it for clients whose requests run in goroutines the test does not
// start itself (the watcher's).
func (c *Clock) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		base = t
	}
	return &clockTransport{c: c, base: base}
}

type clockTransport struct {
	c    *Clock
	base http.RoundTripper
}

func (t *clockTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.Join()
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.c.Leave()
		return nil, err
	}
	resp.Body = &leaveBody{ReadCloser: resp.Body, c: t.c}
	return resp, nil
}

// leaveBody ends a request's membership once, when its body is closed.
type leaveBody struct {
	io.ReadCloser
	c    *Clock
	once sync.Once
}

func (b *leaveBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.c.Leave)
	return err
}
