package jpegscale

// lookBits is how many bits the Huffman lookahead tables index: nearly every code of a photo's
// tables is at most 9 bits long, so one table read decodes it, and at 11 most AC codes of a
// detailed photo fit with their extra bits (acFast); 12 gains nothing more.
const lookBits = 11

// endOfBlock is the run acFast gives an EOB: past any block, so a decoder that does not look for
// it sees a run past the end.
const endOfBlock = 64

// huffTable is one Huffman table (T.81 C, F.2.2.3) with lookahead tables for fast decoding.
type huffTable struct {
	defined bool
	// fast maps the next lookBits bits to length<<8 | symbol for a code at most lookBits long;
	// 0 when the code is longer (or invalid).
	fast [1 << lookBits]uint16
	// acFast maps the next lookBits bits to a whole AC coefficient when its code and extra bits both
	// fit: value<<16 | run<<8 | total length; 0 otherwise. A ZRL is a zero after a run of 15; an
	// EOB has run endOfBlock.
	acFast    [1 << lookBits]int32
	maxCode   [18]int32 // largest code of each length (-1: none); maxCode[17] stops the search
	valOffset [17]int32 // symbol index of the code c of length l: c + valOffset[l]
	symbols   [256]uint8
}

// build fills the table from a DHT's 16 code counts and its symbols. Counts with more codes than
// their lengths allow leave the excess codes unreachable (image/jpeg accepts such tables too).
func (t *huffTable) build(counts [16]uint8, symbols []uint8, isAC bool) error {
	*t = huffTable{defined: true}
	copy(t.symbols[:], symbols)
	code, k := int32(0), int32(0)
	for l := 1; l <= 16; l++ {
		n := int32(counts[l-1])
		t.valOffset[l] = k - code
		if n == 0 {
			t.maxCode[l] = -1
		} else {
			t.maxCode[l] = code + n - 1
		}
		for i := int32(0); i < n; i++ {
			if l <= lookBits && code < 1<<l {
				t.fillFast(code, uint(l), symbols[k], isAC)
			}
			code++
			k++
		}
		code <<= 1
	}
	t.maxCode[17] = 1 << 30
	return nil
}

// fillFast enters the code c of length l (≤ lookBits) in the lookahead tables.
func (t *huffTable) fillFast(c int32, l uint, sym uint8, isAC bool) {
	spare := lookBits - l
	first := int(c) << spare
	for i := 0; i < 1<<spare; i++ {
		t.fast[first+i] = uint16(l)<<8 | uint16(sym)
	}
	if !isAC {
		return
	}
	run, size := uint(sym>>4), uint(sym&15)
	switch {
	case sym == 0x00: // EOB
		for i := 0; i < 1<<spare; i++ {
			t.acFast[first+i] = endOfBlock<<8 | int32(l)
		}
		return
	case sym == 0xF0: // ZRL: sixteen zeros, as a run of 15 and a coefficient of 0
		for i := 0; i < 1<<spare; i++ {
			t.acFast[first+i] = 15<<8 | int32(l)
		}
		return
	case size == 0 || l+size > lookBits:
		return
	}
	for i := 0; i < 1<<spare; i++ {
		extra := uint32(i>>(spare-size)) & (1<<size - 1)
		v := extend(extra, size)
		t.acFast[first+i] = v<<16 | int32(run)<<8 | int32(l+size)
	}
}

// decode reads one symbol; the caller has filled br to at least 16 bits.
func (br *bitReader) decode(t *huffTable) (uint8, error) {
	if e := t.fast[br.acc>>(64-lookBits)]; e != 0 {
		l := uint(e >> 8)
		br.acc <<= l
		br.n -= l
		return uint8(e), nil
	}
	return br.decodeSlow(t)
}

// decodeSlow reads a code longer than lookBits bit by bit, as T.81 F.2.2.3 does.
func (br *bitReader) decodeSlow(t *huffTable) (uint8, error) {
	if !t.defined {
		return 0, FormatError("uninitialized Huffman table")
	}
	for l := uint(lookBits + 1); l <= 16; l++ {
		c := int32(br.acc >> (64 - l))
		if c <= t.maxCode[l] {
			br.acc <<= l
			br.n -= l
			return t.symbols[(c+t.valOffset[l])&0xFF], nil
		}
	}
	return 0, FormatError("bad Huffman code")
}
