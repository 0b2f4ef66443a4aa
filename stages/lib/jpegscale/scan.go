package jpegscale

// scanHeader is what SOS says (T.81 B.2.3).
type scanHeader struct {
	comps          []int // indices into frame.comps, in scan order
	ss, se, ah, al int   // spectral selection and successive approximation
}

// scan reads an SOS segment and decodes the entropy-coded data after it.
func (d *decoder) scan(b []byte) error {
	if !d.haveFrame {
		return FormatError("missing SOF marker")
	}
	if len(b) < 1 {
		return FormatError("SOS has wrong length")
	}
	ns := int(b[0])
	if ns < 1 || ns > len(d.comps) || len(b) != 4+2*ns {
		return FormatError("SOS has wrong length")
	}
	var sc scanHeader
	for i := 0; i < ns; i++ {
		sel, tables := b[1+2*i], b[2+2*i]
		ci := d.componentIndex(sel)
		if ci < 0 {
			return FormatError("unknown component selector")
		}
		for _, o := range sc.comps {
			if o == ci {
				return FormatError("repeated component selector")
			}
		}
		td, ta := tables>>4, tables&15
		if td > 3 || ta > 3 {
			return FormatError("bad Td or Ta value")
		}
		c := &d.comps[ci]
		c.dc, c.ac = &d.huff[0][td], &d.huff[1][ta]
		sc.comps = append(sc.comps, ci)
	}
	p := b[1+2*ns:]
	sc.ss, sc.se, sc.ah, sc.al = int(p[0]), int(p[1]), int(p[2]>>4), int(p[2]&15)
	if d.progressive {
		if err := sc.checkProgressive(); err != nil {
			return err
		}
	} else {
		if sc.ss != 0 {
			// T.81 B.2.3 has Ss = 0 in sequential scans; what such a scan means is left to image/jpeg.
			return unsupported("sequential scan starting at coefficient %d", sc.ss)
		}
		sc.se, sc.ah, sc.al = 63, 0, 0 // they code every coefficient (image/jpeg ignores Se, Ah, Al too)
	}
	if err := d.prepare(&sc); err != nil {
		return err
	}
	d.scans++
	d.eobrun = 0
	d.br = bitReader{data: d.data, pos: d.pos}
	err := d.scanMCUs(&sc)
	d.pos = d.br.pos
	return err
}

// checkProgressive enforces the spectral selection and successive approximation rules of G.1.1.1.
func (sc *scanHeader) checkProgressive() error {
	switch {
	case sc.ss == 0 && sc.se != 0, sc.ss > sc.se, sc.se > 63:
		return FormatError("bad spectral selection bounds")
	case sc.ss > 0 && len(sc.comps) != 1:
		return FormatError("progressive AC coefficients for more than one component")
	case sc.ah != 0 && sc.ah != sc.al+1, sc.al > 13:
		// Outside G.1.1.1.2; image/jpeg reads some of these, so it judges them.
		return unsupported("successive approximation Ah=%d, Al=%d", sc.ah, sc.al)
	}
	return nil
}

func (d *decoder) componentIndex(id uint8) int {
	for i := range d.comps {
		if d.comps[i].id == id {
			return i
		}
	}
	return -1
}

// prepare checks that the data can hold the scan, then allocates what its components need: a
// scan codes every block in at least one bit (a sequential block in two), so a header claiming
// more blocks than the file has bits is refused before a byte is allocated for them.
func (d *decoder) prepare(sc *scanHeader) error {
	minBits := 0
	for _, ci := range sc.comps {
		c := &d.comps[ci]
		blocks := c.bw * c.bh
		if len(sc.comps) > 1 {
			blocks = c.gw * c.gh
		}
		if d.progressive {
			minBits += blocks
		} else {
			minBits += 2 * blocks
		}
	}
	if minBits > 8*(len(d.data)-d.pos) {
		return errTruncated
	}
	n := d.scale.blockSide()
	for _, ci := range sc.comps {
		c := &d.comps[ci]
		switch {
		case d.progressive && c.coef == nil:
			if sc.ss != 0 || sc.ah != 0 {
				return unsupported("progressive AC scan before the component's first DC scan")
			}
			c.coef = make([]int16, 64*c.gw*c.gh)
		case !d.progressive && c.plane == nil:
			c.plane = make([]uint8, c.gw*n*c.gh*n)
		}
		if !d.progressive {
			c.fold = newFold(&d.quant[c.tq], d.scale)
			c.full = newFold(&d.quant[c.tq], Full)
		}
		c.pred = 0
	}
	return nil
}

// scanMCUs decodes the scan's MCUs in order, handling restart intervals. A scan of one component
// codes its blocks one by one over the blocks that hold its samples (A.2.2); an interleaved scan
// codes h×v blocks of each component per MCU (A.2.3).
func (d *decoder) scanMCUs(sc *scanHeader) error {
	mcusX, mcusY := d.mcusX, d.mcusY
	single := len(sc.comps) == 1
	if single {
		c := &d.comps[sc.comps[0]]
		mcusX, mcusY = c.bw, c.bh
	}
	block := d.sequentialBlock
	if d.progressive {
		block = d.progressiveBlock(sc)
	}
	n := d.scale.blockSide()
	mcu, rst := 0, 0
	for my := 0; my < mcusY; my++ {
		for mx := 0; mx < mcusX; mx++ {
			if d.restart > 0 && mcu > 0 && mcu%d.restart == 0 {
				if err := d.restartInterval(sc, rst); err != nil {
					return err
				}
				rst = (rst + 1) & 7
			}
			mcu++
			for _, ci := range sc.comps {
				c := &d.comps[ci]
				if single {
					if err := block(c, mx, my, n); err != nil {
						return err
					}
					continue
				}
				for v := 0; v < c.v; v++ {
					for h := 0; h < c.h; h++ {
						if err := block(c, mx*c.h+h, my*c.v+v, n); err != nil {
							return err
						}
					}
				}
			}
		}
		if d.br.overrun() {
			return d.br.overrunError()
		}
	}
	if d.br.overrun() {
		return d.br.overrunError()
	}
	d.br.reset()
	return nil
}

// restartInterval ends an interval: the bits left pad the last byte, then RSTn (n counting 0–7)
// must follow; DC predictions and end-of-band runs start again.
func (d *decoder) restartInterval(sc *scanHeader, n int) error {
	br := &d.br
	if br.overrun() {
		return br.overrunError()
	}
	br.reset()
	p := br.pos
	if p+1 >= len(d.data) {
		return errTruncated
	}
	if d.data[p] != 0xFF || d.data[p+1] != markerRST0+byte(n) {
		// Decoders resynchronise on damaged restart markers each in their own way: image/jpeg judges.
		return unsupported("restart marker RST%d missing or out of place", n)
	}
	br.pos, br.atMarker = p+2, false
	for _, ci := range sc.comps {
		d.comps[ci].pred = 0
	}
	d.eobrun = 0
	return nil
}

// sequentialBlock decodes one block of a sequential scan (T.81 F.2.2) and writes its scaled
// inverse DCT to the component's plane: coefficients go straight into the folded grid.
//
// The AC loop is the decoder's hottest: it keeps the bit accumulator in locals (a field of d
// would go through memory at every code, on the loop's critical path) and refills them with
// refill; anything rarer goes through br, synced around it.
func (d *decoder) sequentialBlock(c *component, bx, by, n int) error {
	br := &d.br
	if br.n < 32 {
		br.fill()
	}
	s, err := br.decode(c.dc)
	if err != nil {
		return err
	}
	if s > 16 {
		return unsupported("DC difference of %d bits", s)
	}
	c.pred += extend(br.bits(uint(s)), uint(s))
	g := &d.block
	f := &c.fold
	edge := d.scale != Full && c.onEdge(bx, by)
	if edge {
		f = &c.full
		clear(g[:])
	} else {
		clear(g[:n*n+1])
	}
	g[0] = c.pred * f.weight[0]
	acFast := &c.ac.acFast
	acc, nbits := br.acc, br.n
	for k := uint(1); k < 64; {
		if nbits < 32 {
			acc, nbits = br.refill(acc, nbits)
		}
		if e := acFast[acc>>(64-lookBits)]; e != 0 {
			if nk := k + uint(e>>8)&0xFF; nk <= 63 {
				l := uint(e & 0xFF)
				acc <<= l
				nbits -= l
				g[f.slot[nk]] += (e >> 16) * f.weight[nk]
				k = nk + 1
				continue
			}
			if e>>8 == endOfBlock {
				l := uint(e & 0xFF)
				acc <<= l
				nbits -= l
				break
			}
		}
		br.acc, br.n = acc, nbits
		rs, err := br.decode(c.ac)
		if err != nil {
			return err
		}
		r, s := uint(rs>>4), uint(rs&15)
		if s == 0 {
			switch r {
			case 0:
				return d.finishBlock(c, g, bx, by, n, edge)
			case 15:
				k += 16
				acc, nbits = br.acc, br.n
				continue
			}
			// An end-of-band run belongs to progressive scans; image/jpeg reads it here too, so it judges.
			return unsupported("end-of-band run in a sequential scan")
		}
		k += r
		if k > 63 {
			// A run past the block's end: image/jpeg (the reference for which damaged files fail) ends
			// the block there without reading the value, and so does this decoder.
			return d.finishBlock(c, g, bx, by, n, edge)
		}
		g[f.slot[k]] += extend(br.bits(s), s) * f.weight[k]
		k++
		acc, nbits = br.acc, br.n
	}
	br.acc, br.n = acc, nbits // every way out of the loop to here leaves the locals current
	return d.finishBlock(c, g, bx, by, n, edge)
}

// finishBlock writes the block's scaled inverse DCT to the component's plane.
func (d *decoder) finishBlock(c *component, g *[65]int32, bx, by, n int, edge bool) error {
	stride := c.gw * n
	dst := c.plane[by*n*stride+bx*n:]
	if edge {
		idctEdge(g, dst, stride, d.scale, c.realW-8*bx, c.realH-8*by)
	} else {
		idctFor(d.scale)(g, dst, stride)
	}
	return nil
}

// onEdge is true for a block reaching past the component's real samples.
func (c *component) onEdge(bx, by int) bool { return 8*bx+8 > c.realW || 8*by+8 > c.realH }
