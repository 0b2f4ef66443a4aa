package generate

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// scoredImage is one downloaded image with its face figures and its own verdict against the
// reference photos' medians.
type scoredImage struct {
	run *run
	img image.Image
	fig skin.Figures
	j   skin.Judgement
}

// outcome is everything the report, the contact sheet and the outputs show.
type outcome struct {
	Address   string
	Simulated bool
	Version   string
	Previous  string
	// PreviousNote says why there is no comparison (compare_previous on, no earlier version).
	PreviousNote string
	Prompts      []string
	Seeds        []int64
	Guidance     float64
	Steps        int64
	LoraScale    float64
	MinRatio     float64
	OnPlastic    string

	Ref                      reference
	RefTexture, RefSharpness float64 // medians of the scored reference photos (0 = none)
	New, Prev                skin.Judgement
	HasPrev                  bool
	Images                   []*scoredImage
	Losses                   []lossPoint
	// LossGate is the loss gate's verdict and thresholds (from `gate`).
	LossGate gateInfo
	// Training is the training's parameters and cost (from `params` and `training`).
	Training trainingInfo
	// Cost is this apply's cost of predictions (nil: unknown price); Reused counts the runs whose
	// cost an earlier apply reported.
	Cost   *pipeline.Cost
	Reused int
	// Gate is what the guard did: "" (nothing), "refused", "refused, version deleted", ...
	Gate     string
	Warnings []string
}

type lossPoint struct {
	Step int
	Loss float64
}

// redactAll scrubs secrets from text the report and contact sheet show (a prompt may hold one).
func redactAll(env *pipeline.Env, list []string) []string {
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = env.RedactText(x)
	}
	return out
}

// finish scores the images, judges both sides, applies the gate and writes sheet and report.
func (g *generator) finish(ctx context.Context, imgs []outImage) (*pipeline.Result, error) {
	cfg := g.cfg
	o := &outcome{
		Address: g.req.Address, Simulated: g.req.Env != nil && g.req.Env.Simulated,
		Version: cfg.Version, Previous: g.rec.Previous, PreviousNote: g.rec.PreviousNote,
		Prompts: redactAll(g.req.Env, cfg.Prompts), Seeds: cfg.Seeds, Guidance: cfg.Guidance, Steps: cfg.Steps,
		LoraScale: cfg.LoraScale, MinRatio: cfg.MinRatio, OnPlastic: cfg.OnPlastic,
		Ref: referenceOf(cfg.Reference), HasPrev: g.rec.Previous != "",
		Losses: lossesOf(cfg.Gate), LossGate: gateOf(cfg.Gate), Training: trainingOf(cfg.Params, cfg.Training),
	}
	o.Training.redact(g.req.Env)
	for p, why := range o.Ref.rejected {
		o.Ref.rejected[p] = g.req.Env.RedactText(why)
	}
	o.LossGate.reason = g.req.Env.RedactText(o.LossGate.reason)
	o.RefTexture, o.RefSharpness = skin.Median(o.Ref.texture), skin.Median(o.Ref.sharpness)
	for _, im := range imgs {
		fig := skin.Measure(im.img)
		s := &scoredImage{run: im.run, img: im.img, fig: fig}
		if o.RefTexture > 0 {
			s.j = skin.ImageVerdict(fig, o.RefTexture, o.RefSharpness, cfg.MinRatio)
		} else {
			s.j = skin.Judgement{Verdict: skin.Unscored, Reason: o.refReason()}
			if !fig.Scored {
				s.j.Reason = fig.Reason
			}
		}
		o.Images = append(o.Images, s)
	}
	o.New = o.judge(sideNew)
	if o.HasPrev {
		o.Prev = o.judge(sidePrevious)
	}

	res := &pipeline.Result{Warnings: g.warnings}
	var costWarning string
	o.Cost, o.Reused, costWarning = g.cost()
	res.Cost = o.Cost
	if costWarning != "" {
		res.Warnings = append(res.Warnings, costWarning)
	}
	if cfg.Guidance > PortraitGuidance {
		res.Warnings = append(res.Warnings, guidanceWarning(cfg.Guidance))
	}
	if o.PreviousNote != "" {
		res.Notes = append(res.Notes, o.PreviousNote)
	}
	reason := o.New.Reason
	if o.HasPrev {
		reason += fmt.Sprintf("; previous version %s: %s", shortRef(o.Previous), o.Prev.Verdict)
		if o.Prev.Ratio > 0 {
			reason += fmt.Sprintf(" (%.2f×)", o.Prev.Ratio)
		}
	}
	switch o.New.Verdict {
	case skin.Plastic:
		msg := "plastic skin on " + cfg.Version + ": " + o.New.Reason
		if cfg.OnPlastic != OnPlasticFail {
			res.Warnings = append(res.Warnings, msg+" (on_plastic = \"warn\": the run goes on; lower guidance_scale or lora_scale, or retrain with gentler parameters)")
			break
		}
		res.Refused = msg
		o.Gate = "refused (on_plastic = \"fail\")"
		if err := g.gate(ctx, res, o); err != nil {
			return nil, err
		}
	case skin.Blur:
		res.Warnings = append(res.Warnings, "blurred test images: "+o.New.Reason+"; the skin cannot be judged on them")
	case skin.Unscored:
		res.Warnings = append(res.Warnings, "the plastic-skin guard could not judge "+cfg.Version+": "+o.New.Reason)
	}
	if res.Refused == "" || cfg.OnFail == OnFailKeep {
		if err := g.withdrawRejection(res); err != nil {
			return nil, err
		}
	}
	o.Warnings = redactAll(g.req.Env, res.Warnings)

	sheetRel := filepath.Join(cfg.OutDir, "contact_sheet.png")
	if err := writeSheet(g.abs(sheetRel), o); err != nil {
		return nil, fmt.Errorf("writing the contact sheet %s: %w; hint: check out_dir and its permissions", g.abs(sheetRel), err)
	}
	reportRel := filepath.Join(cfg.OutDir, "report.html")
	if err := writeReport(g.abs(reportRel), o); err != nil {
		return nil, fmt.Errorf("writing the report %s: %w; hint: check out_dir and its permissions", g.abs(reportRel), err)
	}

	// The cost is in this result: the next apply counts only predictions it runs itself.
	g.rec.reported()
	if err := g.save(); err != nil {
		return nil, err
	}

	var paths []cty.Value
	texture := map[string]cty.Value{}
	for _, s := range o.Images {
		paths = append(paths, cty.StringVal(s.run.File))
		t := -1.0 // unscored, as image_check's stats show it
		if s.fig.Scored {
			t = round3(s.fig.Texture)
		}
		texture[s.run.File] = cty.NumberFloatVal(t)
	}
	imagesVal := cty.ListValEmpty(cty.String)
	if len(paths) > 0 {
		imagesVal = cty.ListVal(paths)
	}
	textureVal := cty.MapValEmpty(cty.Number)
	if len(texture) > 0 {
		textureVal = cty.MapVal(texture)
	}
	ratio := func(j skin.Judgement) cty.Value {
		if j.Verdict == skin.Unscored || j.Ratio <= 0 {
			return cty.NullVal(cty.Number)
		}
		return cty.NumberFloatVal(round3(j.Ratio))
	}
	prevVersion, prevVerdict, prevRatio := cty.NullVal(cty.String), cty.NullVal(cty.String), cty.NullVal(cty.Number)
	if o.HasPrev {
		prevVersion, prevVerdict, prevRatio = cty.StringVal(o.Previous), cty.StringVal(o.Prev.Verdict), ratio(o.Prev)
	}
	res.Outputs = map[string]cty.Value{
		"images":                 imagesVal,
		"report":                 cty.StringVal(reportRel),
		"contact_sheet":          cty.StringVal(sheetRel),
		"texture":                textureVal,
		"texture_ratio":          ratio(o.New),
		"verdict":                cty.StringVal(o.New.Verdict),
		"previous_version":       prevVersion,
		"previous_texture_ratio": prevRatio,
		"previous_verdict":       prevVerdict,
		"reason":                 cty.StringVal(reason),
	}
	return res, nil
}

// gate handles a refused version like a loss-gate rejection: deleted with on_fail =
// "delete_version" (the model's latest stays the last good one), kept otherwise.
func (g *generator) gate(ctx context.Context, res *pipeline.Result, o *outcome) error {
	if g.cfg.OnFail == OnFailKeep {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the refused version %s is kept (on_fail = \"keep\"): it is now the model's latest", g.cfg.Version))
		return nil
	}
	if g.rec.Deleted == g.cfg.Version {
		res.Deletes = append(res.Deletes, g.cfg.Version)
		o.Gate += ", version deleted"
		return nil
	}
	owner, name, id, err := replicate.SplitVersion(g.cfg.Version)
	if err != nil {
		return err
	}
	if g.rec.Rejected != g.cfg.Version {
		// What to restore should the user later keep the version; saved before the ledger changes.
		g.rec.Rejected, g.rec.RejectedOver = g.cfg.Version, replicate.LedgerOf(g.req.State).VerdictOf(g.cfg.Version)
		if err := g.save(); err != nil {
			return err
		}
	}
	// Recorded before the delete: if it does not finish, no stage takes the version for a good one.
	if err := replicate.UpdateLedger(g.req, func(l *replicate.Ledger) { l.Judge(g.cfg.Version, replicate.Rejected) }); err != nil {
		return fmt.Errorf("recording the refused version: %w", err)
	}
	err = g.c.DeleteVersion(ctx, owner, name, id)
	var apiErr *replicate.APIError
	switch {
	case err == nil || replicate.IsNotFound(err):
		g.rec.Deleted = g.cfg.Version
		res.Deletes = append(res.Deletes, g.cfg.Version)
		o.Gate += ", version deleted"
		if err := replicate.UpdateLedger(g.req, func(l *replicate.Ledger) { l.MarkDeleted(g.cfg.Version) }); err != nil {
			return fmt.Errorf("recording the deleted version: %w", err)
		}
		return g.save()
	case errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 && apiErr.Status != 401 && apiErr.Status != 429:
		detail := apiErr.Detail
		if detail == "" {
			detail = apiErr.Error()
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("the refused version %s could not be deleted: %s; it is the model's latest version now: delete it on replicate.com or pin the previous one", g.cfg.Version, detail))
		o.Gate += ", deletion refused by the API"
		return nil
	case ctx.Err() != nil:
		return g.stop(ctx)
	}
	return fmt.Errorf("%s; deleting the refused version %s failed: %w; hint: run apply again to retry the delete", res.Refused, g.cfg.Version, err)
}

// withdrawRejection undoes this stage's earlier rejection of the version when it now passes or is
// kept on purpose and was not deleted: the ledger gets back the verdict it had before.
func (g *generator) withdrawRejection(res *pipeline.Result) error {
	if g.rec.Rejected != g.cfg.Version || g.rec.Deleted == g.cfg.Version {
		return nil
	}
	over := g.rec.RejectedOver
	err := replicate.UpdateLedger(g.req, func(l *replicate.Ledger) {
		if l.VerdictOf(g.cfg.Version) == replicate.Rejected {
			l.Judge(g.cfg.Version, over)
		}
	})
	if err != nil {
		return fmt.Errorf("withdrawing the earlier rejection of %s: %w", g.cfg.Version, err)
	}
	g.rec.Rejected, g.rec.RejectedOver = "", ""
	res.Notes = append(res.Notes, fmt.Sprintf("the earlier plastic-skin rejection of %s is withdrawn: it is kept now", g.cfg.Version))
	return nil
}

// cost is the actual cost of the predictions no earlier apply reported (their predict_time × the
// price) and how many runs were reused at no new cost.
func (g *generator) cost() (*pipeline.Cost, int, string) {
	reused := 0
	for _, r := range g.rec.Runs {
		if !r.CostUnreported {
			reused++
		}
	}
	n, secs := g.rec.unreported()
	cost, ok := g.cfg.money.actual(n, secs)
	if !ok {
		return nil, reused, g.cfg.money.unknownPrice()
	}
	if reused > 0 {
		cost.Basis += fmt.Sprintf("; %d reused from an earlier run at no new cost", reused)
	}
	return cost, reused, ""
}

// judge is the verdict of one side against the reference photos.
func (o *outcome) judge(side string) skin.Judgement {
	if r := o.refReason(); r != "" && !o.Ref.missing {
		return skin.Judgement{Verdict: skin.Unscored, Reason: r}
	}
	var tex, sharp []float64
	for _, s := range o.Images {
		if s.run.Side != side {
			continue
		}
		if s.fig.Scored {
			tex = append(tex, s.fig.Texture)
			sharp = append(sharp, s.fig.Sharpness)
		} else {
			tex = append(tex, 0)
		}
	}
	var refTex []float64 // nil when missing: the verdict says "no reference"
	if !o.Ref.missing {
		refTex = o.Ref.texture
	}
	return skin.Verdict(tex, refTex, skin.Options{MinRatio: o.MinRatio, GeneratedSharpness: sharp, ReferenceSharpness: o.Ref.sharpness})
}

// refReason is why the reference cannot be used ("" when it can).
func (o *outcome) refReason() string {
	switch {
	case o.Ref.missing:
		return "no reference: set reference = image_check.NAME (the subject's photos) to judge the skin"
	case o.Ref.invalid != "":
		return o.Ref.invalid
	case o.Ref.photos == 0:
		return "the reference has no accepted photos"
	case len(o.Ref.texture) == 0:
		return "no reference photo has a face large enough to score"
	}
	return ""
}

// lossesOf reads the loss series a loss_gate judged (its `losses` output: step → loss), for the
// report's chart; nil without a gate.
func lossesOf(gate cty.Value) []lossPoint {
	if gate == cty.NilVal || gate.IsNull() || !gate.IsWhollyKnown() || !gate.Type().IsObjectType() || !gate.Type().HasAttribute("losses") {
		return nil
	}
	l := gate.GetAttr("losses")
	if l.IsNull() || !(l.Type().IsMapType() || l.Type().IsObjectType()) {
		return nil
	}
	var pts []lossPoint
	for k, v := range l.AsValueMap() {
		step, err := strconv.Atoi(k)
		if err != nil || v.IsNull() || v.Type() != cty.Number {
			continue
		}
		f, _ := v.AsBigFloat().Float64()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		pts = append(pts, lossPoint{step, f})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].Step < pts[j].Step })
	return pts
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// shortRef shortens "owner/name:longid" to "owner/name:longid[:12]".
func shortRef(ref string) string {
	owner, name, id, err := replicate.SplitVersion(ref)
	if err != nil || owner == "" {
		return shortID(ref)
	}
	return owner + "/" + name + ":" + shortID(id)
}
