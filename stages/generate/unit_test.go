package generate

import (
	"image"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

func stat(accepted bool, texture, sharp float64) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"accepted": cty.BoolVal(accepted), "texture": cty.NumberFloatVal(texture), "face_sharpness": cty.NumberFloatVal(sharp),
	})
}

func TestReferenceOf(t *testing.T) {
	stats := cty.MapVal(map[string]cty.Value{
		"a.jpg": stat(true, 5, 2),
		"b.jpg": stat(true, -1, -1), // accepted, no face large enough
		"c.jpg": stat(false, 9, 3),  // rejected: not a reference
		"d.jpg": stat(true, 7, 2.5),
	})
	whole := cty.ObjectVal(map[string]cty.Value{"accepted": strList("a.jpg", "b.jpg", "d.jpg"), "stats": stats})
	r := referenceOf(whole)
	if !r.known || r.missing || r.invalid != "" || r.photos != 3 || len(r.texture) != 2 || r.texture[0] != 5 || r.texture[1] != 7 {
		t.Errorf("whole stage: %+v", r)
	}
	// Without an accepted list, each stat's own accepted flag decides.
	r = referenceOf(cty.ObjectVal(map[string]cty.Value{"stats": stats}))
	if r.photos != 3 || len(r.texture) != 2 {
		t.Errorf("stats only: %+v", r)
	}
	if r := referenceOf(cty.NullVal(cty.DynamicPseudoType)); !r.missing {
		t.Errorf("null: %+v", r)
	}
	if r := referenceOf(cty.UnknownVal(cty.DynamicPseudoType)); r.known {
		t.Errorf("unknown: %+v", r)
	}
	if r := referenceOf(strList("a.jpg")); !strings.Contains(r.invalid, "not an image_check stage") {
		t.Errorf("a list: %+v", r)
	}
	// One of the stage's outputs instead of the stage: a hint names the fix.
	if r := referenceOf(stats); !strings.Contains(r.invalid, "reference = image_check.photos") {
		t.Errorf("stats map: %+v", r)
	}
}

func TestLossesOf(t *testing.T) {
	pts := lossesOf(gateVal())
	if len(pts) != 21 || pts[0].Step != 0 || pts[20].Step != 1000 || pts[0].Loss <= pts[20].Loss {
		t.Errorf("the gate's curve: %v", pts)
	}
	odd := cty.ObjectVal(map[string]cty.Value{"losses": cty.MapVal(map[string]cty.Value{"10": cty.NumberFloatVal(0.5), "x": cty.NumberFloatVal(1)})})
	if pts := lossesOf(odd); len(pts) != 1 || pts[0].Step != 10 {
		t.Errorf("a step that is not a number is left out: %v", pts)
	}
	if pts := lossesOf(cty.NullVal(cty.DynamicPseudoType)); pts != nil {
		t.Errorf("no gate: %v", pts)
	}
	v := lossCurve(nil, gateInfo{})
	if v.Points != 0 || v.Path != "" {
		t.Errorf("empty curve %+v", v)
	}
	v = lossCurve([]lossPoint{{0, 0.8}, {500, 0.4}, {1000, 0.3}}, gateInfo{})
	if !strings.HasPrefix(v.Path, "M48.0,12.0 ") || !strings.HasSuffix(v.Path, "L628.0,190.0") || v.Final != "0.300" {
		t.Errorf("curve %+v", v)
	}
}

func TestSheetShowsVerdictsAndMissingImages(t *testing.T) {
	face := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	o := &outcome{
		Address: `generate.check["ana"]`, Version: "acme/m:newversion123456", Previous: "acme/m:oldversion123456", HasPrev: true,
		Prompts: []string{"a photo of TOK – with a dash ×"}, Seeds: []int64{1}, MinRatio: 0.65,
		RefTexture: 5, Ref: reference{known: true, photos: 4, texture: []float64{5, 5, 5}},
		New: skin.Judgement{Verdict: skin.Plastic, Ratio: 0.5}, Prev: skin.Judgement{Verdict: skin.Natural, Ratio: 1},
		Images: []*scoredImage{{
			run: &run{Side: sideNew, Prompt: 0, Seed: 1, File: "generated/new-p1-s1.png"}, img: face,
			fig: skin.Figures{Scored: true, Texture: 2.5}, j: skin.Judgement{Verdict: skin.Plastic, Ratio: 0.5},
		}}, // the previous version's image is missing (its prediction failed)
		Gate: "refused",
	}
	img := renderSheet(o)
	if img.Bounds().Dx() != sheetPad+2*(thumbSide+sheetPad) {
		t.Errorf("width %d", img.Bounds().Dx())
	}
	// The new image is framed in the plastic colour; the missing one is a grey box.
	cells := layoutSheet(o).cells
	if len(cells) != 2 || cells[0].img == nil || cells[1].img != nil || cells[0].rect.Min.X != sheetPad {
		t.Fatalf("cells %+v", cells)
	}
	newCell, missing := cells[0].rect, cells[1].rect
	if got := img.NRGBAAt(newCell.Min.X-2, newCell.Min.Y+thumbSide/2); got != colPlastic {
		t.Errorf("frame colour %v, want plastic red", got)
	}
	if got := img.NRGBAAt(missing.Min.X+5, missing.Min.Y+5); got != colEmpty {
		t.Errorf("missing image cell %v, want grey", got)
	}
	if !hasColor(img, colNatural) || hasColor(img, colSim) {
		t.Error("footer verdict colours wrong, or a SIMULATED label on a real run")
	}
	if s := asciiOnly("TOK × 2 – “x”\n"); s != `TOK x 2 - "x" ` {
		t.Errorf("asciiOnly: %q", s)
	}
}

// Thresholds share the curve's scale: one outside the curve's range widens the axis to hold it.
func TestLossCurveThresholds(t *testing.T) {
	min, max := 0.2, 0.9
	v := lossCurve([]lossPoint{{0, 0.8}, {500, 0.4}, {1000, 0.3}}, gateInfo{minLoss: &min, maxLoss: &max})
	if len(v.Thresholds) != 2 || v.MinLoss != "0.200" || v.MaxLoss != "0.900" {
		t.Fatalf("thresholds %+v, axis %s–%s", v.Thresholds, v.MinLoss, v.MaxLoss)
	}
	// Axis 0.2–0.9 over y 190–12: min_loss at the bottom, max_loss at the top, the last point
	// (0.3) a seventh of the way up.
	if v.Thresholds[0].Name != "min_loss" || v.Thresholds[0].Y != "190.0" || v.Thresholds[1].Y != "12.0" ||
		!strings.HasSuffix(v.Path, "L628.0,164.6") {
		t.Errorf("thresholds %+v, path %s", v.Thresholds, v.Path)
	}
}

// The parameters come from the stages handed to generate: what the training was sent, params'
// reasons beside them, params' own values when no training is handed; credentials never show.
func TestTrainingOf(t *testing.T) {
	tr := trainingOf(paramsVal(), trainingVal("acme/m:v", cty.NullVal(cty.Number)))
	got := map[string]param{}
	for _, p := range tr.Params {
		got[p.Name] = p
	}
	if len(tr.Params) != 5 || got["steps"].Value != "1000" || got["steps"].Chosen != "1200" || got["lora_rank"].Chosen != "" ||
		got["hf_token"].Value != "(sensitive)" || !strings.HasPrefix(got["lora_rank"].Reason, "built-in: rank 16") || !tr.Handed || tr.HasCost {
		t.Errorf("sent with reasons: %+v", tr)
	}
	if len(tr.Other) != 2 || !strings.HasPrefix(tr.Other[0], "num_repeats: ") || !strings.HasPrefix(tr.Other[1], "passes per photo") {
		t.Errorf("other reasons %q", tr.Other)
	}
	o := &outcome{Training: tr}
	if c := o.costLines(); c.Training != "not known" || !strings.Contains(c.TrainingNote, "no cost_usd") || c.Total != "" {
		t.Errorf("training without a cost: %+v", c)
	}
	only := trainingOf(paramsVal(), cty.NullVal(cty.DynamicPseudoType))
	if len(only.Params) != 3 || only.Params[2].Name != "steps" || only.Params[2].Value != "1200" || only.Handed || !strings.Contains(only.Source, "params stage's values") {
		t.Errorf("params only: %+v", only)
	}
	if none := trainingOf(cty.NullVal(cty.DynamicPseudoType), cty.NullVal(cty.DynamicPseudoType)); len(none.Params) != 0 || none.Source != "" {
		t.Errorf("nothing handed: %+v", none)
	}
	html, err := renderReport(&outcome{Training: trainingOf(cty.NullVal(cty.DynamicPseudoType), cty.NullVal(cty.DynamicPseudoType)), Ref: reference{known: true, missing: true}})
	if err != nil || !strings.Contains(string(html), `id="no-params"`) || !strings.Contains(string(html), "set training = train.NAME") ||
		!strings.Contains(string(html), "no image check handed") {
		t.Errorf("report with nothing handed: %v", err)
	}
}
