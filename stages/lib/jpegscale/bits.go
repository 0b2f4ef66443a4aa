package jpegscale

import "encoding/binary"

// bitReader reads a scan's entropy-coded data most significant bit first, from a 64-bit
// accumulator refilled eight bytes at a time where no 0xFF byte needs unstuffing. At a marker (or
// the end of the data) it stops and supplies zero bits, counting them: a scan that needs bits
// beyond its data is then told from one that ends cleanly, without a check per bit.
type bitReader struct {
	data []byte
	pos  int    // next byte of data to load
	acc  uint64 // unread bits, left-aligned; below them only zeros
	n    uint   // how many bits of acc are unread
	// padding is how many of the bits loaded so far were zeros supplied past the data's end or a
	// marker; they come after every real bit, so padding > n means some were consumed.
	padding  uint
	atMarker bool // pos is at a marker (0xFF not followed by 0x00)
}

// ffBytes is true when some byte of w is 0xFF (the classic "has a zero byte" test on ^w).
func ffBytes(w uint64) bool {
	x := ^w
	return (x-0x0101010101010101)&^x&0x8080808080808080 != 0
}

// fill tops the accumulator up to at least 57 bits.
func (br *bitReader) fill() {
	for br.n <= 56 {
		if br.pos+8 <= len(br.data) && !br.atMarker {
			w := binary.BigEndian.Uint64(br.data[br.pos:])
			if !ffBytes(w) {
				k := (64 - br.n) >> 3 // whole bytes that fit
				keep := 64 - br.n - 8*k
				br.acc |= (w >> br.n) &^ (1<<keep - 1)
				br.pos += int(k)
				br.n += 8 * k
				return
			}
		}
		br.fillByte()
	}
}

// refill is fill for a caller that holds the accumulator in locals (acc, n): it returns them
// topped up, taking the common case (no 0xFF in the next eight bytes) itself.
func (br *bitReader) refill(acc uint64, n uint) (uint64, uint) {
	if br.pos+8 <= len(br.data) && !br.atMarker {
		if w := binary.BigEndian.Uint64(br.data[br.pos:]); !ffBytes(w) {
			whole := (64 - n) >> 3 // as many whole bytes as fit
			acc |= (w >> n) &^ (1<<(64-n-8*whole) - 1)
			br.pos += int(whole)
			return acc, n + 8*whole
		}
	}
	br.acc, br.n = acc, n
	br.fill()
	return br.acc, br.n
}

// fillByte loads one byte, unstuffing FF 00; at a marker or the end it loads a zero byte.
func (br *bitReader) fillByte() {
	var b byte
	switch {
	case br.atMarker || br.pos >= len(br.data):
		br.padding += 8
	case br.data[br.pos] != 0xFF:
		b = br.data[br.pos]
		br.pos++
	case br.pos+1 < len(br.data) && br.data[br.pos+1] == 0x00:
		b = 0xFF
		br.pos += 2
	default:
		br.atMarker = true
		br.padding += 8
	}
	br.acc |= uint64(b) << (56 - br.n)
	br.n += 8
}

// bits reads n ≤ 16 bits as an unsigned number; the caller has filled the accumulator.
func (br *bitReader) bits(n uint) uint32 {
	v := uint32(br.acc >> (64 - n))
	if n == 0 {
		v = 0
	}
	br.acc <<= n
	br.n -= n
	return v
}

// bit reads one bit.
func (br *bitReader) bit() bool {
	if br.n == 0 {
		br.fill()
	}
	v := br.acc >> 63
	br.acc <<= 1
	br.n--
	return v != 0
}

// overrun tells whether a zero bit supplied past the data has been consumed.
func (br *bitReader) overrun() bool { return br.padding > br.n }

// overrunError says why a scan that ran past its data failed.
func (br *bitReader) overrunError() error {
	if br.pos >= len(br.data) {
		return errTruncated
	}
	return FormatError("scan data ends before the scan does (missing 0xFF00 sequence)")
}

// reset drops the buffered bits at the end of a restart interval or scan: the next marker follows.
// It returns how many whole bytes had been read ahead of it, data the scan did not need.
func (br *bitReader) reset() (unread int) {
	real := int(br.n) - int(br.padding)
	br.acc, br.n, br.padding = 0, 0, 0
	if real > 0 {
		return real / 8
	}
	return 0
}

// extend turns the s-bit magnitude category value v into the signed coefficient it codes (T.81 F.2.2.1).
func extend(v uint32, s uint) int32 {
	if s == 0 {
		return 0
	}
	if v < 1<<(s-1) {
		return int32(v) - int32(1<<s) + 1
	}
	return int32(v)
}
