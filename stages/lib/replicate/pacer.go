package replicate

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Replicate's published limits (https://replicate.com/docs/topics/predictions/rate-limits):
// creating predictions 600 requests per minute, every other endpoint 3,000 per minute, per account.
const (
	APICreatesPerMinute = 600
	APIOtherPerMinute   = 3000
)

// RateLimits is the budget one Client paces its requests to (requests per minute, per kind).
// Every stage of a process shares it, because they share the Client (FromEnv).
type RateLimits struct {
	// CreatesPerMinute bounds prediction creates: POST /v1/predictions and the model- or
	// deployment-scoped POST .../predictions. Default 540, 90% of the API's 600.
	CreatesPerMinute float64
	// OtherPerMinute bounds every other API request (training creates, polls, lists, uploads).
	// Default 2,400, 80% of the API's 3,000: the app that shares the token needs room too, and
	// the busiest minute of a batch's start stays under 2,500 with its burst (2,440).
	OtherPerMinute float64
	// Burst is how many requests of one kind may leave at once after a quiet spell (default:
	// one second's worth of its rate), so a start of 1,000 callers is spread out, not sent at t=0.
	Burst int
}

// DefaultRateLimits is the budget of a Client without WithRateLimits.
var DefaultRateLimits = RateLimits{CreatesPerMinute: 540, OtherPerMinute: 2400}

// Share is one of n processes' part of the budget: the account's limits are shared by every shard
// of a batch that runs at once, so each paces to 1/n of them (n ≤ 1: all of it).
func (l RateLimits) Share(n int) RateLimits {
	if n <= 1 {
		return l
	}
	l.CreatesPerMinute /= float64(n)
	l.OtherPerMinute /= float64(n)
	return l
}

// WithRateLimits sets the client's request budget. A zero field keeps its default; a negative
// rate turns pacing of that kind off (429 answers still pause every caller).
func WithRateLimits(l RateLimits) Option {
	return func(c *Client) {
		if l.CreatesPerMinute != 0 {
			c.limits.CreatesPerMinute = l.CreatesPerMinute
		}
		if l.OtherPerMinute != 0 {
			c.limits.OtherPerMinute = l.OtherPerMinute
		}
		if l.Burst > 0 {
			c.limits.Burst = l.Burst
		}
	}
}

// After a 429 the budget runs at half its rate (a quarter after another 429 once that pause
// ended, at most 1/8) until slowFor has passed since the pause ended: the account is shared or
// its limit is lower than published, and the same rate would only hit it again.
const (
	slowFor = 2 * time.Minute
	maxSlow = 8
)

// Stats counts what a Client sent, for benchmarks and progress logs.
type Stats struct {
	// Creates and Other are API requests sent (every attempt) per kind of the budget.
	Creates, Other int64
	// Throttled counts 429 answers.
	Throttled int64
	// Waited sums the time requests waited for the budget or a Retry-After pause.
	Waited time.Duration
	// TrainingLists are GET /v1/trainings pages, TrainingGets GET /v1/trainings/{id}.
	TrainingLists, TrainingGets int64
}

// Stats returns the client's counters so far.
func (c *Client) Stats() Stats {
	p := c.pacer
	return Stats{
		Creates: p.creates.Load(), Other: p.other.Load(), Throttled: p.throttled.Load(),
		Waited:        time.Duration(p.waited.Load()),
		TrainingLists: p.lists.Load(), TrainingGets: p.gets.Load(),
	}
}

// kind is which budget a request spends.
type kind int

const (
	kindNone   kind = iota // not an API request (a delivery URL): not paced
	kindCreate             // a prediction create
	kindOther
)

// bucket paces one kind with GCRA (a token bucket kept as one time): a request may leave at
// tat - (burst-1)·interval; each one moves tat on by an interval. Callers book their slot at
// once and sleep until it, so 1,000 waiting callers leave in order, one interval apart.
type bucket struct {
	interval time.Duration // at full rate; 0 = unlimited
	burst    int
	tat      time.Time
}

func newBucket(perMinute float64, burst int) *bucket {
	if perMinute <= 0 {
		return &bucket{}
	}
	iv := time.Duration(float64(time.Minute) / perMinute)
	if burst <= 0 {
		burst = max(1, int(perMinute/60))
	}
	return &bucket{interval: iv, burst: burst}
}

// reserve books the next slot at or after now and returns it; slow (≥ 1) stretches the interval.
func (b *bucket) reserve(now time.Time, slow float64) time.Time {
	if b.interval == 0 {
		return now
	}
	iv := time.Duration(float64(b.interval) * slow)
	if b.tat.Before(now) {
		b.tat = now
	}
	at := b.tat.Add(-time.Duration(b.burst-1) * iv)
	if at.Before(now) {
		at = now
	}
	b.tat = b.tat.Add(iv)
	return at
}

// pacer is the Client's budget: one bucket per kind, the Retry-After pause every request waits
// for, the slow-down that follows a 429, and counters.
type pacer struct {
	mu         sync.Mutex
	createB    *bucket
	otherB     *bucket
	pauseUntil time.Time
	slow       float64 // ≥ 1 while slowed after a 429
	slowUntil  time.Time

	creates, other, throttled, waited, lists, gets atomic.Int64
}

func newPacer(l RateLimits) *pacer {
	return &pacer{createB: newBucket(l.CreatesPerMinute, l.Burst), otherB: newBucket(l.OtherPerMinute, l.Burst), slow: 1}
}

// reserve books a slot of kind k and returns when the request may leave.
func (p *pacer) reserve(now time.Time, k kind) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slow > 1 && !now.Before(p.slowUntil) {
		p.slow = 1
	}
	b := p.otherB
	if k == kindCreate {
		b = p.createB
	}
	return b.reserve(now, p.slow)
}

// pausedFor returns how long the current Retry-After pause still lasts at now.
func (p *pacer) pausedFor(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pauseUntil.Sub(now)
}

// throttle records a 429 whose wait was d: every caller pauses until then, slots booked for
// that time move behind the pause, and the rate is slowed for a while after it.
func (p *pacer) throttle(now time.Time, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.throttled.Add(1)
	// 429s of requests that were under way when the first one came belong to the same episode:
	// only a 429 after the pause slows the budget further.
	episode := !now.Before(p.pauseUntil)
	if until := now.Add(d); until.After(p.pauseUntil) {
		p.pauseUntil = until
	}
	for _, b := range []*bucket{p.createB, p.otherB} {
		if b.tat.Before(p.pauseUntil) {
			b.tat = p.pauseUntil
		}
	}
	switch {
	case !episode && p.slow > 1:
	case p.slow > 1 && now.Before(p.slowUntil):
		p.slow = min(p.slow*2, maxSlow)
	default:
		p.slow = 2
	}
	p.slowUntil = p.pauseUntil.Add(slowFor)
}

// count records one request leaving.
func (p *pacer) count(k kind, method, path string) {
	switch k {
	case kindCreate:
		p.creates.Add(1)
	case kindOther:
		p.other.Add(1)
	}
	if method == http.MethodGet && strings.HasSuffix(path, "/v1/trainings") {
		p.lists.Add(1)
	} else if method == http.MethodGet && strings.Contains(path, "/v1/trainings/") {
		p.gets.Add(1)
	}
}

// kindOf classifies a request: only requests to the API (its host, under /v1/) are paced, and
// POST .../predictions is a prediction create.
func (c *Client) kindOf(req *http.Request) kind {
	if !c.sameHost(req.URL) || !strings.HasPrefix(req.URL.Path, c.baseURL.Path+"/v1/") {
		return kindNone
	}
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/predictions") {
		return kindCreate
	}
	return kindOther
}

// pace waits until a request of kind k may leave: past any Retry-After pause, then at its slot
// in the budget. A caller that booked its slot before a 429 arrived waits for that pause too.
func (c *Client) pace(ctx context.Context, k kind) error {
	if k == kindNone {
		return c.waitPause(ctx)
	}
	start := c.now()
	defer func() { c.pacer.waited.Add(int64(c.now().Sub(start))) }()
	if err := c.waitPause(ctx); err != nil {
		return err
	}
	if d := c.pacer.reserve(c.now(), k).Sub(c.now()); d > 0 {
		if err := c.sleep(ctx, d); err != nil {
			return err
		}
	}
	return c.waitPause(ctx)
}
