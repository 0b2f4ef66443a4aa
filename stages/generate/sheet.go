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

// Contact sheet geometry (pixels). Heights of text follow from wrapping it (layoutSheet).
const (
	thumbSide  = 320
	sheetPad   = 12
	lineHeight = 15
	minSheetW  = 560
	segmentGap = 4 * 7 // between the footer's verdicts: four characters of the face
)

// sheetFace is the face every text of the sheet is measured and drawn with (ASCII only).
var sheetFace font.Face = basicfont.Face7x13

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

// placedText is one line of text: baseline at (x, y), its width kept left of maxX.
type placedText struct {
	s       string
	x, y    int
	maxX    int
	c       color.NRGBA
	section string // "header", "row", "label", "footer": for tests and nothing else
}

// placedCell is one image cell; img nil draws the grey "no image" box.
type placedCell struct {
	rect image.Rectangle
	img  *scoredImage
}

// sheetLayout is where everything goes; the sheet is as tall as its wrapped text needs.
type sheetLayout struct {
	w, h  int
	texts []placedText
	cells []placedCell
}

// textWidth is s's advance in the face the sheet draws with.
func textWidth(s string) int { return font.MeasureString(sheetFace, s).Ceil() }

// wrap breaks s into lines at most width pixels wide in sheetFace: at spaces, and inside a word
// only when the word alone is wider than a line. Nothing is dropped.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(asciiOnly(s)) {
		if cand := strings.TrimPrefix(line+" "+word, " "); textWidth(cand) <= width {
			line = cand
			continue
		}
		if line != "" {
			lines = append(lines, line)
		}
		for textWidth(word) > width && len(word) > 1 {
			n := fitChars(word, width)
			lines = append(lines, word[:n])
			word = word[n:]
		}
		line = word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// fitChars is how many leading bytes of s (ASCII) fit in width; at least one, so wrapping ends.
func fitChars(s string, width int) int {
	n := 1
	for n < len(s) && textWidth(s[:n+1]) <= width {
		n++
	}
	return n
}

// para places s wrapped to [x, maxX), its first line's top at top; it returns the top below it.
func (l *sheetLayout) para(section string, x, top, maxX int, s string, c color.NRGBA) int {
	ascent := sheetFace.Metrics().Ascent.Ceil()
	for _, line := range wrap(s, maxX-x) {
		l.texts = append(l.texts, placedText{s: line, x: x, y: top + ascent, maxX: maxX, c: c, section: section})
		top += lineHeight
	}
	return top
}

// segment is a piece of text in its own colour.
type segment struct {
	s string
	c color.NRGBA
}

// flow places segments side by side, going on to a new line when the next does not fit.
func (l *sheetLayout) flow(section string, x0, top, maxX int, segs []segment) int {
	x, bottom := x0, top
	for _, sg := range segs {
		if x > x0 && x+textWidth(asciiOnly(sg.s)) > maxX { // no room beside the last one
			x, top = x0, bottom
		}
		before := len(l.texts)
		bottom = l.para(section, x, top, maxX, sg.s, sg.c)
		if len(l.texts) == before+1 { // one line: the next segment goes beside it
			x += textWidth(l.texts[before].s) + segmentGap
			continue
		}
		x, top = x0, bottom
	}
	return bottom
}

// layoutSheet places the grid: one row per prompt × seed, the new version left of the previous
// one, each image labelled with its texture figure and verdict; header and footer carry the
// versions, the photos' median and both verdicts.
func layoutSheet(o *outcome) *sheetLayout {
	sides, rows := o.sides(), o.rows()
	w := max(sheetPad+len(sides)*(thumbSide+sheetPad), minSheetW)
	right := w - sheetPad
	l := &sheetLayout{w: w}
	col := func(i int) int { return sheetPad + i*(thumbSide+sheetPad) }

	head := []segment{{"skin texture check: " + o.Address, colText}}
	if o.Simulated {
		head = append(head, segment{"SIMULATED (offline simulator)", colSim})
	}
	top := l.flow("header", sheetPad, sheetPad, right, head) + lineHeight/2
	top = l.columns("header", top, len(sides), func(i, top int) int {
		v := o.Version
		if sides[i] == sidePrevious {
			v = o.Previous
		}
		return l.para("header", col(i), top, col(i)+thumbSide, sides[i]+": "+shortRef(v), colText)
	}) + 6
	for _, r := range rows {
		top = l.row(o, r, sides, top, right, col)
	}
	top = l.footer(o, sides, top, right)
	l.h = top + sheetPad
	return l
}

// columns lays out one block per column from the same top; it returns the top below the tallest.
func (l *sheetLayout) columns(section string, top, n int, block func(i, top int) int) int {
	bottom := top
	for i := 0; i < n; i++ {
		bottom = max(bottom, block(i, top))
	}
	return bottom
}

// row places one prompt × seed: its caption, the images and their labels.
func (l *sheetLayout) row(o *outcome, r sheetRow, sides []string, top, right int, col func(int) int) int {
	prompt := ""
	if r.prompt < len(o.Prompts) {
		prompt = o.Prompts[r.prompt]
	}
	top = l.para("row", sheetPad, top, right, fmt.Sprintf("prompt %d, seed %d: %s", r.prompt+1, r.seed, prompt), colMuted) + 6
	for i, side := range sides {
		cell := image.Rect(col(i), top, col(i)+thumbSide, top+thumbSide)
		s := o.image(side, r)
		l.cells = append(l.cells, placedCell{rect: cell, img: s})
		if s == nil {
			l.para("label", cell.Min.X+10, cell.Min.Y+thumbSide/2-lineHeight, cell.Max.X-10, "no image (prediction failed)", colMuted)
		}
	}
	top += thumbSide + 6 // the frame is drawn 3 px around the cell
	return l.columns("label", top, len(sides), func(i, top int) int {
		s := o.image(sides[i], r)
		if s == nil {
			return top
		}
		top = l.para("label", col(i), top, col(i)+thumbSide, figureLabel(s), colText)
		detail := s.j.Verdict
		if s.j.Verdict == skin.Unscored && s.j.Reason != "" {
			detail += ": " + s.j.Reason
		}
		return l.para("label", col(i), top, col(i)+thumbSide, detail, verdictColor(s.j.Verdict))
	}) + sheetPad
}

// footer places the photos' median, both verdicts and what the gate did.
func (l *sheetLayout) footer(o *outcome, sides []string, top, right int) int {
	ref := "training photos' median texture: none (no reference)"
	if o.RefTexture > 0 {
		ref = fmt.Sprintf("training photos' median texture: %.2f (%d of %d photos scored); plastic below %.2fx",
			o.RefTexture, len(o.Ref.texture), o.Ref.photos, o.MinRatio)
	}
	top = l.para("footer", sheetPad, top, right, ref, colText)
	var verdicts []segment
	for _, side := range sides {
		j := o.New
		if side == sidePrevious {
			j = o.Prev
		}
		s := side + ": " + j.Verdict
		if j.Ratio > 0 {
			s += fmt.Sprintf(" %.2fx", j.Ratio)
		}
		verdicts = append(verdicts, segment{s, verdictColor(j.Verdict)})
	}
	top = l.flow("footer", sheetPad, top, right, verdicts)
	if o.Gate != "" {
		top = l.para("footer", sheetPad, top, right, "gate: "+o.Gate, colPlastic)
	}
	return top
}

// renderSheet draws the layout: images, frames, then every line of text.
func renderSheet(o *outcome) *image.NRGBA {
	l := layoutSheet(o)
	img := image.NewNRGBA(image.Rect(0, 0, l.w, l.h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	for _, c := range l.cells {
		if c.img == nil {
			draw.Draw(img, c.rect, image.NewUniform(colEmpty), image.Point{}, draw.Src)
			continue
		}
		th := imaging.Fit(c.img.img, thumbSide, thumbSide, imaging.Lanczos)
		off := image.Pt(c.rect.Min.X+(thumbSide-th.Bounds().Dx())/2, c.rect.Min.Y+(thumbSide-th.Bounds().Dy())/2)
		draw.Draw(img, th.Bounds().Add(off), th, th.Bounds().Min, draw.Src)
		frame(img, c.rect.Inset(-3), 3, verdictColor(c.img.j.Verdict))
	}
	for _, t := range l.texts {
		d := font.Drawer{Dst: img, Src: image.NewUniform(t.c), Face: sheetFace, Dot: fixed.P(t.x, t.y)}
		d.DrawString(t.s)
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
