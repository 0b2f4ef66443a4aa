package imagecheck

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// sniff names the format of a file from its first bytes, whatever the file is called: a PNG named
// .jpg still decodes, a text file named .jpg is rejected for what it is.
func sniff(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0xFF, 0xD8, 0xFF}):
		return "jpeg"
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return "webp"
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return "gif"
	case bytes.HasPrefix(head, []byte("II*\x00")), bytes.HasPrefix(head, []byte("MM\x00*")):
		return "tiff"
	case bytes.HasPrefix(head, []byte("BM")) && len(head) >= 14:
		return "bmp"
	case len(head) >= 12 && string(head[4:8]) == "ftyp":
		return isoBrand(head)
	case looksLikeText(head):
		return "text"
	}
	return "unknown"
}

// isoBrand tells HEIC/HEIF from AVIF: both are ISO-BMFF files whose ftyp box lists brands.
func isoBrand(head []byte) string {
	size := int(binary.BigEndian.Uint32(head[0:4]))
	if size < 16 || size > len(head) {
		size = len(head)
	}
	brands := []string{string(head[8:12])}
	for i := 16; i+4 <= size; i += 4 {
		brands = append(brands, string(head[i:i+4]))
	}
	for _, b := range brands {
		if b == "avif" || b == "avis" {
			return "avif"
		}
	}
	for _, b := range brands {
		switch b {
		case "heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1":
			return "heic"
		}
	}
	return "unknown"
}

// looksLikeText is true for valid UTF-8 without control bytes other than whitespace.
func looksLikeText(head []byte) bool {
	if len(head) == 0 || !utf8.Valid(trimPartialRune(head)) {
		return false
	}
	for _, c := range head {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' {
			return false
		}
	}
	return true
}

// trimPartialRune drops a rune cut off by the end of a sniffed prefix.
func trimPartialRune(b []byte) []byte {
	for i := 0; i < 3 && len(b) > 0; i++ {
		if utf8.Valid(b) {
			return b
		}
		b = b[:len(b)-1]
	}
	return b
}

// unsupportedReason says why a detected format is refused and what to do instead.
func unsupportedReason(format string) string {
	switch format {
	case "heic":
		return "HEIC/HEIF is not supported: export as JPEG (iPhone: Settings > Camera > Formats > Most Compatible)"
	case "avif":
		return "AVIF is not supported: export as JPEG or PNG"
	case "gif":
		return "GIF is not supported (256 colours, often animated): export the photo as JPEG"
	case "tiff":
		return "TIFF is not supported: export as JPEG"
	case "bmp":
		return "BMP is not supported: export as JPEG or PNG"
	case "text":
		return "not an image: the file contains text (its name claims an image format)"
	}
	return "not a JPEG, PNG or WebP image (unrecognised content): re-export the photo as JPEG"
}

// jpegOrientation reads the EXIF orientation (1–8) from a JPEG's APP1 segment; 1 when absent or
// unreadable, since a broken EXIF block must not reject an otherwise good photo.
func jpegOrientation(data []byte) int {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 1
	}
	i := 2
	for i+4 <= len(data) {
		if data[i] != 0xFF {
			return 1
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
		if marker == 0xDA || marker == 0xD9 { // start of scan / end: no EXIF before the image data
			return 1
		}
		n := int(binary.BigEndian.Uint16(data[i+2 : i+4]))
		if n < 2 || i+2+n > len(data) {
			return 1
		}
		seg := data[i+4 : i+2+n]
		if marker == 0xE1 && len(seg) >= 6 && string(seg[0:6]) == "Exif\x00\x00" {
			return tiffOrientation(seg[6:])
		}
		i += 2 + n
	}
	return 1
}

// tiffOrientation finds tag 0x0112 in IFD0 of a TIFF-structured EXIF block.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[0:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:4]) != 42 {
		return 1
	}
	off := int(bo.Uint32(t[4:8]))
	if off < 8 || off+2 > len(t) {
		return 1
	}
	count := int(bo.Uint16(t[off : off+2]))
	for k := 0; k < count; k++ {
		e := off + 2 + 12*k
		if e+12 > len(t) {
			return 1
		}
		if bo.Uint16(t[e:e+2]) != 0x0112 {
			continue
		}
		typ := bo.Uint16(t[e+2 : e+4])
		var v int
		switch typ {
		case 3: // SHORT
			v = int(bo.Uint16(t[e+8 : e+10]))
		case 4: // LONG
			v = int(bo.Uint32(t[e+8 : e+12]))
		default:
			return 1
		}
		if v < 1 || v > 8 {
			return 1
		}
		return v
	}
	return 1
}

// webpOrientation reads the orientation from a WebP file's EXIF chunk (extended format), 1 if none.
func webpOrientation(data []byte) int {
	if len(data) < 12 {
		return 1
	}
	i := 12
	for i+8 <= len(data) {
		id := string(data[i : i+4])
		n := int(binary.LittleEndian.Uint32(data[i+4 : i+8]))
		if n < 0 || i+8+n > len(data) {
			return 1
		}
		if id == "EXIF" {
			body := data[i+8 : i+8+n]
			if len(body) >= 6 && string(body[0:6]) == "Exif\x00\x00" {
				body = body[6:]
			}
			return tiffOrientation(body)
		}
		i += 8 + n + n%2
	}
	return 1
}

// pngOrientation reads the orientation from a PNG's eXIf chunk (1 if none): phones that save
// screenshots or edits as PNG keep the camera's orientation there.
func pngOrientation(data []byte) int {
	i := 8
	for i+12 <= len(data) {
		n := int(binary.BigEndian.Uint32(data[i : i+4]))
		typ := string(data[i+4 : i+8])
		if n < 0 || i+12+n > len(data) || typ == "IEND" {
			return 1
		}
		if typ == "eXIf" {
			return tiffOrientation(data[i+8 : i+8+n])
		}
		i += 12 + n
	}
	return 1
}
