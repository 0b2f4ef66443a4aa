package photo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"sync/atomic"

	"golang.org/x/image/webp"
)

// Meta is what a photo's file says about it besides its pixels.
type Meta struct {
	Format Format
	// Width and Height are the size as displayed, with the orientation applied.
	Width, Height int
	// Turn is how the file asks for its pixels to be turned upright: EXIF for JPEG, PNG and WebP,
	// irot/imir for HEIC and AVIF (whose EXIF, if any, is ignored: it repeats the same turn).
	Turn Orientation
	// Pending is the part of Turn the decoded pixels still need: Turn itself, except for HEIC,
	// whose decoder (libheif) has already applied irot and imir. Apply it exactly once.
	Pending Orientation
	Colour  Colour
}

// Probe reads only as much of r as it takes to know the format, the displayed size and the
// colours, never the pixels: a 60000×60000 "bomb" costs nothing here. For PNG and WebP, whose
// EXIF may follow the image data, the orientation is left Upright (width and height may then be
// swapped in the result; their product and the short side are right).
func Probe(r io.Reader) (Meta, error) {
	head := make([]byte, SniffLen)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		if errors.Is(err, io.EOF) {
			return Meta{}, io.ErrUnexpectedEOF
		}
		return Meta{}, err
	}
	head = head[:n]
	m := Meta{Format: Sniff(head), Turn: Upright, Pending: Upright, Colour: Colour{Space: SRGB}}
	if !m.Format.Readable() {
		return m, fmt.Errorf("%s", UnsupportedReason(m.Format))
	}
	rest := io.MultiReader(bytes.NewReader(head), r)
	var cfg image.Config
	switch m.Format {
	case JPEG:
		var seen bytes.Buffer
		cfg, err = jpeg.DecodeConfig(io.TeeReader(rest, &seen))
		m.Turn = exifOrientation(JPEG, seen.Bytes())
		m.Colour = colourOf(JPEG, seen.Bytes())
	case PNG:
		cfg, err = png.DecodeConfig(rest)
	case WebP:
		cfg, err = webp.DecodeConfig(rest)
	case HEIC, AVIF:
		var info heifInfo
		info, err = readHEIFInfo(&prefixed{head: head, r: r})
		cfg = image.Config{Width: info.Width, Height: info.Height}
		m.Turn, m.Colour = info.Transform, heifColour(info)
	}
	if err != nil {
		return m, err
	}
	m.Pending = pending(m.Format, m.Turn)
	m.Width, m.Height = cfg.Width, cfg.Height
	if m.Turn.Swaps() {
		m.Width, m.Height = m.Height, m.Width
	}
	return m, nil
}

// pending is what remains to apply after the decoder: libheif applies HEIF's transforms itself.
func pending(f Format, turn Orientation) Orientation {
	if f == HEIC {
		return Upright
	}
	return turn
}

// prefixed reads a sniffed head and then the rest of the file, and skips forward by seeking the
// file when it can, so the HEIF box walker passes over media data without reading it.
type prefixed struct {
	head []byte
	r    io.Reader
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.r.Read(b)
}

func (p *prefixed) Skip(n int64) error {
	k := min(n, int64(len(p.head)))
	p.head, n = p.head[k:], n-k
	if s, ok := p.r.(io.Seeker); ok && n > 0 {
		_, err := s.Seek(n, io.SeekCurrent)
		return err
	}
	if m, err := io.CopyN(io.Discard, p.r, n); err != nil || m != n {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// decodes counts full decodes, wasmDecodes those of HEIC and AVIF.
var decodes, wasmDecodes atomic.Int64

// Decodes is how many photos this process has decoded in full (not probed).
func Decodes() int64 { return decodes.Load() }

// Metadata reads what a whole file says about its photo (format, displayed size, orientation,
// colours) without decoding its pixels: for a caller with a decoder of its own.
func Metadata(data []byte) (Meta, error) {
	m, _, err := metadata(data)
	return m, err
}

func metadata(data []byte) (Meta, *heifInfo, error) {
	m := Meta{Format: Sniff(data[:min(len(data), SniffLen)]), Turn: Upright, Pending: Upright, Colour: Colour{Space: SRGB}}
	if !m.Format.Readable() {
		return m, nil, fmt.Errorf("%s", UnsupportedReason(m.Format))
	}
	var cfg image.Config
	var info *heifInfo
	var err error
	switch m.Format {
	case JPEG:
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	case PNG:
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	case WebP:
		cfg, err = webp.DecodeConfig(bytes.NewReader(data))
	case HEIC, AVIF:
		var hi heifInfo
		hi, err = readHEIFInfo(bytes.NewReader(data))
		cfg, info = image.Config{Width: hi.Width, Height: hi.Height}, &hi
	}
	if err != nil {
		return m, nil, err
	}
	if info != nil {
		m.Turn, m.Colour = info.Transform, heifColour(*info)
	} else {
		m.Turn, m.Colour = exifOrientation(m.Format, data), colourOf(m.Format, data)
	}
	m.Pending = pending(m.Format, m.Turn)
	m.Width, m.Height = cfg.Width, cfg.Height
	if m.Turn.Swaps() {
		m.Width, m.Height = m.Height, m.Width
	}
	return m, info, nil
}

// Decode decodes a whole file. The image is as stored: apply meta.Pending to turn it upright (and
// ToSRGB for its colours). A YCbCr result uses the JPEG (BT.601 full-range) coding that Go's
// image/color assumes; a HEIC coded otherwise comes back converted to RGB.
func Decode(ctx context.Context, data []byte) (image.Image, Meta, error) {
	m, info, err := metadata(data)
	if err != nil {
		return nil, m, err
	}
	if err := checkDecodable(m); err != nil {
		return nil, m, err
	}
	decodes.Add(1)
	var img image.Image
	switch m.Format {
	case JPEG, PNG, WebP:
		img, err = decodeStd(m.Format, data)
	case HEIC, AVIF:
		img, err = wasmDecode(ctx, m.Format, data)
		if err == nil && m.Format == HEIC {
			img = normaliseYCbCr(img, info.NCLX)
		}
	}
	if err != nil {
		return nil, m, err
	}
	// The pixels decide the size: libheif also applies a clean-aperture crop.
	b := img.Bounds()
	m.Width, m.Height = b.Dx(), b.Dy()
	if m.Pending.Swaps() {
		m.Width, m.Height = m.Height, m.Width
	}
	if err := checkDecodable(m); err != nil {
		return nil, m, err // a header that understated the size: the pixels decide
	}
	return img, m, nil
}

// MaxDecodePixels is the most pixels Decode will decode, whoever asks: twice image_check's default
// max_pixels and more than any phone or camera writes by default. A header over it (a 60000×60000
// "bomb" given straight to train, which has no max_pixels of its own) is refused before a byte
// of pixels is allocated.
const MaxDecodePixels = 100_000_000

// TooLargeError is Decode's refusal of a header over MaxDecodePixels.
type TooLargeError struct {
	Format        Format
	Width, Height int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s header says %d×%d pixels (%.0f MP), more than the %d MP a photo may have: not decoded; hint: shrink it, or check the photos with image_check (max_pixels) before training", e.Format.Name(), e.Width, e.Height, float64(e.Width)*float64(e.Height)/1e6, MaxDecodePixels/1_000_000)
}

func checkDecodable(m Meta) error {
	if float64(m.Width)*float64(m.Height) > MaxDecodePixels {
		return &TooLargeError{Format: m.Format, Width: m.Width, Height: m.Height}
	}
	return nil
}

func decodeStd(f Format, data []byte) (image.Image, error) {
	r := bytes.NewReader(data)
	switch f {
	case JPEG:
		return jpeg.Decode(r)
	case PNG:
		return png.Decode(r)
	}
	return webp.Decode(r)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
