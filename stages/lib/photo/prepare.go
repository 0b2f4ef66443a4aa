package photo

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"

	"github.com/disintegration/imaging"
)

const (
	// DefaultMaxSide is train's max_side default: the long side of a prepared copy, in pixels.
	DefaultMaxSide = 2048
	// Quality is the prepared copies' JPEG quality: no visible loss at the trainers' resolution.
	Quality = 95
	// PrepareVersion changes whenever Prepare would make other bytes from the same original, so
	// that cached copies made the old way are not mixed with new ones.
	PrepareVersion = 1
)

// Prepare makes the copy of a photo that goes to a trainer: decoded, turned upright exactly once,
// Display P3 converted to sRGB, the long side at most maxSide (never enlarged; ≤ 0 means
// DefaultMaxSide), encoded as a quality-95 sRGB JPEG with no metadata at all: image/jpeg writes no
// EXIF, XMP, ICC or comment segment, so GPS positions and camera serials stay behind. The bytes
// depend only on the original and maxSide, on every machine.
func Prepare(ctx context.Context, original []byte, maxSide int) ([]byte, error) {
	if maxSide <= 0 {
		maxSide = DefaultMaxSide
	}
	img, m, err := Decode(ctx, original)
	if err != nil {
		return nil, err
	}
	small := scaled(img, maxSide)
	img = nil
	small = m.Pending.Apply(small)
	ToSRGB(small, m.Colour)
	var buf bytes.Buffer
	// Opaque NRGBA and RGBA share their bytes; RGBA takes the encoder's fast path.
	rgba := &image.RGBA{Pix: small.Pix, Stride: small.Stride, Rect: small.Rect}
	if err := jpeg.Encode(&buf, rgba, &jpeg.Options{Quality: Quality}); err != nil {
		return nil, fmt.Errorf("encoding the prepared copy: %w", err)
	}
	return buf.Bytes(), nil
}

// scaled resamples a decoded image so that its long side is at most maxSide, as opaque NRGBA.
// YCbCr images are resampled plane by plane before conversion, chroma straight from its
// subsampled plane to the output grid, so no full-size RGB copy is ever made.
func scaled(img image.Image, maxSide int) *image.NRGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := fitSide(w, h, maxSide)
	out := image.NewNRGBA(image.Rect(0, 0, dw, dh))
	switch m := img.(type) {
	case *image.YCbCr:
		cw, ch := ChromaSize(m.SubsampleRatio, m.Rect.Dx(), m.Rect.Dy())
		ys := resample(m.Y[m.YOffset(b.Min.X, b.Min.Y):], m.YStride, w, h, 1, dw, dh)
		cbs := resample(m.Cb[m.COffset(b.Min.X, b.Min.Y):], m.CStride, cw, ch, 1, dw, dh)
		crs := resample(m.Cr[m.COffset(b.Min.X, b.Min.Y):], m.CStride, cw, ch, 1, dw, dh)
		for i, y := range ys {
			r, g, bl := color.YCbCrToRGB(y, cbs[i], crs[i])
			out.Pix[4*i], out.Pix[4*i+1], out.Pix[4*i+2], out.Pix[4*i+3] = r, g, bl, 255
		}
	case *image.Gray:
		gs := resample(m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride, w, h, 1, dw, dh)
		for i, g := range gs {
			out.Pix[4*i], out.Pix[4*i+1], out.Pix[4*i+2], out.Pix[4*i+3] = g, g, g, 255
		}
	default:
		n := imaging.Clone(img) // integer conversions only, premultiplied alpha undone
		flatten(n)
		out.Pix = resample(n.Pix, n.Stride, w, h, 4, dw, dh)
	}
	return out
}

// flatten composes translucent pixels over white: a JPEG has no alpha, and a transparent
// background would otherwise turn black.
func flatten(n *image.NRGBA) {
	for i := 0; i+3 < len(n.Pix); i += 4 {
		a := int(n.Pix[i+3])
		if a == 255 {
			continue
		}
		for c := 0; c < 3; c++ {
			n.Pix[i+c] = uint8((int(n.Pix[i+c])*a + 255*(255-a) + 127) / 255)
		}
		n.Pix[i+3] = 255
	}
}

// ChromaSize is the size of the chroma planes of a w×h YCbCr image subsampled by r.
func ChromaSize(r image.YCbCrSubsampleRatio, w, h int) (int, int) {
	switch r {
	case image.YCbCrSubsampleRatio422:
		return (w + 1) / 2, h
	case image.YCbCrSubsampleRatio420:
		return (w + 1) / 2, (h + 1) / 2
	case image.YCbCrSubsampleRatio440:
		return w, (h + 1) / 2
	case image.YCbCrSubsampleRatio411:
		return (w + 3) / 4, h
	case image.YCbCrSubsampleRatio410:
		return (w + 3) / 4, (h + 1) / 2
	}
	return w, h
}
