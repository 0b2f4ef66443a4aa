package skin

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/disintegration/imaging"
)

// variantSet caches the expensive variants (bilateral smoothing) shared by several tests.
type variantSet struct {
	base     image.Image
	smoothed map[string]image.Image // by strength name
	extra    []image.Image          // medium smoothing of other ordinary variants
}

var (
	variantsOnce sync.Once
	variantsMap  map[string]*variantSet
)

func variants(t testing.TB) map[string]*variantSet {
	variantsOnce.Do(func() {
		variantsMap = map[string]*variantSet{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, img := range portraits(t) {
			vs := &variantSet{base: img, smoothed: map[string]image.Image{}}
			face := Measure(img).Face
			area := face.Inset(-face.Dx() / 3) // the face, and room for the detector's context
			variantsMap[name] = vs
			for _, s := range smoothing {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out := bilateral(img, area, s.sigmaS, s.sigmaR)
					mu.Lock()
					vs.smoothed[s.name] = out
					mu.Unlock()
				}()
			}
			for _, src := range []image.Image{relight(img, 0.7, 0), jpegRoundTrip(t, img, 60)} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out := bilateral(src, area, 3, 18)
					mu.Lock()
					vs.extra = append(vs.extra, out)
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
	})
	return variantsMap
}

func measured(t *testing.T, label string, img image.Image) Figures {
	t.Helper()
	f := Measure(img)
	if !f.Scored {
		t.Fatalf("%s: not scored: %s", label, f.Reason)
	}
	if f.Faces != 1 {
		t.Errorf("%s: %d faces, want 1", label, f.Faces)
	}
	return f
}

func TestMeasureFindsTheTestFaces(t *testing.T) {
	for name, img := range portraits(t) {
		f := measured(t, name, img)
		if f.FaceWidth < MinFaceWidth || f.Texture <= 0 || f.Sharpness <= 0 || f.Brightness <= 0 {
			t.Errorf("%s: implausible figures %+v", name, f)
		}
		b := img.Bounds()
		c := image.Pt((f.Face.Min.X+f.Face.Max.X)/2, (f.Face.Min.Y+f.Face.Max.Y)/2)
		if !c.In(b) || f.Face.Dx() != f.FaceWidth {
			t.Errorf("%s: face box %v (width %d) not inside %v", name, f.Face, f.FaceWidth, b)
		}
	}
	// The people differ: an absolute threshold could not serve both, which is why only ratios count.
	h, a := Measure(portraits(t)["hopper"]), Measure(portraits(t)["astronaut"])
	if h.Texture < 2*a.Texture {
		t.Errorf("hopper texture %.2f, astronaut %.2f: expected the older face to be far more textured", h.Texture, a.Texture)
	}
}

func TestNoFace(t *testing.T) {
	grey := image.NewGray(image.Rect(0, 0, 600, 400))
	for i := range grey.Pix {
		grey.Pix[i] = 128
	}
	for name, img := range map[string]image.Image{"coffee.jpg": loadImage(t, "coffee.jpg"), "uniform grey": grey} {
		f := Measure(img)
		if f.Scored || f.Faces != 0 || f.Reason != "no face found" {
			t.Errorf("%s: %+v, want no face found", name, f)
		}
	}
}

// Tightly cropped faces (the crop cuts into the face box) are found only with the neutral border.
func TestPaddingFindsTightlyCroppedFaces(t *testing.T) {
	cases := map[string]float64{"hopper": 0.03, "astronaut": 0.10} // share of the face box cut off per side
	for name, img := range portraits(t) {
		r := Measure(img).Face
		d := int(cases[name] * float64(r.Dx()))
		crop := imaging.Crop(img, r.Inset(d))
		src := lumaOf(crop)
		without, err := detect(src, 0)
		if err != nil {
			t.Fatal(err)
		}
		with, err := detect(src, padFraction)
		if err != nil {
			t.Fatal(err)
		}
		if len(without) != 0 || len(with) != 1 {
			t.Errorf("%s cropped to %v: %d face(s) without padding, %d with; want 0 and 1", name, crop.Bounds().Size(), len(without), len(with))
		}
		if f := Measure(crop); f.Faces != 1 {
			t.Errorf("%s tight crop: Measure found %d faces", name, f.Faces)
		}
	}
}

func TestLooseCropsAndResolutions(t *testing.T) {
	img := portraits(t)["hopper"]
	r := Measure(img).Face
	for _, m := range []int{0, 20, 60} {
		crop := imaging.Crop(img, r.Inset(-m))
		if f := Measure(crop); f.Faces != 1 || !f.Scored {
			t.Errorf("crop with %d px margin: %+v", m, f)
		}
	}
	// A 12 MP-class copy is scored like the original: the face is measured at 256 px either way.
	base := Measure(img)
	big := Measure(imaging.Resize(img, 3000, 0, imaging.Linear))
	if ratio := big.Texture / base.Texture; ratio < 0.8 || ratio > 1.25 || big.FaceWidth < 5*base.FaceWidth {
		t.Errorf("3000 px copy: width %d texture %.2f (%.2f×), original width %d texture %.2f", big.FaceWidth, big.Texture, ratio, base.FaceWidth, base.Texture)
	}
}

func TestTooSmallFaces(t *testing.T) {
	for name, img := range map[string]image.Image{
		"astronaut.jpg as shipped": loadImage(t, "astronaut.jpg"),
		"hopper at 120 px":         imaging.Resize(portraits(t)["hopper"], 120, 0, imaging.Lanczos),
	} {
		f := Measure(img)
		if f.Scored || f.Faces != 1 || f.FaceWidth >= MinFaceWidth || !strings.Contains(f.Reason, "too small to score") {
			t.Errorf("%s: %+v, want one face too small to score", name, f)
		}
		if f.Texture != 0 {
			t.Errorf("%s: unscored image carries texture %.2f", name, f.Texture)
		}
	}
}

// Ordinary changes between a camera and an upload must leave the index within 0.70–1.10×.
func TestOrdinaryChangesKeepTexture(t *testing.T) {
	for name, img := range portraits(t) {
		base := measured(t, name, img)
		for label, v := range map[string]image.Image{
			"JPEG q60":         jpegRoundTrip(t, img, 60),
			"JPEG q40":         jpegRoundTrip(t, img, 40),
			"×0.5 rescale":     rescaleRoundTrip(img, 0.5),
			"darker (×0.7)":    relight(img, 0.7, 0),
			"brighter (γ1.25)": brighten(img),
		} {
			f := measured(t, name+" "+label, v)
			ratio, sharp := f.Texture/base.Texture, f.Sharpness/base.Sharpness
			t.Logf("%-9s %-16s texture %.2f× sharpness %.2f×", name, label, ratio, sharp)
			if ratio < 0.70 || ratio > 1.10 {
				t.Errorf("%s %s: texture ratio %.2f outside 0.70–1.10", name, label, ratio)
			}
			if sharp < BlurSharpnessRatio {
				t.Errorf("%s %s: sharpness ratio %.2f would read as blur", name, label, sharp)
			}
		}
	}
}

func TestSmoothingLowersTextureButNotEdges(t *testing.T) {
	for name, vs := range variants(t) {
		base := measured(t, name, vs.base)
		ratios := map[string]float64{}
		for _, s := range smoothing {
			f := measured(t, name+" "+s.name, vs.smoothed[s.name])
			ratios[s.name] = f.Texture / base.Texture
			sharp := f.Sharpness / base.Sharpness
			t.Logf("%-9s %-6s smoothing: texture %.2f× sharpness %.2f×", name, s.name, ratios[s.name], sharp)
			if sharp < 0.85 {
				t.Errorf("%s %s smoothing: sharpness ratio %.2f, want ≥ 0.85 (edges survive smoothing)", name, s.name, sharp)
			}
		}
		if r := ratios["light"]; r >= 0.90 {
			t.Errorf("%s light smoothing: ratio %.2f, want < 0.90", name, r)
		}
		if r := ratios["medium"]; r < 0.25 || r > 0.71 {
			t.Errorf("%s medium smoothing: ratio %.2f outside 0.25–0.71", name, r)
		}
		if ratios["strong"] >= ratios["medium"] || ratios["medium"] >= ratios["light"] || ratios["strong"] > 0.5 {
			t.Errorf("%s: ratios not ordered by strength: %v", name, ratios)
		}
	}
}

func TestBlurLowersEdges(t *testing.T) {
	for name, img := range portraits(t) {
		base := measured(t, name, img)
		f := measured(t, name+" blur σ2", imaging.Blur(img, 2))
		ratio, sharp := f.Texture/base.Texture, f.Sharpness/base.Sharpness
		t.Logf("%-9s blur σ=2: texture %.2f× sharpness %.2f×", name, ratio, sharp)
		if ratio >= DefaultMinTextureRatio || sharp >= BlurSharpnessRatio {
			t.Errorf("%s blur σ=2: texture %.2f× sharpness %.2f×, want both low", name, ratio, sharp)
		}
	}
}

// figuresOf measures each image and splits the scored figures into texture and sharpness slices.
func figuresOf(t *testing.T, imgs ...image.Image) (tex, sharp []float64) {
	t.Helper()
	for i, img := range imgs {
		f := measured(t, "image "+string(rune('A'+i)), img)
		tex = append(tex, f.Texture)
		sharp = append(sharp, f.Sharpness)
	}
	return tex, sharp
}

func TestVerdictPlasticBlurNatural(t *testing.T) {
	for name, vs := range variants(t) {
		img := vs.base
		refT, refS := figuresOf(t, img, relight(img, 0.7, 0), jpegRoundTrip(t, img, 60), brighten(img))
		judge := func(imgs ...image.Image) Judgement {
			gt, gs := figuresOf(t, imgs...)
			return Verdict(gt, refT, Options{GeneratedSharpness: gs, ReferenceSharpness: refS})
		}
		cases := []struct {
			label string
			want  string
			j     Judgement
		}{
			{"ordinary copies", Natural, judge(jpegRoundTrip(t, img, 40), rescaleRoundTrip(img, 0.5), relight(img, 0.8, 0))},
			{"medium smoothing", Plastic, judge(vs.smoothed["medium"], vs.extra[0], vs.extra[1])},
			{"blurred", Blur, judge(imaging.Blur(img, 2), imaging.Blur(relight(img, 0.7, 0), 2), imaging.Blur(jpegRoundTrip(t, img, 60), 2.5))},
		}
		for _, c := range cases {
			t.Logf("%s %s: %s %.2f× (edges %.2f×): %s", name, c.label, c.j.Verdict, c.j.Ratio, c.j.SharpnessRatio, c.j.Reason)
			if c.j.Verdict != c.want {
				t.Errorf("%s %s: verdict %s, want %s (%s)", name, c.label, c.j.Verdict, c.want, c.j.Reason)
			}
			if c.j.Generated != 3 || c.j.Reference != 4 {
				t.Errorf("%s %s: counted %d generated / %d reference", name, c.label, c.j.Generated, c.j.Reference)
			}
		}
		// Without sharpness figures low texture cannot be blamed on blur.
		gt, _ := figuresOf(t, imaging.Blur(img, 2), imaging.Blur(img, 2.5), imaging.Blur(img, 3))
		if j := Verdict(gt, refT, Options{}); j.Verdict != Plastic {
			t.Errorf("%s blur without sharpness: %s", name, j.Verdict)
		}
	}
}

func TestVerdictUnscoredReasons(t *testing.T) {
	three := []float64{5, 6, 7}
	cases := []struct {
		gen, ref []float64
		reason   string
	}{
		{three, nil, "no reference"},
		{three, []float64{0, 0, 0}, "no reference photo has a face"},
		{three, []float64{5, 0, 6}, "only 2 reference photo(s) scored"},
		{nil, three, "no faces"},
		{[]float64{0, 0, 0, 0}, three, "no faces"},
		{[]float64{4, math.NaN(), 0}, three, "only 1 generated image(s) scored"},
	}
	for _, c := range cases {
		j := Verdict(c.gen, c.ref, Options{})
		if j.Verdict != Unscored || !strings.Contains(j.Reason, c.reason) || j.Ratio != 0 {
			t.Errorf("Verdict(%v, %v) = %+v, want unscored with %q", c.gen, c.ref, j, c.reason)
		}
	}
	// Thresholds: exactly at the minimum is natural; MinScored can be lowered.
	if j := Verdict([]float64{6.5, 6.5, 6.5}, []float64{10, 10, 10}, Options{}); j.Verdict != Natural || math.Abs(j.Ratio-0.65) > 1e-9 {
		t.Errorf("ratio 0.65: %+v", j)
	}
	if j := Verdict([]float64{6}, []float64{10}, Options{MinScored: 1, MinRatio: 0.7}); j.Verdict != Plastic || !strings.Contains(j.Reason, "0.60×") {
		t.Errorf("single image, min 0.7: %+v", j)
	}
	if m := Median([]float64{3, 0, 1, 2, math.Inf(1)}); m != 2 {
		t.Errorf("Median skips unscored values: %v", m)
	}
}

func TestImageVerdict(t *testing.T) {
	if j := ImageVerdict(Figures{Reason: "no face found"}, 10, 2, 0); j.Verdict != Unscored || j.Reason != "no face found" {
		t.Errorf("unscored image: %+v", j)
	}
	if j := ImageVerdict(Figures{Scored: true, Texture: 5, Sharpness: 2}, 0, 0, 0); j.Verdict != Unscored {
		t.Errorf("no reference: %+v", j)
	}
	if j := ImageVerdict(Figures{Scored: true, Texture: 5, Sharpness: 2}, 10, 2, 0); j.Verdict != Plastic || j.Ratio != 0.5 {
		t.Errorf("plastic: %+v", j)
	}
	if j := ImageVerdict(Figures{Scored: true, Texture: 5, Sharpness: 1}, 10, 2, 0); j.Verdict != Blur {
		t.Errorf("blur: %+v", j)
	}
	if j := ImageVerdict(Figures{Scored: true, Texture: 9, Sharpness: 1}, 10, 2, 0); j.Verdict != Natural {
		t.Errorf("natural: %+v", j)
	}
}

// Every decoder's image type is read the same way, including sub-images with offset bounds.
func TestImageTypesAgree(t *testing.T) {
	src := portraits(t)["hopper"]
	b := src.Bounds()
	rgba := image.NewRGBA(b)
	draw.Draw(rgba, b, src, b.Min, draw.Src)
	ycc := jpegRoundTrip(t, src, 100)
	gray := image.NewGray(b)
	draw.Draw(gray, b, src, b.Min, draw.Src)
	// NRGBA64 goes through the generic path.
	n64 := image.NewNRGBA64(b)
	draw.Draw(n64, b, src, b.Min, draw.Src)
	big := image.NewNRGBA(image.Rect(-50, -30, b.Dx()+70, b.Dy()+10))
	draw.Draw(big, big.Bounds(), &image.Uniform{color.NRGBA{90, 120, 150, 255}}, image.Point{}, draw.Src)
	draw.Draw(big, b.Add(image.Pt(20, 5)), src, b.Min, draw.Src)
	sub := big.SubImage(b.Add(image.Pt(20, 5)))

	want := Measure(src)
	for name, img := range map[string]image.Image{"RGBA": rgba, "YCbCr": ycc, "Gray": gray, "NRGBA64": n64, "SubImage": sub} {
		f := Measure(img)
		if f.Faces != 1 || !f.Scored || math.Abs(f.Texture/want.Texture-1) > 0.1 {
			t.Errorf("%s: %+v, want about %+v", name, f, want)
		}
	}
}

func TestMeasureOddInputs(t *testing.T) {
	for name, img := range map[string]image.Image{
		"nil":       nil,
		"empty":     image.NewRGBA(image.Rect(0, 0, 0, 0)),
		"1×1":       image.NewRGBA(image.Rect(0, 0, 1, 1)),
		"1×4000":    image.NewGray(image.Rect(0, 0, 1, 4000)),
		"black":     image.NewGray(image.Rect(0, 0, 300, 300)),
		"paletted":  image.NewPaletted(image.Rect(0, 0, 64, 64), color.Palette{color.Black, color.White}),
		"negatives": image.NewRGBA(image.Rect(-100, -100, -10, -10)),
	} {
		f := Measure(img)
		if f.Scored || f.Reason == "" {
			t.Errorf("%s: %+v, want unscored with a reason", name, f)
		}
	}
}

func BenchmarkMeasure(b *testing.B) {
	hopper := portraits(b)["hopper"]
	for _, side := range []int{1024, 4000} {
		img := imaging.Resize(hopper, side, 0, imaging.Linear)
		ycc := jpegRoundTrip(b, img, 90) // what a decoded photo is
		b.Run(strings.Replace(ycc.Bounds().Size().String(), ",", "x", 1), func(b *testing.B) {
			for b.Loop() {
				if f := Measure(ycc); !f.Scored {
					b.Fatal(f.Reason)
				}
			}
		})
	}
}

// image_check measures photos from several goroutines: the shared cascade must be safe for that.
func TestMeasureConcurrently(t *testing.T) {
	img := portraits(t)["hopper"]
	want := Measure(img)
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f := Measure(img); f != want {
				errs <- "concurrent Measure differs"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// MinFace skips faces narrower than asked and leaves the figures of larger ones unchanged.
func TestMeasureWithMinFace(t *testing.T) {
	hopper := portraits(t)["hopper"]
	small := imaging.Resize(hopper, 120, 0, imaging.Lanczos) // face well under 120 px
	if f := MeasureWith(small, MeasureOptions{MinFace: 140}); f.Faces != 0 || f.Reason != "no face found" {
		t.Errorf("a face under MinFace was searched for: %+v", f)
	}
	if f := MeasureWith(small, MeasureOptions{}); f.Faces != 1 {
		t.Errorf("without MinFace the small face is found: %+v", f)
	}
	full, fast := Measure(hopper), MeasureWith(hopper, MeasureOptions{MinFace: MinFaceWidth / 2})
	if !fast.Scored || fast.FaceWidth != full.FaceWidth || fast.Texture != full.Texture {
		t.Errorf("MinFace changed a large face's figures: %+v vs %+v", fast, full)
	}
}

func BenchmarkMeasureMinFace(b *testing.B) {
	img := jpegRoundTrip(b, imaging.Resize(portraits(b)["hopper"], 1024, 0, imaging.Linear), 90)
	for _, minFace := range []int{0, MinFaceWidth / 2} {
		b.Run(fmt.Sprintf("min%d", minFace), func(b *testing.B) {
			for b.Loop() {
				if f := MeasureWith(img, MeasureOptions{MinFace: minFace}); !f.Scored {
					b.Fatal(f.Reason)
				}
			}
		})
	}
}
