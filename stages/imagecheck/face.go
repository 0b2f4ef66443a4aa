package imagecheck

import (
	"fmt"
	"image"

	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// faceFigures are the per-photo face measurements from package skin, taken on the small copy the
// check already has (long side workSide), so they cost no extra decode. Widths are pixels of that
// copy: the scale a trainer working at 1024 px sees the face at.
type faceFigures struct {
	Faces     int     `json:"faces"`
	Width     int     `json:"width"`
	Texture   float64 `json:"texture"`
	Sharpness float64 `json:"sharpness"`
	Scored    bool    `json:"scored"`
	Reason    string  `json:"reason,omitempty"`
}

// textureRatio: a photo whose skin texture is below this share of the set's median looks smoothed.
const textureRatio = 0.6

// faceMeasure is measureFace; the benchmark swaps it out to show what face scoring adds.
var faceMeasure = measureFace

// minFaceSearched is the narrowest face (px of the working copy) searched for: half the width worth
// scoring, so a face a little too small still gets its "too small" warning, while the detector
// skips the tiny windows that cost most of its time.
const minFaceSearched = skin.MinFaceWidth / 2

func measureFace(img *image.NRGBA) *faceFigures {
	f := skin.MeasureWith(img, skin.MeasureOptions{MinFace: minFaceSearched})
	return &faceFigures{Faces: f.Faces, Width: f.FaceWidth, Texture: f.Texture, Sharpness: f.Sharpness, Scored: f.Scored, Reason: f.Reason}
}

// faceWarnings adds the face warnings to photos that pass every rule: no face, several faces, a face
// too small to learn from, and skin texture far below the set's median (a beauty filter or heavy
// noise reduction teaches the model plastic skin).
func faceWarnings(rep *Report) {
	var tex, sharp []float64
	for _, im := range rep.Images {
		if im.Accepted() && im.Face != nil && im.Face.Scored {
			tex = append(tex, im.Face.Texture)
			sharp = append(sharp, im.Face.Sharpness)
		}
	}
	rep.MedianTexture = median(tex)
	medSharp := median(sharp)
	for _, im := range rep.Images {
		f := im.Face
		if !im.Accepted() || f == nil {
			continue
		}
		switch {
		case f.Faces == 0:
			im.Warnings = append(im.Warnings, fmt.Sprintf("%s: no face found: a photo without the subject's face teaches the model little about them (the detector finds near-frontal faces at least %d px wide at %d px; a profile can be fine)", im.Path, minFaceSearched, workSide))
			continue
		case f.Faces > 1:
			im.Warnings = append(im.Warnings, fmt.Sprintf("%s: %d faces found: whose model is this? Crop the photo to the subject", im.Path, f.Faces))
		}
		if f.Width < skin.MinFaceWidth {
			im.Warnings = append(im.Warnings, fmt.Sprintf("%s: face %d px wide at %d px < %d px: too small to learn from; use a closer photo or crop closer", im.Path, f.Width, min(max(im.Width, im.Height), workSide), skin.MinFaceWidth))
			continue
		}
		if f.Scored && len(sharp) >= minForRelative && medSharp > 0 && f.Sharpness < softFaceRatio*medSharp {
			im.Warnings = append(im.Warnings, fmt.Sprintf("%s: face softer than most: edge sharpness %.2f is %.2f× the set median %.2f (< %.1f×): missed focus or motion blur?",
				im.Path, f.Sharpness, f.Sharpness/medSharp, medSharp, softFaceRatio))
			continue // blur lowers the texture index too: one warning says it
		}
		if f.Scored && len(tex) >= minForRelative && rep.MedianTexture > 0 && f.Texture < textureRatio*rep.MedianTexture {
			im.Warnings = append(im.Warnings, fmt.Sprintf("%s: skin texture %.2f is %.2f× the set median %.2f (< %.1f×): possibly beauty-filtered or heavily smoothed; use the original photo",
				im.Path, f.Texture, f.Texture/rep.MedianTexture, rep.MedianTexture, textureRatio))
		}
	}
}
