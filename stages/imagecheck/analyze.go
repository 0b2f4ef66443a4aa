package imagecheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/stages/lib/jpegscale"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"golang.org/x/sync/semaphore"
)

const (
	// workSide is the long side of the copy made right after decoding; every figure is computed on it
	// (face scoring needs a face of at least 160 px, so portraits need roughly this much).
	workSide = 1024
	// sharpSide is the long side the Laplacian variance is measured at, so that figures compare across
	// photos of any resolution (and min_sharpness has one meaning).
	sharpSide = 256
	// minDecodeSide is the long side a JPEG is decoded at, at least: the smallest of 1/2, 1/4 and 1/8
	// that keeps it is chosen (a 4032 px photo decodes at 1/4, 1008 px), and the working copy is
	// resampled from there; 0.9 × workSide keeps that last step within ±10%.
	minDecodeSide = workSide * 9 / 10
)

// slot bounds the decoded images held at once by every check of the process together (a batch
// runs several image_check instances in parallel): memory stays at a few decoded photos.
var slot = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

// decodeBudget bounds the bytes those decodes may hold together: two phone photos fit side by
// side, while a 50 MP 16-bit PNG (400 MB decoded) or a 50 MP progressive JPEG waits for the others
// and runs alone, so a set of large files costs one large decode at a time, not two.
const decodeBudget = 256 << 20

// decodeBytes holds the budget (decodeLimit of it: tests lower both); heldBytes and peakHeld
// count what is held, for the test that the budget holds.
var (
	decodeBytes               = semaphore.NewWeighted(decodeBudget)
	decodeLimit         int64 = decodeBudget
	heldBytes, peakHeld atomic.Int64
)

// bigDecode is a decode large enough (a 16 MP PNG, a 20 MP JPEG) that its memory is returned as
// soon as it is done; phone photos stay under it and cost no extra collection.
const bigDecode = 64 << 20

// decodeWeight estimates what decoding holds: the file's bytes plus its pixels at the most a
// format may need per pixel (a JPEG's coefficients for a progressive 4:2:0 scan, a 16-bit RGBA
// PNG). A weight over the budget is held as the whole budget: that photo runs alone.
func decodeWeight(format photo.Format, pixels float64, fileBytes int64) int64 {
	perPixel := 4.0
	switch format {
	case photo.JPEG:
		perPixel = 3
	case photo.PNG:
		perPixel = 8
	}
	return int64(pixels*perPixel) + fileBytes
}

// maxFileBytes is the largest file an image of that many pixels can honestly be: 4 bytes a pixel
// (an uncompressed RGBA PNG) plus room for metadata.
func maxFileBytes(pixels float64) int64 { return int64(4*pixels) + 16<<20 }

// decodes counts full image decodes (not header reads), so tests and benchmarks can tell whether a
// check was answered from the cache.
var decodes atomic.Int64

// Decodes returns how many images this process has fully decoded so far.
func Decodes() int64 { return decodes.Load() }

// analysis is what one file yields; it depends only on the file's content (never on the rules), so
// it is cached per file and the rules are applied afresh on every check.
type analysis struct {
	Format      string `json:"format"`
	Width       int    `json:"width"`  // as displayed (EXIF orientation applied)
	Height      int    `json:"height"` // as displayed
	Orientation int    `json:"orientation,omitempty"`
	// Decoded is false when the header was over the max_pixels in force at the time.
	Decoded bool `json:"decoded"`
	// Unreadable is the reason the file cannot be used at all (empty, unsupported, corrupt).
	Unreadable string       `json:"unreadable,omitempty"`
	SHA256     string       `json:"sha256,omitempty"`
	Sharpness  float64      `json:"sharpness"`
	Dark       float64      `json:"dark"`
	Bright     float64      `json:"bright"`
	Luma       float64      `json:"luma"`
	Contrast   float64      `json:"contrast"`
	Cb         float64      `json:"cb"`
	Cr         float64      `json:"cr"`
	Hash       uint64       `json:"hash"`
	Mirror     uint64       `json:"mirror"`
	Face       *faceFigures `json:"face,omitempty"`
}

// pixels is the header's pixel count.
func (a *analysis) pixels() float64 { return float64(a.Width) * float64(a.Height) }

// analyzeFile judges the header of, decodes once and measures one file. A file that passes its
// header is read whole and hashed, and lookup may answer for that content (the second result is
// then true) before anything is decoded. Failures that are the file's fault come back as
// Unreadable; only I/O trouble is an error.
func analyzeFile(ctx context.Context, f *os.File, size int64, maxPixels float64, lookup func(sha string) (analysis, bool)) (analysis, bool, error) {
	head := make([]byte, min(int64(photo.SniffLen), size))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return analysis{}, false, err
	}
	format := photo.Sniff(head[:n])
	a := analysis{Format: string(format)}
	if !format.Readable() {
		a.Unreadable = photo.UnsupportedReason(format)
		return a, false, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return analysis{}, false, err
	}
	// The header alone says how big the decoded image would be; a 60000×60000 "bomb" stops here.
	meta, err := photo.Probe(io.NewSectionReader(f, 0, size))
	if err != nil {
		a.Unreadable = corruptReason(format, err)
		return a, false, nil
	}
	a.Width, a.Height = meta.Width, meta.Height
	if a.Width <= 0 || a.Height <= 0 {
		a.Unreadable = fmt.Sprintf("corrupt %s header: %d×%d pixels: re-export the photo", format.Name(), a.Width, a.Height)
		return a, false, nil
	}
	if a.pixels() > maxPixels {
		return a, false, nil
	}
	// A small header on a huge file (a photo with hundreds of MB appended) must not be read whole.
	if limit := maxFileBytes(a.pixels()); size > limit {
		a.Unreadable = fmt.Sprintf("file is %.0f MB, more than a %d×%d %s can need (%.0f MB): re-export the photo", float64(size)/1e6, a.Width, a.Height, format.Name(), float64(limit)/1e6)
		return a, false, nil
	}

	// Bound full-size decodes process-wide, whatever the number of checks. HEIC and AVIF are
	// bounded by the photo package instead (one at a time): holding a slot while waiting for that
	// would stop JPEGs being decoded on the other core meanwhile.
	if format != photo.HEIC && format != photo.AVIF {
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			return analysis{}, false, ctx.Err()
		}
		defer func() { <-slot }()
		w := min(decodeWeight(format, a.pixels(), size), decodeLimit)
		if err := decodeBytes.Acquire(ctx, w); err != nil {
			return analysis{}, false, err
		}
		held := heldBytes.Add(w)
		for p := peakHeld.Load(); held > p && !peakHeld.CompareAndSwap(p, held); p = peakHeld.Load() {
		}
		defer func() { heldBytes.Add(-w); decodeBytes.Release(w) }()
		if w >= bigDecode {
			// Hundreds of MB are garbage once the working copy is made: hand them back now, or
			// the collector lets the heap grow to twice that before the next large decode.
			defer debug.FreeOSMemory()
		}
	}

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return analysis{}, false, err
	}
	buf := bytes.NewBuffer(fileBuffer(int(size) + bytes.MinRead))
	defer func() { fileBufs.Put(buf.Bytes()[:0]) }() // nothing analyzed keeps a reference to it
	if _, err := buf.ReadFrom(f); err != nil {
		return analysis{}, false, err
	}
	data := buf.Bytes()
	a.SHA256 = sha256sum(data)
	if c, ok := lookup(a.SHA256); ok {
		return c, true, nil
	}

	decodes.Add(1)
	img, meta, err := decode(ctx, format, data)
	if err != nil {
		if truncated(format, data) {
			err = fmt.Errorf("%w: %v", io.ErrUnexpectedEOF, err)
		}
		a.Unreadable = corruptReason(format, err)
		return a, false, nil
	}
	data = nil
	if px := float64(meta.Width) * float64(meta.Height); px > float64(a.Width)*float64(a.Height) && px > maxPixels {
		// The header lied (a HEIC's ispe can): the pixels decide, and they are over the limit.
		a.Unreadable = fmt.Sprintf("%s header says %d×%d pixels but the picture is %d×%d (%.0f MP, over max_pixels): re-export the photo", format.Name(), a.Width, a.Height, meta.Width, meta.Height, px/1e6)
		return a, false, nil
	}
	a.Width, a.Height, a.Orientation = meta.Width, meta.Height, int(meta.Turn)
	// Upright as viewers show it (the orientation applied once, whoever applies it) and in sRGB,
	// so every figure and the face search see the photo as a trainer will.
	w, h := meta.Width, meta.Height
	if meta.Pending.Swaps() {
		w, h = h, w // the decoded pixels are still stored sideways
	}
	small := meta.Pending.Apply(toWorkSize(img, w, h))
	img = nil // the decoded image is garbage from here on; only the small copy is kept
	photo.ToSRGB(small, meta.Colour)
	measure(&a, small)
	a.Face = faceMeasure(small)
	workImages.Put(small) // the figures keep nothing of it
	a.Decoded = true
	return a, false, nil
}

// workImages holds working copies already measured (*image.NRGBA), for the next photo's: 3 MB of
// fresh memory a photo, like a read buffer, costs more than reusing one.
var workImages sync.Pool

// newWorkImage is an ow×oh NRGBA image whose every pixel the caller sets (it may hold an older
// photo's pixels).
func newWorkImage(ow, oh int) *image.NRGBA {
	r := image.Rect(0, 0, ow, oh)
	if m, ok := workImages.Get().(*image.NRGBA); ok && cap(m.Pix) >= 4*ow*oh {
		return &image.NRGBA{Pix: m.Pix[:4*ow*oh], Stride: 4 * ow, Rect: r}
	}
	return image.NewNRGBA(r)
}

// fileBufs holds the read buffers of files already analyzed ([]byte of length 0): a fresh buffer
// of a few MB per photo costs page faults and clearing that a reused one does not.
var fileBufs sync.Pool

// fileBuffer returns an empty buffer with room for n bytes, from fileBufs if one is big enough.
func fileBuffer(n int) []byte {
	if b, ok := fileBufs.Get().([]byte); ok && cap(b) >= n {
		return b
	}
	return make([]byte, 0, n)
}

func sha256sum(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// decode decodes a whole file of any format the check reads; a JPEG may come back reduced (see
// decodeJPEG), with the photo's metadata read from the file itself.
func decode(ctx context.Context, format photo.Format, data []byte) (image.Image, photo.Meta, error) {
	if format != photo.JPEG {
		return photo.Decode(ctx, data)
	}
	meta, err := photo.Metadata(data)
	if err != nil {
		return nil, meta, err
	}
	w, h := meta.Width, meta.Height
	if meta.Turn.Swaps() {
		w, h = h, w // the stored size
	}
	img, err := decodeJPEG(data, w, h)
	return img, meta, err
}

// decodeJPEG is decodeReduced; the benchmarks swap in decodeFull to show today's figures.
var decodeJPEG = decodeReduced

// decodeReduced decodes a JPEG at the smallest of 1/2, 1/4 and 1/8 that keeps minDecodeSide
// (jpegscale: a 12 MP photo costs a quarter of a full decode). Whatever jpegscale refuses goes to
// image/jpeg, which decodes CMYK and the rarer layouts and gives damaged files the verdicts and
// messages they always had (the fuzz test keeps the two agreeing, so this second decode is for
// broken and unusual files only).
func decodeReduced(data []byte, w, h int) (image.Image, error) {
	scale := jpegscale.ScaleFor(w, h, minDecodeSide)
	if scale == jpegscale.Full {
		// Photos under 1843 px decode in full either way; image/jpeg keeps their figures exactly.
		return decodeFull(data, w, h)
	}
	img, err := jpegscale.Decode(data, jpegscale.Options{Scale: scale})
	if err == nil {
		return img, nil
	}
	full, ferr := decodeFull(data, w, h)
	var unsupported jpegscale.UnsupportedError
	if ferr != nil && errors.As(err, &unsupported) {
		return nil, unsupported // neither reads it: say what it is, and what to do
	}
	return full, ferr
}

// decodeFull is today's full-size decode with image/jpeg.
func decodeFull(data []byte, _, _ int) (image.Image, error) {
	return jpeg.Decode(bytes.NewReader(data))
}

// truncated tells a file cut short (an interrupted copy or upload) from other corruption: the
// format's end marker is missing.
func truncated(format photo.Format, data []byte) bool {
	switch format {
	case photo.JPEG:
		end := bytes.TrimRight(data, "\x00\r\n ")
		return !bytes.HasSuffix(end, []byte{0xFF, 0xD9})
	case photo.PNG:
		return !bytes.Contains(data[max(0, len(data)-64):], []byte("IEND"))
	case photo.WebP:
		return len(data) >= 8 && int64(binary.LittleEndian.Uint32(data[4:8]))+8 > int64(len(data))
	}
	return false
}

func corruptReason(format photo.Format, err error) string {
	var unsupported jpegscale.UnsupportedError
	if errors.As(err, &unsupported) {
		return fmt.Sprintf("JPEG with %s is not supported: export as an 8-bit baseline JPEG", unsupported.Feature)
	}
	var stdUnsupported jpeg.UnsupportedError
	if errors.As(err, &stdUnsupported) {
		feature := strings.TrimPrefix(string(stdUnsupported), "unsupported JPEG feature: ")
		switch feature {
		case "precision":
			feature = "12-bit samples"
		case "unknown marker":
			feature = "arithmetic or lossless coding, or an unknown marker"
		}
		return fmt.Sprintf("JPEG with a feature that is not supported (%s): export as an 8-bit baseline JPEG", feature)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Sprintf("truncated %s (the file ends early: %s): copy or export it again", format.Name(), firstLine(err.Error()))
	}
	return fmt.Sprintf("corrupt %s (%s): re-export the photo", format.Name(), firstLine(err.Error()))
}

// firstLine is the first line of a decoder's message, at most 200 bytes: a decoder that traps
// (libheif under wasm) reports a stack trace, which is no reason a person can act on.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// shrink returns a copy whose long side is at most side. A JPEG (YCbCr) is averaged straight from
// its planes onto the target grid: every output pixel's luma is the mean of the 3–4 px wide block
// it covers (a proper anti-aliasing filter at these ratios), its chroma the sample at the block's
// centre; that costs a small fraction of a filtered resize of the full-size image (see
// BenchmarkStages: shrink vs shrink-imaging). Other images go through imaging.
func shrink(img image.Image, side int) *image.NRGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if max(w, h) <= side {
		return imaging.Clone(img)
	}
	tw, th := fitSize(w, h, side)
	// boxPlane's 16-bit lanes hold 257 rows per cell: far beyond any photo, but checked all the same.
	if yc, ok := img.(*image.YCbCr); ok && max(w, h) >= 2*side && max(w, h) < 200*side {
		return boxYCbCr(yc, tw, th)
	}
	return imaging.Resize(img, tw, th, imaging.Linear)
}

// toWorkSize makes the working copy of a w×h photo from img, which is the photo decoded in full or
// (a JPEG) reduced to 1/2, 1/4 or 1/8: either way the copy has the size a full decode's shrink
// gives, so every figure keeps its meaning. A reduced decode is 0.9–1.8× the working size; its
// luma is resampled (resampleWeights) and its chroma sampled, as boxYCbCr does for full decodes.
func toWorkSize(img image.Image, w, h int) *image.NRGBA {
	b := img.Bounds()
	if b.Dx() == w && b.Dy() == h {
		return shrink(img, workSide)
	}
	tw, th := fitSize(w, h, workSide)
	if yc, ok := img.(*image.YCbCr); ok {
		return areaYCbCr(yc, tw, th)
	}
	return imaging.Resize(img, tw, th, imaging.Linear)
}

// areaYCbCr resamples a YCbCr image onto an ow×oh NRGBA grid: luma in two separable fixed-point
// passes with resampleWeights' taps, chroma sampled. It works a row at a time, straight into the
// NRGBA image: a few source rows resampled across are all it keeps besides the result (two
// whole-plane passes cost three more planes' worth of fresh memory per photo).
func areaYCbCr(m *image.YCbCr, ow, oh int) *image.NRGBA {
	const bits = 12
	w, h := m.Rect.Dx(), m.Rect.Dy()
	cw, ch := photo.ChromaSize(m.SubsampleRatio, w, h)
	ys := m.Y[m.YOffset(m.Rect.Min.X, m.Rect.Min.Y):]
	cOff := m.COffset(m.Rect.Min.X, m.Rect.Min.Y)
	cbs, crs := m.Cb[cOff:], m.Cr[cOff:]
	xw := padTaps(resampleWeights(w, ow, bits))
	yw := resampleWeights(h, oh, bits)
	cx := sampleAt(cw, ow)
	rows := newRowCache(xw, ow)
	acc := make([]int64, ow)
	line := make([]uint8, 3*ow) // one output row's Y, Cb and Cr
	yl, cbl, crl := line[:ow], line[ow:2*ow], line[2*ow:]
	out := newWorkImage(ow, oh) // every row is written below
	for oy, taps := range yw {
		clear(acc)
		for _, t := range taps {
			src := rows.get(t.i, func(y int) []uint8 { return ys[y*m.YStride : y*m.YStride+w] })
			src = src[:len(acc)]
			for ox, v := range src {
				acc[ox] += int64(v) * int64(t.w)
			}
		}
		cy := min(ch-1, (2*oy+1)*ch/(2*oh)) * m.CStride
		cbRow, crRow := cbs[cy:cy+cw], crs[cy:cy+cw]
		for ox, v := range acc {
			yl[ox] = uint8(min(max((v+1<<(2*bits-1))>>(2*bits), 0), 255))
			cbl[ox], crl[ox] = cbRow[cx[ox]], crRow[cx[ox]]
		}
		nrgbaRow(out.Pix[oy*out.Stride:], yl, cbl, crl)
	}
	return out
}

// paddedTaps are one axis's taps with every output given as many (zero weights added), laid
// flat: output o reads idx[o·n : o·n+n]. Integer sums do not care about order or zero terms.
type paddedTaps struct {
	n   int
	idx []int32
	w   []int32
}

func padTaps(all [][]fixedTap) paddedTaps {
	p := paddedTaps{}
	for _, taps := range all {
		p.n = max(p.n, len(taps))
	}
	p.idx = make([]int32, p.n*len(all))
	p.w = make([]int32, p.n*len(all))
	for o, taps := range all {
		for j, t := range taps {
			p.idx[o*p.n+j], p.w[o*p.n+j] = int32(t.i), t.w
		}
		for j := len(taps); j < p.n; j++ {
			p.idx[o*p.n+j] = p.idx[o*p.n] // any sample will do: its weight is 0
		}
	}
	return p
}

// rowCache holds source rows resampled across (×2^bits), the last few asked for: the vertical
// taps of consecutive output rows share most of their source rows.
type rowCache struct {
	xw   paddedTaps
	y    [8]int // source row in each slot, -1 for none
	rows [8][]int32
	next int
}

func newRowCache(xw paddedTaps, ow int) *rowCache {
	c := &rowCache{xw: xw}
	for i := range c.rows {
		c.y[i] = -1
		c.rows[i] = make([]int32, ow)
	}
	return c
}

// get returns source row y resampled across; src(y) is the row's samples.
func (c *rowCache) get(y int, src func(int) []uint8) []int32 {
	for i, cy := range c.y {
		if cy == y {
			return c.rows[i]
		}
	}
	slot := c.next
	c.next = (c.next + 1) % len(c.rows)
	c.y[slot] = y
	dst, row := c.rows[slot], src(y)
	n, idx, w := c.xw.n, c.xw.idx, c.xw.w
	if n == 4 { // Catmull-Rom's four taps, the usual case (a 1/4 or 1/8 decode grows a little)
		for ox := range dst {
			i, k := idx[4*ox:4*ox+4:4*ox+4], w[4*ox:4*ox+4:4*ox+4]
			dst[ox] = int32(row[i[0]])*k[0] + int32(row[i[1]])*k[1] + int32(row[i[2]])*k[2] + int32(row[i[3]])*k[3]
		}
		return dst
	}
	for ox := range dst {
		var s int32
		for j := ox * n; j < ox*n+n; j++ {
			s += int32(row[idx[j]]) * w[j]
		}
		dst[ox] = s
	}
	return dst
}

// sampleAt is, for each of n cells over src samples, the sample at the cell's centre (as
// samplePlane picks them).
func sampleAt(src, n int) []int {
	xs := make([]int, n)
	for i := range xs {
		xs[i] = min(src-1, (2*i+1)*src/(2*n))
	}
	return xs
}

// nrgbaRow converts JPEG (JFIF) Y, Cb, Cr samples to opaque NRGBA pixels in the 16.16 fixed point
// color.YCbCrToRGB uses (TestNRGBARowMatchesColor holds the two to the bit over every input):
// a row at a time it costs a third of a call per pixel.
func nrgbaRow(dst, ys, cbs, crs []uint8) {
	dst, cbs, crs = dst[:4*len(ys)], cbs[:len(ys)], crs[:len(ys)]
	for i, y := range ys {
		yy := int32(y) * 0x10101 // Y·(1 + 1/256 + 1/65536): rounds as the library does
		b1, r1 := int32(cbs[i])-128, int32(crs[i])-128
		r := clamp16(yy + 91881*r1)
		g := clamp16(yy - 22554*b1 - 46802*r1)
		b := clamp16(yy + 116130*b1)
		binary.LittleEndian.PutUint32(dst[4*i:], r|g<<8|b<<16|0xFF<<24)
	}
}

// clamp16 is the 8-bit value of a 16.16 fixed-point sample, clamped to 0–255.
func clamp16(v int32) uint32 { return uint32(min(max(v, 0), 0xFFFFFF)) >> 16 }

// toNRGBA converts full-resolution Y, Cb and Cr planes to an NRGBA image.
func toNRGBA(ys, cbs, crs []uint8, ow, oh int) *image.NRGBA {
	out := newWorkImage(ow, oh) // every pixel is written below
	nrgbaRow(out.Pix, ys, cbs, crs)
	return out
}

// resampleWeights are the taps of one axis, by less than 2× either way, in fixed point: area
// weights where it shrinks (each output the covered share of the inputs it overlaps; whole-pixel
// boxes, boxPlane, would alias at these ratios) and Catmull-Rom where it grows, which keeps the
// fine detail (skin texture, sharpness) that interpolating by area would blur away.
func resampleWeights(src, n int, bits uint) [][]fixedTap {
	if n > src {
		return fixedWeights(cubicWeights(src, n), bits)
	}
	return fixedWeights(areaWeights(src, n), bits)
}

// cubicWeights lists, for each of n outputs over src < n samples, the four nearest samples
// (clamped at the edges) and their Catmull-Rom weights.
func cubicWeights(src, n int) [][]weight {
	out := make([][]weight, n)
	for o := range out {
		c := (float64(o)+0.5)*float64(src)/float64(n) - 0.5
		base := int(math.Floor(c))
		for i := base - 1; i <= base+2; i++ {
			t := math.Abs(c - float64(i))
			var w float64
			if t < 1 {
				w = 1.5*t*t*t - 2.5*t*t + 1
			} else if t < 2 {
				w = -0.5*t*t*t + 2.5*t*t - 4*t + 2
			}
			if w != 0 {
				out[o] = append(out[o], weight{min(max(i, 0), src-1), w})
			}
		}
	}
	return out
}

type fixedTap struct {
	i int
	w int32
}

// fixedWeights turns float weights into fixed-point ones summing to exactly 2^bits per output.
func fixedWeights(all [][]weight, bits uint) [][]fixedTap {
	out := make([][]fixedTap, len(all))
	for o, ws := range all {
		var total float64
		for _, w := range ws {
			total += w.w
		}
		taps := make([]fixedTap, len(ws))
		sum, big := int32(0), 0
		for j, w := range ws {
			taps[j] = fixedTap{w.i, int32(math.Round(w.w / total * float64(int(1)<<bits)))}
			sum += taps[j].w
			if taps[j].w > taps[big].w {
				big = j
			}
		}
		taps[big].w += 1<<bits - sum
		out[o] = taps
	}
	return out
}

// fitSize scales (w, h) so that the long side is side, keeping the aspect ratio.
func fitSize(w, h, side int) (int, int) {
	if w >= h {
		return side, max(1, int(math.Round(float64(h)*float64(side)/float64(w))))
	}
	return max(1, int(math.Round(float64(w)*float64(side)/float64(h)))), side
}

// boxYCbCr shrinks a YCbCr image onto an ow×oh NRGBA grid (luma block means, chroma samples).
func boxYCbCr(m *image.YCbCr, ow, oh int) *image.NRGBA {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	cw, ch := photo.ChromaSize(m.SubsampleRatio, w, h)
	yOff := m.YOffset(b.Min.X, b.Min.Y)
	cOff := m.COffset(b.Min.X, b.Min.Y)
	ys := boxPlane(m.Y[yOff:], m.YStride, w, h, ow, oh)
	cbs := samplePlane(m.Cb[cOff:], m.CStride, cw, ch, ow, oh)
	crs := samplePlane(m.Cr[cOff:], m.CStride, cw, ch, ow, oh)
	return toNRGBA(ys, cbs, crs, ow, oh)
}

// boxPlane averages an 8-bit plane (the area sw×sh at its start) onto ow×oh cells; cells cover
// whole source rows and columns, split as evenly as integers allow.
//
// It is the hottest loop of a check after the JPEG decoder, so rows are summed eight bytes at a
// time: the even and the odd bytes of a 64-bit word go into four 16-bit lanes each (a lane holds up
// to 257 rows of 255, and a cell spans a handful).
func boxPlane(pix []uint8, stride, sw, sh, ow, oh int) []uint8 {
	const lanes = 0x00FF00FF00FF00FF
	out := make([]uint8, ow*oh)
	cols := make([]uint32, sw)
	words := sw / 8
	even, odd := make([]uint64, words), make([]uint64, words)
	x0 := make([]int, ow+1)
	for i := 0; i <= ow; i++ {
		x0[i] = i * sw / ow
	}
	for oy := 0; oy < oh; oy++ {
		ya, yb := oy*sh/oh, max((oy+1)*sh/oh, oy*sh/oh+1)
		clear(even)
		clear(odd)
		clear(cols[8*words:])
		for y := ya; y < yb; y++ {
			row := pix[y*stride : y*stride+sw]
			for j := range even {
				v := binary.LittleEndian.Uint64(row[8*j:])
				even[j] += v & lanes
				odd[j] += (v >> 8) & lanes
			}
			for x := 8 * words; x < sw; x++ {
				cols[x] += uint32(row[x])
			}
		}
		for j := range even {
			e, o := even[j], odd[j]
			c := cols[8*j : 8*j+8 : 8*j+8]
			c[0], c[1] = uint32(e&0xFFFF), uint32(o&0xFFFF)
			c[2], c[3] = uint32(e>>16&0xFFFF), uint32(o>>16&0xFFFF)
			c[4], c[5] = uint32(e>>32&0xFFFF), uint32(o>>32&0xFFFF)
			c[6], c[7] = uint32(e>>48), uint32(o>>48)
		}
		rows := uint32(yb - ya)
		dst := out[oy*ow : oy*ow+ow]
		for ox := range dst {
			xa, xb := x0[ox], max(x0[ox+1], x0[ox]+1)
			var s uint32
			for _, v := range cols[xa:xb] {
				s += v
			}
			n := uint32(xb-xa) * rows
			dst[ox] = uint8((s + n/2) / n)
		}
	}
	return out
}

// samplePlane picks, for each of ow×oh cells, the sample at the cell's centre: used for chroma,
// whose means matter here but whose fine detail does not.
func samplePlane(pix []uint8, stride, sw, sh, ow, oh int) []uint8 {
	out := make([]uint8, ow*oh)
	xs := make([]int, ow)
	for i := range xs {
		xs[i] = min(sw-1, (2*i+1)*sw/(2*ow))
	}
	for oy := 0; oy < oh; oy++ {
		row := pix[min(sh-1, (2*oy+1)*sh/(2*oh))*stride:]
		dst := out[oy*ow : oy*ow+ow]
		for ox, x := range xs {
			dst[ox] = row[x]
		}
	}
	return out
}

// measure computes exposure, colour, sharpness and the perceptual hashes from the small copy.
func measure(a *analysis, img *image.NRGBA) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	// One integer pass: an 8-bit luma plane (Rec. 601, as JPEG stores it), a luma histogram for
	// exposure and contrast, and channel sums (mean chroma is a linear function of mean RGB).
	luma := make([]uint8, w*h)
	var hist [256]int
	var sumR, sumG, sumB int
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		dst := luma[y*w : y*w+w]
		for x := range dst {
			p := row[4*x : 4*x+3 : 4*x+3]
			r, g, b := int(p[0]), int(p[1]), int(p[2])
			l := (19595*r + 38470*g + 7471*b + 1<<15) >> 16
			dst[x] = uint8(l)
			hist[l]++
			sumR += r
			sumG += g
			sumB += b
		}
	}
	n := float64(w * h)
	var sum, sum2 float64
	dark, bright := 0, 0
	for l, c := range hist {
		sum += float64(l * c)
		sum2 += float64(l * l * c)
		if l <= 10 {
			dark += c
		} else if l >= 250 {
			bright += c
		}
	}
	a.Dark, a.Bright = float64(dark)/n, float64(bright)/n
	a.Luma = sum / n
	a.Contrast = math.Sqrt(math.Max(0, sum2/n-a.Luma*a.Luma))
	mr, mg, mb := float64(sumR)/n, float64(sumG)/n, float64(sumB)/n
	a.Cb = -0.168736*mr - 0.331264*mg + 0.5*mb
	a.Cr = 0.5*mr - 0.418688*mg - 0.081312*mb

	sw, sh := fitSize(w, h, sharpSide)
	if max(w, h) < sharpSide {
		sw, sh = w, h
	}
	small := boxPlane(luma, w, w, h, sw, sh)
	grey := make([]float32, len(small))
	for i, v := range small {
		grey[i] = float32(v)
	}
	a.Sharpness = laplacianVariance(grey, sw, sh)
	a.Hash, a.Mirror = dhash(areaResize(grey, sw, sh, 9, 8))
}

// areaResize averages a float plane onto ow×oh cells weighting partly covered source pixels by the
// covered share. Unlike whole-pixel boxes it is exactly symmetric, so the thumbnail of a mirrored
// photo is the mirror of its thumbnail and the mirror hash matches flipped copies.
func areaResize(pix []float32, sw, sh, ow, oh int) []float32 {
	wx := areaWeights(sw, ow)
	wy := areaWeights(sh, oh)
	out := make([]float32, ow*oh)
	for oy, ys := range wy {
		for ox, xs := range wx {
			var s, n float64
			for _, y := range ys {
				row := pix[y.i*sw:]
				for _, x := range xs {
					w := y.w * x.w
					s += w * float64(row[x.i])
					n += w
				}
			}
			out[oy*ow+ox] = float32(s / n)
		}
	}
	return out
}

type weight struct {
	i int
	w float64
}

// areaWeights lists, for each of n output cells over src samples, the samples it covers and by how much.
func areaWeights(src, n int) [][]weight {
	out := make([][]weight, n)
	scale := float64(src) / float64(n)
	for o := range out {
		a, b := float64(o)*scale, float64(o+1)*scale
		for i := int(a); i < src && float64(i) < b; i++ {
			w := math.Min(b, float64(i+1)) - math.Max(a, float64(i))
			if w > 1e-9 {
				out[o] = append(out[o], weight{i, w})
			}
		}
	}
	return out
}

// laplacianVariance is the variance of the 4-neighbour Laplacian over the interior: edges and fine
// texture make it large, blur makes it small.
func laplacianVariance(p []float32, w, h int) float64 {
	if w < 3 || h < 3 {
		return 0
	}
	var sum, sum2 float64
	for y := 1; y < h-1; y++ {
		for x := 1; x < w-1; x++ {
			i := y*w + x
			l := float64(p[i-1] + p[i+1] + p[i-w] + p[i+w] - 4*p[i])
			sum += l
			sum2 += l * l
		}
	}
	n := float64((w - 2) * (h - 2))
	m := sum / n
	return sum2/n - m*m
}

// dhash is the 64-bit difference hash of a 9×8 grey thumbnail (bit set where a pixel is brighter
// than its right neighbour), and the hash the mirrored photo would have.
func dhash(t []float32) (hash, mirror uint64) {
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			bit := uint(y*8 + x)
			if t[y*9+x] > t[y*9+x+1] {
				hash |= 1 << bit
			}
			// Mirrored row: m[x] = t[8-x], so m[x] > m[x+1] is t[8-x] > t[7-x].
			if t[y*9+8-x] > t[y*9+7-x] {
				mirror |= 1 << bit
			}
		}
	}
	return hash, mirror
}
