package skin

import (
	"image"
	"image/color"
	"math"
)

// plane is a single-channel float image (luma, 0–255), row-major with no padding.
type plane struct {
	w, h int
	pix  []float32
}

func newPlane(w, h int) *plane { return &plane{w: w, h: h, pix: make([]float32, w*h)} }

func (p *plane) at(x, y int) float32 {
	if x < 0 {
		x = 0
	} else if x >= p.w {
		x = p.w - 1
	}
	if y < 0 {
		y = 0
	} else if y >= p.h {
		y = p.h - 1
	}
	return p.pix[y*p.w+x]
}

// lumaSource reads 8-bit luma rows of an image without copying it when the decoder already holds a
// luma plane (JPEG's Y, grey PNGs): a 12 MP photo is then never converted as a whole.
type lumaSource struct {
	w, h int
	row  func(y int, dst []float32) // fills dst[0:w] with the luma of row y (0-based)
}

func lumaOf(img image.Image) *lumaSource {
	b := img.Bounds()
	ls := &lumaSource{w: b.Dx(), h: b.Dy()}
	switch m := img.(type) {
	case *image.YCbCr:
		ls.row = func(y int, dst []float32) {
			off := m.YOffset(b.Min.X, b.Min.Y+y)
			for x := range dst {
				dst[x] = float32(m.Y[off+x])
			}
		}
	case *image.Gray:
		ls.row = func(y int, dst []float32) {
			off := m.PixOffset(b.Min.X, b.Min.Y+y)
			for x := range dst {
				dst[x] = float32(m.Pix[off+x])
			}
		}
	case *image.NRGBA:
		// Alpha is ignored: generated portraits and photos are opaque, and a transparent pixel's colour
		// is still the best guess at what it shows.
		ls.row = func(y int, dst []float32) {
			off := m.PixOffset(b.Min.X, b.Min.Y+y)
			for x := range dst {
				p := m.Pix[off+4*x : off+4*x+3 : off+4*x+3]
				dst[x] = luma8(p[0], p[1], p[2])
			}
		}
	case *image.RGBA:
		ls.row = func(y int, dst []float32) {
			off := m.PixOffset(b.Min.X, b.Min.Y+y)
			for x := range dst {
				p := m.Pix[off+4*x : off+4*x+3 : off+4*x+3]
				dst[x] = luma8(p[0], p[1], p[2])
			}
		}
	default:
		ls.row = func(y int, dst []float32) {
			for x := range dst {
				g := color.Gray16Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.Gray16)
				dst[x] = float32(g.Y) / 257
			}
		}
	}
	return ls
}

// luma8 is Rec. 601 luma, the Y a JPEG encoder would store, so PNG and JPEG copies of one image agree.
func luma8(r, g, b uint8) float32 {
	return 0.299*float32(r) + 0.587*float32(g) + 0.114*float32(b)
}

// tap is one source sample's weight in an output sample.
type tap struct {
	i int
	w float32
}

// axisTaps returns, for each of n outputs, the source samples (clamped to [0, srcLen)) and weights
// of a triangle filter mapping the source span [start, start+length) onto n samples. The filter
// widens when shrinking, so downscaling averages instead of aliasing.
func axisTaps(srcLen int, start, length float64, n int) [][]tap {
	scale := length / float64(n)
	support := math.Max(1, scale)
	out := make([][]tap, n)
	for j := range out {
		c := start + (float64(j)+0.5)*scale - 0.5
		lo := int(math.Floor(c - support))
		hi := int(math.Ceil(c + support))
		var taps []tap
		var sum float32
		for i := lo; i <= hi; i++ {
			d := math.Abs(float64(i)-c) / support
			if d >= 1 {
				continue
			}
			w := float32(1 - d)
			k := i
			if k < 0 {
				k = 0
			} else if k >= srcLen {
				k = srcLen - 1
			}
			taps = append(taps, tap{k, w})
			sum += w
		}
		if sum == 0 {
			k := int(math.Round(c))
			k = max(0, min(srcLen-1, k))
			taps = []tap{{k, 1}}
			sum = 1
		}
		for t := range taps {
			taps[t].w /= sum
		}
		out[j] = taps
	}
	return out
}

// resample maps the source span (x0, y0, sw, sh), in source pixels and possibly
// reaching outside the image (edges are repeated), onto a dw×dh plane.
func resample(src *lumaSource, x0, y0, sw, sh float64, dw, dh int) *plane {
	xt := axisTaps(src.w, x0, sw, dw)
	yt := axisTaps(src.h, y0, sh, dh)
	// Source rows the vertical taps need, converted horizontally once each.
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

// gaussian blurs p with standard deviation sigma (separable, edges repeated).
func gaussian(p *plane, sigma float64) *plane {
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
