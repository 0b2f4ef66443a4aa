package photo

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"image"
	"io"
	"strings"
	"unicode/utf16"
)

// Space is the colour space a photo's pixels are in, as far as Prepare needs to know.
type Space string

const (
	// SRGB: an sRGB profile, or none (the web's and JPEG's default).
	SRGB Space = "srgb"
	// DisplayP3: Apple's Display P3 (P3 primaries, D65 white, the sRGB curve), what iPhones write.
	DisplayP3 Space = "display-p3"
	// OtherSpace: a profile Prepare does not convert (Adobe RGB, ProPhoto, BT.2020, a camera's
	// own): the pixels pass through as they are, so such a photo looks less saturated than
	// intended once the profile is dropped. Colour.Name says which.
	OtherSpace Space = "other"
)

// Colour is what a file says about its colours: an embedded ICC profile or HEIF/AVIF's nclx.
type Colour struct {
	Space Space
	// Name is the profile's description ("Display P3", "sRGB IEC61966-2.1") or the nclx
	// primaries ("nclx primaries 9"); empty when the file says nothing.
	Name string
}

// Note says what Prepare does with the colours, for a plan or a report; empty for sRGB.
func (c Colour) Note() string {
	switch c.Space {
	case DisplayP3:
		return "Display P3 converted to sRGB"
	case OtherSpace:
		return fmt.Sprintf("colour profile %q kept as sRGB without conversion (colours may look flatter): export as sRGB for exact colours", c.Name)
	}
	return ""
}

// colourOf reads the colour signalling of a JPEG, PNG or WebP file.
func colourOf(f Format, data []byte) Colour {
	switch f {
	case JPEG:
		return iccColour(jpegICC(data))
	case PNG:
		if pngChunk(data, "sRGB", true) != nil {
			return Colour{Space: SRGB, Name: "sRGB"}
		}
		return iccColour(pngICC(pngChunk(data, "iCCP", true)))
	case WebP:
		return iccColour(webpChunk(data, "ICCP"))
	}
	return Colour{Space: SRGB}
}

// heifColour reads a HEIC's or AVIF's colr boxes: a profile wins over nclx, as in libheif.
func heifColour(info heifInfo) Colour {
	if info.ICC != nil {
		return iccColour(info.ICC)
	}
	if n := info.NCLX; n != nil {
		switch n.Primaries {
		case 1, 2: // BT.709 (sRGB's primaries), unspecified
			return Colour{Space: SRGB}
		case 12: // SMPTE EG 432-1: P3 with D65 white, Display P3 when the curve is sRGB's
			if n.Transfer == 13 || n.Transfer == 2 || n.Transfer == 1 || n.Transfer == 6 {
				return Colour{Space: DisplayP3, Name: "nclx Display P3"}
			}
		}
		return Colour{Space: OtherSpace, Name: fmt.Sprintf("nclx primaries %d, transfer %d", n.Primaries, n.Transfer)}
	}
	return Colour{Space: SRGB}
}

// pngICC inflates an iCCP chunk: a profile name, a NUL, a method byte (0), zlib data.
func pngICC(chunk []byte) []byte {
	i := bytes.IndexByte(chunk, 0)
	if i < 0 || i+2 > len(chunk) || chunk[i+1] != 0 {
		return nil
	}
	zr, err := zlib.NewReader(bytes.NewReader(chunk[i+2:]))
	if err != nil {
		return nil
	}
	defer zr.Close()
	p, err := io.ReadAll(io.LimitReader(zr, 4<<20))
	if err != nil {
		return nil
	}
	return p
}

// Colorants of the two spaces Prepare knows, as an ICC profile stores them (rXYZ, gXYZ, bXYZ
// adapted to D50 by Bradford, s15Fixed16), worked out from the spaces' primaries (see the test).
var (
	p3Colorants   = [3][3]int32{{33759, 15807, -69}, {19135, 45367, 2745}, {10296, 4363, 51385}}
	srgbColorants = [3][3]int32{{28576, 14581, 912}, {25239, 46983, 6361}, {9375, 3972, 46787}}
)

// colorantTolerance: profiles round their colorants differently; 200/65536 ≈ 0.003 is far
// closer than Display P3 is to DCI-P3 or to Adobe RGB.
const colorantTolerance = 200

// iccColour classifies an ICC profile by its colorants, then by its description.
func iccColour(p []byte) Colour {
	if p == nil {
		return Colour{Space: SRGB}
	}
	desc := iccDescription(p)
	if c, ok := iccColorants(p); ok {
		switch {
		case nearColorants(c, p3Colorants):
			return Colour{Space: DisplayP3, Name: desc}
		case nearColorants(c, srgbColorants):
			return Colour{Space: SRGB, Name: desc}
		}
	}
	low := strings.ToLower(desc)
	switch {
	case strings.Contains(low, "display p3"):
		return Colour{Space: DisplayP3, Name: desc}
	case strings.Contains(low, "srgb"):
		return Colour{Space: SRGB, Name: desc}
	}
	if desc == "" {
		desc = "unnamed ICC profile"
	}
	return Colour{Space: OtherSpace, Name: desc}
}

func nearColorants(a, b [3][3]int32) bool {
	for i := range a {
		for j := range a[i] {
			if d := a[i][j] - b[i][j]; d > colorantTolerance || d < -colorantTolerance {
				return false
			}
		}
	}
	return true
}

// iccTag returns the data of a tag of an ICC profile.
func iccTag(p []byte, sig string) []byte {
	if len(p) < 132 || string(p[36:40]) != "acsp" {
		return nil
	}
	n := int(binary.BigEndian.Uint32(p[128:132]))
	for i := 0; i < n && 132+12*(i+1) <= len(p); i++ {
		e := p[132+12*i:]
		if string(e[0:4]) != sig {
			continue
		}
		off, size := int(binary.BigEndian.Uint32(e[4:8])), int(binary.BigEndian.Uint32(e[8:12]))
		if off < 0 || size < 0 || off+size > len(p) || off+size < off {
			return nil
		}
		return p[off : off+size]
	}
	return nil
}

func iccColorants(p []byte) ([3][3]int32, bool) {
	var c [3][3]int32
	for k, sig := range []string{"rXYZ", "gXYZ", "bXYZ"} {
		t := iccTag(p, sig)
		if len(t) < 20 || string(t[0:4]) != "XYZ " {
			return c, false
		}
		for i := 0; i < 3; i++ {
			c[k][i] = int32(binary.BigEndian.Uint32(t[8+4*i:]))
		}
	}
	return c, true
}

// iccDescription reads the desc tag: ICC v2's textDescriptionType or v4's multiLocalizedUnicode.
func iccDescription(p []byte) string {
	t := iccTag(p, "desc")
	if len(t) < 12 {
		return ""
	}
	switch string(t[0:4]) {
	case "desc":
		n := int(binary.BigEndian.Uint32(t[8:12]))
		if n <= 0 || 12+n > len(t) {
			return ""
		}
		return strings.TrimRight(string(t[12:12+n]), "\x00")
	case "mluc":
		if len(t) < 28 {
			return ""
		}
		size, off := int(binary.BigEndian.Uint32(t[20:24])), int(binary.BigEndian.Uint32(t[24:28]))
		if size <= 0 || off+size > len(t) {
			return ""
		}
		u := make([]uint16, size/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(t[off+2*i:])
		}
		return strings.TrimRight(string(utf16.Decode(u)), "\x00")
	}
	return ""
}

// p3ToSRGB is the Display P3 → sRGB matrix on linear light (P3 → XYZ → sRGB, both D65), scaled
// by 2^16 and rounded so that each row sums to exactly 2^16: a grey stays exactly that grey.
// The test derives it from the primaries.
var p3ToSRGB = [3][3]int64{
	{80278, -14742, 0},
	{-2756, 68292, 0},
	{-1287, -5154, 71977},
}

// srgbToLinear is the sRGB transfer curve decoded: round(65535 × linear light) for each 8-bit
// code. A table of integers, so the conversion never depends on a machine's pow or on
// floating-point fusion (the test recomputes it).
var srgbToLinear = [256]uint16{
	0, 20, 40, 60, 80, 99, 119, 139, 159, 179, 199, 219, 241, 264, 288, 313,
	340, 367, 396, 427, 458, 491, 526, 562, 599, 637, 677, 718, 761, 805, 851, 898,
	947, 997, 1048, 1101, 1156, 1212, 1270, 1330, 1391, 1453, 1517, 1583, 1651, 1720, 1790, 1863,
	1937, 2013, 2090, 2170, 2250, 2333, 2418, 2504, 2592, 2681, 2773, 2866, 2961, 3058, 3157, 3258,
	3360, 3464, 3570, 3678, 3788, 3900, 4014, 4129, 4247, 4366, 4488, 4611, 4736, 4864, 4993, 5124,
	5257, 5392, 5530, 5669, 5810, 5953, 6099, 6246, 6395, 6547, 6700, 6856, 7014, 7174, 7335, 7500,
	7666, 7834, 8004, 8177, 8352, 8528, 8708, 8889, 9072, 9258, 9445, 9635, 9828, 10022, 10219, 10417,
	10619, 10822, 11028, 11235, 11446, 11658, 11873, 12090, 12309, 12530, 12754, 12980, 13209, 13440, 13673, 13909,
	14146, 14387, 14629, 14874, 15122, 15371, 15623, 15878, 16135, 16394, 16656, 16920, 17187, 17456, 17727, 18001,
	18277, 18556, 18837, 19121, 19407, 19696, 19987, 20281, 20577, 20876, 21177, 21481, 21787, 22096, 22407, 22721,
	23038, 23357, 23678, 24002, 24329, 24658, 24990, 25325, 25662, 26001, 26344, 26688, 27036, 27386, 27739, 28094,
	28452, 28813, 29176, 29542, 29911, 30282, 30656, 31033, 31412, 31794, 32179, 32567, 32957, 33350, 33745, 34143,
	34544, 34948, 35355, 35764, 36176, 36591, 37008, 37429, 37852, 38278, 38706, 39138, 39572, 40009, 40449, 40891,
	41337, 41785, 42236, 42690, 43147, 43606, 44069, 44534, 45002, 45473, 45947, 46423, 46903, 47385, 47871, 48359,
	48850, 49344, 49841, 50341, 50844, 51349, 51858, 52369, 52884, 53401, 53921, 54445, 54971, 55500, 56032, 56567,
	57105, 57646, 58190, 58737, 59287, 59840, 60396, 60955, 61517, 62082, 62650, 63221, 63795, 64372, 64952, 65535,
}

// linearToSRGB encodes linear light (0–65535) to the nearest 8-bit code, nearest in linear light:
// built from srgbToLinear with integer midpoints, so every code survives a round trip exactly.
var linearToSRGB = func() (t [65536]uint8) {
	code := 0
	for v := range t {
		for code < 255 && v*2 >= int(srgbToLinear[code])+int(srgbToLinear[code+1]) {
			code++
		}
		t[v] = uint8(code)
	}
	return t
}()

// ToSRGB converts img's pixels from c's space to sRGB in place; sRGB and other spaces are left as
// they are (see OtherSpace). Integer arithmetic only: the same bytes on every machine.
func ToSRGB(img *image.NRGBA, c Colour) {
	if c.Space != DisplayP3 {
		return
	}
	m := &p3ToSRGB
	for y := img.Rect.Min.Y; y < img.Rect.Max.Y; y++ {
		row := img.Pix[img.PixOffset(img.Rect.Min.X, y):]
		row = row[:4*img.Rect.Dx()]
		for i := 0; i+3 < len(row); i += 4 {
			r := int64(srgbToLinear[row[i]])
			g := int64(srgbToLinear[row[i+1]])
			b := int64(srgbToLinear[row[i+2]])
			row[i] = linearToSRGB[clampLinear(m[0][0]*r+m[0][1]*g+m[0][2]*b)]
			row[i+1] = linearToSRGB[clampLinear(m[1][0]*r+m[1][1]*g+m[1][2]*b)]
			row[i+2] = linearToSRGB[clampLinear(m[2][0]*r+m[2][1]*g+m[2][2]*b)]
		}
	}
}

// clampLinear rounds a 2^16-scaled product back to 0–65535: P3 colours outside sRGB's gamut are
// clipped, the usual relative-colorimetric outcome.
func clampLinear(v int64) int {
	v = (v + 1<<15) >> 16
	if v < 0 {
		return 0
	}
	if v > 65535 {
		return 65535
	}
	return int(v)
}
