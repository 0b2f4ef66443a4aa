package replicate_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// BenchmarkBatch runs 1,000 subjects' remote work through one client, as a batch apply with
// -max-in-flight 1000 does: each uploads its zip, creates its training and waits on the watcher
// until it ends. Server and client share a clock and the server enforces Replicate's rate
// limits. On the stepped clock the figures are the design's, not the machine's; on the scaled
// one (50× wall time) they include what this machine's loopback HTTP costs:
//
//	go test -run '^$' -bench Batch -benchtime 1x ./stages/lib/replicate/
//
// It reports the batch's virtual time as a multiple of the training length T, the peak API
// requests per minute (all kinds, start burst included), the most trainings in flight, requests
// per subject and the server's 429s.
func BenchmarkBatch(b *testing.B) {
	for _, tc := range []struct {
		T     time.Duration
		speed float64
	}{{25 * time.Minute, 0}, {5 * time.Minute, 0}, {25 * time.Minute, 50}} {
		clock := "stepped"
		if tc.speed > 0 {
			clock = fmt.Sprintf("scaled%.0fx", tc.speed)
		}
		b.Run(fmt.Sprintf("n=1000/T=%v/%s", tc.T, clock), func(b *testing.B) {
			for range b.N {
				runBatch(b, 1000, tc.T, tc.speed)
			}
		})
	}
}

func runBatch(b *testing.B, n int, T time.Duration, speed float64) {
	clk := replicatetest.NewSteppedClock(epoch)
	if speed > 0 {
		clk = replicatetest.NewClock(epoch, speed)
	}
	srv := replicatetest.NewServer(replicatetest.Options{Clock: clk, Auto: true, TrainingTime: T, PageSize: 100,
		RateLimits: &replicatetest.Limits{}})
	defer srv.Close()
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithTime(clk), replicate.WithHTTPClient(&http.Client{Transport: clk.Transport(nil)}))
	if err != nil {
		b.Fatal(err)
	}
	srv.AddModel("acme", "batch-lora", 0)
	zip := bytes.Repeat([]byte("PK"), 4096)
	start := clk.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for i := range n {
		wg.Add(1)
		clk.Join()
		go func() {
			defer wg.Done()
			if err := subject(c, clk, i, zip); err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	elapsed := clk.Since(start)
	st, cs := srv.Stats(), c.Stats()
	b.ReportMetric(elapsed.Seconds()/T.Seconds(), "T")
	b.ReportMetric(float64(st.PeakPerMinute), "peak-req/min")
	b.ReportMetric(float64(st.PeakTrainingsInFlight), "in-flight")
	b.ReportMetric(float64(st.Requests)/float64(n), "req/subject")
	b.ReportMetric(float64(cs.TrainingLists), "list-pages")
	b.ReportMetric(float64(cs.TrainingGets)/float64(n), "gets/subject")
	b.ReportMetric(float64(st.Throttled), "429s")
}

// subject is one batch instance's remote work; it counts as a clock member until it only waits.
func subject(c *replicate.Client, clk *replicatetest.Clock, i int, zip []byte) error {
	ctx := context.Background()
	left := false
	leave := func() {
		if !left {
			left = true
			clk.Leave()
		}
	}
	defer leave()
	f, err := c.UploadStream(ctx, fmt.Sprintf("s%d.zip", i), "application/zip", int64(len(zip)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(zip)), nil
	})
	if err != nil {
		return err
	}
	t, err := c.CreateTraining(ctx, replicatetest.Trainer, "acme/batch-lora", map[string]any{"input_images": f.URL, "steps": 1000})
	if err != nil {
		return err
	}
	w := c.WatchTraining(ctx, t, replicate.WatchOptions{Curve: i%10 == 0})
	leave()
	var last replicate.TrainingUpdate
	for u := range w.Updates() {
		last = u
	}
	if last.Err != nil || last.Training.Status != "succeeded" {
		return fmt.Errorf("subject %d: %+v", i, last)
	}
	return nil
}
