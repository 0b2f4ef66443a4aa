package jpegscale

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"testing"
)

// testPicture draws a photo-like test image: smooth gradients, hard-edged shapes, fine stripes
// and sensor-like noise, so every frequency of every block carries signal.
func testPicture(w, h int, seed uint64) *image.RGBA {
	rng := rand.New(rand.NewPCG(seed, 99))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	cx, cy, rad := float64(w)*rng.Float64(), float64(h)*rng.Float64(), float64(min(w, h))*(0.2+0.3*rng.Float64())
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			fx, fy := float64(x)/float64(w), float64(y)/float64(h)
			r := 40 + 160*fx + 20*math.Sin(float64(x)/3)
			g := 60 + 140*fy + 15*math.Sin(float64(x+y)/1.7)
			b := 120 + 80*math.Sin(6*fx+4*fy)
			if math.Hypot(float64(x)-cx, float64(y)-cy) < rad {
				r, g, b = 230-r/3, 200-g/4, 90+b/3
			}
			if (x/5+y/7)%9 == 0 {
				r, g, b = r*0.6, g*0.6, b*0.6
			}
			n := float64(rng.IntN(21) - 10)
			img.SetRGBA(x, y, color.RGBA{clamp(r + n), clamp(g + n), clamp(b + n), 255})
		}
	}
	return img
}

func clamp(v float64) uint8 { return uint8(math.Max(0, math.Min(255, math.Round(v)))) }

// planes are an image's Y, Cb and Cr (or grey, or R, G and B) planes with their sizes.
type planes struct {
	p    [3][]uint8
	w, h [3]int
	n    int
}

// planesOf extracts the sample planes of a decoded image.
func planesOf(t testing.TB, img image.Image) planes {
	t.Helper()
	var out planes
	switch m := img.(type) {
	case *image.Gray:
		w, h := m.Rect.Dx(), m.Rect.Dy()
		out.n = 1
		out.p[0], out.w[0], out.h[0] = crop(m.Pix, m.Stride, w, h), w, h
	case *image.YCbCr:
		w, h := m.Rect.Dx(), m.Rect.Dy()
		cw, ch := chromaSize(m.SubsampleRatio, w, h)
		out.n = 3
		out.p[0], out.w[0], out.h[0] = crop(m.Y, m.YStride, w, h), w, h
		out.p[1], out.w[1], out.h[1] = crop(m.Cb, m.CStride, cw, ch), cw, ch
		out.p[2], out.w[2], out.h[2] = crop(m.Cr, m.CStride, cw, ch), cw, ch
	case *image.RGBA:
		w, h := m.Rect.Dx(), m.Rect.Dy()
		out.n = 3
		for c := 0; c < 3; c++ {
			p := make([]uint8, w*h)
			for i := range p {
				p[i] = m.Pix[(i/w)*m.Stride+4*(i%w)+c]
			}
			out.p[c], out.w[c], out.h[c] = p, w, h
		}
	default:
		t.Fatalf("unexpected image type %T", img)
	}
	return out
}

func chromaSize(r image.YCbCrSubsampleRatio, w, h int) (int, int) {
	switch r {
	case image.YCbCrSubsampleRatio422:
		return (w + 1) / 2, h
	case image.YCbCrSubsampleRatio420:
		return (w + 1) / 2, (h + 1) / 2
	case image.YCbCrSubsampleRatio440:
		return w, (h + 1) / 2
	case image.YCbCrSubsampleRatio411:
		return (w + 3) / 4, h
	case image.YCbCrSubsampleRatio410:
		return (w + 3) / 4, (h + 1) / 2
	}
	return w, h
}

func crop(pix []uint8, stride, w, h int) []uint8 {
	out := make([]uint8, 0, w*h)
	for y := 0; y < h; y++ {
		out = append(out, pix[y*stride:y*stride+w]...)
	}
	return out
}

// areaDown averages each d×d cell of a plane (fewer pixels in the cells cut by the right and
// bottom edges): the area downscale a reduced decode must match.
func areaDown(p []uint8, w, h, d int) ([]uint8, int, int) {
	ow, oh := (w+d-1)/d, (h+d-1)/d
	out := make([]uint8, ow*oh)
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			s, n := 0, 0
			for y := oy * d; y < min(h, oy*d+d); y++ {
				for x := ox * d; x < min(w, ox*d+d); x++ {
					s += int(p[y*w+x])
					n++
				}
			}
			out[oy*ow+ox] = uint8((s + n/2) / n)
		}
	}
	return out, ow, oh
}

// reference decodes data with image/jpeg and area-downscales every plane by s.
func reference(t testing.TB, data []byte, s Scale) planes {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("image/jpeg: %v", err)
	}
	full := planesOf(t, img)
	var out planes
	out.n = full.n
	for c := 0; c < full.n; c++ {
		out.p[c], out.w[c], out.h[c] = areaDown(full.p[c], full.w[c], full.h[c], int(s))
	}
	return out
}

// psnr compares two images' planes and returns the lowest PSNR of the planes, in dB.
func psnr(t testing.TB, got, want planes) float64 {
	t.Helper()
	if got.n != want.n {
		t.Fatalf("%d planes, want %d", got.n, want.n)
	}
	worst := math.Inf(1)
	for c := 0; c < got.n; c++ {
		if got.w[c] != want.w[c] || got.h[c] != want.h[c] {
			t.Fatalf("plane %d is %d×%d, want %d×%d", c, got.w[c], got.h[c], want.w[c], want.h[c])
		}
		var se float64
		for i := range got.p[c] {
			d := float64(got.p[c][i]) - float64(want.p[c][i])
			se += d * d
		}
		mse := se / float64(len(got.p[c]))
		worst = math.Min(worst, 10*math.Log10(255*255/math.Max(mse, 1e-10)))
	}
	return worst
}

func encodeStd(t testing.TB, img image.Image, q int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSmoke(t *testing.T) {
	data := encodeStd(t, testPicture(203, 157, 1), 90)
	for _, s := range []Scale{Full, Half, Quarter, Eighth} {
		img, err := Decode(data, Options{Scale: s})
		if err != nil {
			t.Fatal(err)
		}
		p := psnr(t, planesOf(t, img), reference(t, data, s))
		t.Logf("scale 1/%d: %v %.1f dB", s, img.Bounds(), p)
	}
}
