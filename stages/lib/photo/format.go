package photo

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// Format is what a file's content says it is, whatever the file is called.
type Format string

// The formats Sniff tells apart. JPEG, PNG, WebP, HEIC and AVIF are read; the others are named so
// that a refusal can say what the file is and what to do.
const (
	JPEG    Format = "jpeg"
	PNG     Format = "png"
	WebP    Format = "webp"
	HEIC    Format = "heic" // HEIC/HEIF: ISO-BMFF with an HEVC-coded image
	AVIF    Format = "avif"
	GIF     Format = "gif"
	TIFF    Format = "tiff"
	BMP     Format = "bmp"
	Text    Format = "text"
	Unknown Format = "unknown"
)

// SniffLen is how many leading bytes Sniff needs at most.
const SniffLen = 512

// Sniff names the format of a file from its first bytes: a PNG named .jpg still decodes, a text
// file named .jpg is refused for what it is.
func Sniff(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, []byte{0xFF, 0xD8, 0xFF}):
		return JPEG
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return PNG
	case len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return WebP
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return GIF
	case bytes.HasPrefix(head, []byte("II*\x00")), bytes.HasPrefix(head, []byte("MM\x00*")):
		return TIFF
	case bytes.HasPrefix(head, []byte("BM")) && len(head) >= 14:
		return BMP
	case len(head) >= 12 && string(head[4:8]) == "ftyp":
		return isoBrand(head)
	case looksLikeText(head):
		return Text
	}
	return Unknown
}

// Readable reports whether Decode reads the format.
func (f Format) Readable() bool {
	switch f {
	case JPEG, PNG, WebP, HEIC, AVIF:
		return true
	}
	return false
}

// Name is the format as people write it.
func (f Format) Name() string {
	switch f {
	case JPEG:
		return "JPEG"
	case PNG:
		return "PNG"
	case WebP:
		return "WebP"
	case HEIC:
		return "HEIC"
	case AVIF:
		return "AVIF"
	case GIF:
		return "GIF"
	case TIFF:
		return "TIFF"
	case BMP:
		return "BMP"
	}
	return string(f)
}

// UnsupportedReason says why a format that is not Readable is refused and what to do instead.
func UnsupportedReason(f Format) string {
	switch f {
	case GIF:
		return "GIF is not supported (256 colours, often animated): export the photo as JPEG"
	case TIFF:
		return "TIFF is not supported: export as JPEG"
	case BMP:
		return "BMP is not supported: export as JPEG or PNG"
	case Text:
		return "not an image: the file contains text (its name claims an image format)"
	}
	return "not a JPEG, PNG, WebP, HEIC or AVIF image (unrecognised content): re-export the photo as JPEG"
}

// isoBrand tells HEIC/HEIF from AVIF: both are ISO-BMFF files whose ftyp box lists brands, and
// an AVIF usually lists the generic HEIF brand mif1 too, so AVIF's brands are looked for first.
func isoBrand(head []byte) Format {
	brands := ftypBrands(head)
	for _, b := range brands {
		if b == "avif" || b == "avis" {
			return AVIF
		}
	}
	for _, b := range brands {
		switch b {
		case "heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1":
			return HEIC
		}
	}
	return Unknown
}

// ftypBrands lists the major brand and the compatible brands of a leading ftyp box.
func ftypBrands(head []byte) []string {
	size := int(binary.BigEndian.Uint32(head[0:4]))
	if size < 16 || size > len(head) {
		size = len(head)
	}
	brands := []string{string(head[8:12])}
	for i := 16; i+4 <= size; i += 4 {
		brands = append(brands, string(head[i:i+4]))
	}
	return brands
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
