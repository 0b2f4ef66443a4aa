package replicatetest

import (
	"archive/zip"
	"bytes"
	"image"
	_ "image/gif" // photos in a training zip may be any of these
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"path"
	"sort"
	"strings"

	"github.com/disintegration/imaging"
	_ "golang.org/x/image/webp"
)

// OutputSize is the side of the square images predictions return.
const OutputSize = 1024

// Smoothing is how strongly a prediction's skin is smoothed, 0 (natural) to ~0.9 (plastic):
// it grows with the trained version's Overfit (scaled by lora_scale) and with guidance_scale above
// 3.5. Natural versions at guidance 3.5 get 0: their texture is left intact.
func Smoothing(trainingInput map[string]any, guidance, loraScale float64) float64 {
	ov := 0.0
	if trainingInput != nil {
		ov = math.Max(0, math.Min(1.5, Overfit(trainingInput))) * 0.6 * math.Max(0, math.Min(1.5, loraScale))
	}
	g := math.Max(0, math.Min(1, (guidance-3.5)/2)) * 0.7
	a := 1 - (1-math.Min(0.9, ov))*(1-g)
	return math.Min(0.9, a)
}

// photosFromZip decodes the images of a training zip, in name order.
func photosFromZip(data []byte) []image.Image {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil
	}
	files := append([]*zip.File(nil), zr.File...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var out []image.Image
	for _, f := range files {
		ext := strings.ToLower(path.Ext(f.Name))
		if f.FileInfo().IsDir() || strings.HasPrefix(path.Base(f.Name), ".") {
			continue
		}
		switch ext {
		case ".jpg", ".jpeg", ".png", ".webp", ".gif":
		default:
			continue
		}
		if f.UncompressedSize64 > 64<<20 {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
		rc.Close()
		if err != nil {
			continue
		}
		img, err := imaging.Decode(bytes.NewReader(b), imaging.AutoOrientation(true))
		if err != nil {
			continue
		}
		out = append(out, img)
	}
	return out
}

// render makes one output image: photo (or a procedural face when nil) filled to OutputSize²,
// its luminance detail smoothed edge-preservingly by strength.
func render(photo image.Image, seed int64, strength float64) *image.NRGBA {
	var img *image.NRGBA
	if photo != nil {
		img = imaging.Fill(photo, OutputSize, OutputSize, imaging.Center, imaging.Lanczos)
	} else {
		img = proceduralFace(seed)
	}
	if strength > 0.005 {
		smoothLuma(img, strength)
	}
	return img
}

// smoothLuma blends each pixel's luminance towards a bilateral-filtered luminance (spatial σ 2 px,
// range σ 0.06): fine skin texture goes, edges (eyes, lips, hairline) stay — the "plastic" look.
// Colour is kept by shifting R, G and B by the same luminance change.
func smoothLuma(img *image.NRGBA, strength float64) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	y := make([]float32, w*h)
	for j := 0; j < h; j++ {
		row := img.Pix[j*img.Stride:]
		for i := 0; i < w; i++ {
			p := row[i*4:]
			y[j*w+i] = (0.299*float32(p[0]) + 0.587*float32(p[1]) + 0.114*float32(p[2])) / 255
		}
	}
	const radius = 3
	const sigmaS, sigmaR = 2.0, 0.06
	var spatial [2*radius + 1][2*radius + 1]float32
	for dy := -radius; dy <= radius; dy++ {
		for dx := -radius; dx <= radius; dx++ {
			spatial[dy+radius][dx+radius] = float32(math.Exp(-float64(dx*dx+dy*dy) / (2 * sigmaS * sigmaS)))
		}
	}
	// Range weights by |Δ| in 1/256 steps.
	var rangeW [257]float32
	for k := range rangeW {
		d := float64(k) / 256
		rangeW[k] = float32(math.Exp(-d * d / (2 * sigmaR * sigmaR)))
	}
	s := float32(strength)
	for j := 0; j < h; j++ {
		row := img.Pix[j*img.Stride:]
		for i := 0; i < w; i++ {
			c := y[j*w+i]
			var sum, norm float32
			for dy := -radius; dy <= radius; dy++ {
				jj := j + dy
				if jj < 0 || jj >= h {
					continue
				}
				base := jj * w
				sp := &spatial[dy+radius]
				for dx := -radius; dx <= radius; dx++ {
					ii := i + dx
					if ii < 0 || ii >= w {
						continue
					}
					v := y[base+ii]
					d := v - c
					if d < 0 {
						d = -d
					}
					k := int(d * 256)
					if k > 256 {
						k = 256
					}
					wt := sp[dx+radius] * rangeW[k]
					sum += wt * v
					norm += wt
				}
			}
			delta := (sum/norm - c) * s * 255
			p := row[i*4:]
			p[0] = clamp8(float32(p[0]) + delta)
			p[1] = clamp8(float32(p[1]) + delta)
			p[2] = clamp8(float32(p[2]) + delta)
		}
	}
}

func clamp8(v float32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v + 0.5)
}

// proceduralFace draws a simple face with skin texture, for versions whose training photos are
// unavailable or undecodable.
func proceduralFace(seed int64) *image.NRGBA {
	r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	img := image.NewNRGBA(image.Rect(0, 0, OutputSize, OutputSize))
	cx, cy := float64(OutputSize)/2, float64(OutputSize)*0.48
	rx, ry := float64(OutputSize)*0.26, float64(OutputSize)*0.34
	skin := [3]float64{205 + float64(r.IntN(30)), 160 + float64(r.IntN(30)), 135 + float64(r.IntN(25))}
	type feature struct {
		x, y, rx, ry float64
		c            [3]float64
	}
	features := []feature{
		{cx - rx*0.38, cy - ry*0.12, rx * 0.16, ry * 0.06, [3]float64{40, 30, 25}},
		{cx + rx*0.38, cy - ry*0.12, rx * 0.16, ry * 0.06, [3]float64{40, 30, 25}},
		{cx, cy + ry*0.45, rx * 0.35, ry * 0.06, [3]float64{150, 70, 70}},
		{cx, cy + ry*0.12, rx * 0.08, ry * 0.14, [3]float64{skin[0] - 30, skin[1] - 30, skin[2] - 30}},
	}
	for j := 0; j < OutputSize; j++ {
		for i := 0; i < OutputSize; i++ {
			x, yy := float64(i), float64(j)
			c := [3]float64{70 + 40*yy/OutputSize, 90, 110}
			dx, dy := (x-cx)/rx, (yy-cy)/ry
			if dx*dx+dy*dy <= 1 {
				// Pores and fine texture: per-pixel noise plus a slightly larger blotch pattern.
				n := (r.Float64()-0.5)*22 + 8*math.Sin(x*0.9+yy*0.35)*math.Sin(yy*0.8-x*0.2)
				c = [3]float64{skin[0] + n, skin[1] + n, skin[2] + n}
				for _, f := range features {
					fx, fy := (x-f.x)/f.rx, (yy-f.y)/f.ry
					if fx*fx+fy*fy <= 1 {
						c = f.c
					}
				}
			} else if dy < -0.55 && math.Abs(dx) < 1.25 && dx*dx+dy*dy < 1.6 {
				c = [3]float64{50, 35, 25} // hair
			}
			o := img.PixOffset(i, j)
			img.Pix[o] = clamp8(float32(c[0]))
			img.Pix[o+1] = clamp8(float32(c[1]))
			img.Pix[o+2] = clamp8(float32(c[2]))
			img.Pix[o+3] = 255
		}
	}
	return img
}

// encode writes img as PNG ("png") or JPEG (anything else: Go has no WebP encoder).
func encode(img image.Image, format string) ([]byte, string, error) {
	var buf bytes.Buffer
	if format == "png" {
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(&buf, img); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "image/png", nil
	}
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "image/jpeg", nil
}
