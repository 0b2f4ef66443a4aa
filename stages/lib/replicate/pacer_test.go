package replicate_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

var epoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// virtualPair is a server in Auto mode and a client sharing one virtual clock: scaled by speed,
// or stepped when speed is 0.
func virtualPair(t testing.TB, speed float64, opts replicatetest.Options, copts ...replicate.Option) (*replicatetest.Server, *replicate.Client, *replicatetest.Clock) {
	t.Helper()
	clk := replicatetest.NewClock(epoch, speed)
	if speed == 0 {
		clk = replicatetest.NewSteppedClock(epoch)
	}
	opts.Clock, opts.Auto = clk, true
	srv := replicatetest.NewServer(opts)
	t.Cleanup(srv.Close)
	copts = append([]replicate.Option{replicate.WithClock(clk.Now), replicate.WithSleep(clk.Sleep)}, copts...)
	c, err := replicate.New(srv.URL(), srv.Token(), copts...)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c, clk
}

// A start of 1,000 prediction creates and 2,000 other requests at once is spread out under
// Replicate's limits, measured by the server's own sliding-window accounting: no 429, no minute
// over 600 creates or 3,000 others, and (the budget being 540 and 2,400) it takes the time the
// budget implies instead of leaving at t=0. The clock is stepped, so the accounting is exact.
func TestPacerKeepsABurstUnderTheLimits(t *testing.T) {
	srv, c, clk := virtualPair(t, 0, replicatetest.Options{RateLimits: &replicatetest.Limits{}, PageSize: 100})
	srv.AddModel("acme", "ana-lora", 1)
	srv.AddModel("acme", "bob-lora", 0)
	version := "acme/ana-lora:" + srv.VersionIDs("acme", "ana-lora")[0]
	start := clk.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 3000)
	for i := 0; i < 1000; i++ {
		wg.Add(3)
		clk.Join()
		clk.Join()
		clk.Join()
		go func() {
			defer wg.Done()
			defer clk.Leave()
			_, err := c.CreatePrediction(context.Background(), version, map[string]any{"prompt": "a photo of TOK"})
			errs <- err
		}()
		for j := 0; j < 2; j++ { // 2,000 others
			go func() {
				defer wg.Done()
				defer clk.Leave()
				_, err := c.GetModel(context.Background(), "acme", "bob-lora")
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	elapsed := clk.Since(start)
	st := srv.Stats()
	t.Logf("virtual %v; server: peak %d creates/min, %d others/min, %d all/min, %d throttled; client %+v",
		elapsed.Round(time.Second), st.PeakCreatesPerMinute, st.PeakOtherPerMinute, st.PeakPerMinute, st.Throttled, c.Stats())
	if st.Throttled != 0 || srv.Count("429") != 0 {
		t.Errorf("%d requests were throttled, want none", st.Throttled)
	}
	if st.PeakCreatesPerMinute > replicate.APICreatesPerMinute || st.PeakOtherPerMinute > replicate.APIOtherPerMinute {
		t.Errorf("peaks %d creates/min, %d others/min: over the API's limits", st.PeakCreatesPerMinute, st.PeakOtherPerMinute)
	}
	if st.PeakOtherPerMinute > 2500 {
		t.Errorf("peak %d others/min, want at most 2,500 with the start burst", st.PeakOtherPerMinute)
	}
	// 1,000 creates at 540/min after a burst of 9 take at least 110 s.
	if min := (1000-9)*time.Minute/540 - time.Second; elapsed < min {
		t.Errorf("1,000 creates took %v of virtual time, want at least %v: the start was not spread", elapsed, min)
	}
	if s := c.Stats(); s.Creates != 1000 || s.Other != 2000 {
		t.Errorf("client counted %d creates, %d others; want 1000, 2000", s.Creates, s.Other)
	}
}

// When the account's real limit is far below the client's budget (another process shares the
// token), a 429 pauses every caller of the client until its Retry-After, not only the one that
// got it, and the budget slows afterwards: throttled requests stay about one per caller per
// limit window, and nobody fails.
func TestPacerReactsTo429ForEveryCaller(t *testing.T) {
	const callers, limit, minutes = 5, 30, 3
	srv, c, clk := virtualPair(t, 0, replicatetest.Options{RateLimits: &replicatetest.Limits{OtherPerMinute: limit}},
		replicate.WithRateLimits(replicate.RateLimits{OtherPerMinute: 20 * limit}))
	stop := clk.Now().Add(minutes * time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok int
	for i := 0; i < callers; i++ {
		wg.Add(1)
		clk.Join()
		go func() {
			defer wg.Done()
			defer clk.Leave()
			for clk.Now().Before(stop) {
				if _, err := c.GetModel(context.Background(), "ostris", "flux-dev-lora-trainer"); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st := srv.Stats()
	t.Logf("%d requests answered, %d throttled, client %+v", ok, st.Throttled, c.Stats())
	// A window of admitted requests per minute, then at most one 429 per caller (the requests
	// under way when the first came); a caller that kept sending during the pauses would be
	// throttled at the client's rate, hundreds of times a minute.
	if st.Throttled > callers*(minutes+1) {
		t.Errorf("%d throttled requests in %d minutes: callers kept sending during Retry-After pauses", st.Throttled, minutes)
	}
	if st.Throttled == 0 {
		t.Error("the server never throttled: the test did not exercise a 429")
	}
	if ok < (minutes-1)*limit {
		t.Errorf("only %d requests answered in %d minutes at %d/min: the client starved itself", ok, minutes, limit)
	}
	if c.Stats().Throttled != int64(st.Throttled) {
		t.Errorf("client saw %d 429s, server sent %d", c.Stats().Throttled, st.Throttled)
	}
}

// After a 429 the budget runs at half its rate for a while: requests that were one interval
// apart are two apart (fake clock: the waits are exact).
func TestPacerSlowsAfter429(t *testing.T) {
	srv := newServer(t)
	clk := &fakeClock{t: epoch}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithSleep(clk.sleep), replicate.WithClock(clk.now),
		replicate.WithRateLimits(replicate.RateLimits{OtherPerMinute: 60, Burst: 1}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	five := func() time.Duration {
		before := clk.now()
		for i := 0; i < 5; i++ {
			if _, err := c.GetModel(ctx, "ostris", "flux-dev-lora-trainer"); err != nil {
				t.Fatal(err)
			}
		}
		return clk.now().Sub(before)
	}
	if d := five(); d != 4*time.Second {
		t.Fatalf("5 requests at 60/min took %v, want 4s (the first at once, then 1s apart)", d)
	}
	srv.RateLimit("GET", "/v1/models", 1, 1)
	if _, err := c.GetModel(ctx, "ostris", "flux-dev-lora-trainer"); err != nil {
		t.Fatal(err)
	}
	if d := five(); d < 8*time.Second {
		t.Errorf("5 requests after a 429 took %v, want at least 8s (half the rate)", d)
	}
	clk.sleep(ctx, 3*time.Minute)
	five() // the bucket refills at full rate again
	if d := five(); d != 5*time.Second {
		t.Errorf("5 requests long after the 429 took %v, want 5s (full rate again)", d)
	}
}

// Only API requests spend the budget: a delivery URL on another host does not.
func TestPacerCountsOnlyAPIRequests(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	f := upload(t, c)
	if _, err := c.Download(context.Background(), f.URL); err != nil {
		t.Fatal(err)
	}
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("png")) }))
	t.Cleanup(cdn.Close)
	if _, err := c.Download(context.Background(), cdn.URL+"/out-0.png"); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Other != 2 || s.Creates != 0 {
		t.Errorf("stats %+v, want the upload and the file download (both /v1) as 2 others", s)
	}
}
