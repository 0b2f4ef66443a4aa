package replicate

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	rg "github.com/replicate/replicate-go"
)

// ListThreshold is how many trainings the watcher follows with one GET each; with more, their
// statuses come from listing GET /v1/trainings, a page for up to a hundred of them.
const ListThreshold = 20

// Shares of the "other" budget the watcher plans for in list mode, so uploads and creates of the
// same process keep most of it: list pages at most a quarter, log reads a quarter. The pacer
// still bounds the total; this only keeps the watcher from taking all of it.
const (
	listShare = 0.25
	logShare  = 0.25
)

// maxWatchJobs bounds the watcher's own GETs in flight (the budget bounds their rate).
const maxWatchJobs = 16

// maxWatchFailures is how many looks in a row may fail (not counting 429s, which only delay a
// look) before the watch ends with the error; the training keeps running on Replicate.
const maxWatchFailures = 5

// WatchOptions say how a caller wants a training followed.
type WatchOptions struct {
	// Interval is the wait between looks (the train stage's poll_interval; default 5s). It grows
	// by half while nothing changes, up to MaxInterval (default 12× Interval, at most a minute,
	// never below Interval), and starts again when the status changes.
	Interval, MaxInterval time.Duration
	// Curve: the caller needs the running loss curve (loss_gate cancel_early), so in list mode
	// the training's own GET (its logs) is read at every look, as with few trainings, not only
	// every ProgressInterval.
	Curve bool
	// ProgressInterval is how often, in list mode, a running training's own GET (logs: progress
	// and loss) is read when Curve is false (default 5 minutes), as the budget allows: a batch's
	// progress needs no more, and a thousand trainings' logs would take a third of the budget.
	ProgressInterval time.Duration
}

// TrainingUpdate is news about a followed training.
type TrainingUpdate struct {
	// Training is what is known now. Its Logs are the latest read by its own GET: a list shows
	// no logs, so between such reads they are the previous ones.
	Training *Training
	// Fresh: Training (logs included) was read by its own GET for this update.
	Fresh bool
	// Err ends the watch: the training vanished (IsNotFound: deleted, or another account's),
	// the caller's context ended, or looks kept failing (the training runs on; follow it again).
	Err error
}

// TrainingWatch is one caller's view of a followed training. The caller only waits on Updates;
// the Client's watcher does every request.
type TrainingWatch struct {
	w *watcher
	x *watched
}

// Updates delivers the training whenever the watcher learns something new about it: a status
// change, new logs, and last its terminal state (read by its own GET, with the final logs and
// metrics) or an error; then it is closed. An unread update is replaced by a newer one, so a slow
// reader never holds the watcher up and always gets the latest.
func (tw *TrainingWatch) Updates() <-chan TrainingUpdate { return tw.x.out }

// Stop ends the watch (Updates is closed without a further update).
func (tw *TrainingWatch) Stop() { tw.w.end(tw.x, TrainingUpdate{}, true) }

// WatchTraining follows training t (at least its ID; its CreatedAt bounds the list pages, its
// Logs count as read) until it ends, ctx ends or Stop. The Client follows every watched training
// together: with ListThreshold or fewer, each is read by its own GET on its own schedule; with
// more, their statuses come from GET /v1/trainings (newest first, paged down to the oldest one
// followed), and a training's own GET (logs) is read when the list shows it ended, when it is
// missing from the list (404 there: it vanished), and while it runs at the rate the budget
// allows. A 429 only delays a look.
func (c *Client) WatchTraining(ctx context.Context, t *Training, opts WatchOptions) *TrainingWatch {
	w := c.watcher
	x := &watched{id: t.ID, ctx: ctx, opts: withWatchDefaults(opts), out: make(chan TrainingUpdate, 1)}
	x.poll = Poller{Initial: x.opts.Interval, Max: x.opts.MaxInterval}
	cp := *t
	x.last, x.logs, x.created = &cp, t.Logs, t.CreatedAt
	tw := &TrainingWatch{w: w, x: x}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.Terminal() || ctx.Err() != nil {
		u := TrainingUpdate{Training: &cp, Err: ctx.Err()}
		if t.Terminal() {
			u.Err = nil
		}
		x.out <- u
		close(x.out)
		x.closed = true
		return tw
	}
	now := w.clock()
	x.due = now.Add(x.poll.Next())
	x.logsDue = now.Add(w.logsEvery(x))
	x.needGet = t.CreatedAt.IsZero() // the list bound needs its created_at
	if w.watches == nil {
		w.watches = map[*watched]struct{}{}
		w.wake = make(chan struct{}, 1)
	}
	w.watches[x] = struct{}{}
	x.stopCtx = context.AfterFunc(ctx, func() { w.end(x, TrainingUpdate{Err: ctx.Err()}, true) })
	if !w.running {
		w.running = true
		c.join()
		go w.run()
	}
	w.poke()
	return tw
}

func withWatchDefaults(o WatchOptions) WatchOptions {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.MaxInterval <= 0 {
		o.MaxInterval = min(12*o.Interval, time.Minute)
	}
	o.MaxInterval = max(o.MaxInterval, o.Interval)
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Minute
	}
	return o
}

// watched is the watcher's state of one watch.
type watched struct {
	id      string
	ctx     context.Context
	opts    WatchOptions
	poll    Poller
	created time.Time
	last    *Training
	logs    string
	due     time.Time // next look at its status (its own GET, or in list mode the next list)
	logsDue time.Time // list mode: next own GET for its logs
	needGet bool      // its own GET is wanted at due (ended, missing from the list, no created_at)
	busy    bool      // its own GET is in flight
	fails   int
	out     chan TrainingUpdate
	closed  bool
	stopCtx func() bool
}

// watcher is the Client's one follower of trainings: a goroutine that runs while anything is
// watched, deciding what to read next, and jobs that read it.
type watcher struct {
	c *Client

	mu        sync.Mutex
	watches   map[*watched]struct{}
	running   bool
	wake      chan struct{}
	jobs      int
	listing   bool
	lastList  time.Time
	listPages int
	listFails int
	logTokens float64
	logAt     time.Time
	vnow      time.Time // the loop's clock: a sleep that returned counts as time passed
	// woken counts pokes the loop has not seen yet; with a discrete-event clock each holds a
	// membership, so the clock cannot move on before the loop has woken (WithTime).
	woken int
}

// clock is the watcher's now: the client's clock, or later when the client's sleep returned
// before its clock moved (tests with a fake sleep).
func (w *watcher) clock() time.Time {
	now := w.c.now()
	if w.vnow.After(now) {
		return w.vnow
	}
	return now
}

// poke wakes the loop (called with w.mu held; none runs: nothing to wake).
func (w *watcher) poke() {
	if !w.running {
		return
	}
	w.woken++
	w.c.join()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// awake releases the memberships of the pokes the loop has now seen (w.mu held).
func (w *watcher) awake() {
	for ; w.woken > 0; w.woken-- {
		w.c.leave()
	}
}

// run is the loop: start what is due, then sleep until the next thing is due or a job ends.
func (w *watcher) run() {
	defer w.c.leave()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		w.mu.Lock()
		w.awake()
		if len(w.watches) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		now := w.clock()
		next := w.dispatch(ctx, now)
		w.mu.Unlock()
		w.wait(ctx, now, next)
	}
}

// wait sleeps until next (zero: until poked) or a poke.
func (w *watcher) wait(ctx context.Context, now, next time.Time) {
	if next.IsZero() && !w.c.discrete {
		select {
		case <-w.wake:
		case <-ctx.Done():
		}
		return
	}
	if next.IsZero() {
		// A discrete-event clock must see the loop asleep, or it would wait for it forever.
		next = now.Add(time.Hour)
	}
	d := next.Sub(now)
	if d <= 0 {
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-w.wake:
			cancel()
		case <-done:
		}
	}()
	err := w.c.sleep(sctx, d)
	close(done)
	cancel()
	if err == nil {
		w.mu.Lock()
		if next.After(w.vnow) {
			w.vnow = next
		}
		w.mu.Unlock()
	}
}

// dispatch starts the jobs that are due and returns when the next one will be (zero: none is
// timed; a job's end pokes the loop).
func (w *watcher) dispatch(ctx context.Context, now time.Time) time.Time {
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	list := len(w.watches) > ListThreshold
	for _, x := range w.order() {
		if x.busy || w.jobs >= maxWatchJobs {
			continue
		}
		if list && !x.needGet {
			continue
		}
		if x.due.After(now) {
			soon(x.due)
			continue
		}
		w.startGet(x)
	}
	if !list {
		return next
	}
	if t := w.listRound(ctx, now); !t.IsZero() {
		soon(t)
	}
	if t := w.readLogs(now); !t.IsZero() {
		soon(t)
	}
	return next
}

// order lists the watches, ended or missing ones first, then by due time (a stable schedule).
func (w *watcher) order() []*watched {
	xs := make([]*watched, 0, len(w.watches))
	for x := range w.watches {
		xs = append(xs, x)
	}
	sort.Slice(xs, func(i, j int) bool {
		if xs[i].needGet != xs[j].needGet {
			return xs[i].needGet
		}
		if !xs[i].due.Equal(xs[j].due) {
			return xs[i].due.Before(xs[j].due)
		}
		return xs[i].id < xs[j].id
	})
	return xs
}

// listRound starts a list of the trainings when any watch is due for a look, no list is under
// way and the last one is far enough back for its pages to fit the list share of the budget.
func (w *watcher) listRound(ctx context.Context, now time.Time) time.Time {
	if w.listing {
		return time.Time{}
	}
	var due time.Time
	for x := range w.watches {
		if !x.needGet && (due.IsZero() || x.due.Before(due)) {
			due = x.due
		}
	}
	if due.IsZero() {
		return time.Time{}
	}
	if gap := w.listGap(); w.lastList.Add(gap).After(due) {
		due = w.lastList.Add(gap)
	}
	if due.After(now) {
		return due
	}
	followed := map[string]*watched{}
	var oldest time.Time
	for x := range w.watches {
		if x.needGet || x.busy {
			continue
		}
		followed[x.id] = x
		if oldest.IsZero() || x.created.Before(oldest) {
			oldest = x.created
		}
	}
	w.listing, w.lastList = true, now
	w.c.join()
	go w.list(ctx, followed, oldest)
	return time.Time{}
}

// listGap is the least time between lists: the last list's pages at the list share of the budget.
func (w *watcher) listGap() time.Duration {
	rate := w.c.limits.OtherPerMinute / 60 * listShare
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(max(w.listPages, 1)) / rate * float64(time.Second))
}

// list reads GET /v1/trainings, newest first, until every followed training was seen or the
// page is older than the oldest of them, and applies what it found.
func (w *watcher) list(ctx context.Context, followed map[string]*watched, oldest time.Time) {
	defer w.c.leave()
	seen := map[string]*Training{}
	pages := 0
	err := w.c.paginate(ctx, w.c.api("/trainings"), "list trainings", func(raw json.RawMessage) (bool, error) {
		var t rg.Training
		if err := json.Unmarshal(raw, &t); err != nil {
			return false, err
		}
		if _, ok := followed[t.ID]; ok {
			seen[t.ID] = trainingFrom(&t)
		}
		created := parseTime(t.CreatedAt)
		return len(seen) < len(followed) && !(created.Before(oldest) && !created.IsZero()), nil
	}, func() { pages++ })
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.poke()
	w.listing = false
	w.listPages = pages
	now := w.clock()
	if err != nil {
		w.listFailed(err, followed, now)
		return
	}
	w.listFails = 0
	for id, x := range followed {
		if x.closed || x.busy {
			continue
		}
		t, ok := seen[id]
		if !ok || t.Terminal() {
			// Ended: its own GET has the final logs and metrics. Missing: a 404 there says it
			// vanished; anything else, it was only out of the pages read.
			x.needGet, x.due = true, now
			if ok {
				x.last = w.merge(x, t)
			}
			continue
		}
		w.news(x, w.merge(x, t), false, now)
	}
}

// listFailed counts a failed list against every followed training, as a failed look each.
func (w *watcher) listFailed(err error, followed map[string]*watched, now time.Time) {
	if IsRateLimited(err) {
		return
	}
	w.listFails++
	for _, x := range followed {
		if x.closed {
			continue
		}
		if w.listFails >= maxWatchFailures {
			w.end(x, TrainingUpdate{Training: x.last, Err: err}, false)
			continue
		}
		x.due = now.Add(x.poll.Next())
	}
}

// merge is a listed training with the logs last read by its own GET (the list has none).
func (w *watcher) merge(x *watched, t *Training) *Training {
	t.Logs = x.logs
	return t
}

// news applies what a look found about a running training: an update when something changed,
// and the next look on its backing-off schedule.
func (w *watcher) news(x *watched, t *Training, fresh bool, now time.Time) {
	prev := x.last
	x.last, x.fails = t, 0
	statusChanged := prev == nil || prev.Status != t.Status
	if statusChanged {
		x.poll.Reset()
	}
	if statusChanged || (fresh && (prev == nil || prev.Logs != t.Logs)) {
		w.deliver(x, TrainingUpdate{Training: copyTraining(t), Fresh: fresh})
	}
	x.due = now.Add(x.poll.Next())
}

func copyTraining(t *Training) *Training {
	c := *t
	return &c
}

// readLogs starts own GETs of running trainings whose logs are due, Curve ones first, as many as
// the log share of the budget has room for; it returns when the next one is due.
func (w *watcher) readLogs(now time.Time) time.Time {
	w.refillLogTokens(now)
	var cands []*watched
	var next time.Time
	for x := range w.watches {
		if x.busy || x.needGet {
			continue
		}
		if x.logsDue.After(now) {
			if next.IsZero() || x.logsDue.Before(next) {
				next = x.logsDue
			}
			continue
		}
		cands = append(cands, x)
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].opts.Curve != cands[j].opts.Curve {
			return cands[i].opts.Curve
		}
		return cands[i].logsDue.Before(cands[j].logsDue)
	})
	for _, x := range cands {
		if w.jobs >= maxWatchJobs {
			return time.Time{} // a job's end pokes the loop
		}
		if w.logTokens < 1 {
			return now.Add(w.tokenWait())
		}
		w.logTokens--
		w.startGet(x)
	}
	return next
}

// logRate is the log share of the budget in reads per second (0: unlimited).
func (w *watcher) logRate() float64 { return w.c.limits.OtherPerMinute / 60 * logShare }

func (w *watcher) refillLogTokens(now time.Time) {
	rate := w.logRate()
	if rate <= 0 {
		w.logTokens = maxWatchJobs
		return
	}
	if !w.logAt.IsZero() && now.After(w.logAt) {
		w.logTokens += now.Sub(w.logAt).Seconds() * rate
	}
	w.logAt = now
	w.logTokens = min(w.logTokens, max(1, rate*10))
}

func (w *watcher) tokenWait() time.Duration {
	rate := w.logRate()
	if rate <= 0 {
		return 0
	}
	return time.Duration((1 - w.logTokens) / rate * float64(time.Second))
}

// logsEvery is how long a running training's logs may age in list mode: for a Curve one, its
// current look interval (the cadence it would have with few trainings).
func (w *watcher) logsEvery(x *watched) time.Duration {
	if x.opts.Curve {
		return max(x.poll.cur, x.opts.Interval)
	}
	return x.opts.ProgressInterval
}

// startGet reads x by its own GET in a job.
func (w *watcher) startGet(x *watched) {
	x.busy = true
	w.jobs++
	w.c.join()
	go func() {
		defer w.c.leave()
		t, err := w.c.GetTraining(x.ctx, x.id)
		w.mu.Lock()
		defer w.mu.Unlock()
		defer w.poke()
		w.jobs--
		x.busy = false
		if !x.closed {
			w.gotTraining(x, t, err)
		}
	}()
}

// gotTraining applies a training's own GET.
func (w *watcher) gotTraining(x *watched, t *Training, err error) {
	now := w.clock()
	switch {
	case err != nil && IsNotFound(err):
		w.end(x, TrainingUpdate{Training: x.last, Err: err}, false)
		return
	case err != nil && x.ctx.Err() != nil:
		return // the watch ends through its context
	case err != nil:
		if !IsRateLimited(err) {
			x.fails++
		}
		if x.fails >= maxWatchFailures {
			w.end(x, TrainingUpdate{Training: x.last, Err: err}, false)
			return
		}
		x.due = now.Add(x.poll.Next())
		return
	}
	x.logs, x.needGet = t.Logs, false
	if x.created.IsZero() {
		x.created = t.CreatedAt
	}
	if t.Terminal() {
		w.end(x, TrainingUpdate{Training: copyTraining(t), Fresh: true}, false)
		return
	}
	w.news(x, t, true, now)
	x.logsDue = now.Add(w.logsEvery(x))
}

// deliver puts u in x's channel, replacing an update the caller has not read yet.
func (w *watcher) deliver(x *watched, u TrainingUpdate) {
	select {
	case x.out <- u:
		return
	default:
	}
	select {
	case <-x.out:
	default:
	}
	x.out <- u // only the watcher sends, under w.mu: there is room now
}

// end finishes a watch: the last update (unless it is empty), then the channel closes.
func (w *watcher) end(x *watched, u TrainingUpdate, lock bool) {
	if lock {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	if x.closed {
		return
	}
	if u.Training != nil || u.Err != nil {
		if u.Training == nil && x.last != nil {
			u.Training = copyTraining(x.last)
		}
		w.deliver(x, u)
	}
	x.closed = true
	close(x.out)
	delete(w.watches, x)
	if x.stopCtx != nil {
		x.stopCtx()
	}
	w.poke()
}
