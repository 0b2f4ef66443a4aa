package replicatetest

import (
	"archive/zip"
	"bytes"
	"fmt"
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
	"sync"

	"github.com/disintegration/imaging"
	_ "golang.org/x/image/webp"
)

// OutputSize is the side of the square images predictions return.
const OutputSize = 1024

// Smoothing is how strongly a prediction's skin is smoothed, 0 (natural) to 0.95 (plastic): it
// grows with the trained version's Overfit (scaled by lora_scale) and with guidance_scale above
// 3.5. Measured with stages/skin on public-domain portraits, the texture ratio is 1.0 for natural
// versions at guidance 3.5, ~0.85 at guidance 4, ~0.56 at guidance 5 or for rank 32, and ~0.47 for
// rank 48 with 2000 steps, while edge sharpness stays at 0.85–1.0 (plastic, not blur).
func Smoothing(trainingInput map[string]any, guidance, loraScale float64) float64 {
	ov := 0.0
	if trainingInput != nil {
		ov = math.Max(0, math.Min(1.5, Overfit(trainingInput))) * 0.75 * math.Max(0, math.Min(1.5, loraScale))
	}
	g := math.Max(0, math.Min(1, (guidance-3.5)/1.5)) * 0.8
	a := 1 - (1-math.Min(0.95, ov))*(1-g)
	return math.Min(0.95, a)
}

// imageEntries lists the photo entries of a training zip in name order (nil if it is no zip).
func imageEntries(data []byte) []*zip.File {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil
	}
	var out []*zip.File
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || strings.HasPrefix(path.Base(f.Name), ".") || f.UncompressedSize64 > 64<<20 {
			continue
		}
		switch strings.ToLower(path.Ext(f.Name)) {
		case ".jpg", ".jpeg", ".png", ".webp", ".gif":
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// decodeEntry decodes one photo of a zip, refusing images over 50 megapixels (decompression bombs).
func decodeEntry(f *zip.File) (image.Image, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	rc.Close()
	if err != nil {
		return nil, err
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if cfg.Width*cfg.Height > 50_000_000 {
		return nil, fmt.Errorf("%s: %dx%d is too large", f.Name, cfg.Width, cfg.Height)
	}
	return imaging.Decode(bytes.NewReader(b), imaging.AutoOrientation(true))
}

// photoCache keeps photos already filled to OutputSize², by zip file id and entry name, so each
// photo is decoded and resized once (a few MB each, at most maxCachedPhotos of them).
type photoCache struct {
	mu sync.Mutex
	m  map[string]*image.NRGBA
}

const maxCachedPhotos = 32

// photo returns the seed's photo of a training zip filled to OutputSize² (the next one that
// decodes when it does not), or nil when none decodes.
func (c *photoCache) photo(fileID string, zipData []byte, seed int64) *image.NRGBA {
	entries := imageEntries(zipData)
	n := int64(len(entries))
	if n == 0 {
		return nil
	}
	start := seed % n
	if start < 0 {
		start += n
	}
	for k := int64(0); k < n; k++ {
		e := entries[(start+k)%n]
		key := fileID + "\x00" + e.Name
		c.mu.Lock()
		img, ok := c.m[key]
		c.mu.Unlock()
		if ok {
			if img == nil {
				continue // known not to decode
			}
			return img
		}
		src, err := decodeEntry(e)
		if err == nil {
			img = imaging.Fill(src, OutputSize, OutputSize, imaging.Center, imaging.Lanczos)
		}
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxCachedPhotos {
			c.m = map[string]*image.NRGBA{}
		}
		c.m[key] = img
		c.mu.Unlock()
		if img != nil {
			return img
		}
	}
	return nil
}

// render makes one output image from photo (already OutputSize², or any size, or nil for a
// procedural face), its luminance detail smoothed edge-preservingly by strength.
func render(photo image.Image, seed int64, strength float64) *image.NRGBA {
	var img *image.NRGBA
	switch p := photo.(type) {
	case nil:
		img = ProceduralFace(seed)
	case *image.NRGBA:
		if p.Rect.Dx() == OutputSize && p.Rect.Dy() == OutputSize {
			img = imaging.Clone(p) // the cached photo stays untouched
			break
		}
		img = imaging.Fill(p, OutputSize, OutputSize, imaging.Center, imaging.Lanczos)
	default:
		img = imaging.Fill(photo, OutputSize, OutputSize, imaging.Center, imaging.Lanczos)
	}
	if strength > 0.005 {
		smoothLuma(img, strength)
	}
	return img
}

// smoothLuma blends each pixel's luminance towards an edge-preserving smoothed luminance (a
// self-guided filter, radius 8 px, ε = 0.05²): skin texture goes, edges (eyes, lips, hairline)
// stay — the "plastic" look. Colour is kept by shifting R, G and B by the same luminance change.
func smoothLuma(img *image.NRGBA, strength float64) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	y := make([]float64, w*h)
	for j := 0; j < h; j++ {
		row := img.Pix[j*img.Stride:]
		for i := 0; i < w; i++ {
			p := row[i*4:]
			y[j*w+i] = (0.299*float64(p[0]) + 0.587*float64(p[1]) + 0.114*float64(p[2])) / 255
		}
	}
	q := guidedSelf(y, w, h, smoothRadius, smoothEps)
	for j := 0; j < h; j++ {
		row := img.Pix[j*img.Stride:]
		for i := 0; i < w; i++ {
			delta := float32((q[j*w+i] - y[j*w+i]) * strength * 255)
			p := row[i*4:]
			p[0] = clamp8(float32(p[0]) + delta)
			p[1] = clamp8(float32(p[1]) + delta)
			p[2] = clamp8(float32(p[2]) + delta)
		}
	}
}

const (
	smoothRadius = 10
	smoothEps    = 0.08 * 0.08
)

// guidedSelf is He et al.'s guided filter with the image as its own guide: where the local
// variance is well under eps (skin texture) it returns the local mean, where it is well over
// (edges) it returns the pixel. Box means come from integral images, so any radius costs the same.
func guidedSelf(in []float64, w, h, r int, eps float64) []float64 {
	n := w * h
	sq := make([]float64, n)
	for i, v := range in {
		sq[i] = v * v
	}
	mean := boxMean(in, w, h, r)
	meanSq := boxMean(sq, w, h, r)
	a := make([]float64, n)
	b := make([]float64, n)
	for i := 0; i < n; i++ {
		v := meanSq[i] - mean[i]*mean[i]
		if v < 0 {
			v = 0
		}
		a[i] = v / (v + eps)
		b[i] = mean[i] - a[i]*mean[i]
	}
	ma := boxMean(a, w, h, r)
	mb := boxMean(b, w, h, r)
	out := make([]float64, n)
	for i := 0; i < n; i++ {
		out[i] = ma[i]*in[i] + mb[i]
	}
	return out
}

// boxMean is the mean over the (2r+1)² window clipped to the image, via an integral image.
func boxMean(in []float64, w, h, r int) []float64 {
	sat := make([]float64, (w+1)*(h+1))
	for j := 0; j < h; j++ {
		var rowSum float64
		for i := 0; i < w; i++ {
			rowSum += in[j*w+i]
			sat[(j+1)*(w+1)+i+1] = sat[j*(w+1)+i+1] + rowSum
		}
	}
	out := make([]float64, w*h)
	for j := 0; j < h; j++ {
		y0, y1 := max(0, j-r), min(h, j+r+1)
		for i := 0; i < w; i++ {
			x0, x1 := max(0, i-r), min(w, i+r+1)
			sum := sat[y1*(w+1)+x1] - sat[y0*(w+1)+x1] - sat[y1*(w+1)+x0] + sat[y0*(w+1)+x0]
			out[j*w+i] = sum / float64((y1-y0)*(x1-x0))
		}
	}
	return out
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

// ProceduralFace draws a shaded face with skin texture (dark brows and eye sockets, a lit nose
// ridge, a darker mouth: the luminance pattern face detectors look for), OutputSize², the same
// for the same seed. Predictions use it when a version's training photos are unavailable or
// undecodable; stages/skin's detector finds it.
func ProceduralFace(seed int64) *image.NRGBA {
	r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	const size = OutputSize
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	cx := size * (0.5 + (r.Float64()-0.5)*0.06)
	cy := size * (0.5 + (r.Float64()-0.5)*0.06)
	rx, ry := size*0.21, size*0.29
	skin := [3]float64{215 + r.Float64()*30, 165 + r.Float64()*30, 140 + r.Float64()*25}
	bg := [3]float64{60 + r.Float64()*80, 70 + r.Float64()*80, 80 + r.Float64()*80}
	hair := [3]float64{40 + r.Float64()*50, 28 + r.Float64()*30, 20 + r.Float64()*20}
	gauss := func(u, v, x0, y0, sx, sy float64) float64 {
		du, dv := (u-x0)/sx, (v-y0)/sy
		return math.Exp(-(du*du + dv*dv) / 2)
	}
	for j := 0; j < size; j++ {
		for i := 0; i < size; i++ {
			u, v := (float64(i)-cx)/rx, (float64(j)-cy)/ry
			var c [3]float64
			d := u*u + v*v
			switch {
			case d <= 1:
				au := math.Abs(u)
				l := 0.78 + 0.22*math.Cos(u*math.Pi/2)*math.Cos(v*math.Pi/2.4)
				l -= 0.55 * gauss(au, v, 0.38, -0.34, 0.2, 0.045)  // brows
				l -= 0.30 * gauss(au, v, 0.36, -0.14, 0.2, 0.1)    // eye sockets
				l -= 0.55 * gauss(au, v, 0.36, -0.14, 0.055, 0.05) // irises
				l += 0.10 * gauss(u, v, 0, 0.05, 0.05, 0.25)       // nose ridge
				l -= 0.15 * gauss(au, v, 0.1, 0.12, 0.045, 0.16)   // nose sides
				l -= 0.40 * gauss(au, v, 0.07, 0.3, 0.04, 0.025)   // nostrils
				l -= 0.40 * gauss(u, v, 0, 0.56, 0.24, 0.05)       // mouth
				l += 0.08 * gauss(au, v, 0.42, 0.25, 0.15, 0.12)   // cheeks
				l -= 0.25 * math.Max(0, v-0.8) / 0.2               // under the chin
				// Pores and fine texture: per-pixel noise plus a slightly larger mottling.
				n := (r.Float64()-0.5)*0.09 + 0.03*math.Sin(float64(i)*0.9+float64(j)*0.35)*math.Sin(float64(j)*0.8-float64(i)*0.2)
				for k := range c {
					c[k] = skin[k] * (l + n)
				}
				if v < -0.55 && d > 0.55 { // hairline
					c = hair
				}
			case v < -0.2 && d < 1.5:
				c = hair
			case v > 0.9 && v < 1.35 && math.Abs(u) < 0.45:
				for k := range c {
					c[k] = skin[k] * 0.6 // neck in shadow
				}
			default:
				for k := range c {
					c[k] = bg[k] * (0.8 + 0.4*float64(j)/size)
				}
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
