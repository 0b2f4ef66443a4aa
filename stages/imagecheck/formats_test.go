package imagecheck

import (
	"bytes"
	"errors"
	"image/jpeg"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
)

// photoTestdata reads one of stages/lib/photo's committed test photos (a synthetic portrait as
// JPEG, HEIC and AVIF; see its testdata/README.md).
func photoTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "lib", "photo", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestHEICAndAVIFFiguresMatchJPEG checks the same picture saved as JPEG (q92), HEIC and AVIF (q70,
// the HEIC also in Display P3, the sideways one turned upright by irot) and expects the same
// figures within what two lossy codecs of one picture differ by: size exactly; mean luma and
// contrast within 1 level of 255 and mean chroma within 0.5 (codecs shift flat areas by a fraction
// of a level; P3 pixels read as sRGB would be off by more); dark/bright shares within 0.02; the
// 64-bit dHash within 6 bits (unrelated photos differ by ~32, see compositionScale); sharpness
// within 25% (quality 70 smooths some of the pores a JPEG at 92 keeps, and sharpness is the
// variance of exactly that fine detail: the AVIF measures 14% below).
func TestHEICAndAVIFFiguresMatchJPEG(t *testing.T) {
	root := t.TempDir()
	sideways, err := phototest.WithProperties(photoTestdata(t, "sideways.heic"), phototest.Irot(3))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "a.jpg"), photoTestdata(t, "portrait.jpg"))
	writeFile(t, filepath.Join(root, "b.heic"), photoTestdata(t, "portrait.heic"))
	writeFile(t, filepath.Join(root, "c.avif"), photoTestdata(t, "portrait.avif"))
	writeFile(t, filepath.Join(root, "d-p3.HEIC"), photoTestdata(t, "p3.heic"))
	writeFile(t, filepath.Join(root, "e-sideways.heic"), sideways)
	cfg := testConfig(root)
	cfg.DuplicateDistance = -1 // compare figures, not verdicts
	cfg.Figures = pipeline.DirCache(t.TempDir())
	rep := mustCheck(t, cfg)
	ref := findImage(rep, "a.jpg")
	if !ref.Decoded {
		t.Fatalf("reference: %+v", ref)
	}
	near := func(name, what string, got, want, tol float64) {
		if math.Abs(got-want) > tol {
			t.Errorf("%s: %s %.3f, the JPEG's %.3f (tolerance %.2f)", name, what, got, want, tol)
		}
	}
	for _, name := range []string{"b.heic", "c.avif", "d-p3.HEIC", "e-sideways.heic"} {
		im := findImage(rep, name)
		if !im.Decoded || !im.Accepted() {
			t.Errorf("%s: decoded %v, rejected %v", name, im.Decoded, im.Reasons)
			continue
		}
		if im.Width != 480 || im.Height != 600 {
			t.Errorf("%s: %dx%d", name, im.Width, im.Height)
		}
		near(name, "luma", im.Luma, ref.Luma, 1)
		near(name, "contrast", im.Contrast, ref.Contrast, 1)
		near(name, "cb", im.Cb, ref.Cb, 0.5)
		near(name, "cr", im.Cr, ref.Cr, 0.5)
		near(name, "dark", im.Dark, ref.Dark, 0.02)
		near(name, "bright", im.Bright, ref.Bright, 0.02)
		near(name, "sharpness ratio", im.Sharpness/ref.Sharpness, 1, 0.25)
		if d := bits.OnesCount64(im.Hash ^ ref.Hash); d > 6 {
			t.Errorf("%s: dHash %d bits from the JPEG's", name, d)
		}
		if (im.Face == nil) != (ref.Face == nil) || (im.Face != nil && im.Face.Faces != ref.Face.Faces) {
			t.Errorf("%s: faces %+v, the JPEG's %+v", name, im.Face, ref.Face)
		}
	}
	if o := findImage(rep, "e-sideways.heic").Orientation; o != 6 {
		t.Errorf("irot 270° reported as orientation %d", o)
	}
	// The HEIC's cached figures serve the next check: no WebAssembly decode again.
	before := Decodes()
	if again := mustCheck(t, cfg); again.FromCache != 5 || Decodes() != before {
		t.Errorf("second check: %d from cache, %d decoded", again.FromCache, Decodes()-before)
	}
}

func TestHEICBombIsRefusedBeforeDecoding(t *testing.T) {
	root := t.TempDir()
	data := photoTestdata(t, "portrait.heic")
	bomb := append([]byte{}, data...)
	i := bytes.Index(bomb, []byte("ispe"))
	copy(bomb[i+8:], []byte{0, 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60}) // 60000×60000
	writeFile(t, filepath.Join(root, "bomb.heic"), bomb)
	before := Decodes()
	rep := mustCheck(t, testConfig(root))
	if r := rep.Rejected[filepath.Join(root, "bomb.heic")]; r == "" || Decodes() != before || !strings.Contains(r, "60000×60000 = 3600.0 MP > max_pixels") {
		t.Errorf("reason %q, decoded %d", r, Decodes()-before)
	}
}

// A HEIC whose ispe claims fewer pixels than its picture has passes the header check but is
// never accepted on the header's word: libheif traps on this one (its buffers are sized from
// ispe), and the reason is one line a person can act on, not the decoder's stack trace.
func TestHEICWhoseHeaderUnderstatesItsSizeIsRejectedInOneLine(t *testing.T) {
	root := t.TempDir()
	liar := append([]byte{}, photoTestdata(t, "portrait.heic")...) // 480×600 = 0.29 MP
	i := bytes.Index(liar, []byte("ispe"))
	copy(liar[i+8:], []byte{0, 0, 0, 100, 0, 0, 0, 100}) // "100×100"
	writeFile(t, filepath.Join(root, "liar.heic"), liar)
	cfg := testConfig(root)
	cfg.MaxPixels = 100_000
	rep := mustCheck(t, cfg)
	r, rejected := rep.Rejected[filepath.Join(root, "liar.heic")]
	if !rejected || strings.Contains(r, "\n") || strings.Contains(r, "stack trace") || !strings.Contains(r, "re-export") {
		t.Errorf("rejected %v, reason %q: want a one-line rejection", rejected, r)
	}
}

// A decoder that traps reports a stack trace; the reason keeps its first line only.
func TestDecoderStackTracesStayOutOfReasons(t *testing.T) {
	err := errors.New("wasm error: out of bounds memory access\nwasm stack trace:\n\tlibheif.wasm.$heif_decode_image(i32,i32)\n\t...")
	r := corruptReason(photo.HEIC, err)
	if strings.Contains(r, "\n") || strings.Contains(r, "stack trace") || !strings.Contains(r, "out of bounds memory access") {
		t.Errorf("reason %q: want one line with the decoder's first line", r)
	}
}

// A feature image/jpeg does not read (the fallback decoder's verdict) is named as unsupported
// with what to do, not as a corrupt file.
func TestUnsupportedJPEGFeaturesAreNotCalledCorrupt(t *testing.T) {
	r := corruptReason(photo.JPEG, jpeg.UnsupportedError("luma/chroma subsampling ratio"))
	if strings.Contains(r, "corrupt") || !strings.Contains(r, "not supported") || !strings.Contains(r, "subsampling ratio") {
		t.Errorf("reason %q", r)
	}
}
