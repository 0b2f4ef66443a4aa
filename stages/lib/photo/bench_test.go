package photo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Benchmarks of the per-photo costs. The committed HEIC/AVIF are small (480×600); for the 12 MP
// figures of a phone photo, point PHOTO_BENCH_HEIC / PHOTO_BENCH_AVIF at such a file (heif-enc
// makes one from a 4032×3024 PNG, see testdata/README.md):
//
//	PHOTO_BENCH_HEIC=/tmp/12mp.heic go test -run '^$' -bench . -benchtime 3x ./stages/lib/photo/

func benchFile(b *testing.B, env, fallback string) []byte {
	if p := os.Getenv(env); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	return readTestdata(b, fallback)
}

func benchDecode(b *testing.B, data []byte) {
	if _, _, err := Decode(context.Background(), data); err != nil { // compiles the decoder once
		b.Fatal(err)
	}
	var mp float64
	b.ResetTimer()
	for b.Loop() {
		_, m, err := Decode(context.Background(), data)
		if err != nil {
			b.Fatal(err)
		}
		mp = float64(m.Width*m.Height) / 1e6
	}
	b.ReportMetric(mp, "MP")
	reportPeakRSS(b)
}

func BenchmarkDecodeHEIC(b *testing.B) {
	benchDecode(b, benchFile(b, "PHOTO_BENCH_HEIC", "portrait.heic"))
}
func BenchmarkDecodeAVIF(b *testing.B) {
	benchDecode(b, benchFile(b, "PHOTO_BENCH_AVIF", "portrait.avif"))
}

// BenchmarkPrepare12MPJPEG: decode, resample to 2048 px, encode at quality 95.
func BenchmarkPrepare12MPJPEG(b *testing.B) {
	data := phonePhoto(1, 4032, 3024)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Prepare(context.Background(), data, DefaultMaxSide); err != nil {
			b.Fatal(err)
		}
	}
	reportPeakRSS(b)
}

// BenchmarkPrepareHEIC: the same for a HEIC, decode included.
func BenchmarkPrepareHEIC(b *testing.B) {
	data := benchFile(b, "PHOTO_BENCH_HEIC", "portrait.heic")
	for b.Loop() {
		if _, err := Prepare(context.Background(), data, DefaultMaxSide); err != nil {
			b.Fatal(err)
		}
	}
	reportPeakRSS(b)
}

// reportPeakRSS adds the process's peak resident memory so far (Linux), in MB.
func reportPeakRSS(b *testing.B) {
	if runtime.GOOS != "linux" {
		return
	}
	if kb, ok := peakRSSKB(); ok {
		b.ReportMetric(float64(kb)/1024, "peak-RSS-MB")
	}
}

func peakRSSKB() (int64, bool) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	var kb int64
	for _, line := range strings.Split(string(raw), "\n") {
		if n, _ := sscanKB(line, "VmHWM:"); n > 0 {
			kb = n
		}
	}
	return kb, kb > 0
}

// sscanKB parses "VmHWM:   123456 kB".
func sscanKB(line, prefix string) (int64, bool) {
	if len(line) < len(prefix) || line[:len(prefix)] != prefix {
		return 0, false
	}
	var n int64
	for _, c := range line[len(prefix):] {
		if c >= '0' && c <= '9' {
			n = n*10 + int64(c-'0')
		}
	}
	return n, true
}

// BenchmarkZipSet prepares and zips every photo of the directory PHOTO_BENCH_SET (skipped when
// unset) as train would: sizes first (ZipSize, for Content-Length), then the zip streamed to a
// counter, one photo in memory at a time, prepared copies in a local cache. It reports the
// originals' and the zip's size and the process's peak RSS:
//
//	PHOTO_BENCH_SET=/tmp/set go test -run '^$' -bench ZipSet -benchtime 1x ./stages/lib/photo/
func BenchmarkZipSet(b *testing.B) {
	dir := os.Getenv("PHOTO_BENCH_SET")
	if dir == "" {
		b.Skip("PHOTO_BENCH_SET names no directory of photos")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var names, paths []string
	var originals int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			names, paths = append(names, e.Name()), append(paths, filepath.Join(dir, e.Name()))
			originals += fi.Size()
		}
	}
	zipNames := ZipNames(names)
	for b.Loop() {
		copies, err := OpenDiskCache(b.TempDir(), DefaultCopiesBytes)
		if err != nil {
			b.Fatal(err)
		}
		p := &Preparer{MaxSide: DefaultMaxSide, Copies: copies}
		var es []ZipEntry
		for i, path := range paths {
			read := func(context.Context) ([]byte, error) { return os.ReadFile(path) }
			data, err := read(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			sum := sha256.Sum256(data)
			data = nil
			e, err := p.Entry(context.Background(), zipNames[i], hex.EncodeToString(sum[:]), read)
			if err != nil {
				b.Fatal(err)
			}
			es = append(es, e)
		}
		var n countWriter
		if err := WriteZip(context.Background(), &n, es); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(es)), "photos")
		b.ReportMetric(float64(originals)/1e6, "originals-MB")
		b.ReportMetric(float64(n)/1e6, "zip-MB")
	}
	reportPeakRSS(b)
}
