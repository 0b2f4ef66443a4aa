package imagecheck

import (
	"bytes"
	"context"
	"encoding/binary"
	"image"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
)

// portrait renders a small synthetic portrait (fast enough for many per test).
func portrait(seed uint64, o imagechecktest.Options) *image.NRGBA {
	o.Seed = seed
	if o.Width == 0 {
		o.Width, o.Height = 600, 750
	}
	return imagechecktest.Portrait(o)
}

func writeJPEG(t testing.TB, path string, img image.Image, q int) {
	t.Helper()
	if err := imagechecktest.WriteJPEG(path, img, q); err != nil {
		t.Fatal(err)
	}
}

func writePNG(t testing.TB, path string, img image.Image) {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, buf.Bytes())
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func jpegBytes(t testing.TB, img image.Image, q int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withOrientation inserts an EXIF APP1 segment carrying the orientation tag right after SOI.
func withOrientation(data []byte, o uint16, bo binary.ByteOrder) []byte {
	tiff := new(bytes.Buffer)
	if bo == binary.LittleEndian {
		tiff.WriteString("II")
	} else {
		tiff.WriteString("MM")
	}
	w := func(v any) { binary.Write(tiff, bo, v) }
	w(uint16(42))
	w(uint32(8))
	w(uint16(2))      // two entries: an unrelated one first
	w(uint16(0x010F)) // Make, ASCII, count 4, inline "Go\0\0"
	w(uint16(2))
	w(uint32(4))
	tiff.WriteString("Go\x00\x00")
	w(uint16(0x0112))
	w(uint16(3))
	w(uint32(1))
	w(o)
	w(uint16(0))
	w(uint32(0))
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	app1 := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(app1[2:], uint16(len(seg)+2))
	out := append([]byte{}, data[:2]...)
	out = append(out, app1...)
	out = append(out, seg...)
	return append(out, data[2:]...)
}

// testConfig is a config for small generated images.
func testConfig(dir string) Config {
	cfg := DefaultConfig(dir)
	cfg.MinSide = 480
	cfg.MinCount = 3
	return cfg
}

func mustCheck(t testing.TB, cfg Config) *Report {
	t.Helper()
	rep, err := Check(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func findImage(rep *Report, name string) *Image {
	for _, im := range rep.Images {
		if im.Name == name {
			return im
		}
	}
	return nil
}

func hasWarning(rep *Report, prefix, part string) bool {
	for _, w := range rep.Warnings {
		if strings.HasPrefix(w, prefix) && strings.Contains(w, part) {
			return true
		}
	}
	return false
}
