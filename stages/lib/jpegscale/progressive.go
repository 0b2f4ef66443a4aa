package jpegscale

// progressiveBlock returns the decoder of one block for a progressive scan's kind (T.81 G.1.2):
// DC first or refining, AC first or refining. Coefficients are kept until EOI, when reconstruct
// transforms them.
func (d *decoder) progressiveBlock(sc *scanHeader) func(c *component, bx, by, n int) error {
	coef := func(c *component, bx, by int) []int16 {
		i := 64 * (by*c.gw + bx)
		return c.coef[i : i+64 : i+64]
	}
	switch {
	case sc.ss == 0 && sc.ah == 0:
		return func(c *component, bx, by, _ int) error { return d.dcFirst(c, coef(c, bx, by), sc.al) }
	case sc.ss == 0:
		return func(c *component, bx, by, _ int) error {
			if d.br.bit() {
				coef(c, bx, by)[0] |= 1 << sc.al
			}
			return nil
		}
	case sc.ah == 0:
		return func(c *component, bx, by, _ int) error { return d.acFirst(c, coef(c, bx, by), sc) }
	}
	return func(c *component, bx, by, _ int) error { return d.acRefine(c, coef(c, bx, by), sc) }
}

// dcFirst decodes a DC difference, scaled by 2^al (G.1.2.1).
func (d *decoder) dcFirst(c *component, coef []int16, al int) error {
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
	coef[0] = int16(c.pred << al)
	return nil
}

// acFirst decodes the first pass over a band of AC coefficients, with end-of-band runs (G.1.2.2).
func (d *decoder) acFirst(c *component, coef []int16, sc *scanHeader) error {
	if d.eobrun > 0 {
		d.eobrun--
		return nil
	}
	br := &d.br
	for k := sc.ss; k <= sc.se; {
		if br.n < 32 {
			br.fill()
		}
		rs, err := br.decode(c.ac)
		if err != nil {
			return err
		}
		r, s := int(rs>>4), uint(rs&15)
		if s == 0 {
			if r == 15 {
				k += 16
				continue
			}
			d.eobrun = 1<<r - 1
			if r > 0 {
				d.eobrun += int(br.bits(uint(r)))
			}
			return nil
		}
		k += r
		if k > sc.se {
			return nil // a run past the band's end ends the block, as in sequentialBlock
		}
		coef[k] = int16(extend(br.bits(s), s) << sc.al)
		k++
	}
	return nil
}

// acRefine decodes a refining pass over a band (G.1.2.3): one more bit of every coefficient
// already non-zero, and newly non-zero coefficients of magnitude 2^al placed among the zeros.
func (d *decoder) acRefine(c *component, coef []int16, sc *scanHeader) error {
	br := &d.br
	plus, minus := int16(1)<<sc.al, int16(-1)<<sc.al
	k := sc.ss
	if d.eobrun == 0 {
	band:
		for k <= sc.se {
			if br.n < 32 {
				br.fill()
			}
			rs, err := br.decode(c.ac)
			if err != nil {
				return err
			}
			r, s := int(rs>>4), rs&15
			var value int16
			switch {
			case s == 1:
				value = minus
				if br.bit() {
					value = plus
				}
			case s != 0:
				return FormatError("bad refinement coefficient size")
			case r != 15:
				d.eobrun = 1 << r
				if r > 0 {
					d.eobrun += int(br.bits(uint(r)))
				}
				break band
			}
			// Pass r coefficients still zero (refining the non-zero ones on the way); the next zero one
			// takes the value. A ZRL (r = 15, no value) passes 16 zeros.
			placed := false
			for ; k <= sc.se && !placed; k++ {
				if coef[k] != 0 {
					refineBit(br, &coef[k], plus, minus)
					continue
				}
				if r == 0 {
					if value != 0 {
						coef[k] = value
					}
					placed = true
					continue
				}
				r--
			}
			if !placed {
				// A run past the band's end: image/jpeg fails some of these and not others, so it judges.
				return unsupported("refinement run past the end of its band")
			}
		}
	}
	if d.eobrun > 0 {
		for ; k <= sc.se; k++ {
			if coef[k] != 0 {
				refineBit(br, &coef[k], plus, minus)
			}
		}
		d.eobrun--
	}
	return nil
}

// refineBit adds the next correction bit to a coefficient already non-zero, away from zero.
func refineBit(br *bitReader, v *int16, plus, minus int16) {
	if br.bit() && *v&plus == 0 {
		if *v >= 0 {
			*v += plus
		} else {
			*v += minus
		}
	}
}

// reconstruct transforms the kept coefficients of every component at the decode's scale, reading
// only the coefficients that reach the output.
func (d *decoder) reconstruct() {
	n := d.scale.blockSide()
	idct := idctFor(d.scale)
	g := &d.block
	for i := range d.comps {
		c := &d.comps[i]
		if c.coef == nil {
			continue
		}
		f := newFold(&d.quant[c.tq], d.scale)
		full := newFold(&d.quant[c.tq], Full)
		var used []int
		for k := 0; k < 64; k++ {
			if f.weight[k] != 0 {
				used = append(used, k)
			}
		}
		stride := c.gw * n
		c.plane = make([]uint8, stride*c.gh*n)
		for by := 0; by < c.gh; by++ {
			for bx := 0; bx < c.gw; bx++ {
				coef := c.coef[64*(by*c.gw+bx):][:64]
				dst := c.plane[by*n*stride+bx*n:]
				if d.scale != Full && c.onEdge(bx, by) {
					clear(g[:])
					for k, v := range coef {
						g[full.slot[k]] += int32(v) * full.weight[k]
					}
					idctEdge(g, dst, stride, d.scale, c.realW-8*bx, c.realH-8*by)
					continue
				}
				clear(g[:n*n+1])
				for _, k := range used {
					g[f.slot[k]] += int32(coef[k]) * f.weight[k]
				}
				idct(g, dst, stride)
			}
		}
		c.coef = nil
	}
}
