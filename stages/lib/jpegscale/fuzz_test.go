package jpegscale

import (
	"bytes"
	"errors"
	"image/jpeg"
	"runtime"
	"testing"
)

// fuzzMaxPixels keeps fuzzed headers small enough for image/jpeg (which has no limit) to decode.
const fuzzMaxPixels = 1 << 20

// FuzzDecode feeds damaged files to Decode and holds it to three things: it never panics, it
// allocates in proportion to the input (a header cannot make it allocate gigabytes), and where it
// decodes or refuses a file, image/jpeg does the same (unsupported features aside, where callers
// fall back to image/jpeg anyway).
func FuzzDecode(f *testing.F) {
	img := testPicture(40, 24, 11)
	three := [][2]int{{2, 2}, {1, 1}, {1, 1}}
	for _, o := range []encOptions{
		{sampling: three},
		{sampling: [][2]int{{2, 1}, {1, 1}, {1, 1}}, restart: 2},
		{sampling: three, progressive: standardScript(3)},
		{sampling: [][2]int{{1, 1}}, progressive: standardScript(1), restart: 1},
		{sampling: [][2]int{{1, 1}, {1, 1}, {1, 1}}, rgb: true},
	} {
		o.quality = 80
		data := encode(img, o)
		f.Add(data, uint8(0))
		f.Add(data[:len(data)*2/3], uint8(2))
	}
	f.Add(encodeStd(f, img, 75), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, scale uint8) {
		s := []Scale{Full, Half, Quarter, Eighth}[scale%4]
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got, err := Decode(data, Options{Scale: s, MaxPixels: fuzzMaxPixels})
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20+uint64(20<<10)*uint64(len(data)) {
			t.Fatalf("allocated %d bytes for %d bytes of input", alloc, len(data))
		}
		checkConfigVerdict(t, data)
		var unsup UnsupportedError
		if errors.As(err, &unsup) || errors.Is(err, ErrTooLarge) {
			return
		}
		if cfg, cerr := jpeg.DecodeConfig(bytes.NewReader(data)); cerr == nil && cfg.Width*cfg.Height > fuzzMaxPixels {
			return
		}
		want, werr := jpeg.Decode(bytes.NewReader(data))
		var wunsup jpeg.UnsupportedError
		if errors.As(werr, &wunsup) {
			return // a layout image/jpeg does not read: decoding it is no change of verdict callers see
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("jpegscale: %v; image/jpeg: %v", err, werr)
		}
		if err == nil {
			b := want.Bounds()
			if got.Bounds().Dx() != s.Reduce(b.Dx()) || got.Bounds().Dy() != s.Reduce(b.Dy()) {
				t.Fatalf("decoded %v at 1/%d, image/jpeg %v", got.Bounds(), s, b)
			}
		}
	})
}

// checkConfigVerdict holds DecodeConfig to image/jpeg's: the same size, or an error from both
// (features image/jpeg does not support aside: DecodeConfig reads their size).
func checkConfigVerdict(t *testing.T, data []byte) {
	cfg, err := DecodeConfig(bytes.NewReader(data))
	want, werr := jpeg.DecodeConfig(bytes.NewReader(data))
	var unsup UnsupportedError
	var wunsup jpeg.UnsupportedError
	if errors.As(err, &unsup) || errors.As(werr, &wunsup) {
		return
	}
	if (err == nil) != (werr == nil) {
		t.Fatalf("DecodeConfig: %v; image/jpeg: %v", err, werr)
	}
	if err == nil && (cfg.Width != want.Width || cfg.Height != want.Height) {
		t.Fatalf("DecodeConfig: %d×%d; image/jpeg %d×%d", cfg.Width, cfg.Height, want.Width, want.Height)
	}
}
