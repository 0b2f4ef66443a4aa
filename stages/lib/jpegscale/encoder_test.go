package jpegscale

// A small JPEG encoder for the tests, written from T.81 like the decoder: image/jpeg only writes
// baseline 4:2:0 (or grey) files, and the decoder must also be shown progressive files with
// successive approximation, restart intervals, every chroma layout, RGB per Adobe's APP14 and
// non-interleaved scans. image/jpeg decodes them all, which checks this encoder.

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"math"
	"sort"
)

// encOptions describe the file to write.
type encOptions struct {
	sampling       [][2]int // h, v per component: one (grey) or three
	rgb            bool     // store R, G and B, saying so in APP14 (transform 0)
	adobeYCbCr     bool     // YCbCr announced by APP14 (transform 1) instead of JFIF
	quality        int
	restart        int         // MCUs per restart interval, 0: none
	progressive    []scanParam // the scan script; nil: sequential
	nonInterleaved bool        // sequential: one scan per component
	quant16        bool        // write 16-bit quantization tables
}

// scanParam is one progressive scan: components, band and successive approximation.
type scanParam struct {
	comps          []int
	ss, se, ah, al int
}

// standardScript is a libjpeg-like progressive script with successive approximation.
func standardScript(nc int) []scanParam {
	all := []int{0, 1, 2}[:nc]
	s := []scanParam{{comps: all, al: 1}, {comps: []int{0}, ss: 1, se: 5, al: 2}}
	if nc == 3 {
		s = append(s, scanParam{comps: []int{2}, ss: 1, se: 63, al: 1}, scanParam{comps: []int{1}, ss: 1, se: 63, al: 1})
	}
	s = append(s, scanParam{comps: []int{0}, ss: 6, se: 63, al: 2}, scanParam{comps: []int{0}, ss: 1, se: 63, ah: 2, al: 1},
		scanParam{comps: all, ah: 1})
	if nc == 3 {
		s = append(s, scanParam{comps: []int{2}, ss: 1, se: 63, ah: 1}, scanParam{comps: []int{1}, ss: 1, se: 63, ah: 1})
	}
	return append(s, scanParam{comps: []int{0}, ss: 1, se: 63, ah: 1})
}

// spectralScript splits the coefficients into bands without successive approximation, and codes
// the DC of each component in a scan of its own.
func spectralScript(nc int) []scanParam {
	var s []scanParam
	for c := 0; c < nc; c++ {
		s = append(s, scanParam{comps: []int{c}})
	}
	for c := 0; c < nc; c++ {
		s = append(s, scanParam{comps: []int{c}, ss: 1, se: 9}, scanParam{comps: []int{c}, ss: 10, se: 63})
	}
	return s
}

// encComponent is one component's quantized coefficients over its MCU grid.
type encComponent struct {
	h, v, gw, gh, bw, bh int
	coef                 [][64]int32 // zigzag order
	tq                   int
}

// encode writes img as a JPEG.
func encode(img image.Image, o encOptions) []byte {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	nc := len(o.sampling)
	hmax, vmax := 1, 1
	for _, s := range o.sampling {
		hmax, vmax = max(hmax, s[0]), max(vmax, s[1])
	}
	if nc == 1 {
		hmax, vmax = o.sampling[0][0], o.sampling[0][1]
	}
	mcusX, mcusY := ceilDiv(w, 8*hmax), ceilDiv(h, 8*vmax)
	full := samplePlanes(img, nc, o.rgb)
	qt := [2][64]uint16{scaledQuant(lumaQuant, o.quality), scaledQuant(chromaQuant, o.quality)}
	comps := make([]encComponent, nc)
	for i, s := range o.sampling {
		c := &comps[i]
		c.h, c.v = s[0], s[1]
		if nc == 1 {
			c.h, c.v = 1, 1
			hmax, vmax = 1, 1
		}
		c.gw, c.gh = mcusX*c.h, mcusY*c.v
		if nc == 1 {
			c.gw, c.gh = ceilDiv(w, 8), ceilDiv(h, 8)
		}
		cw, ch := ceilDiv(w*c.h, hmax), ceilDiv(h*c.v, vmax)
		c.bw, c.bh = ceilDiv(cw, 8), ceilDiv(ch, 8)
		plane := downsample(full[i], w, h, hmax/c.h, vmax/c.v, cw, ch)
		if i > 0 && !o.rgb {
			c.tq = 1
		}
		c.coef = blocksOf(plane, cw, ch, c.gw, c.gh, &qt[c.tq])
	}

	var out bytes.Buffer
	out.Write([]byte{0xFF, 0xD8})
	switch {
	case o.rgb:
		segment(&out, 0xEE, []byte("Adobe\x00\x64\x00\x00\x00\x00\x00"))
	case o.adobeYCbCr:
		segment(&out, 0xEE, []byte("Adobe\x00\x64\x00\x00\x00\x00\x01"))
	default:
		segment(&out, 0xE0, []byte("JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"))
	}
	for t := 0; t < min(2, nc); t++ {
		var body []byte
		if o.quant16 {
			body = append(body, byte(0x10|t))
			for _, q := range qt[t] {
				body = binary.BigEndian.AppendUint16(body, q)
			}
		} else {
			body = append(body, byte(t))
			for _, q := range qt[t] {
				body = append(body, byte(q))
			}
		}
		segment(&out, 0xDB, body)
	}
	sof := []byte{8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), byte(nc)}
	ids := []byte{1, 2, 3}
	if o.rgb {
		ids = []byte{'R', 'G', 'B'}
	}
	for i, s := range o.sampling {
		sof = append(sof, ids[i], byte(s[0]<<4|s[1]), byte(comps[i].tq))
	}
	marker := byte(0xC0)
	if o.progressive != nil {
		marker = 0xC2
	}
	segment(&out, marker, sof)
	if o.restart > 0 {
		segment(&out, 0xDD, []byte{byte(o.restart >> 8), byte(o.restart)})
	}
	script := o.progressive
	if script == nil {
		all := []int{0, 1, 2}[:nc]
		script = []scanParam{{comps: all, se: 63}}
		if o.nonInterleaved {
			script = nil
			for c := 0; c < nc; c++ {
				script = append(script, scanParam{comps: []int{c}, se: 63})
			}
		}
	}
	for _, sp := range script {
		e := &scanEncoder{comps: comps, sp: sp, progressive: o.progressive != nil}
		e.run(mcusX, mcusY, o.restart)
		e.write(&out, ids)
	}
	out.Write([]byte{0xFF, 0xD9})
	return out.Bytes()
}

func segment(out *bytes.Buffer, m byte, body []byte) {
	out.Write([]byte{0xFF, m, byte((len(body) + 2) >> 8), byte(len(body) + 2)})
	out.Write(body)
}

// samplePlanes splits an image into Y, Cb, Cr (or grey, or R, G, B) planes.
func samplePlanes(img image.Image, nc int, rgb bool) [][]uint8 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	p := make([][]uint8, nc)
	for i := range p {
		p[i] = make([]uint8, w*h)
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.RGBA)
			i := y*w + x
			switch {
			case nc == 1:
				p[0][i], _, _ = color.RGBToYCbCr(c.R, c.G, c.B)
			case rgb:
				p[0][i], p[1][i], p[2][i] = c.R, c.G, c.B
			default:
				p[0][i], p[1][i], p[2][i] = color.RGBToYCbCr(c.R, c.G, c.B)
			}
		}
	}
	return p
}

// downsample averages sx×sy cells of a w×h plane into a cw×ch one.
func downsample(p []uint8, w, h, sx, sy, cw, ch int) []uint8 {
	out := make([]uint8, cw*ch)
	for y := 0; y < ch; y++ {
		for x := 0; x < cw; x++ {
			s, n := 0, 0
			for yy := y * sy; yy < min(h, y*sy+sy); yy++ {
				for xx := x * sx; xx < min(w, x*sx+sx); xx++ {
					s += int(p[yy*w+xx])
					n++
				}
			}
			out[y*cw+x] = uint8((s + n/2) / n)
		}
	}
	return out
}

var lumaQuant = [64]uint16{ // T.81 Table K.1, in natural order
	16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
	14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
	18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
	49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
}

var chromaQuant = [64]uint16{ // Table K.2
	17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
	24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
	99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
	99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
}

// scaledQuant scales a table by the usual quality rule and returns it in zigzag order.
func scaledQuant(base [64]uint16, quality int) [64]uint16 {
	s := 5000 / quality
	if quality >= 50 {
		s = 200 - 2*quality
	}
	var q [64]uint16
	for k := range q {
		q[k] = uint16(min(255, max(1, (int(base[zigzag[k]])*s+50)/100)))
	}
	return q
}

// blocksOf pads a plane to the block grid by repeating its edges and returns the quantized DCT of
// every block.
func blocksOf(p []uint8, w, h, gw, gh int, q *[64]uint16) [][64]int32 {
	out := make([][64]int32, gw*gh)
	var px [64]float64
	for by := 0; by < gh; by++ {
		for bx := 0; bx < gw; bx++ {
			for i := range px {
				x, y := min(w-1, bx*8+i%8), min(h-1, by*8+i/8)
				px[i] = float64(p[y*w+x]) - 128
			}
			blk := &out[by*gw+bx]
			for k := 0; k < 64; k++ {
				v, u := int(zigzag[k]/8), int(zigzag[k]%8)
				var s float64
				for i, f := range px {
					s += f * dctCos[u][i%8] * dctCos[v][i/8]
				}
				cu, cv := 1.0, 1.0
				if u == 0 {
					cu = math.Sqrt2 / 2
				}
				if v == 0 {
					cv = math.Sqrt2 / 2
				}
				blk[k] = int32(math.Round(s * cu * cv / 4 / float64(q[k])))
			}
		}
	}
	return out
}

var dctCos = func() (c [8][8]float64) {
	for u := range c {
		for x := range c[u] {
			c[u][x] = math.Cos(float64((2*x+1)*u) * math.Pi / 16)
		}
	}
	return c
}()

// event is one thing a scan writes: a Huffman symbol of a table (DC 0–3, AC 4–7), raw bits, or
// a restart marker.
type event struct {
	table   int // -1: raw bits; -2: restart marker n
	sym     int
	n       int
	bits    uint32
	restart int
}

// scanEncoder turns one scan's coefficients into events, then writes tables and data.
type scanEncoder struct {
	comps       []encComponent
	sp          scanParam
	progressive bool
	events      []event
	pred        [3]int32
	eobrun      int
	eobBits     []event // correction bits buffered for the pending end-of-band run
	acTable     int     // the AC table of the (single) component of an AC scan
}

func (e *scanEncoder) sym(t, s int) { e.events = append(e.events, event{table: t, sym: s}) }
func (e *scanEncoder) raw(n int, v uint32) {
	if n > 0 {
		e.events = append(e.events, event{table: -1, n: n, bits: v & (1<<n - 1)})
	}
}

// category is the magnitude category of v and its extra bits (T.81 F.1.2.1).
func category(v int32) (int, uint32) {
	a := v
	if a < 0 {
		a = -a
	}
	s := 0
	for a>>s != 0 {
		s++
	}
	if v < 0 {
		return s, uint32(v - 1)
	}
	return s, uint32(v)
}

// run codes every MCU (or block, for one component) of the scan.
func (e *scanEncoder) run(mcusX, mcusY, restart int) {
	single := len(e.sp.comps) == 1
	if single {
		c := &e.comps[e.sp.comps[0]]
		mcusX, mcusY = c.bw, c.bh
	}
	mcu, rst := 0, 0
	for my := 0; my < mcusY; my++ {
		for mx := 0; mx < mcusX; mx++ {
			if restart > 0 && mcu > 0 && mcu%restart == 0 {
				e.flushEOB()
				e.events = append(e.events, event{table: -2, restart: rst})
				rst = (rst + 1) & 7
				e.pred = [3]int32{}
			}
			mcu++
			for _, ci := range e.sp.comps {
				c := &e.comps[ci]
				if single {
					e.block(ci, &c.coef[my*c.gw+mx])
					continue
				}
				for v := 0; v < c.v; v++ {
					for h := 0; h < c.h; h++ {
						e.block(ci, &c.coef[(my*c.v+v)*c.gw+mx*c.h+h])
					}
				}
			}
		}
	}
	e.flushEOB()
}

func (e *scanEncoder) block(ci int, b *[64]int32) {
	sp := e.sp
	dcT, acT := min(ci, 1), 4+min(ci, 1)
	e.acTable = acT
	switch {
	case !e.progressive:
		e.dc(ci, dcT, b[0])
		e.acFirst(acT, b, 1, 63, 0)
		e.flushEOB() // sequential scans have no runs: one EOB per block
	case sp.ss == 0 && sp.ah == 0:
		e.dc(ci, dcT, b[0]>>sp.al)
	case sp.ss == 0:
		e.raw(1, uint32(b[0]>>sp.al))
	case sp.ah == 0:
		e.acFirst(acT, b, sp.ss, sp.se, sp.al)
	default:
		e.acRefine(acT, b, sp.ss, sp.se, sp.al)
	}
}

func (e *scanEncoder) dc(ci, t int, v int32) {
	s, bits := category(v - e.pred[ci])
	e.pred[ci] = v
	e.sym(t, s)
	e.raw(s, bits)
}

// pointTransform divides an AC coefficient by 2^al, rounding towards zero (G.1.2.2).
func pointTransform(v int32, al int) int32 {
	if v < 0 {
		return -(-v >> al)
	}
	return v >> al
}

func (e *scanEncoder) acFirst(t int, b *[64]int32, ss, se, al int) {
	r := 0
	for k := ss; k <= se; k++ {
		v := pointTransform(b[k], al)
		if v == 0 {
			r++
			continue
		}
		e.flushEOB()
		for ; r > 15; r -= 16 {
			e.sym(t, 0xF0)
		}
		s, bits := category(v)
		e.sym(t, r<<4|s)
		e.raw(s, bits)
		r = 0
	}
	if r > 0 {
		e.eobrun++
		if e.eobrun == 0x7FFF || !e.progressive {
			e.flushEOB()
		}
	}
}

// acRefine codes a refining pass (G.1.2.3): correction bits of coefficients already non-zero
// travel after the next symbol, or after the end-of-band run.
func (e *scanEncoder) acRefine(t int, b *[64]int32, ss, se, al int) {
	last := -1 // the last coefficient becoming non-zero in this pass
	for k := ss; k <= se; k++ {
		if a := abs32(b[k]) >> al; a == 1 {
			last = k
		}
	}
	var pending []event
	r := 0
	for k := ss; k <= se; k++ {
		a := abs32(b[k]) >> al
		if a == 0 {
			r++
			continue
		}
		for r > 15 && k <= last {
			e.flushEOB()
			e.sym(t, 0xF0)
			r -= 16
			e.events = append(e.events, pending...)
			pending = nil
		}
		if a > 1 {
			pending = append(pending, event{table: -1, n: 1, bits: uint32(a & 1)})
			continue
		}
		e.flushEOB()
		e.sym(t, r<<4|1)
		sign := uint32(0)
		if b[k] > 0 {
			sign = 1
		}
		e.raw(1, sign)
		e.events = append(e.events, pending...)
		pending = nil
		r = 0
	}
	if r > 0 || len(pending) > 0 {
		e.eobrun++
		e.eobBits = append(e.eobBits, pending...)
		if e.eobrun == 0x7FFF {
			e.flushEOB()
		}
	}
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

// flushEOB writes the pending end-of-band run and the correction bits it carries.
func (e *scanEncoder) flushEOB() {
	if e.eobrun == 0 {
		return
	}
	r := 0
	for e.eobrun>>(r+1) != 0 {
		r++
	}
	e.sym(e.acTable, r<<4)
	e.raw(r, uint32(e.eobrun))
	e.events = append(e.events, e.eobBits...)
	e.eobrun, e.eobBits = 0, nil
}

// write builds the scan's Huffman tables from its symbol counts and writes DHT, SOS and the data.
func (e *scanEncoder) write(out *bytes.Buffer, ids []byte) {
	var freq [8][257]int
	for _, ev := range e.events {
		if ev.table >= 0 {
			freq[ev.table][ev.sym]++
		}
	}
	var codes [8]map[int]code
	for t := range freq {
		used := false
		for _, f := range freq[t][:256] {
			used = used || f > 0
		}
		if !used {
			continue
		}
		body, cs := huffmanTable(freq[t])
		codes[t] = cs
		segment(out, 0xC4, append([]byte{byte((t/4)<<4 | t%4)}, body...))
	}
	sos := []byte{byte(len(e.sp.comps))}
	for _, ci := range e.sp.comps {
		sos = append(sos, ids[ci], byte(min(ci, 1)<<4|min(ci, 1)))
	}
	se := e.sp.se
	if !e.progressive {
		se = 63
	}
	sos = append(sos, byte(e.sp.ss), byte(se), byte(e.sp.ah<<4|e.sp.al))
	segment(out, 0xDA, sos)
	var bw bitWriter
	for _, ev := range e.events {
		switch ev.table {
		case -1:
			bw.put(ev.n, ev.bits)
		case -2:
			bw.flush()
			bw.out = append(bw.out, 0xFF, byte(0xD0+ev.restart))
		default:
			c := codes[ev.table][ev.sym]
			bw.put(c.n, c.bits)
		}
	}
	bw.flush()
	out.Write(bw.out)
}

type code struct {
	n    int
	bits uint32
}

// huffmanTable builds code lengths of at most 16 bits from symbol counts (a spare symbol, 256,
// takes the all-ones code T.81 reserves) and returns the DHT body (without Tc/Th) and the codes.
func huffmanTable(freq [257]int) ([]byte, map[int]code) {
	f := freq
	for i := range f[:256] {
		f[i] *= 2
	}
	f[256] = 1
	var lengths [257]int
	for {
		lengths = huffmanLengths(f)
		longest := 0
		for _, l := range lengths {
			longest = max(longest, l)
		}
		if longest <= 16 {
			lengths[256] = longest
			break
		}
		for i := range f[:256] {
			if f[i] > 0 {
				f[i] = (f[i] + 1) / 2
			}
		}
	}
	var syms []int
	for s, l := range lengths {
		if l > 0 {
			syms = append(syms, s)
		}
	}
	sort.SliceStable(syms, func(i, j int) bool { return lengths[syms[i]] < lengths[syms[j]] })
	var counts [16]byte
	var vals []byte
	codes := map[int]code{}
	c, prev := uint32(0), 0
	for _, s := range syms {
		l := lengths[s]
		c <<= uint(l - prev)
		prev = l
		if s < 256 {
			counts[l-1]++
			vals = append(vals, byte(s))
			codes[s] = code{l, c}
		}
		c++
	}
	return append(counts[:], vals...), codes
}

// huffmanLengths is the textbook Huffman construction over the non-zero counts.
func huffmanLengths(f [257]int) [257]int {
	type node struct {
		w    int
		syms []int
	}
	var nodes []node
	for s, w := range f {
		if w > 0 {
			nodes = append(nodes, node{w, []int{s}})
		}
	}
	var lengths [257]int
	for len(nodes) > 1 {
		sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].w < nodes[j].w })
		a, b := nodes[0], nodes[1]
		for _, s := range append(a.syms, b.syms...) {
			lengths[s]++
		}
		nodes = append([]node{{a.w + b.w, append(append([]int{}, a.syms...), b.syms...)}}, nodes[2:]...)
	}
	return lengths
}

// bitWriter packs bits MSB first, stuffing a zero after every 0xFF byte.
type bitWriter struct {
	out  []byte
	acc  uint64
	nacc int
}

func (w *bitWriter) put(n int, v uint32) {
	w.acc = w.acc<<uint(n) | uint64(v)&(1<<uint(n)-1)
	w.nacc += n
	for w.nacc >= 8 {
		b := byte(w.acc >> uint(w.nacc-8))
		w.out = append(w.out, b)
		if b == 0xFF {
			w.out = append(w.out, 0)
		}
		w.nacc -= 8
	}
}

// flush pads the last byte with 1-bits.
func (w *bitWriter) flush() {
	if w.nacc > 0 {
		w.put(8-w.nacc, 0xFF)
	}
	w.acc, w.nacc = 0, 0
}
