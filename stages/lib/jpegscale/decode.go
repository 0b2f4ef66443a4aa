package jpegscale

import (
	"bufio"
	"encoding/binary"
	"image"
	"image/color"
	"io"
)

// Options tune Decode.
type Options struct {
	// Scale is how much each side shrinks: 1 (or 0), 2, 4 or 8.
	Scale Scale
	// MaxPixels refuses headers of more pixels than this before anything is allocated (0: 2^28).
	MaxPixels int
}

const defaultMaxPixels = 1 << 28

// Markers (T.81 B.1.1.3, Table B.1) this package acts on.
const (
	markerSOF0 = 0xC0 // baseline
	markerSOF1 = 0xC1 // extended sequential, Huffman
	markerSOF2 = 0xC2 // progressive, Huffman
	markerDHT  = 0xC4
	markerRST0 = 0xD0
	markerRST7 = 0xD7
	markerSOI  = 0xD8
	markerEOI  = 0xD9
	markerSOS  = 0xDA
	markerDQT  = 0xDB
	markerDRI  = 0xDD
	markerAPP0 = 0xE0
	markerAPPE = 0xEE // Adobe
	markerCOM  = 0xFE
)

// decoder holds one decode's tables, frame and position in the data.
type decoder struct {
	data  []byte
	pos   int
	opt   Options
	scale Scale

	quant     [4][64]uint16   // zigzag order; a table never defined is zeros, as in image/jpeg
	huff      [2][4]huffTable // [DC, AC][table]
	restart   int             // MCUs per restart interval, 0: none
	jfif      bool
	adobe     bool
	transform uint8 // Adobe APP14 colour transform: 0 RGB (or CMYK), 1 YCbCr

	frame
	configOnly bool // DecodeConfig: stop at the first scan
	scans      int
	eobrun     int
	block      [65]int32 // the folded grid of the block being decoded (and a spare slot)
	br         bitReader
}

// frame is what SOF says, plus the block layout derived from it.
type frame struct {
	haveFrame     bool
	progressive   bool
	width, height int
	comps         []component
	hmax, vmax    int
	mcusX, mcusY  int
}

// component is one colour component of the frame and its decoded data.
type component struct {
	id     uint8
	h, v   int   // sampling factors
	tq     uint8 // quantization table
	bw, bh int   // blocks holding the component's samples
	gw, gh int   // blocks of the MCU grid (≥ bw, bh): what interleaved scans code
	// realW, realH are the component's samples (its share of the image's pixels); blocks reaching
	// past them are averaged over the real samples only.
	realW, realH int
	plane        []uint8
	coef         []int16 // progressive: 64 coefficients (zigzag order) per grid block
	pred         int32
	dc, ac       *huffTable
	fold         fold
	full         fold // for blocks on the right and bottom edges, transformed in full
}

// Decode decodes a JPEG at the scale Options ask for.
func Decode(data []byte, opt Options) (image.Image, error) {
	d := &decoder{data: data, opt: opt, scale: opt.Scale.valid()}
	if err := d.decode(); err != nil {
		return nil, err
	}
	return d.image()
}

// decode reads every segment up to EOI.
func (d *decoder) decode() error {
	if len(d.data) < 2 || d.data[0] != 0xFF || d.data[1] != markerSOI {
		return FormatError("missing SOI marker")
	}
	d.pos = 2
	for {
		m, err := d.nextMarker()
		if err != nil {
			return err
		}
		done, err := d.segment(m)
		if err != nil || done {
			return err
		}
	}
}

// nextMarker skips to the next marker and returns its code. Bytes before it that are not a marker
// are skipped, as libjpeg and image/jpeg skip them, with fill bytes (0xFF) and 0xFF00 pairs.
func (d *decoder) nextMarker() (byte, error) {
	for {
		for d.pos < len(d.data) && d.data[d.pos] != 0xFF {
			d.pos++
		}
		ffs := 0
		for d.pos < len(d.data) && d.data[d.pos] == 0xFF {
			d.pos++
			ffs++
		}
		if d.pos >= len(d.data) {
			return 0, errTruncated
		}
		m := d.data[d.pos]
		d.pos++
		switch {
		case m != 0:
			return m, nil
		case ffs > 1:
			return 0, FormatError("unknown marker") // fill bytes must lead to a marker (as image/jpeg has it)
		}
	}
}

// segment handles the marker m; done is true at EOI.
func (d *decoder) segment(m byte) (done bool, err error) {
	switch {
	case m == markerEOI:
		if d.scans == 0 {
			return true, FormatError("missing SOS marker")
		}
		if d.progressive {
			d.reconstruct()
		}
		return true, nil
	case m >= markerRST0 && m <= markerRST7:
		return false, nil // a stray restart marker between segments carries nothing
	case m < markerSOF0:
		return false, FormatError("unknown marker")
	}
	if f := unsupportedMarker(m); f != "" {
		return false, unsupported("%s", f)
	}
	if m == markerSOS && d.configOnly { // the header is complete: only the length is read
		switch {
		case d.pos+2 > len(d.data):
			return true, errTruncated
		case binary.BigEndian.Uint16(d.data[d.pos:]) < 2:
			return true, FormatError("segment length below 2")
		case !d.haveFrame:
			return true, FormatError("missing SOF marker")
		}
		return true, nil
	}
	body, err := d.segmentBody()
	if err != nil {
		return false, err
	}
	if d.configOnly && (m == markerDHT || m == markerDQT || m == markerDRI) {
		return false, nil // the tables do not change the header's verdict (nor image/jpeg's)
	}
	switch m {
	case markerSOF0, markerSOF1, markerSOF2:
		err := d.parseFrame(m, body)
		// After JFIF the colour model is known at SOF (image/jpeg's DecodeConfig stops there too);
		// otherwise an APP14 may still follow.
		return d.configOnly && d.jfif && err == nil, err
	case markerDHT:
		return false, d.parseHuffman(body)
	case markerDQT:
		return false, d.parseQuant(body)
	case markerDRI:
		if len(body) != 2 {
			return false, FormatError("DRI has wrong length")
		}
		d.restart = int(binary.BigEndian.Uint16(body))
	case markerSOS:
		return false, d.scan(body)
	case markerAPP0:
		d.jfif = d.jfif || hasPrefix(body, "JFIF\x00")
	case markerAPPE:
		if hasPrefix(body, "Adobe") && len(body) >= 12 {
			d.adobe, d.transform = true, body[11]
		}
	}
	return false, nil // other APPn and COM carry nothing the pixels need
}

// unsupportedMarker names the feature a marker belongs to, "" for markers this package reads.
func unsupportedMarker(m byte) string {
	switch {
	case m == 0xC3:
		return "lossless (SOF3)"
	case m >= 0xC5 && m <= 0xC7, m == 0xDE, m == 0xDF:
		return "hierarchical (differential frames)"
	case m >= 0xC8 && m <= 0xCF:
		return "arithmetic coding"
	case m == markerSOI:
		return "a second SOI marker inside the image"
	case m == 0xDC:
		return "height given by a DNL marker"
	case m >= 0xF0 && m <= 0xFD:
		return "JPEG extensions (JPGn markers)"
	}
	return ""
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// segmentBody reads a segment's length and returns its body.
func (d *decoder) segmentBody() ([]byte, error) {
	if d.pos+2 > len(d.data) {
		return nil, errTruncated
	}
	n := int(binary.BigEndian.Uint16(d.data[d.pos:]))
	if n < 2 {
		return nil, FormatError("segment length below 2")
	}
	if d.pos+n > len(d.data) {
		return nil, errTruncated
	}
	body := d.data[d.pos+2 : d.pos+n]
	d.pos += n
	return body, nil
}

// parseQuant reads a DQT segment (T.81 B.2.4.1): 8- or 16-bit tables, in zigzag order.
func (d *decoder) parseQuant(b []byte) error {
	for len(b) > 0 {
		pq, tq := b[0]>>4, b[0]&15
		if tq > 3 {
			return FormatError("bad Tq value")
		}
		size := 64 * (int(pq) + 1)
		if pq > 1 {
			return FormatError("bad Pq value")
		}
		if len(b) < 1+size {
			return FormatError("DQT has wrong length")
		}
		for k := 0; k < 64; k++ {
			if pq == 0 {
				d.quant[tq][k] = uint16(b[1+k])
			} else {
				d.quant[tq][k] = binary.BigEndian.Uint16(b[1+2*k:])
			}
		}
		b = b[1+size:]
	}
	return nil
}

// parseHuffman reads a DHT segment (T.81 B.2.4.2).
func (d *decoder) parseHuffman(b []byte) error {
	for len(b) > 0 {
		if len(b) < 17 {
			return FormatError("DHT has wrong length")
		}
		tc, th := b[0]>>4, b[0]&15
		if tc > 1 || th > 3 {
			return FormatError("bad Tc or Th value")
		}
		var counts [16]uint8
		copy(counts[:], b[1:17])
		total := 0
		for _, c := range counts {
			total += int(c)
		}
		if total == 0 || total > 256 || len(b) < 17+total {
			return FormatError("DHT has wrong length")
		}
		if err := d.huff[tc][th].build(counts, b[17:17+total], tc == 1); err != nil {
			return err
		}
		b = b[17+total:]
	}
	return nil
}

// parseFrame reads SOF0, SOF1 or SOF2 and lays out the blocks (T.81 B.2.2, A.1.1).
func (d *decoder) parseFrame(m byte, b []byte) error {
	if d.haveFrame {
		return FormatError("multiple SOF markers")
	}
	f, precision, err := readFrame(m, b)
	if err != nil {
		return err
	}
	if d.configOnly {
		d.frame = f
		return configSupported(f, precision)
	}
	if err := f.supported(precision); err != nil {
		return err
	}
	if limit := d.maxPixels(); f.width*f.height > limit {
		return ErrTooLarge
	}
	f.layout()
	d.frame = f
	return nil
}

// readFrame parses any SOFn body, holding it to the format's rules; what this package cannot
// decode is left to supported.
func readFrame(m byte, b []byte) (f frame, precision int, err error) {
	if len(b) < 6 {
		return f, 0, FormatError("SOF has wrong length")
	}
	nc := int(b[5])
	if len(b) != 6+3*nc {
		return f, 0, FormatError("SOF has wrong length")
	}
	f = frame{haveFrame: true, progressive: m == markerSOF2,
		height: int(binary.BigEndian.Uint16(b[1:])), width: int(binary.BigEndian.Uint16(b[3:]))}
	for i := 0; i < nc; i++ {
		p := b[6+3*i:]
		c := component{id: p[0], h: int(p[1] >> 4), v: int(p[1] & 15), tq: p[2]}
		switch {
		case c.h < 1 || c.h > 4 || c.v < 1 || c.v > 4:
			return f, 0, FormatError("bad sampling factors")
		case c.tq > 3:
			return f, 0, FormatError("bad Tq value")
		}
		for _, o := range f.comps {
			if o.id == c.id {
				return f, 0, FormatError("repeated component identifier")
			}
		}
		f.comps = append(f.comps, c)
	}
	return f, int(b[0]), nil
}

// configSupported refuses, for DecodeConfig, the frames neither this package nor image/jpeg decodes.
func configSupported(f frame, precision int) error {
	switch {
	case precision != 8:
		return unsupported("%d-bit samples", precision)
	case len(f.comps) != 1 && len(f.comps) != 3 && len(f.comps) != 4:
		return unsupported("%d components", len(f.comps))
	}
	return nil
}

// supported refuses the frames this package does not decode.
func (f *frame) supported(precision int) error {
	nc := len(f.comps)
	switch {
	case precision != 8:
		return unsupported("%d-bit samples", precision)
	case nc == 4:
		return unsupported("4 components (CMYK or YCCK)")
	case nc != 1 && nc != 3:
		return unsupported("%d components", nc)
	case f.height == 0:
		return unsupported("height given by a DNL marker")
	case f.width == 0:
		return unsupported("zero width")
	}
	for _, c := range f.comps {
		f.hmax, f.vmax = max(f.hmax, c.h), max(f.vmax, c.v)
	}
	if blocks := f.blocksPerMCU(); nc > 1 && blocks > 10 {
		return FormatError("total sampling factors too large") // T.81 B.2.3: at most 10 blocks per MCU
	}
	if nc == 1 { // a lone component is coded block by block whatever its factors (A.2.2)
		f.comps[0].h, f.comps[0].v, f.hmax, f.vmax = 1, 1, 1, 1
	}
	if _, ok := f.subsampleRatio(); !ok {
		return unsupported("chroma sampling %d×%d, %d×%d, %d×%d", f.comps[0].h, f.comps[0].v, f.comps[1].h, f.comps[1].v, f.comps[2].h, f.comps[2].v)
	}
	return nil
}

// layout derives the MCU grid and each component's blocks.
func (f *frame) layout() {
	f.mcusX = (f.width + 8*f.hmax - 1) / (8 * f.hmax)
	f.mcusY = (f.height + 8*f.vmax - 1) / (8 * f.vmax)
	for i := range f.comps {
		c := &f.comps[i]
		c.realW, c.realH = ceilDiv(f.width*c.h, f.hmax), ceilDiv(f.height*c.v, f.vmax)
		c.bw, c.bh = (c.realW+7)/8, (c.realH+7)/8
		c.gw, c.gh = f.mcusX*c.h, f.mcusY*c.v
	}
}

func (f *frame) blocksPerMCU() int {
	n := 0
	for _, c := range f.comps {
		n += c.h * c.v
	}
	return n
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func (d *decoder) maxPixels() int {
	if d.opt.MaxPixels > 0 {
		return d.opt.MaxPixels
	}
	return defaultMaxPixels
}

// subsampleRatio is the chroma layout of a 3-component frame as image.YCbCr names it; ok is false
// for layouts it has no name for (chroma sampled finer than luma, Cb unlike Cr, 3:1 ratios …).
func (f *frame) subsampleRatio() (image.YCbCrSubsampleRatio, bool) {
	if len(f.comps) != 3 {
		return image.YCbCrSubsampleRatio444, true
	}
	y, cb, cr := f.comps[0], f.comps[1], f.comps[2]
	if cb.h != cr.h || cb.v != cr.v || y.h%cb.h != 0 || y.v%cb.v != 0 {
		return 0, false
	}
	switch [2]int{y.h / cb.h, y.v / cb.v} {
	case [2]int{1, 1}:
		return image.YCbCrSubsampleRatio444, true
	case [2]int{2, 1}:
		return image.YCbCrSubsampleRatio422, true
	case [2]int{2, 2}:
		return image.YCbCrSubsampleRatio420, true
	case [2]int{1, 2}:
		return image.YCbCrSubsampleRatio440, true
	case [2]int{4, 1}:
		return image.YCbCrSubsampleRatio411, true
	case [2]int{4, 2}:
		return image.YCbCrSubsampleRatio410, true
	}
	return 0, false
}

// isRGB tells RGB from YCbCr in a 3-component file: JFIF says YCbCr, APP14 says which, and
// without either components named R, G and B say RGB.
func (d *decoder) isRGB() bool {
	switch {
	case d.jfif:
		return false
	case d.adobe:
		return d.transform == 0
	}
	return d.comps[0].id == 'R' && d.comps[1].id == 'G' && d.comps[2].id == 'B'
}

// image assembles the decoded planes into the result at the reduced size.
func (d *decoder) image() (image.Image, error) {
	n := d.scale.blockSide()
	for i := range d.comps {
		if c := &d.comps[i]; c.plane == nil { // never scanned: image/jpeg leaves it zero too
			c.plane = make([]uint8, c.gw*n*c.gh*n)
		}
	}
	r := image.Rect(0, 0, d.scale.Reduce(d.width), d.scale.Reduce(d.height))
	c0 := &d.comps[0]
	if len(d.comps) == 1 {
		return &image.Gray{Pix: c0.plane, Stride: c0.gw * n, Rect: r}, nil
	}
	ratio, _ := d.subsampleRatio()
	if d.isRGB() {
		if ratio != image.YCbCrSubsampleRatio444 {
			return nil, unsupported("RGB with subsampled components")
		}
		return d.rgba(r), nil
	}
	return &image.YCbCr{Y: c0.plane, Cb: d.comps[1].plane, Cr: d.comps[2].plane,
		YStride: c0.gw * n, CStride: d.comps[1].gw * n, SubsampleRatio: ratio, Rect: r}, nil
}

// rgba interleaves the R, G and B planes of an RGB file.
func (d *decoder) rgba(r image.Rectangle) *image.RGBA {
	out := image.NewRGBA(r)
	stride := d.comps[0].gw * d.scale.blockSide()
	for y := 0; y < r.Dy(); y++ {
		dst := out.Pix[y*out.Stride : y*out.Stride+4*r.Dx()]
		off := y * stride
		for x := 0; x < r.Dx(); x++ {
			dst[4*x+0] = d.comps[0].plane[off+x]
			dst[4*x+1] = d.comps[1].plane[off+x]
			dst[4*x+2] = d.comps[2].plane[off+x]
			dst[4*x+3] = 0xFF
		}
	}
	return out
}

// DecodeConfig reads a JPEG's header up to its first scan: the size and the colour model, for
// files this package decodes and for the CMYK ones image/jpeg decodes; for 12-bit, arithmetic,
// lossless and hierarchical files (which neither reads) it returns an UnsupportedError. Only the
// header is read from r, so a caller can judge a file's size before reading it whole.
func DecodeConfig(r io.Reader) (image.Config, error) {
	d := &decoder{data: readHeader(r), configOnly: true}
	if err := d.decode(); err != nil {
		return image.Config{}, err
	}
	cfg := image.Config{Width: d.width, Height: d.height, ColorModel: color.YCbCrModel}
	switch len(d.comps) {
	case 1:
		cfg.ColorModel = color.GrayModel
	case 3:
		if d.isRGB() {
			cfg.ColorModel = color.RGBAModel
		}
	case 4:
		cfg.ColorModel = color.CMYKModel
	}
	return cfg, nil
}

// readHeader reads r up to the length of the first SOS (or EOI, or the end), whole segments at a
// time; the decoder then judges the bytes as it judges a whole file's.
func readHeader(r io.Reader) []byte {
	br := bufio.NewReaderSize(r, 4096)
	var buf []byte
	prevFF := false // the byte before, outside any segment body, was 0xFF
	for {
		b, err := br.ReadByte()
		if err != nil {
			return buf
		}
		buf = append(buf, b)
		marker := prevFF && b != 0xFF && b != 0
		prevFF = b == 0xFF
		switch {
		case marker && b == markerEOI:
			return buf
		case !marker || !hasLength(b):
			continue
		}
		var l [2]byte
		n, _ := io.ReadFull(br, l[:])
		buf = append(buf, l[:n]...)
		if n < 2 || b == markerSOS {
			return buf
		}
		body := make([]byte, max(0, int(binary.BigEndian.Uint16(l[:]))-2))
		n, _ = io.ReadFull(br, body)
		buf = append(buf, body[:n]...)
		if n < len(body) {
			return buf
		}
	}
}

// hasLength is true for the markers followed by a segment length.
func hasLength(m byte) bool {
	return m >= markerSOF0 && m != 0xFF && !(m >= markerRST0 && m <= markerEOI)
}

// isFrameMarker is true for every SOFn, read or not (C0–CF but DHT, JPG and DAC).
func isFrameMarker(m byte) bool {
	return m >= markerSOF0 && m <= 0xCF && m != markerDHT && m != 0xC8 && m != 0xCC
}
