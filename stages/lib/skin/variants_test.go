package skin

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"path/filepath"
	"testing"

	"github.com/disintegration/imaging"
)

// The variants below imitate what happens to a portrait between a camera and a model's output:
// ordinary changes (crops, light, JPEG, resampling) that must leave the texture index alone, and
// blur or beauty-filter smoothing that must lower it.

func loadImage(t testing.TB, name string) image.Image {
	t.Helper()
	img, err := imaging.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("testdata/%s: %v", name, err)
	}
	return img
}

// portraits are the test faces at a size the guard scores: Grace Hopper as shipped (face ~230 px),
// and the astronaut (face ~100 px in the 512 px original) cropped to her head and shoulders and
// enlarged ×2.5.
func portraits(t testing.TB) map[string]*image.NRGBA {
	hopper := imaging.Clone(loadImage(t, "grace_hopper.jpg"))
	astro := loadImage(t, "astronaut.jpg")
	crop := imaging.Crop(astro, image.Rect(100, 0, 350, 250))
	big := imaging.Resize(crop, 625, 625, imaging.Lanczos)
	return map[string]*image.NRGBA{"hopper": hopper, "astronaut": big}
}

func jpegRoundTrip(t testing.TB, img image.Image, q int) image.Image {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	out, err := jpeg.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rescaleRoundTrip shrinks by f and enlarges back, as an upload pipeline that stores a smaller copy.
func rescaleRoundTrip(img image.Image, f float64) image.Image {
	b := img.Bounds()
	small := imaging.Resize(img, int(float64(b.Dx())*f), 0, imaging.Lanczos)
	return imaging.Resize(small, b.Dx(), b.Dy(), imaging.Lanczos)
}

// relight scales and lifts every channel: a darker or brighter exposure.
func relight(img image.Image, gain, lift float64) image.Image {
	return imaging.AdjustFunc(img, func(c color.NRGBA) color.NRGBA {
		f := func(v uint8) uint8 {
			return uint8(math.Max(0, math.Min(255, float64(v)*gain+lift)))
		}
		return color.NRGBA{f(c.R), f(c.G), f(c.B), c.A}
	})
}

// bilateral is edge-preserving smoothing, the core of beauty filters: each pixel becomes a mean of
// its neighbours weighted by distance (sigmaS px) and by colour similarity (sigmaR levels), so skin
// pores flatten while the edges of eyes, mouth and face survive.
//
// Only the pixels inside area are filtered (the rest is copied): the face and its surroundings are
// all that the measurement reads, and the filter is the slowest part of the tests.
func bilateral(img image.Image, area image.Rectangle, sigmaS, sigmaR float64) *image.NRGBA {
	src := imaging.Clone(img)
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	dst := imaging.Clone(src)
	area = area.Intersect(image.Rect(0, 0, w, h))
	r := int(math.Ceil(2 * sigmaS))
	space := make([]float64, (2*r+1)*(2*r+1))
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			space[(dy+r)*(2*r+1)+dx+r] = math.Exp(-float64(dx*dx+dy*dy) / (2 * sigmaS * sigmaS))
		}
	}
	rng := make([]float64, 256*3)
	for d := range rng {
		rng[d] = math.Exp(-float64(d*d) / 9 / (2 * sigmaR * sigmaR))
	}
	for y := area.Min.Y; y < area.Max.Y; y++ {
		for x := area.Min.X; x < area.Max.X; x++ {
			c := src.Pix[y*src.Stride+4*x : y*src.Stride+4*x+4]
			var sr, sg, sb, sw float64
			for dy := -r; dy <= r; dy++ {
				yy := y + dy
				if yy < 0 || yy >= h {
					continue
				}
				for dx := -r; dx <= r; dx++ {
					xx := x + dx
					if xx < 0 || xx >= w {
						continue
					}
					n := src.Pix[yy*src.Stride+4*xx : yy*src.Stride+4*xx+4]
					d := absDiff(c[0], n[0]) + absDiff(c[1], n[1]) + absDiff(c[2], n[2])
					wt := space[(dy+r)*(2*r+1)+dx+r] * rng[d]
					sr += wt * float64(n[0])
					sg += wt * float64(n[1])
					sb += wt * float64(n[2])
					sw += wt
				}
			}
			o := dst.Pix[y*dst.Stride+4*x : y*dst.Stride+4*x+4]
			o[0], o[1], o[2], o[3] = uint8(sr/sw+0.5), uint8(sg/sw+0.5), uint8(sb/sw+0.5), 255
		}
	}
	return dst
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

// brighten lifts mid-tones without clipping (a gamma curve), as a brighter exposure or edit would.
func brighten(img image.Image) image.Image { return imaging.AdjustGamma(img, 1.25) }

// smoothing strengths: light, medium, strong (spatial sigma px, range sigma in levels).
var smoothing = []struct {
	name           string
	sigmaS, sigmaR float64
}{
	{"light", 2, 10},
	{"medium", 3, 18},
	{"strong", 5, 30},
}
