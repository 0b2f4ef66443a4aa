package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// watchPair is a server whose trainings take T and a client sharing a stepped clock that stands
// still while a request is under way.
func watchPair(t *testing.T, T time.Duration) (*replicatetest.Server, *replicate.Client, *replicatetest.Clock) {
	t.Helper()
	clk := replicatetest.NewSteppedClock(epoch)
	srv := replicatetest.NewServer(replicatetest.Options{Clock: clk, Auto: true, TrainingTime: T, PageSize: 100})
	t.Cleanup(srv.Close)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithTime(clk),
		replicate.WithHTTPClient(&http.Client{Transport: clk.Transport(nil)}))
	if err != nil {
		t.Fatal(err)
	}
	return srv, c, clk
}

// startTrainings creates n trainings into acme/batch-lora.
func startTrainings(t *testing.T, srv *replicatetest.Server, c *replicate.Client, n int) []*replicate.Training {
	t.Helper()
	srv.AddModel("acme", "batch-lora", 0)
	f := upload(t, c)
	out := make([]*replicate.Training, n)
	for i := range out {
		tr, err := c.CreateTraining(context.Background(), replicatetest.Trainer, "acme/batch-lora",
			map[string]any{"input_images": f.URL, "steps": 1000, "trigger_word": fmt.Sprintf("TOK%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = tr
	}
	return out
}

// watchResult is what one caller saw.
type watchResult struct {
	last           replicate.TrainingUpdate
	updates, fresh int
}

// watchAll follows every training as a train stage would: one goroutine each that only waits.
// A stepped clock (clk) waits while they are being registered.
func watchAll(ctx context.Context, clk *replicatetest.Clock, c *replicate.Client, trs []*replicate.Training, opts func(i int) replicate.WatchOptions) []watchResult {
	out := make([]watchResult, len(trs))
	var wg sync.WaitGroup
	if clk != nil {
		clk.Join()
	}
	for i, tr := range trs {
		w := c.WatchTraining(ctx, tr, opts(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range w.Updates() {
				out[i].last = u
				out[i].updates++
				if u.Fresh {
					out[i].fresh++
				}
			}
		}()
	}
	if clk != nil {
		clk.Leave()
	}
	wg.Wait()
	return out
}

// 200 trainings followed at once: their statuses come from listing GET /v1/trainings (two pages
// of 100 per look, not 200 GETs), each is read by its own GET when it ends (final logs and
// metrics), running ones' logs are read every few minutes, and those that need the loss curve
// (cancel_early) at every look.
func TestWatcherFollowsManyTrainingsByListing(t *testing.T) {
	const n, T = 200, 10 * time.Minute
	srv, c, clk := watchPair(t, T)
	trs := startTrainings(t, srv, c, n)
	before := c.Stats()
	curve := func(i int) bool { return i%20 == 0 } // 10 of them
	res := watchAll(context.Background(), clk, c, trs, func(i int) replicate.WatchOptions {
		return replicate.WatchOptions{Interval: 5 * time.Second, Curve: curve(i)}
	})
	st := c.Stats()
	lists, gets := st.TrainingLists-before.TrainingLists, st.TrainingGets-before.TrainingGets
	t.Logf("%d list pages, %d own GETs for %d trainings of %v", lists, gets, n, T)
	for i, r := range res {
		u := r.last
		if u.Err != nil || u.Training == nil || u.Training.Status != "succeeded" || !u.Fresh {
			t.Fatalf("training %d ended with %+v", i, u)
		}
		prog := replicate.ParseLogs(u.Training.Logs)
		if prog.Step != 1000 || prog.Total != 1000 || u.Training.Output.Version == "" {
			t.Fatalf("training %d: final update without its final logs/output: step %d/%d, output %+v", i, prog.Step, prog.Total, u.Training.Output)
		}
		if pt := u.Training.PredictTime; pt < 0.85*T.Seconds() || pt > T.Seconds() {
			t.Errorf("training %d: predict_time %.0f s, want about %v less its start", i, pt, T)
		}
		if curve(i) && r.fresh < 8 {
			t.Errorf("training %d needs its curve but got only %d fresh logs", i, r.fresh)
		}
		if !curve(i) && r.fresh > int(T/(5*time.Minute))+2 {
			t.Errorf("training %d got %d fresh logs, want about one per 5 minutes", i, r.fresh)
		}
	}
	// One GET each would be ≥ 10 per training (60 s apart at most); listing costs 2 pages a look.
	if gets < n || gets > n*3 {
		t.Errorf("%d own GETs, want %d at the ends plus a few progress and curve reads", gets, n)
	}
	if lists == 0 || lists > 2*(int64(T/(5*time.Second))+1) {
		t.Errorf("%d list pages, want 2 per look", lists)
	}
	if n := srv.Stats().PeakTrainingsInFlight; n != 200 {
		t.Errorf("server saw at most %d trainings in flight, want 200", n)
	}
}

// With 20 or fewer, each training is read by its own GET, as before: no list at all.
func TestWatcherGetsEachOfFewTrainings(t *testing.T) {
	srv, c, clk := watchPair(t, 3*time.Minute)
	trs := startTrainings(t, srv, c, replicate.ListThreshold)
	before := c.Stats()
	res := watchAll(context.Background(), clk, c, trs, func(int) replicate.WatchOptions { return replicate.WatchOptions{} })
	st := c.Stats()
	for i, r := range res {
		if r.last.Err != nil || r.last.Training.Status != "succeeded" || r.fresh < 3 {
			t.Fatalf("training %d: %+v after %d fresh updates", i, r.last, r.fresh)
		}
	}
	if st.TrainingLists != before.TrainingLists {
		t.Errorf("%d list pages with %d trainings, want none", st.TrainingLists-before.TrainingLists, replicate.ListThreshold)
	}
	if gets := st.TrainingGets - before.TrainingGets; gets < 3*int64(len(trs)) {
		t.Errorf("%d GETs for %d trainings", gets, len(trs))
	}
}

// A training that disappears (deleted, another account's token) ends its watch with a 404, in
// list mode (missing from the list, then its own GET) and with few trainings; the others go on.
func TestWatcherReportsAVanishedTraining(t *testing.T) {
	for _, n := range []int{3, replicate.ListThreshold + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			srv, c, clk := watchPair(t, 5*time.Minute)
			trs := startTrainings(t, srv, c, n)
			if !srv.RemoveTraining(trs[1].ID) {
				t.Fatal("no such training")
			}
			res := watchAll(context.Background(), clk, c, trs, func(int) replicate.WatchOptions { return replicate.WatchOptions{} })
			for i, r := range res {
				if i == 1 {
					if !replicate.IsNotFound(r.last.Err) || r.last.Training == nil || r.last.Training.ID != trs[1].ID {
						t.Errorf("the removed training's watch ended with %+v, want a 404", r.last)
					}
					continue
				}
				if r.last.Err != nil || r.last.Training.Status != "succeeded" {
					t.Errorf("training %d: %+v", i, r.last)
				}
			}
		})
	}
}

// 429s (even more than the client retries) only delay a look: the training is followed to its
// end, never dropped as if its polls had failed.
func TestWatcherRateLimitedIsNoFailure(t *testing.T) {
	for _, n := range []int{1, replicate.ListThreshold + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			srv, c, clk := watchPair(t, 5*time.Minute)
			trs := startTrainings(t, srv, c, n)
			srv.RateLimit("GET", "/v1/trainings", 2, 40) // lists and GETs: beyond 6 retries
			res := watchAll(context.Background(), clk, c, trs, func(int) replicate.WatchOptions { return replicate.WatchOptions{} })
			for i, r := range res {
				if r.last.Err != nil || r.last.Training.Status != "succeeded" {
					t.Fatalf("training %d: %+v", i, r.last)
				}
			}
			if got := srv.Count("429"); got != 40 {
				t.Errorf("%d 429s answered, want all 40 used up", got)
			}
		})
	}
}

// Failures other than 429 end the watch after five looks in a row, saying why; the training
// runs on (the caller can follow it again).
func TestWatcherGivesUpAfterRepeatedFailures(t *testing.T) {
	srv, c, clk := watchPair(t, 5*time.Minute)
	trs := startTrainings(t, srv, c, 1)
	srv.FailWithDetail("GET", "/v1/trainings/", http.StatusBadRequest, "broken proxy", 100)
	res := watchAll(context.Background(), clk, c, trs, func(int) replicate.WatchOptions { return replicate.WatchOptions{} })
	var apiErr *replicate.APIError
	if !errors.As(res[0].last.Err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("watch ended with %+v, want the 400", res[0].last)
	}
	if got := srv.Count("GET /v1/trainings/{id}"); got != 5 {
		t.Errorf("%d looks before giving up, want 5", got)
	}
}

// The caller's context ends its watch (Err says so); Stop closes it quietly; a training that has
// ended already is delivered at once.
func TestWatchEndsWithContextAndStop(t *testing.T) {
	srv, c, _ := watchPair(t, time.Hour)
	trs := startTrainings(t, srv, c, 2)
	ctx, cancel := context.WithCancel(context.Background())
	w := c.WatchTraining(ctx, trs[0], replicate.WatchOptions{})
	cancel()
	var last replicate.TrainingUpdate
	for u := range w.Updates() {
		last = u
	}
	if !errors.Is(last.Err, context.Canceled) {
		t.Errorf("after cancel: %+v, want context.Canceled", last)
	}
	w2 := c.WatchTraining(context.Background(), trs[1], replicate.WatchOptions{})
	w2.Stop()
	for u := range w2.Updates() {
		t.Errorf("update after Stop: %+v", u)
	}
	done := *trs[1]
	done.Status = "succeeded"
	u, ok := <-c.WatchTraining(context.Background(), &done, replicate.WatchOptions{}).Updates()
	if !ok || u.Training.Status != "succeeded" || u.Err != nil {
		t.Errorf("watching an ended training: %+v, %v", u, ok)
	}
}

// Stage tests sleep with a fake that returns at once while the clock stands still, against the
// deterministic server (a training advances one step per GET of it): the watcher still follows a
// training to its end, one GET per look.
func TestWatcherWithAFakeSleep(t *testing.T) {
	srv := newServer(t)
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithSleep(func(ctx context.Context, _ time.Duration) error { return ctx.Err() }))
	if err != nil {
		t.Fatal(err)
	}
	trs := startTrainings(t, srv, c, 2)
	res := watchAll(context.Background(), nil, c, trs, func(int) replicate.WatchOptions { return replicate.WatchOptions{Interval: time.Second} })
	for i, r := range res {
		if r.last.Err != nil || r.last.Training.Status != "succeeded" {
			t.Fatalf("training %d: %+v", i, r.last)
		}
	}
	if got := srv.Count("GET /v1/trainings/{id}"); got != 2*7 {
		t.Errorf("%d GETs, want 7 each (the deterministic server's training length)", got)
	}
}
