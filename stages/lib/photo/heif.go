package photo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// heifInfo is what the ISO-BMFF container of a HEIC or AVIF file says about its primary image,
// read from the meta box alone: nothing is decoded.
type heifInfo struct {
	// Width and Height are the coded size (ispe), before the transforms.
	Width, Height int
	// Transform is the net effect of the primary item's irot and imir properties, in the order
	// its ipma lists them, expressed as an EXIF orientation.
	Transform Orientation
	// NCLX is the colr box of type nclx, if any; ICC the profile of a colr prof/rICC box.
	NCLX *nclx
	ICC  []byte
}

// nclx is H.273 colour signalling: which primaries, transfer curve and YCbCr matrix.
type nclx struct {
	Primaries, Transfer, Matrix uint16
	FullRange                   bool
}

const (
	maxMetaBox = 16 << 20 // a meta box is item tables and properties: kilobytes, not megabytes
	maxBoxes   = 4096     // top-level or nested boxes worth walking before calling the file corrupt
)

var errNoMeta = errors.New("no meta box")

// readHEIFInfo walks the top-level boxes of r up to the meta box and parses it. Media data before
// the meta box is skipped (by seeking when r can), never held.
func readHEIFInfo(r io.Reader) (heifInfo, error) {
	for n := 0; n < maxBoxes; n++ {
		typ, body, err := nextTopBox(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return heifInfo{}, errNoMeta
			}
			return heifInfo{}, err
		}
		if typ == "meta" {
			return parseMeta(body)
		}
	}
	return heifInfo{}, errNoMeta
}

// nextTopBox reads one top-level box header; it returns the body of a meta box and skips others.
func nextTopBox(r io.Reader) (string, []byte, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:8]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return "", nil, io.ErrUnexpectedEOF
		}
		return "", nil, err
	}
	size := uint64(binary.BigEndian.Uint32(hdr[0:4]))
	typ := string(hdr[4:8])
	head := uint64(8)
	if size == 1 {
		if _, err := io.ReadFull(r, hdr[8:16]); err != nil {
			return "", nil, io.ErrUnexpectedEOF
		}
		size, head = binary.BigEndian.Uint64(hdr[8:16]), 16
	}
	if size == 0 { // to the end of the file: only media data does that
		if typ == "meta" {
			return "", nil, fmt.Errorf("meta box without a size")
		}
		return "", nil, io.EOF
	}
	if size < head {
		return "", nil, fmt.Errorf("box %q of %d bytes", typ, size)
	}
	body := size - head
	if typ == "meta" {
		if body > maxMetaBox {
			return "", nil, fmt.Errorf("meta box of %d bytes", body)
		}
		b := make([]byte, body)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", nil, io.ErrUnexpectedEOF
		}
		return typ, b, nil
	}
	return typ, nil, skip(r, int64(body))
}

func skip(r io.Reader, n int64) error {
	if n < 0 {
		return fmt.Errorf("box too large")
	}
	if s, ok := r.(interface{ Skip(int64) error }); ok {
		return s.Skip(n)
	}
	if s, ok := r.(io.Seeker); ok {
		_, err := s.Seek(n, io.SeekCurrent)
		return err
	}
	if m, err := io.CopyN(io.Discard, r, n); err != nil || m != n {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// boxes splits a byte range into child boxes.
func boxes(b []byte, fn func(typ string, body []byte) error) error {
	for n := 0; len(b) > 0; n++ {
		if n >= maxBoxes || len(b) < 8 {
			return fmt.Errorf("malformed box list")
		}
		size := uint64(binary.BigEndian.Uint32(b[0:4]))
		typ := string(b[4:8])
		head := uint64(8)
		switch size {
		case 0:
			size = uint64(len(b))
		case 1:
			if len(b) < 16 {
				return fmt.Errorf("malformed box %q", typ)
			}
			size, head = binary.BigEndian.Uint64(b[8:16]), 16
		}
		if size < head || size > uint64(len(b)) {
			return fmt.Errorf("box %q overruns its parent", typ)
		}
		if err := fn(typ, b[head:size]); err != nil {
			return err
		}
		b = b[size:]
	}
	return nil
}

type property struct {
	typ  string
	body []byte
}

// parseMeta finds the primary item and its properties: ispe, irot, imir, colr.
func parseMeta(meta []byte) (heifInfo, error) {
	if len(meta) < 4 {
		return heifInfo{}, fmt.Errorf("short meta box")
	}
	var primary uint32
	var ipco []property // in order: ipma refers to them by 1-based index
	var ipma []byte
	var ipmaFlags uint32
	var ipmaVersion byte
	havePrimary := false
	err := boxes(meta[4:], func(typ string, body []byte) error {
		switch typ {
		case "pitm":
			if len(body) < 6 {
				return fmt.Errorf("short pitm box")
			}
			if body[0] == 0 {
				primary = uint32(binary.BigEndian.Uint16(body[4:6]))
			} else if len(body) >= 8 {
				primary = binary.BigEndian.Uint32(body[4:8])
			}
			havePrimary = true
		case "iprp":
			return boxes(body, func(typ string, body []byte) error {
				switch typ {
				case "ipco":
					return boxes(body, func(typ string, body []byte) error {
						ipco = append(ipco, property{typ, body})
						return nil
					})
				case "ipma":
					if ipma == nil && len(body) >= 8 {
						ipmaVersion = body[0]
						ipmaFlags = binary.BigEndian.Uint32(body[0:4]) & 0xFFFFFF
						ipma = body[4:]
					}
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return heifInfo{}, err
	}
	if !havePrimary {
		return heifInfo{}, fmt.Errorf("no primary item (pitm)")
	}
	props, err := associations(ipma, ipmaVersion, ipmaFlags, primary)
	if err != nil {
		return heifInfo{}, err
	}
	info := heifInfo{Transform: Upright}
	haveSize := false
	for _, idx := range props {
		if idx == 0 || int(idx) > len(ipco) {
			continue // 0 means "no property"; an index past ipco is ignored as libheif does
		}
		p := ipco[idx-1]
		body := p.body
		switch p.typ {
		case "ispe":
			if len(body) >= 12 {
				info.Width = int(binary.BigEndian.Uint32(body[4:8]))
				info.Height = int(binary.BigEndian.Uint32(body[8:12]))
				haveSize = true
			}
		case "irot":
			if len(body) >= 1 {
				info.Transform = info.Transform.then(rotationCCW(int(body[0] & 3)))
			}
		case "imir":
			if len(body) >= 1 {
				// HEIF (ISO/IEC 23008-12 since its 2019 amendment, libheif, libavif): mode 0
				// mirrors about the horizontal axis (top and bottom swap), 1 about the vertical
				// axis (left and right swap). The 2017 text had the axes the other way round.
				m := Orientation(4)
				if body[0]&1 == 1 {
					m = 2
				}
				info.Transform = info.Transform.then(m)
			}
		case "colr":
			parseColr(&info, body)
		}
	}
	if !haveSize || info.Width <= 0 || info.Height <= 0 {
		return heifInfo{}, fmt.Errorf("the primary image has no size (ispe)")
	}
	return info, nil
}

// rotationCCW is irot's angle (quarter turns anticlockwise) as an orientation.
func rotationCCW(quarters int) Orientation {
	return [4]Orientation{1, 8, 3, 6}[quarters&3]
}

// associations returns the property indices (1-based into ipco) of one item, in ipma order.
func associations(b []byte, version byte, flags uint32, item uint32) ([]uint16, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("no item properties (ipma)")
	}
	count := binary.BigEndian.Uint32(b[0:4])
	b = b[4:]
	for e := uint32(0); e < count; e++ {
		var id uint32
		if version < 1 {
			if len(b) < 2 {
				return nil, fmt.Errorf("short ipma box")
			}
			id, b = uint32(binary.BigEndian.Uint16(b)), b[2:]
		} else {
			if len(b) < 4 {
				return nil, fmt.Errorf("short ipma box")
			}
			id, b = binary.BigEndian.Uint32(b), b[4:]
		}
		if len(b) < 1 {
			return nil, fmt.Errorf("short ipma box")
		}
		n := int(b[0])
		b = b[1:]
		width := 1
		if flags&1 == 1 {
			width = 2
		}
		if len(b) < n*width {
			return nil, fmt.Errorf("short ipma box")
		}
		var idx []uint16
		for k := 0; k < n; k++ {
			if width == 2 {
				idx = append(idx, binary.BigEndian.Uint16(b[2*k:])&0x7FFF)
			} else {
				idx = append(idx, uint16(b[k]&0x7F))
			}
		}
		b = b[n*width:]
		if id == item {
			return idx, nil
		}
	}
	return nil, fmt.Errorf("the primary item has no properties")
}

// parseColr keeps the first nclx and the first ICC profile: a file may carry one of each.
func parseColr(info *heifInfo, body []byte) {
	if len(body) < 4 {
		return
	}
	switch string(body[0:4]) {
	case "nclx":
		if info.NCLX == nil && len(body) >= 11 {
			info.NCLX = &nclx{
				Primaries: binary.BigEndian.Uint16(body[4:6]),
				Transfer:  binary.BigEndian.Uint16(body[6:8]),
				Matrix:    binary.BigEndian.Uint16(body[8:10]),
				FullRange: body[10]&0x80 != 0,
			}
		}
	case "prof", "rICC":
		if info.ICC == nil {
			info.ICC = body[4:]
		}
	}
}
