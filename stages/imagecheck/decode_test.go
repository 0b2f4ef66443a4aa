package imagecheck

import (
	"bytes"
	"image"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/jpegscale"
)

// measured decodes a JPEG with dec and measures it as analyzeFile does (faces too).
func measured(t *testing.T, data []byte, dec func([]byte, int, int) (image.Image, error)) analysis {
	t.Helper()
	cfg, err := jpegscale.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	img, err := dec(data, cfg.Width, cfg.Height)
	if err != nil {
		t.Fatal(err)
	}
	var a analysis
	small := toWorkSize(img, cfg.Width, cfg.Height)
	measure(&a, small)
	a.Face = measureFace(small)
	a.Width, a.Height = small.Rect.Dx(), small.Rect.Dy()
	return a
}

// compareFigures holds the reduced decode's figures to today's (image/jpeg in full): perceptual
// hashes within 2 bits, sharpness within 5%, the same working size and the same faces.
func compareFigures(t *testing.T, name string, data []byte) {
	t.Helper()
	compareWith(t, name, data, decodeReduced)
}

// compareWith holds the figures of a decode by dec to today's, as compareFigures does.
func compareWith(t *testing.T, name string, data []byte, dec func([]byte, int, int) (image.Image, error)) {
	t.Helper()
	today := measured(t, data, decodeFull)
	now := measured(t, data, dec)
	dh, dm := bits.OnesCount64(today.Hash^now.Hash), bits.OnesCount64(today.Mirror^now.Mirror)
	ds := math.Abs(now.Sharpness-today.Sharpness) / today.Sharpness
	t.Logf("%s: dHash %d bits, mirror %d bits, sharpness %.1f vs %.1f (%+.2f%%), face width %d vs %d, texture %.2f vs %.2f",
		name, dh, dm, now.Sharpness, today.Sharpness, 100*(now.Sharpness-today.Sharpness)/today.Sharpness,
		now.Face.Width, today.Face.Width, now.Face.Texture, today.Face.Texture)
	if dh > 2 || dm > 2 || ds > 0.05 {
		t.Errorf("%s: dHash %d, mirror %d bits apart (≤ 2), sharpness %.1f vs today's %.1f (> 5%%)", name, dh, dm, now.Sharpness, today.Sharpness)
	}
	if now.Width != today.Width || now.Height != today.Height || now.Face.Faces != today.Face.Faces || now.Face.Scored != today.Face.Scored {
		t.Errorf("%s: working copy %d×%d with %d face(s) (scored %v), today %d×%d with %d (scored %v)", name,
			now.Width, now.Height, now.Face.Faces, now.Face.Scored, today.Width, today.Height, today.Face.Faces, today.Face.Scored)
	}
}

// TestReducedDecodeKeepsExampleFigures: the example photos (1280 px) are under the size that is
// decoded reduced, so they take image/jpeg's path and keep today's figures by construction; our
// decoder at full scale measures them the same too (within the 2 bits and 5%), so a change
// of that threshold could not shift them either.
func TestReducedDecodeKeepsExampleFigures(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "examples", "data", "*", "*.jpg"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example photos: %v", err)
	}
	ours := func(data []byte, _, _ int) (image.Image, error) {
		return jpegscale.Decode(data, jpegscale.Options{Scale: jpegscale.Full})
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := jpegscale.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if s := jpegscale.ScaleFor(cfg.Width, cfg.Height, minDecodeSide); s != jpegscale.Full {
			t.Errorf("%s (%d×%d) would decode at scale %v: its figures are no longer today's by construction", p, cfg.Width, cfg.Height, s)
		}
		compareWith(t, filepath.Base(p), data, ours)
	}
}

// TestReducedDecodeKeepsCameraSizeFigures: phone-sized photos, decoded at 1/4 (4032×3024, the
// working copy resampled up from 1008 px) and 1/2 (3264×2448 portrait, down from 1632 px), measure
// as they do decoded in full.
func TestReducedDecodeKeepsCameraSizeFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("makes two camera-sized photos")
	}
	for i, size := range [][2]int{{4032, 3024}, {2448, 3264}} {
		small := imagechecktest.Portrait(imagechecktest.Options{Seed: uint64(70 + i), Width: size[0] / 4, Height: size[1] / 4})
		big := imaging.Resize(small, size[0], size[1], imaging.Linear)
		rng := rand.New(rand.NewPCG(uint64(i), 3))
		for j := 0; j < len(big.Pix); j += 4 {
			n := int(rng.Uint32()%13) - 6
			for c := 0; c < 3; c++ {
				big.Pix[j+c] = uint8(min(255, max(0, int(big.Pix[j+c])+n)))
			}
		}
		compareFigures(t, filepath.Join("camera", string(rune('a'+i))), jpegBytes(t, big, 90))
	}
}
