package photo

import "math"

// Resampling is a separable Catmull-Rom filter (a cubic that keeps edges crisp without Lanczos'
// ringing) in integer arithmetic: the weights are worked out in float64 once per size, quantised to
// 14 bits so that each output's weights sum to exactly 2^14, and every pixel is then a sum of
// integer products. Integer sums are the same on every machine; float sums are not, since Go may
// fuse x*y+z into one FMA instruction on arm64, ppc64 and s390x (the spec allows it). That is also
// why imaging.Resize, whose inner loop is `r += float64(s[0]) * w`, is not used for prepared copies.
// The few float products below are wrapped in explicit float64() conversions, which the spec says
// must round and so cannot be fused.

const weightBits = 14

// taps are one axis' weights: output i reads n source samples from first[i].
type taps struct {
	first []int
	n     int
	w     []int32 // n per output
}

// catmullRom is the cubic convolution kernel with a = -0.5, support 2.
func catmullRom(x float64) float64 {
	x = math.Abs(x)
	x2 := float64(x * x)
	x3 := float64(x2 * x)
	switch {
	case x < 1:
		return float64(1.5*x3) - float64(2.5*x2) + 1
	case x < 2:
		return float64(-0.5*x3) + float64(2.5*x2) - float64(4*x) + 2
	}
	return 0
}

// makeTaps maps src samples onto dst: centres aligned (output i covers source [i·s, (i+1)·s)),
// the kernel widened by the scale when shrinking so that it also filters out what the smaller
// grid cannot hold; samples beyond the edges repeat the edge.
func makeTaps(src, dst int) taps {
	scale := float64(src) / float64(dst)
	fs := math.Max(scale, 1)
	support := float64(2 * fs)
	n := min(2*int(math.Ceil(support))+1, src)
	t := taps{first: make([]int, dst), n: n, w: make([]int32, dst*n)}
	wf := make([]float64, n)
	for i := 0; i < dst; i++ {
		centre := float64(float64(float64(i)+0.5)*scale) - 0.5
		lo := int(math.Floor(centre-support)) + 1
		first := min(max(lo, 0), src-n)
		t.first[i] = first
		clear(wf)
		var sum float64
		for j := lo; float64(j) < centre+support; j++ {
			w := catmullRom(float64(float64(j)-centre) / fs)
			k := min(max(j, 0), src-1) - first
			wf[k] += w
			sum += w
		}
		quantise(t.w[i*n:(i+1)*n], wf, sum)
	}
	return t
}

// quantise rounds weights to weightBits so that they sum to exactly 1<<weightBits (the remainder
// goes to the largest weight): flat areas stay exactly flat.
func quantise(dst []int32, wf []float64, sum float64) {
	total := int32(0)
	big := 0
	for k, w := range wf {
		dst[k] = int32(math.Round(float64(float64(w/sum) * (1 << weightBits))))
		total += dst[k]
		if dst[k] > dst[big] {
			big = k
		}
	}
	dst[big] += 1<<weightBits - total
}

// resample scales an 8-bit image of ch interleaved channels (the sw×sh area at the start of src,
// rows stride bytes apart) to dw×dh, returned tightly packed. It works one output row at a time
// over a ring of horizontally filtered rows, so memory is a few rows, not a second image.
func resample(src []uint8, stride, sw, sh, ch, dw, dh int) []uint8 {
	hx, vy := makeTaps(sw, dw), makeTaps(sh, dh)
	out := make([]uint8, dw*dh*ch)
	ring := make([][]int16, vy.n)
	for i := range ring {
		ring[i] = make([]int16, dw*ch)
	}
	next := 0 // the next source row to filter horizontally
	for y := 0; y < dh; y++ {
		first := vy.first[y]
		next = max(next, first)
		for ; next < first+vy.n; next++ {
			filterRow(ring[next%vy.n], src[next*stride:next*stride+sw*ch], ch, hx)
		}
		w := vy.w[y*vy.n : (y+1)*vy.n]
		dst := out[y*dw*ch : (y+1)*dw*ch]
		for x := range dst {
			var s int32
			for k, wk := range w {
				s += wk * int32(ring[(first+k)%vy.n][x])
			}
			dst[x] = clampShift(s, 2*weightBits-8)
		}
	}
	return out
}

// filterRow applies the horizontal taps to one row, keeping 6 fractional bits (int16 holds the
// filter's overshoot of about a quarter beyond 0–255 at that precision).
func filterRow(dst []int16, row []uint8, ch int, t taps) {
	for x := 0; x < len(dst)/ch; x++ {
		w := t.w[x*t.n : (x+1)*t.n]
		base := t.first[x] * ch
		for c := 0; c < ch; c++ {
			var s int32
			for k, wk := range w {
				s += wk * int32(row[base+k*ch+c])
			}
			dst[x*ch+c] = int16((s + 1<<(weightBits-7)) >> (weightBits - 6))
		}
	}
}

// clampShift rounds a fixed-point sum with frac fractional bits to 0–255.
func clampShift(s int32, frac int) uint8 {
	v := (s + 1<<(frac-1)) >> frac
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// fitSide scales (w, h) so that the long side is at most side, never up, in integers.
func fitSide(w, h, side int) (int, int) {
	long := max(w, h)
	if side <= 0 || long <= side {
		return w, h
	}
	scale := func(v int) int { return max(1, (2*v*side+long)/(2*long)) }
	return scale(w), scale(h)
}
