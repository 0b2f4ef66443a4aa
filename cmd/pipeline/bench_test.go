package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// BenchmarkBatch1000 drives a batch of subjects (BENCH_SUBJECTS, default 1,000) through apply with
// -max-in-flight 1000 against the project's test server, whose trainings all take T (BENCH_T,
// default 25m) and which enforces Replicate's rate limits. The server and the client's pacer share
// one virtual clock (BENCH_SPEED times wall time, default 60), so rate limits and T are measured
// in the same time. It runs the batch twice, with T and with trainings that end at once (the local
// work alone), and reports:
//
//	T-multiple       (virtual time with T − virtual time without) ÷ T: target ≤ 1.3
//	inflight-peak    most trainings running at once
//	req/min-peak     API requests in the busiest virtual minute (start burst included): ≤ 2,500
//	rss-MB           the process's peak resident memory: < 1 GB
//	state-B/subject  bytes of state per subject
//	replan-req/subj  API requests per subject of a plan that finds nothing to do: ≤ 2
//	norefresh-req    the same with -refresh=false: 0
//
//	go test -run '^$' -bench Batch1000 -benchtime 1x -timeout 60m ./cmd/pipeline
func BenchmarkBatch1000(b *testing.B) {
	n := envInt(b, "BENCH_SUBJECTS", 1000)
	T := envDuration(b, "BENCH_T", 25*time.Minute)
	speed := float64(envInt(b, "BENCH_SPEED", 60))
	for i := 0; i < b.N; i++ {
		local := runBatch(b, n, -1, speed)
		full := runBatch(b, n, T, speed)
		b.ReportMetric((full.virtual-local.virtual).Minutes()/T.Minutes(), "T-multiple")
		b.ReportMetric(full.virtual.Minutes(), "virtual-min")
		b.ReportMetric(local.virtual.Minutes(), "local-virtual-min")
		b.ReportMetric(float64(full.stats.PeakTrainingsInFlight), "inflight-peak")
		b.ReportMetric(float64(full.stats.PeakPerMinute), "req/min-peak")
		b.ReportMetric(float64(full.stats.Throttled), "429s")
		b.ReportMetric(float64(full.stateBytes)/float64(n), "state-B/subject")
		b.ReportMetric(full.replan/float64(n), "replan-req/subj")
		b.ReportMetric(full.norefresh/float64(n), "norefresh-req/subj")
		b.ReportMetric(float64(peakRSS(b))/(1<<20), "rss-MB")
		b.Logf("T=%s, %d subjects: with T %.1f virtual min (%.0f s wall), local work alone %.1f virtual min (%.0f s wall)",
			T, n, full.virtual.Minutes(), full.wall.Seconds(), local.virtual.Minutes(), local.wall.Seconds())
	}
}

type batchRun struct {
	virtual, wall     time.Duration
	stats             replicatetest.Stats
	stateBytes        int64
	replan, norefresh float64
}

// runBatch applies a batch of n subjects whose trainings take trainingTime (< 0: at once).
func runBatch(b *testing.B, n int, trainingTime time.Duration, speed float64) batchRun {
	b.Helper()
	dir := b.TempDir()
	writeSmallPortraits(b, filepath.Join(dir, "photos"), 2)
	conf := filepath.Join(dir, "batch.hcl")
	if err := os.WriteFile(conf, []byte(batchOf(n)), 0o644); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	clk := replicatetest.NewClock(start, speed)
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true, Clock: clk, TrainingTime: trainingTime,
		PredictionTime: 20 * time.Second, RateLimits: &replicatetest.Limits{}, PageSize: 100})
	defer srv.Close()
	b.Setenv("REPLICATE_BASE_URL", srv.URL())
	b.Setenv("REPLICATE_API_TOKEN", srv.Token())
	b.Setenv("CI", "true")

	apply := func(args ...string) {
		c := common{parallelism: 4, maxInFlight: 1000, refresh: true}
		for _, a := range args {
			if a == "-refresh=false" {
				c.refresh = false
			}
		}
		u := newUI(&c, io.Discard, io.Discard)
		ctx := context.Background()
		l, err := load(ctx, &c, u, []string{conf}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer l.close()
		cl, err := replicate.New(srv.URL(), srv.Token(), replicate.WithTime(clk), replicate.WithCache(l.env.Cache))
		if err != nil {
			b.Fatal(err)
		}
		replicate.Install(l.env, cl)
		release, err := l.engine.Acquire(ctx, "apply")
		if err != nil {
			b.Fatal(err)
		}
		defer release()
		plan, err := l.engine.Plan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(args) > 0 && args[0] == "plan" {
			if plan.Changes() != 0 {
				b.Fatalf("the re-plan found %d changes", plan.Changes())
			}
			return
		}
		out, err := l.engine.Apply(ctx, plan)
		if err != nil || out.ExitStatus() != 0 {
			var why []string
			for _, io := range out.Instances {
				for _, so := range io.Stages {
					if so.Status == engine.StatusFailed && len(why) < 3 {
						why = append(why, so.Address+": "+so.Message)
					}
				}
			}
			b.Fatalf("apply: %v %v\n%s", err, out.Counts(), strings.Join(why, "\n"))
		}
	}
	v0 := clk.Now()
	apply()
	r := batchRun{virtual: clk.Now().Sub(v0), wall: time.Since(start), stats: srv.Stats()}
	r.stateBytes = dirBytes(b, filepath.Join(dir, ".pipeline", "batch.state"))
	before := srv.Stats().Requests
	apply("plan")
	r.replan = float64(srv.Stats().Requests - before)
	before = srv.Stats().Requests
	apply("plan", "-refresh=false")
	r.norefresh = float64(srv.Stats().Requests - before)
	return r
}

// batchOf is a batch of n subjects on the same two small photos: the benchmark measures the
// orchestration of paid trainings, not photo work (no generate stage: its images are made by the
// in-process test server, whose PNG encoding would dominate the measure).
func batchOf(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = strconv.Quote(fmt.Sprintf("s%04d", i+1))
	}
	return `batch { for_each = toset([` + strings.Join(keys, ", ") + `]) }
replicate {
  trainer     = "` + replicatetest.Trainer + `"
  destination = "acme/${each.key}-lora"
}
stage "image_check" "photos" {
  dir       = "photos"
  min_count = 2
  min_side  = 64
}
stage "params" "tuned" {
  image_count = image_check.photos.count
}
stage "train" "lora" {
  images = image_check.photos.accepted
  input  = merge(params.tuned.values, { trigger_word = "TOK" })
}
stage "loss_gate" "fit" {
  training = train.lora
}
`
}

// writeSmallPortraits makes n small synthetic portraits (the batch's photo work stays small).
func writeSmallPortraits(tb testing.TB, dir string, n int) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < n; i++ {
		o := portraitOptions(i)
		o.Width, o.Height = 160, 200
		if err := writeJPEG(filepath.Join(dir, fmt.Sprintf("p%02d.jpg", i)), o); err != nil {
			tb.Fatal(err)
		}
	}
}

func dirBytes(tb testing.TB, dir string) int64 {
	tb.Helper()
	var n int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			n += fi.Size()
		}
	}
	return n
}

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func peakRSS(tb testing.TB) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func envInt(tb testing.TB, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			tb.Fatalf("%s=%q: %v", name, v, err)
		}
		return n
	}
	return def
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			tb.Fatalf("%s=%q: %v", name, v, err)
		}
		return d
	}
	return def
}
