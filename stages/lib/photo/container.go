package photo

import "encoding/binary"

// jpegSegments calls fn with each marker segment of a JPEG before its first scan (where EXIF,
// ICC and the frame header live); fn returns false to stop.
func jpegSegments(data []byte, fn func(marker byte, payload []byte) bool) {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return
	}
	i := 2
	for i+4 <= len(data) {
		if data[i] != 0xFF {
			return
		}
		marker := data[i+1]
		if marker == 0xFF { // fill byte
			i++
			continue
		}
		if marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01 {
			i += 2
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan / end: no header after this
			return
		}
		n := int(binary.BigEndian.Uint16(data[i+2 : i+4]))
		if n < 2 || i+2+n > len(data) {
			return
		}
		if !fn(marker, data[i+4:i+2+n]) {
			return
		}
		i += 2 + n
	}
}

// jpegEXIF returns the TIFF block of a JPEG's EXIF APP1 segment, nil if none.
func jpegEXIF(data []byte) []byte {
	var tiff []byte
	jpegSegments(data, func(marker byte, seg []byte) bool {
		if marker == 0xE1 && len(seg) >= 6 && string(seg[0:6]) == "Exif\x00\x00" {
			tiff = seg[6:]
			return false
		}
		return true
	})
	return tiff
}

// jpegICC reassembles an ICC profile split over APP2 "ICC_PROFILE" segments (each carries its
// sequence number and the count); nil when absent or incomplete.
func jpegICC(data []byte) []byte {
	const tag = "ICC_PROFILE\x00"
	var parts [][]byte
	total := 0
	jpegSegments(data, func(marker byte, seg []byte) bool {
		if marker != 0xE2 || len(seg) < len(tag)+2 || string(seg[:len(tag)]) != tag {
			return true
		}
		seq, count := int(seg[len(tag)]), int(seg[len(tag)+1])
		if count == 0 || seq == 0 || seq > count {
			return true
		}
		if parts == nil {
			parts = make([][]byte, count)
		}
		if count == len(parts) && parts[seq-1] == nil {
			parts[seq-1] = seg[len(tag)+2:]
			total += len(parts[seq-1])
		}
		return true
	})
	if parts == nil {
		return nil
	}
	out := make([]byte, 0, total)
	for _, p := range parts {
		if p == nil {
			return nil
		}
		out = append(out, p...)
	}
	return out
}

// pngChunk returns the body of the first chunk of type typ, nil if none. Chunks that must precede
// the image data (iCCP) are not looked for after it (beforeIDAT); eXIf may come anywhere.
func pngChunk(data []byte, typ string, beforeIDAT bool) []byte {
	i := 8
	for i+12 <= len(data) {
		n := int(binary.BigEndian.Uint32(data[i : i+4]))
		t := string(data[i+4 : i+8])
		if n < 0 || i+12+n > len(data) || t == "IEND" || (beforeIDAT && t == "IDAT") {
			return nil
		}
		if t == typ {
			return data[i+8 : i+8+n]
		}
		i += 12 + n
	}
	return nil
}

// webpChunk returns the body of a WebP file's first chunk with the given FourCC, nil if none.
func webpChunk(data []byte, id string) []byte {
	if len(data) < 12 {
		return nil
	}
	i := 12
	for i+8 <= len(data) {
		n := int(binary.LittleEndian.Uint32(data[i+4 : i+8]))
		if n < 0 || i+8+n > len(data) {
			return nil
		}
		if string(data[i:i+4]) == id {
			return data[i+8 : i+8+n]
		}
		i += 8 + n + n%2
	}
	return nil
}
