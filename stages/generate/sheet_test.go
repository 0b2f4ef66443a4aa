package generate

import (
	"image"
	"image/color"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

func TestWrapKeepsEveryWordWithinTheWidth(t *testing.T) {
	s := "training photos' median texture: 5.21 (14 of 16 photos scored); plastic below 0.65x " + strings.Repeat("x", 90)
	for _, width := range []int{536, 320, 100, 7} {
		lines := wrap(s, width)
		for _, l := range lines {
			if w := textWidth(l); w > width && len(l) > 1 {
				t.Errorf("width %d: line %q is %d px", width, l, w)
			}
		}
		if got := strings.ReplaceAll(strings.Join(lines, ""), " ", ""); got != strings.ReplaceAll(s, " ", "") {
			t.Errorf("width %d: wrapping lost text: %q", width, got)
		}
	}
	if got := wrap("a  b\tc", 500); len(got) != 1 || got[0] != "a b c" {
		t.Errorf("short text: %q", got)
	}
	if got := wrap("", 500); len(got) != 0 {
		t.Errorf("empty text: %q", got)
	}
}

// exampleOutcome is the example's sheet: one column (no previous version), a long prompt, an
// unscored image with a long reason, a refused gate and the simulator's label — the footer that
// used to end "plastic bel...".
func exampleOutcome() *outcome {
	face := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	o := &outcome{
		Address: `generate.check["ana"]`, Simulated: true, Version: "acme/ana-lora:0123456789abcdef0123",
		Prompts: []string{"a close-up portrait photo of TOK, natural window light, soft shadows on the left side of the face, 85 mm lens"},
		Seeds:   []int64{1, 2}, MinRatio: 0.65, RefTexture: 5.21,
		Ref:  reference{known: true, photos: 16, texture: make([]float64, 14)},
		New:  skin.Judgement{Verdict: skin.Plastic, Ratio: 0.512},
		Gate: `refused (on_plastic = "fail"), version deleted; the model's latest version is the last good one again`,
	}
	o.Images = []*scoredImage{
		{run: &run{Side: sideNew, Prompt: 0, Seed: 1}, img: face, fig: skin.Figures{Scored: true, Texture: 2.67}, j: skin.Judgement{Verdict: skin.Plastic, Ratio: 0.512}},
		{run: &run{Side: sideNew, Prompt: 0, Seed: 2}, img: face, j: skin.Judgement{Verdict: skin.Unscored,
			Reason: "no face large enough to score: the largest face found is 61 px wide, the guard needs 96 px"}},
	}
	return o
}

// Every line of text is measured in the face it is drawn with and lies inside the image; the
// footer's sentences are whole, and the right margin stays blank in the pixels.
func TestSheetTextFitsTheImage(t *testing.T) {
	for name, o := range map[string]*outcome{"example, one column": exampleOutcome(), "with previous": withPrevious(exampleOutcome())} {
		t.Run(name, func(t *testing.T) {
			l := layoutSheet(o)
			img := renderSheet(o)
			if img.Bounds() != image.Rect(0, 0, l.w, l.h) {
				t.Fatalf("image %v, layout %dx%d", img.Bounds(), l.w, l.h)
			}
			m := sheetFace.Metrics()
			for _, tx := range l.texts {
				if strings.HasSuffix(tx.s, "...") {
					t.Errorf("%q is cut", tx.s)
				}
				if tx.x < 0 || tx.x+textWidth(tx.s) > tx.maxX || tx.maxX > l.w {
					t.Errorf("%s text %q: x %d + %d px > %d (image %d)", tx.section, tx.s, tx.x, textWidth(tx.s), tx.maxX, l.w)
				}
				if tx.y-m.Ascent.Ceil() < 0 || tx.y+m.Descent.Ceil() > l.h {
					t.Errorf("%s text %q: baseline %d outside the image's height %d", tx.section, tx.s, tx.y, l.h)
				}
			}
			footer := sectionText(l, "footer")
			for _, want := range []string{
				"training photos' median texture: 5.21 (14 of 16 photos scored); plastic below 0.65x",
				"new: plastic 0.51x",
				`gate: refused (on_plastic = "fail"), version deleted; the model's latest version is the last good one again`,
			} {
				if !strings.Contains(footer, want) {
					t.Errorf("footer %q lacks %q", footer, want)
				}
			}
			if !strings.Contains(sectionText(l, "label"), "the guard needs 96 px") || !strings.Contains(sectionText(l, "row"), "85 mm lens") {
				t.Errorf("labels %q / captions %q are not whole", sectionText(l, "label"), sectionText(l, "row"))
			}
			// In the pixels: the footer's last line is drawn, and nothing reaches the right margin.
			last := l.texts[len(l.texts)-1]
			if last.section != "footer" || !inked(img, image.Rect(last.x, last.y-m.Ascent.Ceil(), last.x+textWidth(last.s), last.y+m.Descent.Ceil()), last.c) {
				t.Errorf("the footer's last line %q is not drawn in the image", last.s)
			}
			margin := image.Rect(l.w-sheetPad+4, 0, l.w, l.h) // right of every cell's 3 px frame
			if inked(img, margin, nil) {
				t.Errorf("something is drawn in the right margin %v", margin)
			}
		})
	}
}

func withPrevious(o *outcome) *outcome {
	o.Previous, o.HasPrev, o.Prev = "acme/ana-lora:fedcba9876543210fedc", true, skin.Judgement{Verdict: skin.Natural, Ratio: 0.97}
	return o
}

// sectionText joins a section's lines with spaces: wrapped sentences read as written.
func sectionText(l *sheetLayout, section string) string {
	var parts []string
	for _, tx := range l.texts {
		if tx.section == section {
			parts = append(parts, tx.s)
		}
	}
	return strings.Join(parts, " ")
}

// inked reports whether r holds a pixel of colour c (nil: any pixel that is not white).
func inked(img *image.NRGBA, r image.Rectangle, c color.Color) bool {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			px := img.NRGBAAt(x, y)
			if c == nil && px != (color.NRGBA{0xff, 0xff, 0xff, 0xff}) {
				return true
			}
			if c != nil && color.NRGBAModel.Convert(c) == px {
				return true
			}
		}
	}
	return false
}
