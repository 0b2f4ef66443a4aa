package imagecheck

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
)

// The working copy's resampler as it was before it went row by row (the reference the faster one
// is held to, bit for bit): two whole-plane passes, then a conversion through image/color.

func areaYCbCrRef(m *image.YCbCr, ow, oh int) *image.NRGBA {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	cw, ch := photo.ChromaSize(m.SubsampleRatio, w, h)
	ys := resamplePlaneRef(m.Y[m.YOffset(m.Rect.Min.X, m.Rect.Min.Y):], m.YStride, w, h, ow, oh)
	cOff := m.COffset(m.Rect.Min.X, m.Rect.Min.Y)
	cbs := samplePlane(m.Cb[cOff:], m.CStride, cw, ch, ow, oh)
	crs := samplePlane(m.Cr[cOff:], m.CStride, cw, ch, ow, oh)
	out := image.NewNRGBA(image.Rect(0, 0, ow, oh))
	for i, y := range ys {
		r, g, bl := color.YCbCrToRGB(y, cbs[i], crs[i])
		binary.LittleEndian.PutUint32(out.Pix[4*i:], uint32(r)|uint32(g)<<8|uint32(bl)<<16|0xFF<<24)
	}
	return out
}

func resamplePlaneRef(pix []uint8, stride, sw, sh, ow, oh int) []uint8 {
	const bits = 12
	xw, yw := resampleWeights(sw, ow, bits), resampleWeights(sh, oh, bits)
	mid := make([]int32, sh*ow) // the horizontal pass, ×2^bits
	for y := 0; y < sh; y++ {
		row, dst := pix[y*stride:y*stride+sw], mid[y*ow:(y+1)*ow]
		for ox, taps := range xw {
			var s int32
			for _, t := range taps {
				s += int32(row[t.i]) * t.w
			}
			dst[ox] = s
		}
	}
	out := make([]uint8, ow*oh)
	acc := make([]int64, ow)
	for oy, taps := range yw {
		clear(acc)
		for _, t := range taps {
			src := mid[t.i*ow : (t.i+1)*ow]
			for ox, v := range src {
				acc[ox] += int64(v) * int64(t.w)
			}
		}
		dst := out[oy*ow : (oy+1)*ow]
		for ox, v := range acc {
			dst[ox] = uint8(min(max((v+1<<(2*bits-1))>>(2*bits), 0), 255))
		}
	}
	return out
}

// areaYCbCr gives the working copy the old two-pass code gave, to the bit: JPEGs decoded at 1/4
// and 1/8 (grown a little) and at 1/2 (shrunk), every chroma layout, odd sizes, sub-images.
func TestAreaYCbCrMatchesReference(t *testing.T) {
	src := portrait(5, imagechecktest.Options{Width: 700, Height: 530})
	for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio422,
		image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410} {
		m := image.NewYCbCr(src.Rect, ratio)
		for y := 0; y < src.Rect.Dy(); y++ {
			for x := 0; x < src.Rect.Dx(); x++ {
				p := src.Pix[y*src.Stride+4*x:]
				yy, cb, cr := color.RGBToYCbCr(p[0], p[1], p[2])
				m.Y[m.YOffset(x, y)], m.Cb[m.COffset(x, y)], m.Cr[m.COffset(x, y)] = yy, cb, cr
			}
		}
		sub := m.SubImage(image.Rect(13, 7, 613, 458)).(*image.YCbCr)
		for _, c := range []struct {
			img    *image.YCbCr
			ow, oh int
		}{{m, 717, 543}, {m, 1024, 775}, {m, 401, 304}, {sub, 611, 459}, {sub, 333, 250}} {
			got, want := areaYCbCr(c.img, c.ow, c.oh), areaYCbCrRef(c.img, c.ow, c.oh)
			if !bytes.Equal(got.Pix, want.Pix) || got.Rect != want.Rect {
				t.Errorf("%v %v → %d×%d: differs from the reference", ratio, c.img.Rect, c.ow, c.oh)
			}
		}
	}
}

// nrgbaRow converts every Y, Cb, Cr as color.YCbCrToRGB does.
func TestNRGBARowMatchesColor(t *testing.T) {
	ys := make([]uint8, 256)
	cbs, crs := make([]uint8, 256), make([]uint8, 256)
	dst := make([]uint8, 4*256)
	for i := range ys {
		ys[i] = uint8(i)
	}
	for cb := 0; cb < 256; cb++ {
		for cr := 0; cr < 256; cr++ {
			for i := range cbs {
				cbs[i], crs[i] = uint8(cb), uint8(cr)
			}
			nrgbaRow(dst, ys, cbs, crs)
			for y := 0; y < 256; y++ {
				r, g, b := color.YCbCrToRGB(uint8(y), uint8(cb), uint8(cr))
				if p := dst[4*y : 4*y+4]; p[0] != r || p[1] != g || p[2] != b || p[3] != 0xFF {
					t.Fatalf("Y %d Cb %d Cr %d: %v, want %d %d %d 255", y, cb, cr, p, r, g, b)
				}
			}
		}
	}
}

// BenchmarkAreaYCbCr is the working copy made from a 12 MP photo decoded at 1/4, then as before.
func BenchmarkAreaYCbCr(b *testing.B) {
	src := portrait(5, imagechecktest.Options{Width: 1000, Height: 750})
	m := image.NewYCbCr(src.Rect, image.YCbCrSubsampleRatio420)
	for y := 0; y < 750; y++ {
		for x := 0; x < 1000; x++ {
			p := src.Pix[y*src.Stride+4*x:]
			m.Y[m.YOffset(x, y)], m.Cb[m.COffset(x, y)], m.Cr[m.COffset(x, y)] = color.RGBToYCbCr(p[0], p[1], p[2])
		}
	}
	for name, f := range map[string]func(*image.YCbCr, int, int) *image.NRGBA{"rows": areaYCbCr, "before": areaYCbCrRef} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				f(m, 1024, 768)
			}
		})
	}
}
