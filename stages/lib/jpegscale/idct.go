package jpegscale

import "math"

// Scaled inverse DCTs. A block decoded at 1/d is the mean of each d×d cell of the full 8×8 inverse
// DCT. That mean is itself an N-point inverse DCT (N = 8/d) of "folded" coefficients: averaging d
// samples multiplies frequency u by the box filter's response A(u) = sin(d·u·π/16) / (d·sin(u·π/16)),
// and on the N-sample grid the cosine of frequency u equals ± the cosine of a frequency below N
// (or vanishes). Both the response and the sign are folded into the dequantization weights, so the
// Huffman loop adds each coefficient once into an N×N grid and a 4×4, 2×2 or 1×1 transform
// finishes the block exactly; only rounding differs from a full decode and an area downscale.

// weightBits is the fixed-point precision of the folded weights (and so of the transforms' input).
const weightBits = 8

// fold maps a block's coefficients, in zigzag order, onto the N×N grid its transform reads.
type fold struct {
	// slot is the grid index (row·N + column) a coefficient adds into; N·N for coefficients that do
	// not reach the output at this scale (a spare slot no transform reads).
	slot [64]uint8
	// weight is the quantizer step × box response × sign, in 1/2^weightBits units.
	weight [64]int32
}

// zigzag[k] is the natural (row-major) index of the k-th coefficient in zigzag order (T.81 A.3.6).
var zigzag = func() (z [64]uint8) {
	k := 0
	for s := 0; s < 15; s++ { // anti-diagonals r+c = s, alternating direction
		for i := 0; i <= s; i++ {
			r := i
			if s%2 == 0 {
				r = s - i
			}
			c := s - r
			if r < 8 && c < 8 {
				z[k] = uint8(r*8 + c)
				k++
			}
		}
	}
	return z
}()

// newFold builds the fold of a quantization table (zigzag order) for scale s.
func newFold(q *[64]uint16, s Scale) fold {
	n := s.blockSide()
	var f fold
	for k := 0; k < 64; k++ {
		row, col := int(zigzag[k]/8), int(zigzag[k]%8)
		mr, sr := foldFrequency(row, n)
		mc, sc := foldFrequency(col, n)
		w := float64(q[k]) * boxResponse(row, s) * boxResponse(col, s) * sr * sc
		if sr == 0 || sc == 0 || w == 0 {
			f.slot[k] = uint8(n * n)
			continue
		}
		f.slot[k] = uint8(mr*n + mc)
		f.weight[k] = int32(math.Round(w * (1 << weightBits)))
	}
	return f
}

// boxResponse is how much the mean of d neighbouring samples keeps of frequency u (of 8).
func boxResponse(u int, s Scale) float64 {
	d := float64(s.valid())
	if u == 0 || d == 1 {
		return 1
	}
	return math.Sin(d*float64(u)*math.Pi/16) / (d * math.Sin(float64(u)*math.Pi/16))
}

// foldFrequency finds, for frequency u of 8 sampled on an n-point grid, the frequency m < n whose
// cosine it equals there and the sign (0: it vanishes): cos((2j+1)uπ/2n) = sign·cos((2j+1)mπ/2n).
func foldFrequency(u, n int) (m int, sign float64) {
	u %= 4 * n
	if u > 2*n {
		u = 4*n - u
	}
	switch {
	case u == n:
		return 0, 0
	case u > n:
		return 2*n - u, -1
	}
	return u, 1
}

// Fixed-point constants of the transforms, scaled by 2^fixBits.
const fixBits = 12

var (
	kHalfRoot2 = fix(1 / (2 * math.Sqrt2))    // the DC and u = N/2 terms' factor, 1/(2√2)
	kC1        = fix(math.Cos(math.Pi/8) / 2) // cos(π/8)/2
	kC3        = fix(math.Cos(3*math.Pi/8) / 2)
	// kOdd[x][i] is cos((2x+1)(2i+1)π/16)/2: the odd half of the 8-point transform.
	kOdd = func() (k [4][4]int) {
		for x := range k {
			for i := range k[x] {
				k[x][i] = fix(math.Cos(float64((2*x+1)*(2*i+1))*math.Pi/16) / 2)
			}
		}
		return k
	}()
)

func fix(v float64) int { return int(math.Round(v * (1 << fixBits))) }

// descale drops the fixed-point factor of one transform pass, rounding.
func descale(v int) int { return (v + 1<<(fixBits-1)) >> fixBits }

// pixel turns a transform output (in 1/2^weightBits units, before the level shift) into a sample.
func pixel(v int) uint8 {
	v = (v + 128<<weightBits + 1<<(weightBits-1)) >> weightBits
	return uint8(min(max(v, 0), 255))
}

// idct4 is the 4-point inverse DCT (also the even half of the 8-point one), in place on
// x[0], x[s], x[2s], x[3s].
func idct4(g0, g1, g2, g3 int) (y0, y1, y2, y3 int) {
	a0 := (g0 + g2) * kHalfRoot2
	a1 := (g0 - g2) * kHalfRoot2
	b0 := g1*kC1 + g3*kC3
	b1 := g1*kC3 - g3*kC1
	return a0 + b0, a1 + b1, a1 - b1, a0 - b0 // still scaled by 2^fixBits
}

// idct8 is the 8-point inverse DCT of x[0], x[s], …, x[7s] into out (scaled by 2^fixBits).
func idct8(x []int32, s int, out *[8]int) {
	e0, e1, e2, e3 := idct4(int(x[0]), int(x[2*s]), int(x[4*s]), int(x[6*s]))
	x1, x3, x5, x7 := int(x[s]), int(x[3*s]), int(x[5*s]), int(x[7*s])
	for i, e := range [4]int{e0, e1, e2, e3} {
		k := &kOdd[i]
		o := x1*k[0] + x3*k[1] + x5*k[2] + x7*k[3]
		out[i] = e + o
		out[7-i] = e - o
	}
}

// idctBlock8 writes the full 8×8 inverse DCT of g (natural order) to dst.
func idctBlock8(g *[65]int32, dst []uint8, stride int) {
	var tmp [64]int32
	var col [8]int
	for c := 0; c < 8; c++ {
		if g[8+c]|g[16+c]|g[24+c]|g[32+c]|g[40+c]|g[48+c]|g[56+c] == 0 {
			// A column with only its DC term is flat: 1/(2√2) of it everywhere.
			v := int32(descale(int(g[c]) * kHalfRoot2))
			for r := 0; r < 8; r++ {
				tmp[r*8+c] = v
			}
			continue
		}
		idct8(g[c:], 8, &col)
		for r, v := range col {
			tmp[r*8+c] = int32(descale(v))
		}
	}
	for r := 0; r < 8; r++ {
		idct8(tmp[r*8:], 1, &col)
		row := dst[r*stride : r*stride+8]
		for c, v := range col {
			row[c] = pixel(descale(v))
		}
	}
}

// idctBlock4 writes the 4×4 inverse DCT of the folded grid g to dst.
func idctBlock4(g *[65]int32, dst []uint8, stride int) {
	var tmp [16]int
	for c := 0; c < 4; c++ {
		y0, y1, y2, y3 := idct4(int(g[c]), int(g[4+c]), int(g[8+c]), int(g[12+c]))
		tmp[c], tmp[4+c], tmp[8+c], tmp[12+c] = descale(y0), descale(y1), descale(y2), descale(y3)
	}
	for r := 0; r < 4; r++ {
		y0, y1, y2, y3 := idct4(tmp[4*r], tmp[4*r+1], tmp[4*r+2], tmp[4*r+3])
		row := dst[r*stride : r*stride+4]
		row[0], row[1], row[2], row[3] = pixel(descale(y0)), pixel(descale(y1)), pixel(descale(y2)), pixel(descale(y3))
	}
}

// idctBlock2 writes the 2×2 inverse DCT of the folded grid g to dst: each 1-D pass is
// (a ± b)/(2√2), so the four outputs are the grid's signed sums over 8.
func idctBlock2(g *[65]int32, dst []uint8, stride int) {
	g00, g01, g10, g11 := int(g[0]), int(g[1]), int(g[2]), int(g[3])
	s, d := g00+g10, g00-g10 // vertical pass
	t, e := g01+g11, g01-g11
	dst[0], dst[1] = pixel((s+t)/8), pixel((s-t)/8)
	dst[stride], dst[stride+1] = pixel((d+e)/8), pixel((d-e)/8)
}

// idctBlock1 writes the block's mean, its DC term over 8.
func idctBlock1(g *[65]int32, dst []uint8, _ int) { dst[0] = pixel(int(g[0]) / 8) }

// idctFor returns the transform of a scale.
func idctFor(s Scale) func(g *[65]int32, dst []uint8, stride int) {
	switch s.valid() {
	case Half:
		return idctBlock4
	case Quarter:
		return idctBlock2
	case Eighth:
		return idctBlock1
	}
	return idctBlock8
}

// idctEdge writes a block cut by the component's right or bottom edge at scale s: the full 8×8
// inverse DCT of g (natural order), each output sample the mean of the real samples (the first
// w×h of the block) its cell covers, as an area downscale of the full picture has it.
func idctEdge(g *[65]int32, dst []uint8, stride int, s Scale, w, h int) {
	var px [64]uint8
	idctBlock8(g, px[:], 8)
	d := int(s)
	w, h = min(w, 8), min(h, 8)
	for cy := 0; cy*d < h; cy++ {
		for cx := 0; cx*d < w; cx++ {
			sum, n := 0, 0
			for y := cy * d; y < min(h, cy*d+d); y++ {
				for x := cx * d; x < min(w, cx*d+d); x++ {
					sum += int(px[y*8+x])
					n++
				}
			}
			dst[cy*stride+cx] = uint8((sum + n/2) / n)
		}
	}
}
