package generate

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"strings"

	"github.com/disintegration/imaging"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// Contact sheet geometry (pixels).
const (
	thumbSide  = 320
	sheetPad   = 12
	lineHeight = 15
	captionH   = 18
	labelH     = 2*lineHeight + 6
	headerH    = 3*lineHeight + sheetPad
	footerH    = 3*lineHeight + sheetPad
	charWidth  = 7 // basicfont.Face7x13
)

var (
	colText    = color.NRGBA{0x22, 0x22, 0x22, 0xff}
	colMuted   = color.NRGBA{0x66, 0x66, 0x66, 0xff}
	colNatural = color.NRGBA{0x1b, 0x7f, 0x3a, 0xff}
	colPlastic = color.NRGBA{0xc6, 0x28, 0x28, 0xff}
	colBlur    = color.NRGBA{0xd9, 0x77, 0x06, 0xff}
	colNone    = color.NRGBA{0x88, 0x88, 0x88, 0xff}
	colEmpty   = color.NRGBA{0xe4, 0xe4, 0xe4, 0xff}
	colSim     = color.NRGBA{0x6a, 0x1b, 0x9a, 0xff}
)

func verdictColor(v string) color.NRGBA {
	switch v {
	case skin.Natural:
		return colNatural
	case skin.Plastic:
		return colPlastic
	case skin.Blur:
		return colBlur
	}
	return colNone
}

// sheetRow is one prompt × seed: the new version's image beside the previous one's.
type sheetRow struct {
	prompt int
	seed   int64
}

func (o *outcome) rows() []sheetRow {
	var rows []sheetRow
	for pi := range o.Prompts {
		for _, s := range o.Seeds {
			rows = append(rows, sheetRow{pi, s})
		}
	}
	return rows
}

func (o *outcome) sides() []string {
	if o.HasPrev {
		return []string{sideNew, sidePrevious}
	}
	return []string{sideNew}
}

func (o *outcome) image(side string, r sheetRow) *scoredImage {
	for _, s := range o.Images {
		if s.run.Side == side && s.run.Prompt == r.prompt && s.run.Seed == r.seed {
			return s
		}
	}
	return nil
}

// figureLabel is an image's texture figure for labels, e.g. "texture 5.21 (0.93x)".
func figureLabel(s *scoredImage) string {
	if !s.fig.Scored {
		return "texture -"
	}
	if s.j.Ratio > 0 {
		return fmt.Sprintf("texture %.2f (%.2fx)", s.fig.Texture, s.j.Ratio)
	}
	return fmt.Sprintf("texture %.2f", s.fig.Texture)
}

// renderSheet draws the grid: one row per prompt × seed, the new version left of the previous one,
// each image labelled with its texture figure and verdict; header and footer carry the versions,
// the photos' median and both verdicts.
func renderSheet(o *outcome) *image.NRGBA {
	sides, rows := o.sides(), o.rows()
	w := max(sheetPad+len(sides)*(thumbSide+sheetPad), 560)
	h := headerH + len(rows)*(captionH+thumbSide+labelH+sheetPad) + footerH
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)

	y := sheetPad + 11
	title := "skin texture check: " + o.Address
	text(img, sheetPad, y, title, colText, w)
	if o.Simulated {
		text(img, sheetPad+charWidth*(len(title)+2), y, "SIMULATED (offline simulator)", colSim, w)
	}
	y += lineHeight
	for i, side := range sides {
		v := o.Version
		if side == sidePrevious {
			v = o.Previous
		}
		text(img, sheetPad+i*(thumbSide+sheetPad), y+lineHeight, side+": "+shortRef(v), colText, sheetPad+(i+1)*(thumbSide+sheetPad))
	}
	y = headerH
	for _, r := range rows {
		prompt := ""
		if r.prompt < len(o.Prompts) {
			prompt = o.Prompts[r.prompt]
		}
		text(img, sheetPad, y+12, fmt.Sprintf("prompt %d, seed %d: %s", r.prompt+1, r.seed, prompt), colMuted, w)
		y += captionH
		for i, side := range sides {
			x := sheetPad + i*(thumbSide+sheetPad)
			cell := image.Rect(x, y, x+thumbSide, y+thumbSide)
			s := o.image(side, r)
			if s == nil {
				draw.Draw(img, cell, image.NewUniform(colEmpty), image.Point{}, draw.Src)
				text(img, x+10, y+thumbSide/2, "no image (prediction failed)", colMuted, x+thumbSide)
				continue
			}
			th := imaging.Fit(s.img, thumbSide, thumbSide, imaging.Lanczos)
			off := image.Pt(x+(thumbSide-th.Bounds().Dx())/2, y+(thumbSide-th.Bounds().Dy())/2)
			draw.Draw(img, th.Bounds().Add(off), th, th.Bounds().Min, draw.Src)
			frame(img, cell.Inset(-3), 3, verdictColor(s.j.Verdict))
			text(img, x, y+thumbSide+lineHeight, figureLabel(s), colText, x+thumbSide)
			detail := s.j.Verdict
			if s.j.Verdict == skin.Unscored && s.j.Reason != "" {
				detail += ": " + s.j.Reason
			}
			text(img, x, y+thumbSide+2*lineHeight, detail, verdictColor(s.j.Verdict), x+thumbSide)
		}
		y += thumbSide + labelH + sheetPad
	}
	ref := "training photos' median texture: none (no reference)"
	if o.RefTexture > 0 {
		ref = fmt.Sprintf("training photos' median texture: %.2f (%d of %d photos scored); plastic below %.2fx",
			o.RefTexture, len(o.Ref.texture), o.Ref.photos, o.MinRatio)
	}
	text(img, sheetPad, y+11, ref, colText, w)
	x := sheetPad
	for _, side := range sides {
		j := o.New
		if side == sidePrevious {
			j = o.Prev
		}
		s := side + ": " + j.Verdict
		if j.Ratio > 0 {
			s += fmt.Sprintf(" %.2fx", j.Ratio)
		}
		text(img, x, y+11+lineHeight, s, verdictColor(j.Verdict), w)
		x += charWidth * (len(s) + 4)
	}
	if o.Gate != "" {
		text(img, sheetPad, y+11+2*lineHeight, "gate: "+o.Gate, colPlastic, w)
	}
	return img
}

func writeSheet(path string, o *outcome) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, renderSheet(o)); err != nil {
		return err
	}
	return writeAtomic(path, buf.Bytes())
}

// text draws s (ASCII: the bitmap font has no other glyphs) at baseline (x, y), cut at maxX.
func text(dst *image.NRGBA, x, y int, s string, c color.Color, maxX int) {
	s = asciiOnly(s)
	if n := (maxX - x) / charWidth; n < len(s) {
		if n <= 3 {
			return
		}
		s = s[:n-3] + "..."
	}
	d := font.Drawer{Dst: dst, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func asciiOnly(s string) string {
	s = strings.NewReplacer("×", "x", "–", "-", "—", "-", "’", "'", "“", "\"", "”", "\"").Replace(s)
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// frame draws a border of width t just inside r.
func frame(dst *image.NRGBA, r image.Rectangle, t int, c color.Color) {
	u := image.NewUniform(c)
	r = r.Intersect(dst.Bounds())
	draw.Draw(dst, image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+t), u, image.Point{}, draw.Src)
	draw.Draw(dst, image.Rect(r.Min.X, r.Max.Y-t, r.Max.X, r.Max.Y), u, image.Point{}, draw.Src)
	draw.Draw(dst, image.Rect(r.Min.X, r.Min.Y, r.Min.X+t, r.Max.Y), u, image.Point{}, draw.Src)
	draw.Draw(dst, image.Rect(r.Max.X-t, r.Min.Y, r.Max.X, r.Max.Y), u, image.Point{}, draw.Src)
}
