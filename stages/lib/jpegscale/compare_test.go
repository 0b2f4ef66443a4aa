package jpegscale

import (
	"bytes"
	"errors"
	"fmt"
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

// corpusSamplings are the chroma layouts of the generated corpus, and grey (also with the 2×2
// factors some encoders give a lone component).
var corpusSamplings = map[string][][2]int{
	"444":     {{1, 1}, {1, 1}, {1, 1}},
	"422":     {{2, 1}, {1, 1}, {1, 1}},
	"420":     {{2, 2}, {1, 1}, {1, 1}},
	"440":     {{1, 2}, {1, 1}, {1, 1}},
	"411":     {{4, 1}, {1, 1}, {1, 1}},
	"410":     {{4, 2}, {1, 1}, {1, 1}},
	"444x2":   {{2, 1}, {2, 1}, {2, 1}},
	"grey":    {{1, 1}},
	"grey2x2": {{2, 2}},
}

// corpusCodings are the ways the corpus codes each layout.
var corpusCodings = map[string]func(nc int) encOptions{
	"baseline":       func(int) encOptions { return encOptions{} },
	"noninterleaved": func(int) encOptions { return encOptions{nonInterleaved: true} },
	"progressive":    func(nc int) encOptions { return encOptions{progressive: standardScript(nc)} },
	"spectral":       func(nc int) encOptions { return encOptions{progressive: spectralScript(nc)} },
}

const minPSNR = 38 // dB against image/jpeg + an area downscale

// TestCorpusMatchesAreaDownscale decodes the generated corpus at every scale and compares it with
// image/jpeg's full decode of the same coefficients (the file itself, or its baseline twin where
// image/jpeg cannot read the file) area-downscaled to the same size.
func TestCorpusMatchesAreaDownscale(t *testing.T) {
	sizes := [][2]int{{203, 157}, {61, 35}}
	for sname, sampling := range corpusSamplings {
		for cname, coding := range corpusCodings {
			for _, restart := range []int{0, 3} {
				for _, size := range sizes {
					name := fmt.Sprintf("%s/%s/rst%d/%dx%d", sname, cname, restart, size[0], size[1])
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						img := testPicture(size[0], size[1], uint64(size[0]+restart))
						o := coding(len(sampling))
						o.sampling, o.quality, o.restart = sampling, 90, restart
						twin := encOptions{sampling: sampling, quality: 90}
						checkScales(t, encode(img, o), encode(img, twin))
					})
				}
			}
		}
	}
}

// TestColourTransforms covers YCbCr announced by APP14 rather than JFIF, and RGB (APP14
// transform 0), progressive too, with 16-bit quantization tables.
func TestColourTransforms(t *testing.T) {
	img := testPicture(131, 77, 5)
	all := [][2]int{{1, 1}, {1, 1}, {1, 1}}
	for name, o := range map[string]encOptions{
		"adobe-ycbcr-420": {sampling: [][2]int{{2, 2}, {1, 1}, {1, 1}}, adobeYCbCr: true},
		"adobe-rgb":       {sampling: all, rgb: true},
		"adobe-rgb-prog":  {sampling: all, rgb: true, progressive: standardScript(3), restart: 5},
		"quant16":         {sampling: all, quant16: true},
	} {
		t.Run(name, func(t *testing.T) {
			o.quality = 90
			twin := o
			twin.progressive, twin.restart = nil, 0
			data := encode(img, o)
			checkScales(t, data, encode(img, twin))
			got, _ := Decode(data, Options{})
			if _, isRGB := got.(*image.RGBA); isRGB != o.rgb {
				t.Errorf("decoded as %T", got)
			}
		})
	}
}

// TestStandardEncoderFiles covers what image/jpeg writes, at several qualities.
func TestStandardEncoderFiles(t *testing.T) {
	colour := testPicture(250, 171, 7)
	grey := image.NewGray(colour.Rect)
	for i := range grey.Pix {
		grey.Pix[i] = colour.Pix[4*i+1]
	}
	for _, q := range []int{50, 75, 90, 100} {
		checkScales(t, encodeStd(t, colour, q), nil)
		checkScales(t, encodeStd(t, grey, q), nil)
	}
}

// checkScales decodes data at every scale and compares it with the reference made from ref (data
// itself when ref is nil).
func checkScales(t *testing.T, data, ref []byte) {
	t.Helper()
	if ref == nil {
		ref = data
	}
	for _, s := range []Scale{Full, Half, Quarter, Eighth} {
		got, err := Decode(data, Options{Scale: s})
		if err != nil {
			t.Fatalf("1/%d: %v", s, err)
		}
		p := psnr(t, planesOf(t, got), reference(t, ref, s))
		if p < minPSNR {
			t.Errorf("1/%d: PSNR %.1f dB < %d dB", s, p, minPSNR)
		}
		t.Logf("1/%d: PSNR %.1f dB", s, p)
	}
}

// TestDamagedFilesDecodeAsImageJPEG: where garbled entropy data still decodes (runs past a
// block's end, odd codes), the picture is what image/jpeg makes of the same bits; a decoder that
// lost its bit position on such a block would garble everything after it. The fuzz test holds the
// verdicts; this holds the pixels. At full scale, where the transforms agree up to rounding (a
// reduced one clamps a garbled block's overshoots once, not per pixel); damage this decoder leaves
// to image/jpeg on purpose (a restart marker out of place) is skipped.
func TestDamagedFilesDecodeAsImageJPEG(t *testing.T) {
	compared := 0
	for seed := uint64(0); seed < 12; seed++ {
		data := encodeStd(t, testPicture(160, 120, seed), 85)
		if seed%2 == 1 {
			data = encode(testPicture(160, 120, seed), encOptions{sampling: corpusSamplings["420"], quality: 85, restart: 4})
		}
		rng := rand.New(rand.NewPCG(seed, 5))
		for try := 0; try < 20; try++ {
			bad := append([]byte(nil), data...)
			at := len(bad)/3 + rng.IntN(len(bad)/2)
			for i := at; i < min(len(bad)-2, at+1+rng.IntN(8)); i++ {
				bad[i] ^= byte(1 + rng.IntN(255))
			}
			if _, err := jpeg.Decode(bytes.NewReader(bad)); err != nil {
				continue // image/jpeg refuses it: the fuzz test's business
			}
			got, err := Decode(bad, Options{})
			var unsupported UnsupportedError
			switch {
			case errors.As(err, &unsupported):
				continue
			case err != nil:
				t.Errorf("seed %d try %d: %v where image/jpeg decodes", seed, try, err)
				continue
			}
			if p := psnr(t, planesOf(t, got), reference(t, bad, Full)); p < minPSNR {
				t.Errorf("seed %d try %d: PSNR %.1f dB < %d dB against image/jpeg", seed, try, p, minPSNR)
			}
			compared++
		}
	}
	if compared < 40 {
		t.Errorf("only %d damaged files decoded at all: the test proves little", compared)
	}
}
