package replicate

import (
	"context"
	"fmt"
	"time"
)

// Intent is what CreateOnce records around a paid create: when the create was about to be made
// (a job created after it with the same input is ours, whatever happened to the answer) and the
// job's id once it is known. A kind keeps it in its private data, one per paid job.
type Intent struct {
	At time.Time `json:"at,omitzero"`
	ID string    `json:"id,omitempty"`
}

// Pending reports whether an earlier run recorded the intent but not the id: the job may exist.
func (in *Intent) Pending() bool { return in != nil && !in.At.IsZero() && in.ID == "" }

// CreateFunc creates the job and returns it with its id.
type CreateFunc[T any] func(ctx context.Context) (job T, id string, err error)

// FindFunc looks for a job this create made: same version and input, created after `after`
// (less ClockSkew). ok is false when there is none.
type FindFunc[T any] func(ctx context.Context, after time.Time) (job T, id string, ok bool, err error)

// CreateOnce starts a paid job (a training, a prediction) so that it is paid for at most once,
// whatever fails and whenever the process dies. It is the one implementation of that protocol
// (litestream-style: written once, with small per-job primitives) and every remote kind uses it:
//
//  1. an intent recorded by an earlier run without an id: find the job first (Adopt); if it
//     exists, adopt it and never create another;
//  2. otherwise record a fresh intent (save writes state durably) before the create call;
//  3. record the id as soon as the create answers;
//  4. a create without a clear answer (5xx, dropped connection, timeout: IsMaybeCreated) may
//     still become a job, and a list may show it late: find looks again and again with a growing
//     backoff for the confirm window (WithCreateConfirm, 2 minutes, the longest a create may
//     take) before the create is ever repeated, at most createAttempts times in all.
//
// The retry policy is the Client's (WithCreateRetry, WithCreateConfirm, WithSleep). found reports
// that the job was found rather than created by this call. On Ctrl-C (ctx cancelled) it returns
// ctx.Err() with the intent recorded, so the next run looks for the job first; an intent whose
// job was never found also stays recorded, for the same reason.
func CreateOnce[T any](ctx context.Context, c *Client, in *Intent, save func() error, create CreateFunc[T], find FindFunc[T]) (job T, found bool, err error) {
	var zero T
	if job, ok, err := Adopt(ctx, c, in, save, find); err != nil || ok {
		return job, ok, err
	}
	in.At, in.ID = c.now().UTC(), ""
	if err := save(); err != nil {
		return zero, false, err
	}
	for attempt := 1; ; attempt++ {
		job, id, err := create(ctx)
		if err == nil {
			in.ID = id
			return job, false, save()
		}
		if ctx.Err() != nil {
			return zero, false, ctx.Err() // the intent is recorded: the next run looks first
		}
		if !IsMaybeCreated(err) {
			return zero, false, err // a clear refusal: nothing was created
		}
		job, ok, looks, ferr := lookFor(ctx, c, in, save, find, c.createConfirm)
		if ferr != nil {
			return zero, false, stopped(ctx, fmt.Errorf("%w; and listing to see whether it exists failed too: %v; hint: run apply again, it looks the job up before creating one", err, ferr))
		}
		if ok {
			return job, true, nil
		}
		if attempt >= c.createAttempts {
			return zero, false, fmt.Errorf("%w (tried %d times; none of the tries showed up in %d looks over %s, yet one may still appear: the intent stays recorded and the next run looks for it again before creating one)", err, attempt, looks, c.createConfirm)
		}
	}
}

// Adopt is CreateOnce's first step on its own: when an earlier run recorded the intent but not
// the id, it finds the job that run may have created and records its id (ok). An intent younger
// than the confirm window is looked for until the window has passed since it was recorded (the
// create may still be under way, or not yet listed); an older one is looked for once. Callers
// whose create needs work first (an upload) adopt before doing it. Without a pending intent it
// does nothing.
func Adopt[T any](ctx context.Context, c *Client, in *Intent, save func() error, find FindFunc[T]) (job T, ok bool, err error) {
	var zero T
	if !in.Pending() {
		return zero, false, nil
	}
	window := c.createConfirm - c.now().Sub(in.At)
	job, ok, _, err = lookFor(ctx, c, in, save, find, window)
	if err != nil {
		return zero, false, stopped(ctx, fmt.Errorf("looking for the job an interrupted run may have started (never starting a second one before knowing): %w", err))
	}
	return job, ok, nil
}

// lookFor finds the job of a pending intent: at once, then again after the create backoff,
// doubling, until the waits add up to window (at least one look). A job found has its id
// recorded. looks counts the finds made.
func lookFor[T any](ctx context.Context, c *Client, in *Intent, save func() error, find FindFunc[T], window time.Duration) (job T, ok bool, looks int, err error) {
	var zero T
	wait, waited := c.createBackoff, time.Duration(0)
	for {
		job, id, found, err := find(ctx, in.At)
		looks++
		if err != nil {
			return zero, false, looks, err
		}
		if found {
			in.ID = id
			return job, true, looks, save()
		}
		if waited >= window {
			return zero, false, looks, nil
		}
		if err := c.sleep(ctx, wait); err != nil {
			return zero, false, looks, err
		}
		waited += wait
		wait *= 2
	}
}

// stopped is ctx's error when the run is stopping (the caller records and exits), else err.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// WithCreateRetry sets how often CreateOnce tries a create whose answers may hide a job (each
// retry only after find showed none for the confirm window) and the first wait between finds,
// doubled after each. Defaults: 3 attempts, 2s.
func WithCreateRetry(attempts int, backoff time.Duration) Option {
	return func(c *Client) {
		if attempts > 0 {
			c.createAttempts = attempts
		}
		if backoff > 0 {
			c.createBackoff = backoff
		}
	}
}

// WithCreateConfirm sets how long CreateOnce keeps looking for a job whose create got no clear
// answer before it creates again (and how long after an intent Adopt keeps looking). Default 2
// minutes: as long as a create request may take, so a create still being processed is seen.
func WithCreateConfirm(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.createConfirm = d
		}
	}
}
