package skin

import (
	"image"
	"image/color"
	"math"
	"sync"
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

// axis is one axis's taps laid flat: output j reads idx[start[j]:start[j+1]] with the weights
// beside them, in axisTaps' order (so sums come out to the same bits).
type axis struct {
	start []int32
	idx   []int32
	w     []float32
	even  int // how many taps every output has, if they all have as many; else 0
}

func flatTaps(all [][]tap) axis {
	a := axis{start: make([]int32, 1, len(all)+1)}
	if len(all) > 0 {
		a.even = len(all[0])
	}
	for _, taps := range all {
		if len(taps) != a.even {
			a.even = 0
		}
		for _, t := range taps {
			a.idx = append(a.idx, int32(t.i))
			a.w = append(a.w, t.w)
		}
		a.start = append(a.start, int32(len(a.idx)))
	}
	return a
}

// workspace holds one measurement's large buffers, reused from image to image through workspaces:
// fresh memory for each (a few MB for a photo) costs page faults and clearing that reused
// buffers do not.
type workspace struct {
	row, mid, out []float32 // resample's; a resampled plane lives in out until the next resample
	pad           []uint8   // the padded detection copy
	table         windowTable
}

var workspaces = sync.Pool{New: func() any { return new(workspace) }}

// grow returns b with length n, reallocated only when too small (the contents are left as they are).
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}

// resample maps the source span (x0, y0, sw, sh), in source pixels and possibly
// reaching outside the image (edges are repeated), onto a dw×dh plane.
func resample(src *lumaSource, x0, y0, sw, sh float64, dw, dh int) *plane {
	return new(workspace).resample(src, x0, y0, sw, sh, dw, dh)
}

// resample is resample with ws's buffers: the plane it returns is overwritten by the next call.
func (ws *workspace) resample(src *lumaSource, x0, y0, sw, sh float64, dw, dh int) *plane {
	xt := flatTaps(axisTaps(src.w, x0, sw, dw))
	yt := axisTaps(src.h, y0, sh, dh)
	// Source rows the vertical taps need, converted horizontally once each.
	lo, hi := src.h, -1
	for _, taps := range yt {
		for _, t := range taps {
			lo = min(lo, t.i)
			hi = max(hi, t.i)
		}
	}
	ws.row, ws.mid = grow(ws.row, src.w), grow(ws.mid, (hi-lo+1)*dw) // every sample is written
	rowBuf, mid := ws.row, ws.mid
	four := xt.even == 4 // a halving, as for the detection copy
	for y := lo; y <= hi; y++ {
		src.row(y, rowBuf)
		out := mid[(y-lo)*dw : (y-lo+1)*dw]
		if four {
			for j := range out {
				i, w := xt.idx[4*j:4*j+4:4*j+4], xt.w[4*j:4*j+4:4*j+4]
				var s float32
				s += rowBuf[i[0]] * w[0]
				s += rowBuf[i[1]] * w[1]
				s += rowBuf[i[2]] * w[2]
				s += rowBuf[i[3]] * w[3]
				out[j] = s
			}
			continue
		}
		for j := range out {
			a, b := xt.start[j], xt.start[j+1]
			var s float32
			for k, i := range xt.idx[a:b] {
				s += rowBuf[i] * xt.w[int(a)+k]
			}
			out[j] = s
		}
	}
	ws.out = grow(ws.out, dw*dh)
	clear(ws.out) // the vertical pass adds into it
	dst := &plane{w: dw, h: dh, pix: ws.out}
	for j, taps := range yt {
		row := dst.pix[j*dw : (j+1)*dw]
		for _, t := range taps {
			m := mid[(t.i-lo)*dw : (t.i-lo+1)*dw]
			m = m[:len(row)]
			for x := range row {
				row[x] += m[x] * t.w
			}
		}
	}
	return dst
}

// gaussianKernel is the normalised kernel of standard deviation sigma, radius ⌈3σ⌉.
func gaussianKernel(sigma float64) []float32 {
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
	return k
}

// gaussian blurs p with standard deviation sigma (separable, edges repeated) and returns the
// blurred samples of area only (a plane of its size): texture reads two cheeks, a tenth of the face.
func gaussian(p *plane, sigma float64, area image.Rectangle) *plane {
	k := gaussianKernel(sigma)
	r := len(k) / 2
	area = area.Intersect(image.Rect(0, 0, p.w, p.h))
	w, h := area.Dx(), area.Dy()
	// The horizontal pass over the rows the vertical one reads (edge rows repeated).
	y0, y1 := area.Min.Y-r, area.Max.Y+r
	tmp := make([]float32, (y1-y0)*w)
	for y := y0; y < y1; y++ {
		src := p.pix[min(max(y, 0), p.h-1)*p.w:][:p.w]
		dst := tmp[(y-y0)*w : (y-y0+1)*w]
		for j := range dst {
			x := area.Min.X + j
			var s float32
			if x >= r && x+r < p.w {
				// Away from the edges: the same sum in the same order, without clamping.
				for i, kv := range k {
					s += src[x-r+i] * kv
				}
			} else {
				for i := -r; i <= r; i++ {
					s += p.at(x+i, y) * k[i+r]
				}
			}
			dst[j] = s
		}
	}
	out := newPlane(w, h)
	for y := 0; y < h; y++ {
		dst := out.pix[y*w : (y+1)*w]
		for i, kv := range k {
			// Row y+i of tmp is source row area.Min.Y+y-r+i; sums build up tap by tap per pixel,
			// in the kernel's order, as the pixel-by-pixel loop did.
			src := tmp[(y+i)*w : (y+i+1)*w]
			src = src[:len(dst)]
			for x := range dst {
				dst[x] += src[x] * kv
			}
		}
	}
	return out
}
