// Package phototest makes test photos for package photo and its users: JPEGs carrying the
// metadata phones write (EXIF orientation, GPS, a camera serial, XMP, an ICC profile), minimal
// ICC profiles, and HEIF files given irot/imir transforms, from pictures the tests generate.
package phototest

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/jpeg"
	"math"
)

// JPEG encodes img at quality q.
func JPEG(img image.Image, q int) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Metadata is what WithMetadata writes into a JPEG.
type Metadata struct {
	Orientation int    // EXIF orientation, 0 for none
	GPS         bool   // a GPS IFD with a latitude and longitude
	Serial      string // the camera's BodySerialNumber
	XMP         bool   // an XMP packet in APP1
	ICC         []byte // an ICC profile in APP2
	Comment     string // a COM segment
}

// Markers of metadata segments, for tests that look for leftovers.
const (
	MarkerAPP1 = 0xE1
	MarkerAPP2 = 0xE2
	MarkerCOM  = 0xFE
)

// WithMetadata inserts the metadata segments right after the JPEG's SOI, as cameras place them.
func WithMetadata(data []byte, m Metadata) []byte {
	var segs [][]byte
	if m.Orientation != 0 || m.GPS || m.Serial != "" {
		segs = append(segs, segment(MarkerAPP1, append([]byte("Exif\x00\x00"), exifTIFF(m)...)))
	}
	if m.XMP {
		xmp := `<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.4N"/></rdf:RDF></x:xmpmeta>`
		segs = append(segs, segment(MarkerAPP1, append([]byte("http://ns.adobe.com/xap/1.0/\x00"), xmp...)))
	}
	if m.ICC != nil {
		segs = append(segs, segment(MarkerAPP2, append([]byte("ICC_PROFILE\x00\x01\x01"), m.ICC...)))
	}
	if m.Comment != "" {
		segs = append(segs, segment(MarkerCOM, []byte(m.Comment)))
	}
	out := append([]byte{}, data[:2]...)
	for _, s := range segs {
		out = append(out, s...)
	}
	return append(out, data[2:]...)
}

func segment(marker byte, payload []byte) []byte {
	s := []byte{0xFF, marker, 0, 0}
	binary.BigEndian.PutUint16(s[2:], uint16(len(payload)+2))
	return append(s, payload...)
}

// exifTIFF writes a big-endian TIFF block: IFD0 with Orientation and pointers to an Exif IFD (the
// serial) and a GPS IFD.
func exifTIFF(m Metadata) []byte {
	type entry struct {
		tag, typ uint16
		count    uint32
		value    []byte // ≤ 4 bytes inline, else stored after the IFDs
	}
	var ifd0, exif, gps []entry
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	if m.Orientation != 0 {
		ifd0 = append(ifd0, entry{0x0112, 3, 1, append(u16(uint16(m.Orientation)), 0, 0)})
	}
	if m.Serial != "" {
		exif = append(exif, entry{0xA431, 2, uint32(len(m.Serial) + 1), append([]byte(m.Serial), 0)})
	}
	if m.GPS {
		rational := func(n ...uint32) []byte {
			var b []byte
			for _, v := range n {
				b = append(b, u32(v)...)
				b = append(b, u32(1)...)
			}
			return b
		}
		gps = append(gps, entry{0x0001, 2, 2, []byte("N\x00\x00\x00")}, entry{0x0002, 5, 3, rational(48, 51, 24)},
			entry{0x0003, 2, 2, []byte("E\x00\x00\x00")}, entry{0x0004, 5, 3, rational(2, 17, 40)})
	}
	ifdLen := func(es []entry) int { return 2 + 12*len(es) + 4 }
	// Layout: header (8), IFD0, Exif IFD, GPS IFD, then out-of-line values.
	n0 := len(ifd0)
	if len(exif) > 0 {
		n0++
	}
	if len(gps) > 0 {
		n0++
	}
	off0 := 8
	offExif := off0 + 2 + 12*n0 + 4
	offGPS := offExif
	if len(exif) > 0 {
		offGPS += ifdLen(exif)
	}
	offData := offGPS
	if len(gps) > 0 {
		offData += ifdLen(gps)
	}
	if len(exif) > 0 {
		ifd0 = append(ifd0, entry{0x8769, 4, 1, u32(uint32(offExif))})
	}
	if len(gps) > 0 {
		ifd0 = append(ifd0, entry{0x8825, 4, 1, u32(uint32(offGPS))})
	}
	var body, data bytes.Buffer
	body.WriteString("MM\x00\x2A")
	body.Write(u32(uint32(off0)))
	write := func(es []entry) {
		body.Write(u16(uint16(len(es))))
		for _, e := range es {
			body.Write(u16(e.tag))
			body.Write(u16(e.typ))
			body.Write(u32(e.count))
			if len(e.value) <= 4 {
				v := append(append([]byte{}, e.value...), make([]byte, 4-len(e.value))...)
				body.Write(v)
			} else {
				body.Write(u32(uint32(offData + data.Len())))
				data.Write(e.value)
			}
		}
		body.Write(u32(0))
	}
	write(ifd0)
	if len(exif) > 0 {
		write(exif)
	}
	if len(gps) > 0 {
		write(gps)
	}
	return append(body.Bytes(), data.Bytes()...)
}

// Colorants of Display P3 and sRGB as ICC profiles store them (D50-adapted, s15Fixed16).
var (
	P3Colorants   = [3][3]int32{{33759, 15807, -69}, {19135, 45367, 2745}, {10296, 4363, 51385}}
	SRGBColorants = [3][3]int32{{28576, 14581, 912}, {25239, 46983, 6361}, {9375, 3972, 46787}}
	// AdobeRGBColorants are Adobe RGB (1998)'s: a profile photo apps offer that Prepare passes through.
	AdobeRGBColorants = [3][3]int32{{39957, 20388, 1278}, {13455, 41006, 3991}, {9778, 4142, 48798}}
)

// ICCProfile builds a minimal ICC v2 display profile with a description and colorants: enough to
// be recognised, not a full profile (no curves).
func ICCProfile(desc string, colorants [3][3]int32) []byte {
	type tag struct {
		sig  string
		data []byte
	}
	descData := append([]byte("desc\x00\x00\x00\x00"), binary.BigEndian.AppendUint32(nil, uint32(len(desc)+1))...)
	descData = append(descData, desc...)
	descData = append(descData, 0)
	descData = append(descData, make([]byte, 4+4+2+1+67)...) // empty Unicode and ScriptCode parts
	tags := []tag{{"desc", descData}}
	for k, sig := range []string{"rXYZ", "gXYZ", "bXYZ"} {
		d := []byte("XYZ \x00\x00\x00\x00")
		for _, v := range colorants[k] {
			d = binary.BigEndian.AppendUint32(d, uint32(v))
		}
		tags = append(tags, tag{sig, d})
	}
	hdr := make([]byte, 128)
	copy(hdr[4:], "none")
	hdr[8] = 2
	hdr[9] = 0x10
	copy(hdr[12:], "mntrRGB XYZ ")
	copy(hdr[36:], "acsp")
	table := binary.BigEndian.AppendUint32(nil, uint32(len(tags)))
	off := 128 + 4 + 12*len(tags)
	var data []byte
	for _, t := range tags {
		for len(data)%4 != 0 {
			data = append(data, 0)
		}
		table = append(table, t.sig...)
		table = binary.BigEndian.AppendUint32(table, uint32(off+len(data)))
		table = binary.BigEndian.AppendUint32(table, uint32(len(t.data)))
		data = append(data, t.data...)
	}
	p := append(append(hdr, table...), data...)
	binary.BigEndian.PutUint32(p[0:4], uint32(len(p)))
	return p
}

// ToP3 re-expresses an sRGB picture in Display P3 (what a P3 camera would have stored for the
// same scene), in float: for making test pictures only.
func ToP3(img *image.NRGBA) *image.NRGBA {
	m := [3][3]float64{ // sRGB → P3 on linear light, the inverse of the standard P3 → sRGB
		{0.822462, 0.177538, 0},
		{0.033194, 0.966806, 0},
		{0.017083, 0.072397, 0.910520},
	}
	out := image.NewNRGBA(img.Rect)
	for i := 0; i+3 < len(img.Pix); i += 4 {
		var lin [3]float64
		for c := 0; c < 3; c++ {
			lin[c] = decodeSRGB(float64(img.Pix[i+c]) / 255)
		}
		for c := 0; c < 3; c++ {
			v := m[c][0]*lin[0] + m[c][1]*lin[1] + m[c][2]*lin[2]
			out.Pix[i+c] = uint8(math.Round(255 * encodeSRGB(math.Max(0, math.Min(1, v)))))
		}
		out.Pix[i+3] = img.Pix[i+3]
	}
	return out
}

func decodeSRGB(v float64) float64 {
	if v <= 0.04045 {
		return v / 12.92
	}
	return math.Pow((v+0.055)/1.055, 2.4)
}

func encodeSRGB(v float64) float64 {
	if v <= 0.0031308 {
		return v * 12.92
	}
	return 1.055*math.Pow(v, 1/2.4) - 0.055
}
