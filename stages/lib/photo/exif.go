package photo

import (
	"encoding/binary"
	"image"

	"github.com/disintegration/imaging"
)

// Orientation is an EXIF orientation, 1–8: how the stored pixels must be turned or flipped to be
// shown upright. HEIF's own transforms (irot, imir) are expressed in the same terms.
//
//	1 as stored      2 mirrored left-right   3 turned 180°    4 mirrored top-bottom
//	5 transposed     6 turned 90° clockwise  7 transversed    8 turned 90° anticlockwise
type Orientation int

// Upright is the orientation that needs nothing.
const Upright Orientation = 1

// Swaps reports whether applying o exchanges width and height.
func (o Orientation) Swaps() bool { return o >= 5 && o <= 8 }

// Apply returns img turned upright: o applied exactly once. Pixel moves only, so it is exact.
func (o Orientation) Apply(img *image.NRGBA) *image.NRGBA {
	switch o {
	case 2:
		return imaging.FlipH(img)
	case 3:
		return imaging.Rotate180(img)
	case 4:
		return imaging.FlipV(img)
	case 5:
		return imaging.Transpose(img)
	case 6:
		return imaging.Rotate270(img) // imaging turns anticlockwise: 270° of it is 90° clockwise
	case 7:
		return imaging.Transverse(img)
	case 8:
		return imaging.Rotate90(img)
	}
	return img
}

// then is the orientation that applies o first and p after it. The group has eight elements, so
// the table is worked out once by applying both to a 3×2 probe image whose pixels all differ.
func (o Orientation) then(p Orientation) Orientation {
	return composeTable[o-1][p-1]
}

var composeTable = func() (t [8][8]Orientation) {
	probe := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range probe.Pix {
		probe.Pix[i] = uint8(i)
	}
	var results [8]*image.NRGBA
	for o := Orientation(1); o <= 8; o++ {
		results[o-1] = o.Apply(probe)
	}
	for a := Orientation(1); a <= 8; a++ {
		for b := Orientation(1); b <= 8; b++ {
			got := b.Apply(a.Apply(probe))
			for c := range results {
				if samePixels(got, results[c]) {
					t[a-1][b-1] = Orientation(c + 1)
				}
			}
		}
	}
	return t
}()

func samePixels(a, b *image.NRGBA) bool {
	return a.Rect.Eq(b.Rect) && string(a.Pix) == string(b.Pix)
}

// exifOrientation reads the orientation to apply from a file's EXIF block: a JPEG's APP1, a PNG's
// eXIf chunk (phones keep the camera's orientation there in edits and screenshots), a WebP's EXIF
// chunk. Upright when absent or unreadable: a broken EXIF block must not reject a good photo.
// HEIC and AVIF are never asked: their rotation is the container's (irot/imir), and an EXIF
// orientation inside them describes the same turn again.
func exifOrientation(f Format, data []byte) Orientation {
	var tiff []byte
	switch f {
	case JPEG:
		tiff = jpegEXIF(data)
	case PNG:
		tiff = pngChunk(data, "eXIf", false)
	case WebP:
		tiff = webpChunk(data, "EXIF")
		if len(tiff) >= 6 && string(tiff[0:6]) == "Exif\x00\x00" {
			tiff = tiff[6:]
		}
	}
	return tiffOrientation(tiff)
}

// tiffOrientation finds tag 0x0112 in IFD0 of a TIFF-structured EXIF block.
func tiffOrientation(t []byte) Orientation {
	if len(t) < 8 {
		return Upright
	}
	var bo binary.ByteOrder
	switch string(t[0:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return Upright
	}
	if bo.Uint16(t[2:4]) != 42 {
		return Upright
	}
	off := int(bo.Uint32(t[4:8]))
	if off < 8 || off+2 > len(t) {
		return Upright
	}
	count := int(bo.Uint16(t[off : off+2]))
	for k := 0; k < count; k++ {
		e := off + 2 + 12*k
		if e+12 > len(t) {
			return Upright
		}
		if bo.Uint16(t[e:e+2]) != 0x0112 {
			continue
		}
		var v int
		switch bo.Uint16(t[e+2 : e+4]) {
		case 3: // SHORT
			v = int(bo.Uint16(t[e+8 : e+10]))
		case 4: // LONG
			v = int(bo.Uint32(t[e+8 : e+12]))
		default:
			return Upright
		}
		if v < 1 || v > 8 {
			return Upright
		}
		return Orientation(v)
	}
	return Upright
}
