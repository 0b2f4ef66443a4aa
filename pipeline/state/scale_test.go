package state

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// TestScaleReplan measures a no-change re-plan of a large batch against remote state: every
// instance read in parallel (bounded), with and without taking each instance's lock, and the
// object-store calls per subject. STATE_SCALE=1000 sets the batch size (default 200, to stay fast).
func TestScaleReplan(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("STATE_SCALE")); err == nil && v > 0 {
		n = v
	}
	const parallel = 16
	ctx := context.Background()
	for _, b := range testBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			st := openRemote(t, b.url, RemoteOptions{})
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("subject-%04d", i)
			}
			start := time.Now()
			runBounded(keys, parallel, func(k string) {
				if err := st.Put(ctx, k, inFlight(k)); err != nil {
					t.Error(err)
				}
			})
			seed := time.Since(start)

			// Another runner re-plans: list, then read every instance.
			planner := openRemote(t, b.url, RemoteOptions{})
			req0 := httpCount(b)
			start = time.Now()
			all, err := ReadAll(ctx, planner, parallel)
			if err != nil || len(all) != n {
				t.Fatalf("read %d of %d: %v", len(all), n, err)
			}
			readDur, readCalls, readHTTP := time.Since(start), planner.Calls(), httpCount(b)-req0

			// The same with each instance's lock taken and released around the read.
			locker := openRemote(t, b.url, RemoteOptions{})
			req0 = httpCount(b)
			start = time.Now()
			runBounded(keys, parallel, func(k string) {
				lk, err := locker.Lock(ctx, k, NewLockInfo("plan"), 0)
				if err != nil {
					t.Error(err)
					return
				}
				if in, err := locker.Get(ctx, k); err != nil || in.Records["train.lora"].Status != pipeline.StatusRunning {
					t.Error(k, err)
				}
				if err := lk.Unlock(); err != nil {
					t.Error(err)
				}
			})
			lockDur, lockCalls, lockHTTP := time.Since(start), locker.Calls(), httpCount(b)-req0

			t.Logf("%s, %d subjects, %d in parallel: seeding %v; re-plan reads %v (%.2f store calls/subject, %s); locked re-plan %v (%.2f store calls/subject, %s)",
				b.name, n, parallel, seed.Round(time.Millisecond),
				readDur.Round(time.Millisecond), float64(readCalls)/float64(n), perSubjectHTTP(b, readHTTP, n),
				lockDur.Round(time.Millisecond), float64(lockCalls)/float64(n), perSubjectHTTP(b, lockHTTP, n))
		})
	}
}

func httpCount(b backend) int64 {
	if b.requests == nil {
		return 0
	}
	return b.requests.Load()
}

func perSubjectHTTP(b backend, reqs int64, n int) string {
	if b.requests == nil {
		return "no HTTP"
	}
	return fmt.Sprintf("%.2f HTTP requests/subject", float64(reqs)/float64(n))
}

func runBounded(keys []string, parallel int, fn func(string)) {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(k)
		}()
	}
	wg.Wait()
}

// TestScaleLocalGroupCommit measures the local file with a large batch: every instance Put at once
// (as the engine's flush does) and then one instance changing while the rest stay, which must not
// re-marshal the others. STATE_SCALE sets the batch size (default 200).
func TestScaleLocalGroupCommit(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("STATE_SCALE")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	st := openFile(t, t.TempDir()+"/big.state.json")
	lk, err := st.Lock(ctx, "", NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("subject-%04d", i)
	}
	start := time.Now()
	runBounded(keys, 64, func(k string) {
		if err := st.Put(ctx, k, inFlight(k)); err != nil {
			t.Error(err)
		}
	})
	all := time.Since(start)
	st.mu.Lock()
	writes := st.writes
	st.mu.Unlock()
	one := inFlight(keys[0])
	start = time.Now()
	const rounds = 20
	for range rounds {
		one.Records["train.lora"].UpdatedAt = time.Now()
		if err := st.Put(ctx, keys[0], one); err != nil {
			t.Fatal(err)
		}
	}
	perPut := time.Since(start) / rounds
	fi, _ := os.Stat(st.Path())
	t.Logf("local file, %d subjects: %d concurrent Puts in %v with %d file writes; then one Put (whole %d KB file rewritten, fsynced) %v",
		n, n, all.Round(time.Millisecond), writes, fi.Size()/1024, perPut.Round(time.Microsecond))
	if writes >= n {
		t.Errorf("no group commit: %d writes for %d Puts", writes, n)
	}
}
