package skin

import (
	"fmt"
	"math"
)

// Verdicts on the skin of generated images.
const (
	Natural  = "natural"
	Plastic  = "plastic"
	Blur     = "blur"
	Unscored = "unscored"
)

const (
	// DefaultMinTextureRatio is the texture ratio (generated ÷ photos) under which skin counts as
	// plastic: medium beauty-filter smoothing lands at 0.25–0.71×, JPEG and resampling at 0.70–1.07×.
	DefaultMinTextureRatio = 0.65
	// DefaultMinScored is how many scored images each side needs before a ratio of medians means
	// anything.
	DefaultMinScored = 3
	// BlurSharpnessRatio: when the edges have also lost this much (generated ÷ photos), low texture is
	// blamed on blur or low resolution rather than smoothing. Gaussian blur σ=1–2 px drops edges to
	// 0.4–0.8×; edge-preserving smoothing leaves them at 0.9–1.0×.
	BlurSharpnessRatio = 0.75
)

// Options tune Verdict. Zero values take the defaults.
type Options struct {
	// MinRatio is the plastic threshold [DefaultMinTextureRatio].
	MinRatio float64
	// MinScored is the number of scored images each side needs [DefaultMinScored].
	MinScored int
	// GeneratedSharpness and ReferenceSharpness (Figures.Sharpness of the same images) let the
	// verdict tell blur from smoothing; without them low texture is "plastic".
	GeneratedSharpness, ReferenceSharpness []float64
}

// Judgement is a verdict with the figures behind it.
type Judgement struct {
	// Verdict is Natural, Plastic, Blur or Unscored.
	Verdict string
	// Ratio is median(generated texture) ÷ median(reference texture); 0 when unscored.
	Ratio float64
	// SharpnessRatio is the same for sharpness; 0 when unknown.
	SharpnessRatio float64
	// GeneratedMedian and ReferenceMedian are the texture medians compared.
	GeneratedMedian, ReferenceMedian float64
	// Generated and Reference count the scored values used.
	Generated, Reference int
	// Reason says why, with the figures.
	Reason string
}

// Median of the positive, finite values in xs (unscored values are zero); 0 when there are none.
func Median(xs []float64) float64 { return median(scoredValues(xs)) }

func scoredValues(xs []float64) []float64 {
	var out []float64
	for _, x := range xs {
		if x > 0 && !math.IsInf(x, 0) && !math.IsNaN(x) {
			out = append(out, x)
		}
	}
	return out
}

// Verdict compares the texture figures of generated images with those of the subject's own photos
// (reference). Zero, negative or NaN values count as unscored and are left out.
func Verdict(generated, reference []float64, o Options) Judgement {
	if o.MinRatio <= 0 {
		o.MinRatio = DefaultMinTextureRatio
	}
	if o.MinScored <= 0 {
		o.MinScored = DefaultMinScored
	}
	gen, ref := scoredValues(generated), scoredValues(reference)
	j := Judgement{Verdict: Unscored, Generated: len(gen), Reference: len(ref)}
	switch {
	case len(reference) == 0:
		j.Reason = "no reference: no training photo's texture to compare with"
		return j
	case len(ref) == 0:
		j.Reason = "no reference photo has a face large enough to score"
		return j
	case len(ref) < o.MinScored:
		j.Reason = fmt.Sprintf("only %d reference photo(s) scored; need at least %d", len(ref), o.MinScored)
		return j
	case len(gen) == 0:
		j.Reason = "no faces: no generated image has a face large enough to score"
		return j
	case len(gen) < o.MinScored:
		j.Reason = fmt.Sprintf("only %d generated image(s) scored; need at least %d (add prompts or seeds)", len(gen), o.MinScored)
		return j
	}
	j.GeneratedMedian, j.ReferenceMedian = median(gen), median(ref)
	gs, rs := Median(o.GeneratedSharpness), Median(o.ReferenceSharpness)
	if gs > 0 && rs > 0 {
		j.SharpnessRatio = gs / rs
	}
	judge(&j, o.MinRatio)
	return j
}

// ImageVerdict judges one image against the reference photos' median texture and sharpness (either
// may be 0 when unknown), for labels beside each image. It needs no minimum count.
func ImageVerdict(f Figures, refTexture, refSharpness, minRatio float64) Judgement {
	if minRatio <= 0 {
		minRatio = DefaultMinTextureRatio
	}
	j := Judgement{Verdict: Unscored, Reference: 1}
	switch {
	case !f.Scored:
		j.Reason = f.Reason
		if j.Reason == "" {
			j.Reason = "not scored"
		}
		return j
	case !(refTexture > 0):
		j.Reason = "no reference texture to compare with"
		return j
	}
	j.Generated = 1
	j.GeneratedMedian, j.ReferenceMedian = f.Texture, refTexture
	if refSharpness > 0 && f.Sharpness > 0 {
		j.SharpnessRatio = f.Sharpness / refSharpness
	}
	judge(&j, minRatio)
	return j
}

func judge(j *Judgement, minRatio float64) {
	j.Ratio = j.GeneratedMedian / j.ReferenceMedian
	switch {
	case j.Ratio >= minRatio:
		j.Verdict = Natural
		j.Reason = fmt.Sprintf("skin texture %.2f× the photos' median (%.2f vs %.2f), at or above %.2f",
			j.Ratio, j.GeneratedMedian, j.ReferenceMedian, minRatio)
	case j.SharpnessRatio > 0 && j.SharpnessRatio < BlurSharpnessRatio:
		j.Verdict = Blur
		j.Reason = fmt.Sprintf("skin texture %.2f× the photos' median (below %.2f) and edges %.2f× (below %.2f): "+
			"blurred or low-resolution rather than smoothed", j.Ratio, minRatio, j.SharpnessRatio, BlurSharpnessRatio)
	default:
		j.Verdict = Plastic
		j.Reason = fmt.Sprintf("skin texture %.2f× the photos' median (%.2f vs %.2f), below %.2f", j.Ratio,
			j.GeneratedMedian, j.ReferenceMedian, minRatio)
		if j.SharpnessRatio > 0 {
			j.Reason += fmt.Sprintf(", while edges stay sharp (%.2f×): smoothed, waxy skin", j.SharpnessRatio)
		} else {
			j.Reason += ": smoothed, waxy skin"
		}
	}
}
