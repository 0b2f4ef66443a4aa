package photo

import (
	"image"
	"math"
)

// yccCoding is how a HEIC's YCbCr samples map to RGB (H.273 matrix coefficients and range).
type yccCoding struct {
	// crR, cbG, crG, cbB: R = Y + crR·Cr, G = Y − cbG·Cb − crG·Cr, B = Y + cbB·Cb, scaled by
	// 2^16, with the range expansion folded in; yMul and yOff expand a limited-range luma.
	crR, cbG, crG, cbB, yMul int64
	yOff                     int64
}

// newCoding works out the integer coefficients from Kr and Kb. Every product is rounded by an
// explicit float64 conversion before it is added, so no machine fuses it into an FMA and every
// machine gets the same integers.
func newCoding(kr, kb float64, full bool) yccCoding {
	kg := float64(1 - kr - kb)
	cs, ys, off := 1.0, 1.0, 0.0
	if !full {
		cs, ys, off = float64(255.0/224), float64(255.0/219), 16
	}
	fix := func(v float64) int64 { return int64(math.Round(float64(v * 65536))) }
	return yccCoding{
		crR:  fix(float64(float64(2*(1-kr)) * cs)),
		cbB:  fix(float64(float64(2*(1-kb)) * cs)),
		cbG:  fix(float64(float64(float64(float64(2*kb)*float64(1-kb))/kg) * cs)),
		crG:  fix(float64(float64(float64(float64(2*kr)*float64(1-kr))/kg) * cs)),
		yMul: fix(ys),
		yOff: int64(off),
	}
}

// normaliseYCbCr returns a HEIC's planes as Go's image/color reads them (BT.601, full range,
// which is what heif-enc and most phones write) or, when its nclx says another matrix or the
// limited range, the picture converted to RGB with the coding the file states.
func normaliseYCbCr(img image.Image, n *nclx) image.Image {
	m, ok := img.(*image.YCbCr)
	if !ok || n == nil {
		return img
	}
	var kr, kb float64
	switch n.Matrix {
	case 1: // BT.709
		kr, kb = 0.2126, 0.0722
	case 9, 10: // BT.2020
		kr, kb = 0.2627, 0.0593
	default: // 5, 6 (BT.601) and unspecified
		if n.FullRange {
			return img
		}
		kr, kb = 0.299, 0.114
	}
	return yccToNRGBA(m, newCoding(kr, kb, n.FullRange))
}

// yccToNRGBA converts with the given coding, each pixel taking its chroma sample as
// image.YCbCr.At does.
func yccToNRGBA(m *image.YCbCr, c yccCoding) *image.NRGBA {
	b := m.Rect
	out := image.NewNRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row := out.Pix[out.PixOffset(b.Min.X, y):]
		for x := b.Min.X; x < b.Max.X; x++ {
			ci := m.COffset(x, y)
			r, g, bl := c.rgb(m.Y[m.YOffset(x, y)], m.Cb[ci], m.Cr[ci])
			i := 4 * (x - b.Min.X)
			row[i], row[i+1], row[i+2], row[i+3] = r, g, bl, 255
		}
	}
	return out
}

func (c yccCoding) rgb(y, cb, cr uint8) (uint8, uint8, uint8) {
	yy := (int64(y) - c.yOff) * c.yMul
	b1, r1 := int64(cb)-128, int64(cr)-128
	return clamp8((yy + c.crR*r1 + 1<<15) >> 16),
		clamp8((yy - c.cbG*b1 - c.crG*r1 + 1<<15) >> 16),
		clamp8((yy + c.cbB*b1 + 1<<15) >> 16)
}

func clamp8(v int64) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}
