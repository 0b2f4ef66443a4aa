package imagecheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/jpegscale"
)

const (
	benchPhotos = 200
	benchW      = 4000 // 4000×3000 = 12 MP, a phone camera's photo
	benchH      = 3000
)

// benchTemp is the generated dataset's temp dir, removed by TestMain after the run.
var benchTemp string

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTemp != "" {
		os.RemoveAll(benchTemp)
	}
	os.Exit(code)
}

// benchDataset writes 200 distinct 12 MP JPEG portraits once per process (into a temp dir removed
// at the end, or into $IMAGECHECK_BENCH_DIR to reuse them across runs) and returns the directory.
var benchDataset = sync.OnceValues(func() (string, error) {
	dir := os.Getenv("IMAGECHECK_BENCH_DIR")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "imagecheck-bench-"); err != nil {
			return "", err
		}
		benchTemp = dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var wg sync.WaitGroup
	var failed atomic.Value
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				path := filepath.Join(dir, fmt.Sprintf("photo-%03d.jpg", i))
				if _, err := os.Stat(path); err == nil {
					continue
				}
				if err := writeBenchPhoto(path, uint64(i)); err != nil {
					failed.Store(err)
				}
			}
		}()
	}
	for i := 0; i < benchPhotos; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return "", err
	}
	return dir, nil
})

// writeBenchPhoto renders a portrait at 1000×750, enlarges it to 12 MP and adds sensor-like noise,
// so that the JPEG carries as much detail (and costs as much to decode) as a camera's.
func writeBenchPhoto(path string, seed uint64) error {
	small := imagechecktest.Portrait(imagechecktest.Options{Seed: seed + 1000, Width: 1000, Height: 750, Light: float64(seed%5)/2 - 1})
	big := imaging.Resize(small, benchW, benchH, imaging.Linear)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < len(big.Pix); i += 4 {
		n := int(rng.Uint32()%13) - 6
		for c := 0; c < 3; c++ {
			v := int(big.Pix[i+c]) + n
			big.Pix[i+c] = uint8(min(255, max(0, v)))
		}
	}
	tmp := path + ".tmp"
	if err := imagechecktest.WriteJPEG(tmp, big, 90); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// peakHeap samples the live heap every millisecond until stop is called and returns the peak.
func peakHeap() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		return peak
	}
}

// cpuTime is the process's user+system CPU time: on a shared machine it measures the work done,
// where wall time also measures the neighbours.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, start time.Time, cpu0 time.Duration, peak uint64) {
	el := time.Since(start).Seconds()
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(benchPhotos*b.N), "cpu-ms/image")
	b.ReportMetric(float64(benchPhotos*b.N)/el, "images/s")
	b.ReportMetric(el/float64(b.N)*1000/benchPhotos, "ms/image")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCheck measures a check of 200 photos of 12 MP: decode-only is the floor (read + decode
// every file on the same worker pool), cold analyses everything (empty cache), cached re-checks
// an unchanged dataset. The check's own cost is cold − decode-only. The -today variants decode as
// image_check did before jpegscale (image/jpeg in full, then the shrink), for the figures beside.
//
//	go test -run '^$' -bench BenchmarkCheck -benchtime 1x ./stages/imagecheck/
func BenchmarkCheck(b *testing.B) {
	dir, err := benchDataset()
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig(dir)
	cfg.MinCount = 0
	decodeOnlyBench := func(dec func([]byte, int, int) (image.Image, error)) func(b *testing.B) {
		return func(b *testing.B) {
			runtime.GC()
			stop := peakHeap()
			start, cpu0 := time.Now(), cpuTime()
			for n := 0; n < b.N; n++ {
				if err := decodeOnly(dir, runtime.GOMAXPROCS(0), dec); err != nil {
					b.Fatal(err)
				}
			}
			report(b, start, cpu0, stop())
		}
	}
	b.Run("decode-only-today", decodeOnlyBench(decodeFull))
	b.Run("decode-only", decodeOnlyBench(decodeReduced))
	cold := func(b *testing.B) {
		runtime.GC()
		stop := peakHeap()
		start, cpu0 := time.Now(), cpuTime()
		for n := 0; n < b.N; n++ {
			c := cfg
			c.CacheDir, c.Figures = b.TempDir(), pipeline.DirCache(b.TempDir())
			rep, err := Check(context.Background(), c)
			if err != nil || rep.Decoded != benchPhotos {
				b.Fatalf("decoded %d: %v", rep.Decoded, err)
			}
		}
		report(b, start, cpu0, stop())
	}
	b.Run("cold-today", func(b *testing.B) {
		decodeJPEG = decodeFull
		defer func() { decodeJPEG = decodeReduced }()
		cold(b)
	})
	b.Run("cold", cold)
	b.Run("cold-without-faces", func(b *testing.B) {
		faceMeasure = func(*image.NRGBA) *faceFigures { return nil }
		defer func() { faceMeasure = measureFace }()
		runtime.GC()
		stop := peakHeap()
		start, cpu0 := time.Now(), cpuTime()
		for n := 0; n < b.N; n++ {
			c := cfg
			c.CacheDir, c.Figures = b.TempDir(), pipeline.DirCache(b.TempDir())
			if rep, err := Check(context.Background(), c); err != nil || rep.Decoded != benchPhotos {
				b.Fatalf("decoded %d: %v", rep.Decoded, err)
			}
		}
		report(b, start, cpu0, stop())
	})
	b.Run("cached", func(b *testing.B) {
		c := cfg
		c.CacheDir, c.Figures = b.TempDir(), pipeline.DirCache(b.TempDir())
		if _, err := Check(context.Background(), c); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		stop := peakHeap()
		start, cpu0 := time.Now(), cpuTime()
		for n := 0; n < b.N; n++ {
			rep, err := Check(context.Background(), c)
			if err != nil || rep.FromCache != benchPhotos {
				b.Fatalf("from cache %d: %v", rep.FromCache, err)
			}
		}
		report(b, start, cpu0, stop())
	})
}

// decodeOnly reads and decodes every photo on a pool of the given size and does nothing else.
func decodeOnly(dir string, workers int, dec func([]byte, int, int) (image.Image, error)) error {
	names, err := filepath.Glob(filepath.Join(dir, "*.jpg"))
	if err != nil {
		return err
	}
	next := make(chan string)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				data, err := os.ReadFile(p)
				var cfg image.Config
				if err == nil {
					cfg, err = jpegscale.DecodeConfig(bytes.NewReader(data))
				}
				if err == nil {
					_, err = dec(data, cfg.Width, cfg.Height)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, p := range names {
		next <- p
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkStages splits one photo's cold analysis into its parts (single core): today's
// image/jpeg decode and shrink beside jpegscale's reduced decode and the resample to the working
// size, then the figures and the face search on that copy.
func BenchmarkStages(b *testing.B) {
	dir, err := benchDataset()
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "photo-000.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	reduced, err := decodeReduced(data, w, h)
	if err != nil {
		b.Fatal(err)
	}
	small := toWorkSize(reduced, w, h)
	// Each part reports its CPU time per photo (wall time on a shared machine measures neighbours).
	run := func(name string, f func()) {
		b.Run(name, func(b *testing.B) {
			cpu0 := cpuTime()
			for n := 0; n < b.N; n++ {
				f()
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
	run("decode", func() {
		if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	})
	run("decode-jpegscale", func() {
		if _, err := decodeReduced(data, w, h); err != nil {
			b.Fatal(err)
		}
	})
	run("header+sha256", func() {
		if _, err := jpegscale.DecodeConfig(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		_ = sha256.Sum256(data)
	})
	run("shrink", func() { shrink(img, workSide) })
	run("shrink-imaging", func() { imaging.Resize(img, small.Rect.Dx(), small.Rect.Dy(), imaging.Linear) })
	run("work-size", func() { toWorkSize(reduced, w, h) })
	run("measure", func() {
		var a analysis
		measure(&a, small)
	})
	run("face", func() { measureFace(small) })
}
