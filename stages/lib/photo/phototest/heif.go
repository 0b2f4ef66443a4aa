package phototest

import (
	"encoding/binary"
	"fmt"
)

// Property is one HEIF item property box, as WithProperties adds it to the primary image.
type Property []byte

// Irot turns the image by quarter turns anticlockwise.
func Irot(quarters int) Property { return box("irot", []byte{byte(quarters & 3)}) }

// Imir mirrors it: mode 0 top to bottom (about the horizontal axis), 1 left to right.
func Imir(mode int) Property { return box("imir", []byte{byte(mode & 1)}) }

// NCLX is a colr box of type nclx (H.273 code points).
func NCLX(primaries, transfer, matrix uint16, full bool) Property {
	b := []byte("nclx")
	b = binary.BigEndian.AppendUint16(b, primaries)
	b = binary.BigEndian.AppendUint16(b, transfer)
	b = binary.BigEndian.AppendUint16(b, matrix)
	if full {
		return box("colr", append(b, 0x80))
	}
	return box("colr", append(b, 0))
}

// WithProperties returns a HEIC or AVIF file (laid out as heif-enc writes it: ftyp, meta, then
// mdat) whose primary image also has the given properties, in that order: they are appended to
// ipco, associated with the primary item in ipma, the boxes around them grown, and every iloc
// offset into the media data moved by the bytes added. heif-enc 1.15 writes neither irot nor
// imir, and no nclx for PNG input.
func WithProperties(file []byte, ps ...Property) ([]byte, error) {
	metaAt, metaLen, err := topBox(file, "meta")
	if err != nil {
		return nil, err
	}
	meta := file[metaAt : metaAt+metaLen]
	var props []byte
	for _, p := range ps {
		props = append(props, p...)
	}
	primary, err := primaryItem(meta)
	if err != nil {
		return nil, err
	}
	newMeta, err := rewriteMeta(meta, props, len(ps), primary)
	if err != nil {
		return nil, err
	}
	delta := len(newMeta) - len(meta)
	newMeta, err = shiftIloc(newMeta, delta, metaAt+metaLen)
	if err != nil {
		return nil, err
	}
	out := append([]byte{}, file[:metaAt]...)
	out = append(out, newMeta...)
	return append(out, file[metaAt+metaLen:]...), nil
}

func box(typ string, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	return append(append(b, typ...), body...)
}

// topBox finds a top-level box: its offset and length, header included.
func topBox(file []byte, typ string) (int, int, error) {
	for i := 0; i+8 <= len(file); {
		n := int(binary.BigEndian.Uint32(file[i:]))
		if n < 8 || i+n > len(file) {
			break
		}
		if string(file[i+4:i+8]) == typ {
			return i, n, nil
		}
		i += n
	}
	return 0, 0, fmt.Errorf("no %s box", typ)
}

// children calls fn with each child box of body (offset within body, length, type).
func children(body []byte, fn func(at, n int, typ string)) {
	for i := 0; i+8 <= len(body); {
		n := int(binary.BigEndian.Uint32(body[i:]))
		if n < 8 || i+n > len(body) {
			return
		}
		fn(i, n, string(body[i+4:i+8]))
		i += n
	}
}

func primaryItem(meta []byte) (uint32, error) {
	var id uint32
	found := false
	children(meta[12:], func(at, n int, typ string) {
		b := meta[12+at : 12+at+n]
		if typ == "pitm" && n >= 14 {
			id, found = uint32(binary.BigEndian.Uint16(b[12:14])), true
		}
	})
	if !found {
		return 0, fmt.Errorf("no pitm")
	}
	return id, nil
}

// rewriteMeta rebuilds meta with props appended to ipco and their indices added to the
// primary item's ipma entry.
func rewriteMeta(meta, props []byte, count int, primary uint32) ([]byte, error) {
	var out []byte
	out = append(out, meta[8:12]...) // version and flags
	var err error
	children(meta[12:], func(at, n int, typ string) {
		b := meta[12+at : 12+at+n]
		if typ != "iprp" {
			out = append(out, b...)
			return
		}
		var iprp []byte
		ipcoCount := 0
		children(b[8:], func(at, n int, typ string) {
			if typ == "ipco" {
				children(b[8+at+8:8+at+n], func(int, int, string) { ipcoCount++ })
			}
		})
		children(b[8:], func(at, n int, typ string) {
			c := b[8+at : 8+at+n]
			switch typ {
			case "ipco":
				iprp = append(iprp, box("ipco", append(append([]byte{}, c[8:]...), props...))...)
			case "ipma":
				var body []byte
				body, err = addAssociations(c[8:], primary, ipcoCount, count)
				iprp = append(iprp, box("ipma", body)...)
			default:
				iprp = append(iprp, c...)
			}
		})
		out = append(out, box("iprp", iprp)...)
	})
	if err != nil {
		return nil, err
	}
	return box("meta", out), nil
}

func addAssociations(ipma []byte, primary uint32, first, count int) ([]byte, error) {
	version, flags := ipma[0], ipma[3]
	out := append([]byte{}, ipma[:8]...)
	n := binary.BigEndian.Uint32(ipma[4:8])
	b := ipma[8:]
	width := 1
	if flags&1 == 1 {
		width = 2
	}
	for e := uint32(0); e < n; e++ {
		idLen := 2
		if version >= 1 {
			idLen = 4
		}
		var id uint32
		if idLen == 2 {
			id = uint32(binary.BigEndian.Uint16(b))
		} else {
			id = binary.BigEndian.Uint32(b)
		}
		k := int(b[idLen])
		entry := b[:idLen+1+k*width]
		b = b[len(entry):]
		if id != primary {
			out = append(out, entry...)
			continue
		}
		out = append(out, entry[:idLen]...)
		out = append(out, byte(k+count))
		out = append(out, entry[idLen+1:]...)
		for i := 0; i < count; i++ {
			idx := first + 1 + i // 1-based, after the existing properties
			if width == 2 {
				out = binary.BigEndian.AppendUint16(out, uint16(idx)|0x8000) // essential
			} else {
				out = append(out, byte(idx)|0x80)
			}
		}
	}
	return out, nil
}

// shiftIloc moves every file offset in iloc that points at or past end by delta.
func shiftIloc(meta []byte, delta, end int) ([]byte, error) {
	var err error
	children(meta[12:], func(at, n int, typ string) {
		if typ != "iloc" {
			return
		}
		err = shiftLocations(meta[12+at+8:12+at+n], delta, end)
	})
	return meta, err
}

func shiftLocations(b []byte, delta, end int) error {
	version := b[0]
	offSize, lenSize := int(b[4]>>4), int(b[4]&15)
	baseSize, idxSize := int(b[5]>>4), int(b[5]&15)
	if version == 0 {
		idxSize = 0
	}
	p := 6
	var count int
	if version < 2 {
		count, p = int(binary.BigEndian.Uint16(b[p:])), p+2
	} else {
		count, p = int(binary.BigEndian.Uint32(b[p:])), p+4
	}
	// shift moves an offset of size bytes at b[at:] that points at or past end; it reports whether
	// it did.
	shift := func(at, size int) bool {
		switch size {
		case 4:
			if v := int(binary.BigEndian.Uint32(b[at:])); v >= end {
				binary.BigEndian.PutUint32(b[at:], uint32(v+delta))
				return true
			}
		case 8:
			if v := int(binary.BigEndian.Uint64(b[at:])); v >= end {
				binary.BigEndian.PutUint64(b[at:], uint64(v+delta))
				return true
			}
		}
		return false
	}
	for i := 0; i < count; i++ {
		if version < 2 {
			p += 2
		} else {
			p += 4
		}
		method := 0
		if version >= 1 {
			method = int(binary.BigEndian.Uint16(b[p:]) & 15)
			p += 2
		}
		p += 2 // data_reference_index
		// Extents are relative to the base offset: move the base when it points into the media
		// data, else the extents themselves.
		baseMoved := method == 0 && shift(p, baseSize)
		p += baseSize
		extents := int(binary.BigEndian.Uint16(b[p:]))
		p += 2
		for e := 0; e < extents; e++ {
			p += idxSize
			if method == 0 && !baseMoved {
				shift(p, offSize)
			}
			p += offSize + lenSize
		}
	}
	if p > len(b) {
		return fmt.Errorf("malformed iloc")
	}
	return nil
}
