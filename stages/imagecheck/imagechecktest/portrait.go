// Package imagechecktest draws synthetic, face-like portraits for tests, benchmarks and the example
// dataset: a skin-toned oval with hair, brows, eyes, nose and mouth, shoulders and a background,
// under a chosen light, with a fine skin-noise texture. No real person's photo is involved.
//
//	img := imagechecktest.Portrait(imagechecktest.Options{Seed: 7, Width: 1024, Height: 1280})
//	imagechecktest.WriteJPEG("07.jpg", img, 90)
package imagechecktest

import (
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Options describe one portrait. Zero values get sensible defaults; Seed varies everything else
// that is left unset (background, clothes, pose, light).
type Options struct {
	Seed          uint64
	Width, Height int
	// Skin and Hair colours; zero means derived from Seed.
	Skin, Hair color.NRGBA
	// FaceX, FaceY are the face centre as a share of width/height; FaceScale the face height as a
	// share of the image height. Zero: derived from Seed.
	FaceX, FaceY, FaceScale float64
	// Light is the horizontal light direction (-1 left … 1 right); Gain multiplies brightness;
	// Warmth shifts the white balance (-1 cool … 1 warm). Zero Gain means 1.
	Light, Gain, Warmth float64
	// Texture is the skin noise amplitude in luma steps (0: default 7; <0: none, a "smoothed" face).
	Texture float64
	// Faces draws this many faces side by side (0 or 1: one).
	Faces int
	// NoFace draws the background and clothes only.
	NoFace bool
}

type rgb struct{ r, g, b float64 }

var skins = []rgb{{233, 190, 160}, {210, 160, 120}, {180, 130, 95}, {141, 94, 64}, {245, 205, 180}}
var hairs = []rgb{{40, 28, 20}, {90, 60, 35}, {20, 18, 18}, {160, 120, 70}, {120, 50, 30}}

// Portrait renders a face-like photo.
func Portrait(o Options) *image.NRGBA {
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed*0x9e3779b97f4a7c15+1))
	if o.Width == 0 {
		o.Width = 1024
	}
	if o.Height == 0 {
		o.Height = 1280
	}
	w, h := o.Width, o.Height
	skin := rgbOf(o.Skin, skins[rng.IntN(len(skins))])
	hair := rgbOf(o.Hair, hairs[rng.IntN(len(hairs))])
	bgA := rgb{rng.Float64()*200 + 30, rng.Float64()*200 + 30, rng.Float64()*200 + 30}
	bgB := rgb{rng.Float64()*200 + 30, rng.Float64()*200 + 30, rng.Float64()*200 + 30}
	cloth := rgb{rng.Float64() * 230, rng.Float64() * 230, rng.Float64() * 230}
	if o.FaceScale == 0 {
		o.FaceScale = 0.32 + rng.Float64()*0.16
	}
	if o.FaceX == 0 {
		o.FaceX = 0.38 + rng.Float64()*0.24
	}
	if o.FaceY == 0 {
		o.FaceY = 0.36 + rng.Float64()*0.1
	}
	if o.Gain == 0 {
		o.Gain = 1
	}
	if o.Texture == 0 {
		o.Texture = 7
	}
	light := o.Light
	// Background shapes make composition differ between seeds.
	type blob struct {
		x, y, rx, ry float64
		c            rgb
	}
	var blobs []blob
	for i := 0; i < 3+rng.IntN(4); i++ {
		blobs = append(blobs, blob{rng.Float64() * float64(w), rng.Float64() * float64(h),
			(0.05 + rng.Float64()*0.25) * float64(w), (0.05 + rng.Float64()*0.25) * float64(h),
			rgb{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}})
	}
	// Hard-edged shapes (a window, a door, a shelf) make the backgrounds, and so the perceptual
	// hashes, of different photos differ the way real rooms do.
	type rect struct {
		x0, y0, x1, y1 float64
		c              rgb
	}
	var rects []rect
	for i := 0; i < 2+rng.IntN(3); i++ {
		x0, y0 := rng.Float64()*float64(w), rng.Float64()*float64(h)*0.8
		rects = append(rects, rect{x0, y0, x0 + (0.1+rng.Float64()*0.35)*float64(w), y0 + (0.1+rng.Float64()*0.4)*float64(h),
			rgb{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}})
	}
	gradAngle := rng.Float64() * 2 * math.Pi

	n := max(1, o.Faces)
	type head struct{ cx, cy, fh, fw float64 }
	heads := make([]head, n)
	for i := range heads {
		fh := o.FaceScale * float64(h) / math.Sqrt(float64(n))
		cx := o.FaceX * float64(w)
		if n > 1 {
			cx = (float64(i) + 0.5) / float64(n) * float64(w)
		}
		heads[i] = head{cx, o.FaceY * float64(h), fh, fh * 0.74}
	}

	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	noise := rand.New(rand.NewPCG(o.Seed+17, 99))
	// Skin texture is drawn at a scale relative to the face (pores do not shrink when the camera
	// comes closer), so the texture index of one subject stays put across framings.
	pore := pores(noise, w, h, heads[0].fw/220)
	ca, sa := math.Cos(gradAngle), math.Sin(gradAngle)
	for y := 0; y < h; y++ {
		fy := float64(y)
		for x := 0; x < w; x++ {
			fx := float64(x)
			// Background: a two-colour gradient with soft blobs.
			t := 0.5 + 0.5*((fx/float64(w)-0.5)*ca+(fy/float64(h)-0.5)*sa)
			c := mix(bgA, bgB, t)
			for _, r := range rects {
				if fx >= r.x0 && fx < r.x1 && fy >= r.y0 && fy < r.y1 {
					c = mix(c, r.c, 0.85)
				}
			}
			for _, b := range blobs {
				if d := sq((fx-b.x)/b.rx) + sq((fy-b.y)/b.ry); d < 1 {
					c = mix(c, b.c, 0.6*(1-d))
				}
			}
			shade := 1.0
			isSkin := false
			if !o.NoFace {
				for _, hd := range heads {
					c, shade, isSkin = drawHead(c, shade, isSkin, fx, fy, hd.cx, hd.cy, hd.fw, hd.fh, skin, hair, cloth, light)
				}
			} else if fy > float64(h)*0.7 {
				c = cloth
			}
			if isSkin && o.Texture > 0 {
				d := pore(fx, fy) * o.Texture
				c = rgb{c.r + d, c.g + d*0.9, c.b + d*0.8}
			} else {
				d := noise.NormFloat64() * 2.5 // sensor noise everywhere
				c = rgb{c.r + d, c.g + d, c.b + d}
			}
			c = rgb{c.r * shade * o.Gain * (1 + 0.12*o.Warmth), c.g * shade * o.Gain, c.b * shade * o.Gain * (1 - 0.12*o.Warmth)}
			i := y*img.Stride + 4*x
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c8(c.r), c8(c.g), c8(c.b), 255
		}
	}
	return img
}

// drawHead paints one head-and-shoulders figure over colour c at (x, y).
func drawHead(c rgb, shade float64, isSkin bool, x, y, cx, cy, fw, fh float64, skin, hair, cloth rgb, light float64) (rgb, float64, bool) {
	rx, ry := fw/2, fh/2
	u, v := (x-cx)/rx, (y-cy)/ry // face coordinates: the oval is u²+v² < 1
	// Neck, then rounded shoulders (an ellipse below the head).
	if y > cy+ry*0.7 {
		bu, bv := (x-cx)/(rx*3.2), (y-(cy+ry*3.6))/(ry*2.4)
		if bu*bu*bu*bu+bv*bv < 1 { // flat-topped: shoulders, not a balloon
			// A V-neckline shows some skin.
			if y < cy+ry*1.55 && math.Abs(x-cx) < (cy+ry*1.55-y)*0.6 {
				return mix(skin, rgb{}, 0.12), shade, true
			}
			return cloth, shade * (1 - 0.12*bu*bu), false
		}
		if math.Abs(x-cx) < rx*0.42 && y < cy+ry*1.4 {
			return mix(skin, rgb{}, 0.18), shade, true
		}
	}
	// Hair behind the head.
	hu, hv := (x-cx)/(rx*1.18), (y-(cy-ry*0.12))/(ry*1.12)
	inHair := hu*hu+hv*hv < 1 && y < cy+ry*0.35
	r2 := u*u + v*v
	if r2 >= 1 {
		if inHair {
			return hair, shade, false
		}
		return c, shade, isSkin
	}
	// Fringe over the forehead.
	if v < -0.55+0.12*math.Sin(u*9) {
		return hair, shade, false
	}
	// Light falls off towards the side away from the light and towards the rim.
	s := 1 + 0.22*light*u - 0.18*r2*r2
	col := skin
	// Brows.
	for _, side := range []float64{-1, 1} {
		bu, bv := u-side*0.38, v+0.28-0.06*sq((u-side*0.38)/0.22)
		if math.Abs(bu) < 0.22 && math.Abs(bv) < 0.045 {
			return mix(hair, rgb{}, 0.2), s, false
		}
		// Eyes: white, iris, pupil, with a darker lid line.
		eu, ev := (u-side*0.36)/0.17, (v+0.12)/0.075
		if d := eu*eu + ev*ev; d < 1 {
			ir := sq((u-side*0.36)/0.075) + sq((v+0.12)/0.075)
			switch {
			case ir < 0.35:
				return rgb{15, 12, 10}, s, false
			case ir < 1:
				return rgb{70, 50, 35}, s, false
			case d > 0.75 && ev < 0:
				return rgb{40, 30, 25}, s, false
			}
			return rgb{235, 230, 225}, s, false
		}
		// Shadow of the eye socket.
		if d := sq((u-side*0.36)/0.26) + sq((v+0.13)/0.15); d < 1 {
			col = mix(col, rgb{}, 0.12*(1-d))
		}
		// Nostrils.
		if sq((u-side*0.09)/0.05)+sq((v-0.27)/0.03) < 1 {
			return mix(skin, rgb{}, 0.55), s, false
		}
	}
	// Nose: a shaded ridge on the side away from the light.
	if v > -0.1 && v < 0.26 && math.Abs(u+0.04*light) < 0.05 {
		col = mix(col, rgb{}, 0.15)
	}
	// Mouth: lips with a dark line between them.
	mu, mv := u/0.26, (v-0.5)/0.075
	if d := mu*mu + mv*mv; d < 1 {
		if math.Abs(mv) < 0.18 {
			return rgb{90, 35, 35}, s, false
		}
		return mix(skin, rgb{180, 60, 60}, 0.55), s, false
	}
	// Cheek colour.
	for _, side := range []float64{-1, 1} {
		if d := sq((u-side*0.45)/0.22) + sq((v-0.2)/0.18); d < 1 {
			col = mix(col, rgb{220, 110, 100}, 0.12*(1-d))
		}
	}
	return col, s, true
}

// pores returns a smooth random field (unit variance) with features about cell pixels wide:
// Gaussian values on a grid, interpolated bilinearly.
func pores(rng *rand.Rand, w, h int, cell float64) func(x, y float64) float64 {
	cell = math.Max(1, cell)
	gw, gh := int(float64(w)/cell)+2, int(float64(h)/cell)+2
	g := make([]float64, gw*gh)
	for i := range g {
		g[i] = rng.NormFloat64()
	}
	// Bilinear interpolation averages and so lowers the variance; this puts it back to about 1.
	const gain = 1.5
	return func(x, y float64) float64 {
		gx, gy := x/cell, y/cell
		x0, y0 := int(gx), int(gy)
		tx, ty := gx-float64(x0), gy-float64(y0)
		a := g[y0*gw+x0]*(1-tx) + g[y0*gw+x0+1]*tx
		b := g[(y0+1)*gw+x0]*(1-tx) + g[(y0+1)*gw+x0+1]*tx
		return gain * (a*(1-ty) + b*ty)
	}
}

func rgbOf(c color.NRGBA, def rgb) rgb {
	if c.A == 0 {
		return def
	}
	return rgb{float64(c.R), float64(c.G), float64(c.B)}
}

func mix(a, b rgb, t float64) rgb {
	return rgb{a.r + (b.r-a.r)*t, a.g + (b.g-a.g)*t, a.b + (b.b-a.b)*t}
}

func sq(v float64) float64 { return v * v }

func c8(v float64) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}

// WriteJPEG encodes img at the given quality into path (creating its directory).
func WriteJPEG(path string, img image.Image, quality int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := jpeg.Encode(f, img, &jpeg.Options{Quality: quality}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
