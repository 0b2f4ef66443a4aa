// Package skin measures how natural the skin of the largest face in an image looks, so that the
// pipeline can notice "plastic skin" in generated portraits by comparing them with the subject's own
// photos.
//
// It finds faces with pico's frontal-face cascade as pigo (a pure-Go port of the pico detector)
// ships it, embedded and evaluated here as pigo evaluates it, only faster (cascade.go); takes the
// luminance of both cheeks of the largest face scaled to 256 px wide, and reports a texture index:
// the median magnitude of a band-pass (Gaussian σ=1 minus σ=2) divided by the cheeks' mean
// brightness. The index varies a lot between people, so it only means something as a ratio against
// the same subject's photos: see Verdict.
//
//	img, _, _ := image.Decode(f)
//	fig := skin.Measure(img)
//	if fig.Scored {
//		fmt.Printf("%d face(s), %d px wide, texture %.2f\n", fig.Faces, fig.FaceWidth, fig.Texture)
//	}
//	j := skin.Verdict(generatedTextures, photoTextures, skin.Options{})
//	fmt.Println(j.Verdict, j.Ratio, j.Reason) // e.g. "plastic 0.48 ..."
package skin

import (
	_ "embed"
	"fmt"
	"image"
	"math"
	"slices"
	"sync"

	pigo "github.com/esimov/pigo/core"
)

// facefinder is pico's frontal-face cascade as shipped with pigo v1.4.6 (MIT; see NOTICE).
//
//go:embed facefinder
var facefinder []byte

var (
	cascadeOnce sync.Once
	faceCascade *cascade
	cascadeErr  error
	// clusters merges overlapping detections (pigo's ClusterDetections reads no cascade).
	clusters = pigo.NewPigo()
)

// classifier unpacks the embedded cascade once; it is read-only, so one value serves concurrent
// callers.
func classifier() (*cascade, error) {
	cascadeOnce.Do(func() {
		faceCascade, cascadeErr = parseCascade(facefinder)
	})
	return faceCascade, cascadeErr
}

const (
	// MinFaceWidth is the narrowest face (px in the measured image) whose texture is stable enough to
	// score.
	MinFaceWidth = 160
	// faceSize is the width the face is scaled to before measuring, so that the band-pass picks the
	// same skin detail whatever the photo's resolution.
	faceSize = 256
	// detectSide bounds the long side of the copy the detector runs on: detection dominates the cost
	// and needs no more detail than this.
	detectSide = 512
	// padFraction of the detection copy's long side is added as a neutral border on every side: the
	// cascade needs context around a face and misses tightly cropped ones without it.
	padFraction = 0.25
	// minDetect is the smallest window (px of the detection copy) the cascade tries.
	minDetect = 20
	// minQuality is the summed cascade score of a dense scan's cluster above which it counts as a
	// face: on the test photos real faces score 40–330 and face-like patches (a collar, a shuttle
	// window after blurring) 5–11.
	minQuality = 15.0
	// edgeShare is the share of the face's strongest gradients that make up the sharpness figure.
	edgeShare = 0.02
)

// Figures are what Measure found in one image.
type Figures struct {
	// Faces is the number of faces detected.
	Faces int
	// FaceWidth is the width in pixels (of the measured image) of the largest face; 0 without a face.
	FaceWidth int
	// Face is the largest face's box in the image's coordinates (may reach past the image's edges).
	Face image.Rectangle
	// Texture is the skin texture index of the largest face: median |band-pass| of the cheeks ÷ their
	// mean brightness, ×1000. Only meaningful compared with the same person's photos.
	Texture float64
	// Sharpness is the mean of the face's strongest 2% luma gradients in the middle of the face ÷ its mean brightness:
	// blur lowers it, edge-preserving skin smoothing barely moves it.
	Sharpness float64
	// Brightness is the cheeks' mean luma (0–255).
	Brightness float64
	// Scored is true when Texture and Sharpness were measured.
	Scored bool
	// Reason says why the image was not scored ("no face found", "face 120 px wide < 160 px: too small
	// to score"); empty when scored.
	Reason string
}

// face is one detection in the measured image's coordinates (centre and side).
type face struct {
	cx, cy, side float64
	q            float32
}

// MeasureOptions tune MeasureWith.
type MeasureOptions struct {
	// MinFace is the narrowest face (px of the measured image) searched for; 0 searches down to the
	// detector's smallest window. Most of the cost is in the smallest windows, so a caller that only
	// needs faces worth scoring (or warning about) saves most of it.
	MinFace int
}

// Measure detects faces in img and measures the skin texture of the largest one. It never fails: an
// image it cannot score comes back with Scored false and the Reason.
func Measure(img image.Image) Figures { return MeasureWith(img, MeasureOptions{}) }

// MeasureWith is Measure with options.
func MeasureWith(img image.Image, opt MeasureOptions) Figures {
	if img == nil {
		return Figures{Reason: "no image"}
	}
	src := lumaOf(img)
	if src.w < minDetect || src.h < minDetect {
		return Figures{Reason: fmt.Sprintf("image %dx%d px is too small to search for faces", src.w, src.h)}
	}
	ws := workspaces.Get().(*workspace)
	defer workspaces.Put(ws)
	faces, err := detectFrom(src, padFraction, opt.MinFace, ws)
	if err != nil {
		return Figures{Reason: err.Error()}
	}
	return measureFaces(src, faces, ws)
}

func measureFaces(src *lumaSource, faces []face, ws *workspace) Figures {
	fig := Figures{Faces: len(faces)}
	if len(faces) == 0 {
		fig.Reason = "no face found"
		return fig
	}
	f := faces[0]
	for _, g := range faces[1:] {
		if g.side > f.side {
			f = g
		}
	}
	half := f.side / 2
	fig.FaceWidth = int(math.Round(f.side))
	x0, y0 := int(math.Round(f.cx-half)), int(math.Round(f.cy-half))
	fig.Face = image.Rect(x0, y0, x0+fig.FaceWidth, y0+fig.FaceWidth) // square, exactly FaceWidth wide
	if fig.FaceWidth < MinFaceWidth {
		fig.Reason = fmt.Sprintf("face %d px wide < %d px: too small to score", fig.FaceWidth, MinFaceWidth)
		return fig
	}
	p := ws.resample(src, f.cx-half, f.cy-half, f.side, f.side, faceSize, faceSize)
	tex, bright := texture(p)
	if bright < 8 {
		fig.Reason = fmt.Sprintf("cheeks too dark to score (mean luma %.1f)", bright)
		return fig
	}
	fig.Texture = tex
	fig.Brightness = bright
	fig.Sharpness = sharpness(p)
	fig.Scored = true
	return fig
}

// detect runs the cascade on a grey copy whose long side is at most detectSide, padded by pad × that
// side with the image's mean luma, and returns the faces in src's coordinates.
func detect(src *lumaSource, pad float64) ([]face, error) {
	return detectFrom(src, pad, 0, new(workspace))
}

// detectFrom is detect searching only for faces at least minFace px wide in src (0: any size),
// with ws's buffers.
func detectFrom(src *lumaSource, pad float64, minFace int, ws *workspace) ([]face, error) {
	cl, err := classifier()
	if err != nil {
		return nil, fmt.Errorf("face detector: unpacking the embedded cascade: %v", err)
	}
	scale := math.Min(1, float64(detectSide)/float64(max(src.w, src.h)))
	dw := max(1, int(math.Round(float64(src.w)*scale)))
	dh := max(1, int(math.Round(float64(src.h)*scale)))
	small := ws.resample(src, 0, 0, float64(src.w), float64(src.h), dw, dh) // dead once pix is made
	var mean float64
	for _, v := range small.pix {
		mean += float64(v)
	}
	mean /= float64(len(small.pix))
	border := int(math.Round(pad * float64(max(dw, dh))))
	cols, rows := dw+2*border, dh+2*border
	ws.pad = grow(ws.pad, cols*rows)
	pix := ws.pad
	fill := uint8(math.Round(mean))
	for i := range pix {
		pix[i] = fill
	}
	for y := 0; y < dh; y++ {
		row := pix[(y+border)*cols+border:]
		for x := 0; x < dw; x++ {
			row[x] = clamp8(small.pix[y*dw+x])
		}
	}
	img := pigo.ImageParams{Pixels: pix, Rows: rows, Cols: cols, Dim: cols}
	var faces []face
	smallest := windowAtLeast(int(math.Floor(float64(minFace) * scale)))
	t := &ws.table
	for _, d := range refine(cl, t, img, scan(cl, t, img, smallest, min(cols, rows), coarseShift, 0)) {
		faces = append(faces, face{
			cx:   (float64(d.Col-border) + 0.5) / scale,
			cy:   (float64(d.Row-border) + 0.5) / scale,
			side: float64(d.Scale) / scale,
			q:    d.Q,
		})
	}
	return faces, nil
}

// windowAtLeast returns the first window size of the full scan's sequence (pigo grows the window
// from minDetect by max(2, 10%) a step, in integers) that is at least px. Starting a scan there
// runs exactly the larger windows of a full scan, so skipping small faces changes no other figure.
func windowAtLeast(px int) int {
	w := minDetect
	for w < px {
		w = int(float64(w) + math.Max(2, float64(w)*scanScaleFactor-float64(w)))
	}
	return w
}

// coarseShift is how far (× its size) the first scan moves the window; refine then re-scans each
// candidate densely. 0.15 halves the cost but loses faces on the example photos: keep 0.1.
const coarseShift = 0.1

// scanScaleFactor is how much the detection window grows per step.
const scanScaleFactor = 1.1

// scan runs the cascade over the whole of img with windows from minSize to maxSize px, moving them
// by shift × their size, and returns the clustered detections scoring above minQ; t is scratch.
func scan(cl *cascade, t *windowTable, img pigo.ImageParams, minSize, maxSize int, shift float64, minQ float32) []pigo.Detection {
	if maxSize < minSize {
		return nil
	}
	params := pigo.CascadeParams{
		MinSize:     minSize,
		MaxSize:     maxSize,
		ShiftFactor: shift,
		ScaleFactor: scanScaleFactor,
		ImageParams: img,
	}
	var out []pigo.Detection
	for _, d := range clusters.ClusterDetections(cl.run(params, t), 0.2) {
		if d.Q > minQ {
			out = append(out, d)
		}
	}
	return out
}

// refine rescans the neighbourhood of each coarse candidate densely (half the window step, sizes
// within ×1.4), where the cascade's score becomes reliable, and keeps the candidates it confirms.
// A dense scan of the whole copy finds the same faces at four times the cost.
func refine(cl *cascade, t *windowTable, img pigo.ImageParams, coarse []pigo.Detection) []pigo.Detection {
	var found []pigo.Detection
	for _, c := range coarse {
		r := c.Scale // the neighbourhood reaches a window's size beyond the candidate's centre
		x0, y0 := max(0, c.Col-r), max(0, c.Row-r)
		x1, y1 := min(img.Cols, c.Col+r), min(img.Rows, c.Row+r)
		sub := make([]uint8, (x1-x0)*(y1-y0))
		for y := y0; y < y1; y++ {
			copy(sub[(y-y0)*(x1-x0):], img.Pixels[y*img.Dim+x0:y*img.Dim+x1])
		}
		subImg := pigo.ImageParams{Pixels: sub, Rows: y1 - y0, Cols: x1 - x0, Dim: x1 - x0}
		lo := max(minDetect, int(float64(c.Scale)/1.4))
		hi := min(int(float64(c.Scale)*1.4), y1-y0, x1-x0)
		var best *pigo.Detection
		for _, d := range scan(cl, t, subImg, lo, hi, 0.05, minQuality) {
			if best == nil || d.Q > best.Q {
				d := d
				best = &d
			}
		}
		if best == nil {
			continue
		}
		best.Row += y0
		best.Col += x0
		dup := false
		for i, f := range found {
			if overlap(f, *best) > 0.3 {
				dup = true
				if best.Q > f.Q {
					found[i] = *best
				}
			}
		}
		if !dup {
			found = append(found, *best)
		}
	}
	return found
}

// overlap is the intersection over union of two detection windows.
func overlap(a, b pigo.Detection) float64 {
	ix := math.Max(0, math.Min(float64(a.Col+a.Scale/2), float64(b.Col+b.Scale/2))-math.Max(float64(a.Col-a.Scale/2), float64(b.Col-b.Scale/2)))
	iy := math.Max(0, math.Min(float64(a.Row+a.Scale/2), float64(b.Row+b.Scale/2))-math.Max(float64(a.Row-a.Scale/2), float64(b.Row-b.Scale/2)))
	inter := ix * iy
	return inter / (float64(a.Scale*a.Scale+b.Scale*b.Scale) - inter)
}

func clamp8(v float32) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}

// cheeks are the two skin regions measured, as fractions of the face box (x0, y0, x1, y1): below the
// eyes, beside the nose, above the mouth corners. The forehead is left out because hair often
// covers it.
var cheeks = [2][4]float64{
	{0.18, 0.56, 0.36, 0.74},
	{0.64, 0.56, 0.82, 0.74},
}

// texture returns the texture index (×1000) and the cheeks' mean luma of a face plane.
func texture(p *plane) (index, brightness float64) {
	var mags []float64
	var sum float64
	for _, c := range cheeks {
		x0, y0 := int(c[0]*float64(p.w)), int(c[1]*float64(p.h))
		x1, y1 := int(c[2]*float64(p.w)), int(c[3]*float64(p.h))
		area := image.Rect(x0, y0, x1, y1)
		b1, b2 := gaussian(p, 1, area), gaussian(p, 2, area)
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				i := (y-y0)*b1.w + x - x0
				mags = append(mags, math.Abs(float64(b1.pix[i]-b2.pix[i])))
				sum += float64(p.pix[y*p.w+x])
			}
		}
	}
	brightness = sum / float64(len(mags))
	if brightness <= 0 {
		return 0, 0
	}
	return 1000 * medianInPlace(mags) / brightness, brightness
}

// sharpness is the mean of the strongest edgeShare of Sobel gradient magnitudes inside the face box
// (its outer tenth left out, where the crop meets the background) ÷ the box's mean luma.
func sharpness(p *plane) float64 {
	x0, y0 := p.w*2/10, p.h*2/10
	x1, y1 := p.w-x0, p.h-y0
	if x0 < 1 || y0 < 1 {
		return 0 // no interior (faceSize is 256: never)
	}
	mags := make([]float64, 0, (x1-x0)*(y1-y0))
	var sum float64
	w := p.w
	for y := y0; y < y1; y++ {
		up, row, down := p.pix[(y-1)*w:(y)*w], p.pix[y*w:(y+1)*w], p.pix[(y+1)*w:(y+2)*w]
		for x := x0; x < x1; x++ {
			// Inside the box no neighbour is clamped: these are p.at's samples.
			gx := (up[x+1] + 2*row[x+1] + down[x+1]) - (up[x-1] + 2*row[x-1] + down[x-1])
			gy := (down[x-1] + 2*down[x] + down[x+1]) - (up[x-1] + 2*up[x] + up[x+1])
			mags = append(mags, math.Hypot(float64(gx), float64(gy)))
			sum += float64(row[x])
		}
	}
	mean := sum / float64(len(mags))
	if mean <= 0 {
		return 0
	}
	n := max(1, int(float64(len(mags))*edgeShare))
	// The n largest, summed smallest first as over the sorted list: only those need sorting.
	top := mags[selectLargest(mags, n):]
	slices.Sort(top)
	var total float64
	for _, m := range top {
		total += m
	}
	return total / float64(n) / mean
}

// median of xs (not modified); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianInPlace is median of finite values, reordering s: a selection, not a sort.
func medianInPlace(s []float64) float64 {
	n := len(s)
	if n == 0 {
		return 0
	}
	hi := nth(s, n/2)
	if n%2 == 1 {
		return hi
	}
	// The lower middle is the largest of what nth left below the upper one.
	return (slices.Max(s[:n/2]) + hi) / 2
}

// selectLargest reorders s so that its n largest values come last and returns where they start.
func selectLargest(s []float64, n int) int {
	k := len(s) - n
	if k > 0 {
		nth(s, k)
	}
	return k
}

// nth reorders s so that s[k] is the value a sort would put there, nothing above it before it
// and nothing below it after it (quickselect), and returns s[k]. s holds no NaN (magnitudes).
func nth(s []float64, k int) float64 {
	lo, hi := 0, len(s)-1
	for lo < hi {
		// Median of three as the pivot, then a Hoare partition.
		m := lo + (hi-lo)/2
		if s[m] < s[lo] {
			s[m], s[lo] = s[lo], s[m]
		}
		if s[hi] < s[lo] {
			s[hi], s[lo] = s[lo], s[hi]
		}
		if s[hi] < s[m] {
			s[hi], s[m] = s[m], s[hi]
		}
		pivot := s[m]
		i, j := lo, hi
		for i <= j {
			for s[i] < pivot {
				i++
			}
			for s[j] > pivot {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return s[k] // between the halves: equal to the pivot
		}
	}
	return s[k]
}
