package skin

import (
	"image"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/disintegration/imaging"
)

// The measurement's building blocks as they were before they were made faster (resampling with
// taps as slices, blurring the whole face pixel by pixel, sorting every gradient): the reference
// the faster ones are held to, bit for bit, so no figure moves.

func resampleRef(src *lumaSource, x0, y0, sw, sh float64, dw, dh int) *plane {
	xt := axisTaps(src.w, x0, sw, dw)
	yt := axisTaps(src.h, y0, sh, dh)
	lo, hi := src.h, -1
	for _, taps := range yt {
		for _, t := range taps {
			lo = min(lo, t.i)
			hi = max(hi, t.i)
		}
	}
	rowBuf := make([]float32, src.w)
	mid := make([]float32, (hi-lo+1)*dw)
	for y := lo; y <= hi; y++ {
		src.row(y, rowBuf)
		out := mid[(y-lo)*dw : (y-lo+1)*dw]
		for j, taps := range xt {
			var s float32
			for _, t := range taps {
				s += rowBuf[t.i] * t.w
			}
			out[j] = s
		}
	}
	dst := newPlane(dw, dh)
	for j, taps := range yt {
		row := dst.pix[j*dw : (j+1)*dw]
		for _, t := range taps {
			m := mid[(t.i-lo)*dw : (t.i-lo+1)*dw]
			for x := range row {
				row[x] += m[x] * t.w
			}
		}
	}
	return dst
}

func gaussianRef(p *plane, sigma float64) *plane {
	r := int(math.Ceil(3 * sigma))
	k := make([]float32, 2*r+1)
	var sum float32
	for i := -r; i <= r; i++ {
		v := float32(math.Exp(-float64(i*i) / (2 * sigma * sigma)))
		k[i+r] = v
		sum += v
	}
	for i := range k {
		k[i] /= sum
	}
	tmp := newPlane(p.w, p.h)
	for y := 0; y < p.h; y++ {
		for x := 0; x < p.w; x++ {
			var s float32
			for i := -r; i <= r; i++ {
				s += p.at(x+i, y) * k[i+r]
			}
			tmp.pix[y*p.w+x] = s
		}
	}
	out := newPlane(p.w, p.h)
	for y := 0; y < p.h; y++ {
		for x := 0; x < p.w; x++ {
			var s float32
			for i := -r; i <= r; i++ {
				s += tmp.at(x, y+i) * k[i+r]
			}
			out.pix[y*p.w+x] = s
		}
	}
	return out
}

func textureRef(p *plane) (index, brightness float64) {
	b1 := gaussianRef(p, 1)
	b2 := gaussianRef(p, 2)
	var mags []float64
	var sum float64
	for _, c := range cheeks {
		x0, y0 := int(c[0]*float64(p.w)), int(c[1]*float64(p.h))
		x1, y1 := int(c[2]*float64(p.w)), int(c[3]*float64(p.h))
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				i := y*p.w + x
				mags = append(mags, math.Abs(float64(b1.pix[i]-b2.pix[i])))
				sum += float64(p.pix[i])
			}
		}
	}
	brightness = sum / float64(len(mags))
	if brightness <= 0 {
		return 0, 0
	}
	return 1000 * median(mags) / brightness, brightness
}

func sharpnessRef(p *plane) float64 {
	x0, y0 := p.w*2/10, p.h*2/10
	x1, y1 := p.w-x0, p.h-y0
	var mags []float64
	var sum float64
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			gx := (p.at(x+1, y-1) + 2*p.at(x+1, y) + p.at(x+1, y+1)) - (p.at(x-1, y-1) + 2*p.at(x-1, y) + p.at(x-1, y+1))
			gy := (p.at(x-1, y+1) + 2*p.at(x, y+1) + p.at(x+1, y+1)) - (p.at(x-1, y-1) + 2*p.at(x, y-1) + p.at(x+1, y-1))
			mags = append(mags, math.Hypot(float64(gx), float64(gy)))
			sum += float64(p.at(x, y))
		}
	}
	mean := sum / float64(len(mags))
	if mean <= 0 {
		return 0
	}
	slices.Sort(mags)
	n := max(1, int(float64(len(mags))*edgeShare))
	var top float64
	for _, m := range mags[len(mags)-n:] {
		top += m
	}
	return top / float64(n) / mean
}

// testImages are the portraits as every decoder type image_check and generate hand over, and a
// few of the variants the guard's tests measure.
func testImages(t testing.TB) map[string]image.Image {
	out := map[string]image.Image{}
	for name, img := range portraits(t) {
		out[name] = img
		out[name+" YCbCr"] = jpegRoundTrip(t, img, 90)
		out[name+" grey"] = imaging.Grayscale(img)
		out[name+" blur"] = imaging.Blur(img, 2)
		out[name+" 1024"] = imaging.Resize(img, 1024, 0, imaging.Linear)
		out[name+" odd"] = imaging.Resize(img, 333, 251, imaging.Linear)
	}
	return out
}

func samePlane(t *testing.T, label string, got, want *plane) {
	t.Helper()
	if got.w != want.w || got.h != want.h {
		t.Fatalf("%s: %d×%d, want %d×%d", label, got.w, got.h, want.w, want.h)
	}
	for i, v := range want.pix {
		if math.Float32bits(got.pix[i]) != math.Float32bits(v) {
			t.Fatalf("%s: sample %d (%d,%d) is %v, want %v", label, i, i%got.w, i/got.w, got.pix[i], v)
		}
	}
}

// facePlane is the 256 px plane Measure scores for img's face.
func facePlane(t testing.TB, img image.Image) *plane {
	f := Measure(img)
	if f.FaceWidth == 0 {
		t.Fatalf("no face: %s", f.Reason)
	}
	r := f.Face
	return resampleRef(lumaOf(img), float64(r.Min.X), float64(r.Min.Y), float64(r.Dx()), float64(r.Dy()), faceSize, faceSize)
}

func TestResampleMatchesReference(t *testing.T) {
	for name, img := range testImages(t) {
		src := lumaOf(img)
		w, h := float64(src.w), float64(src.h)
		for _, c := range []struct {
			x0, y0, sw, sh float64
			dw, dh         int
		}{
			{0, 0, w, h, (src.w + 1) / 2, (src.h + 1) / 2}, // the detection copy: a halving
			{0, 0, w, h, 97, 131},
			{0, 0, w, h, src.w * 3 / 2, src.h}, // growing across
			{w * 0.3, h * 0.2, w * 0.4, w * 0.4, faceSize, faceSize},
			{-w * 0.1, -h * 0.1, w * 0.5, w * 0.5, faceSize, faceSize}, // reaching past the edges
			{w * 0.8, h * 0.7, w * 0.3, w * 0.3, faceSize, faceSize},
		} {
			samePlane(t, name, resample(src, c.x0, c.y0, c.sw, c.sh, c.dw, c.dh), resampleRef(src, c.x0, c.y0, c.sw, c.sh, c.dw, c.dh))
		}
	}
}

func TestGaussianMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	noise := newPlane(23, 17) // smaller than the kernel in places: every sample near an edge
	for i := range noise.pix {
		noise.pix[i] = float32(rng.IntN(256))
	}
	planes := map[string]*plane{"noise": noise}
	for name, img := range portraits(t) {
		planes[name] = facePlane(t, img)
	}
	for name, p := range planes {
		for _, sigma := range []float64{1, 2} {
			want := gaussianRef(p, sigma)
			areas := []image.Rectangle{image.Rect(0, 0, p.w, p.h), image.Rect(3, 2, p.w-1, 9), image.Rect(p.w-5, p.h-4, p.w+3, p.h+2)}
			for _, c := range cheeks {
				areas = append(areas, image.Rect(int(c[0]*float64(p.w)), int(c[1]*float64(p.h)), int(c[2]*float64(p.w)), int(c[3]*float64(p.h))))
			}
			for _, a := range areas {
				got := gaussian(p, sigma, a)
				in := a.Intersect(image.Rect(0, 0, p.w, p.h))
				for y := in.Min.Y; y < in.Max.Y; y++ {
					for x := in.Min.X; x < in.Max.X; x++ {
						g, w := got.pix[(y-in.Min.Y)*got.w+x-in.Min.X], want.pix[y*p.w+x]
						if math.Float32bits(g) != math.Float32bits(w) {
							t.Fatalf("%s σ=%v area %v: (%d,%d) is %v, want %v", name, sigma, a, x, y, g, w)
						}
					}
				}
			}
		}
	}
}

func TestTextureAndSharpnessMatchReference(t *testing.T) {
	for name, vs := range variants(t) {
		imgs := map[string]image.Image{"": vs.base, " blur": imaging.Blur(vs.base, 2), " q40": jpegRoundTrip(t, vs.base, 40)}
		for s, img := range vs.smoothed {
			imgs[" "+s] = img
		}
		for label, img := range imgs {
			p := facePlane(t, img)
			ti, tb := texture(p)
			ri, rb := textureRef(p)
			if ti != ri || tb != rb {
				t.Errorf("%s%s: texture %v (brightness %v), want %v (%v)", name, label, ti, tb, ri, rb)
			}
			if s, r := sharpness(p), sharpnessRef(p); s != r {
				t.Errorf("%s%s: sharpness %v, want %v", name, label, s, r)
			}
		}
	}
}

// nth, medianInPlace and selectLargest are what sorting gives, duplicates and all.
func TestSelectionMatchesSorting(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 3, 10, 101, 1000} {
		for _, spread := range []int{3, 1 << 20} { // many equal values, and few
			xs := make([]float64, n)
			for i := range xs {
				xs[i] = float64(rng.IntN(spread)) / 7
			}
			sorted := slices.Sorted(slices.Values(xs))
			for _, k := range []int{0, n / 2, n - 1} {
				s := slices.Clone(xs)
				if v := nth(s, k); v != sorted[k] || slices.Max(s[:k+1]) != v || slices.Min(s[k:]) != v {
					t.Fatalf("n=%d k=%d: nth %v, sorted %v, or not partitioned", n, k, v, sorted[k])
				}
			}
			if m, want := medianInPlace(slices.Clone(xs)), median(xs); m != want {
				t.Fatalf("n=%d: median %v, want %v", n, m, want)
			}
			top := max(1, n/50)
			s := slices.Clone(xs)
			got := s[selectLargest(s, top):]
			slices.Sort(got)
			if !slices.Equal(got, sorted[n-top:]) {
				t.Fatalf("n=%d: %d largest %v, want %v", n, top, got, sorted[n-top:])
			}
		}
	}
}
