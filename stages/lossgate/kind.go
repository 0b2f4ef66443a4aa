// Package lossgate implements the `loss_gate` stage kind: it judges a finished training's smoothed
// loss curve and refuses an overfit (or underfit) LoRA, deleting the rejected version so that the
// model's latest version stays the last good one.
//
//	stage "loss_gate" "fit" {
//	  training     = train.lora   # the train stage's whole output object
//	  min_loss     = 0.2          # smoothed loss below this = overfitting
//	  cancel_early = true         # the training is cancelled once this is certain
//	}
//
// With cancel_early the gate is a pipeline.Consultant: the stage it names consults it on the
// running loss series (an object {step, total, losses} the train kind documents) and cancels the
// training when the gate says so. The verdict goes into the subject's version ledger
// (replicate.Ledger: accepted or rejected, and deleted), where the params stage finds the photo
// count of the last accepted training and prune the versions it must keep. Outputs: passed,
// final_loss, reason, and for a report drawing the curve (generate's `gate`): min_loss, max_loss
// and losses (step → raw loss, as train's).
package lossgate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Kind is the loss_gate stage kind.
type Kind struct{}

// On-fail policies.
const (
	OnFailDelete = "delete_version"
	OnFailKeep   = "keep"
)

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"training": {Type: cty.DynamicPseudoType, Required: true, StageKind: "train", DigestBy: "training_id",
			// One training's curve never changes; what else train reports (its cost) is no
			// reason to judge it again.
			Description: "the train stage whose loss curve is judged: `training = train.lora`"},
		"min_loss": {Type: cty.Number, Default: cty.NumberFloatVal(DefaultMinLoss), Min: pipeline.Bound(0),
			Description: "a smoothed final loss below this is overfitting"},
		"max_loss": {Type: cty.Number, Min: pipeline.Bound(0), Check: aboveMinLoss,
			Description: "a smoothed final loss above this is underfitting (default: none)"},
		"smoothing": {Type: cty.Number, Min: pipeline.Bound(0), ExclusiveMin: true, Max: pipeline.Bound(1),
			Description: "EMA factor alpha in (0, 1] (1 = no smoothing); default: an EMA spanning ~10% of the steps"},
		"cancel_early": {Type: cty.Bool, Default: cty.False,
			Description: "the train stage cancels the running training as soon as the smoothed loss falls under min_loss"},
		"on_fail": {Type: cty.String, Default: cty.StringVal(OnFailDelete), OneOf: []string{OnFailDelete, OnFailKeep},
			Description: `"delete_version" deletes the rejected version so the model's latest stays the last good one; "keep" leaves it`},
	},
	Outputs: map[string]cty.Type{
		"passed":     cty.Bool,
		"final_loss": cty.Number,
		"reason":     cty.String,
		"min_loss":   cty.Number,
		"max_loss":   cty.Number,
		"losses":     cty.Map(cty.Number),
	},
	Remote:   true,
	Settings: []string{"replicate"},
	Summary:  []pipeline.SummaryColumn{{Title: "final loss", Path: "final_loss", Order: 40}},
}

// Name implements pipeline.Kind.
func (Kind) Name() string { return "loss_gate" }

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

// aboveMinLoss: no loss could pass a max_loss at or under min_loss.
func aboveMinLoss(v, in cty.Value) error {
	lo := DefaultMinLoss
	if m := in.GetAttr("min_loss"); m.IsKnown() && !m.IsNull() {
		lo, _ = m.AsBigFloat().Float64()
	} else if !m.IsKnown() {
		return nil
	}
	if hi, _ := v.AsBigFloat().Float64(); hi <= lo {
		return fmt.Errorf("max_loss = %s is not above min_loss = %s: no loss could pass", fmtLoss(hi), fmtLoss(lo))
	}
	return nil
}

// Settings are a gate's attributes, decoded from its schema.
type Settings struct {
	Training    cty.Value `cty:"training"`
	MinLoss     *float64  `cty:"min_loss"`
	MaxLoss     *float64  `cty:"max_loss"`
	Smoothing   *float64  `cty:"smoothing"`
	CancelEarly bool      `cty:"cancel_early"`
	OnFail      string    `cty:"on_fail"`
}

// config is what Judge holds the curve against.
func (s Settings) config() Config {
	c := Config{MinLoss: s.MinLoss, MaxLoss: s.MaxLoss}
	if s.Smoothing != nil {
		c.Alpha = *s.Smoothing
	}
	return c
}

// ParseSettings decodes a gate's inputs (its Request.Inputs, or the inputs the engine evaluated
// for a consultation, where absent attributes take their defaults).
func ParseSettings(inputs cty.Value) (Settings, error) {
	var s Settings
	err := pipeline.Err(schema.Decode(&pipeline.Request{Inputs: inputs}, &s))
	return s, err
}

// Consultation implements pipeline.Consultant: a gate with cancel_early (and a min_loss) watches
// the training it names while it runs.
func (Kind) Consultation(inputs cty.Value, upstream string) *pipeline.Consultation {
	s, err := ParseSettings(inputs)
	if err != nil || !s.CancelEarly || s.MinLoss == nil {
		return nil
	}
	cfg := s.config()
	return &pipeline.Consultation{
		Note: fmt.Sprintf("cancels the training early if the smoothed loss falls under min_loss %s (cancel_early)", fmtLoss(*s.MinLoss)),
		Consult: func(observed cty.Value) (string, error) {
			step, total, losses, err := parseObserved(observed)
			if err != nil {
				return "", err
			}
			c := cfg
			c.TotalSteps = total
			if cancel, v := ShouldCancel(losses, c); cancel {
				return fmt.Sprintf("%s at step %d/%d", v.Reason, step, total), nil
			}
			return "", nil
		},
	}
}

// parseObserved reads what a running training reports to its consultants: {step, total, losses}.
func parseObserved(v cty.Value) (step, total int, losses []replicate.LossPoint, err error) {
	t, err := parseTraining(v)
	if err != nil {
		return 0, 0, nil, err
	}
	num := func(name string) int {
		if !v.Type().IsObjectType() || !v.Type().HasAttribute(name) {
			return 0
		}
		n := v.GetAttr(name)
		if n.IsNull() || !n.IsKnown() || n.Type() != cty.Number {
			return 0
		}
		i, _ := n.AsBigFloat().Int64()
		return int(i)
	}
	return num("step"), num("total"), t.Losses, nil
}

// LastAccepted returns the training a gate of this subject accepted last (nil when none has
// passed yet), from the subject's version ledger.
func LastAccepted(view pipeline.StateView) *replicate.LedgerVersion {
	return replicate.LedgerOf(view).LastAccepted()
}

// judged is the part of a train stage's outputs the gate uses.
type judged struct {
	TrainingID, Version, ImagesDigest string
	ImageCount                        int
	Losses                            []replicate.LossPoint
	LossesKnown                       bool
}

// parseTraining reads the train stage's output object. Missing attributes stay empty, so a gate can
// judge any object carrying a `losses` map.
func parseTraining(v cty.Value) (judged, error) {
	var t judged
	v, _ = v.UnmarkDeep()
	if v.IsNull() {
		return t, fmt.Errorf("training is null; hint: set training = train.NAME (the whole train stage)")
	}
	if !v.IsKnown() {
		return t, nil
	}
	ty := v.Type()
	if !ty.IsObjectType() && !ty.IsMapType() {
		return t, fmt.Errorf("training must be a train stage's output object (training = train.NAME), got %s", ty.FriendlyName())
	}
	get := func(name string) cty.Value {
		if ty.IsObjectType() {
			if !ty.HasAttribute(name) {
				return cty.NilVal
			}
			return v.GetAttr(name)
		}
		if !v.HasIndex(cty.StringVal(name)).True() {
			return cty.NilVal
		}
		return v.Index(cty.StringVal(name))
	}
	str := func(name string) string {
		a := get(name)
		if a == cty.NilVal || a.IsNull() || !a.IsKnown() || a.Type() != cty.String {
			return ""
		}
		return a.AsString()
	}
	t.TrainingID, t.Version, t.ImagesDigest = str("training_id"), str("version"), str("images_digest")
	if n := get("image_count"); n != cty.NilVal && n.IsKnown() && !n.IsNull() && n.Type() == cty.Number {
		i, _ := n.AsBigFloat().Int64()
		t.ImageCount = int(i)
	}
	l := get("losses")
	if l == cty.NilVal {
		if t.TrainingID == "" && t.Version == "" {
			return t, fmt.Errorf("training has no `losses`: set training = train.NAME (the whole train stage)")
		}
		t.LossesKnown = true
		return t, nil
	}
	if !l.IsKnown() {
		return t, nil
	}
	t.LossesKnown = true
	if l.IsNull() {
		return t, nil
	}
	if !l.CanIterateElements() {
		return t, fmt.Errorf("training.losses must be a map of step to loss, got %s", l.Type().FriendlyName())
	}
	for it := l.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if !e.IsKnown() || e.IsNull() {
			continue
		}
		step, err := strconv.Atoi(strings.TrimSpace(k.AsString()))
		if err != nil {
			return t, fmt.Errorf("training.losses key %q is not a step number", k.AsString())
		}
		if e.Type() != cty.Number {
			return t, fmt.Errorf("training.losses[%q] is not a number", k.AsString())
		}
		f, _ := e.AsBigFloat().Float64()
		t.Losses = append(t.Losses, replicate.LossPoint{Step: step, Loss: f})
	}
	sort.Slice(t.Losses, func(i, j int) bool { return t.Losses[i].Step < t.Losses[j].Step })
	return t, nil
}

// describe says what the gate judges, for plan notes.
func (s Settings) describe() string {
	var b strings.Builder
	b.WriteString("judges the training's smoothed loss (")
	if s.Smoothing != nil {
		fmt.Fprintf(&b, "EMA alpha %s", fmtLoss(*s.Smoothing))
	} else {
		b.WriteString("EMA over the last ~10% of steps")
	}
	b.WriteString(")")
	switch {
	case s.MinLoss != nil && s.MaxLoss != nil:
		fmt.Fprintf(&b, ": passes within [%s, %s]", fmtLoss(*s.MinLoss), fmtLoss(*s.MaxLoss))
	case s.MinLoss != nil:
		fmt.Fprintf(&b, ": below min_loss %s is overfitting", fmtLoss(*s.MinLoss))
	case s.MaxLoss != nil:
		fmt.Fprintf(&b, ": above max_loss %s is underfitting", fmtLoss(*s.MaxLoss))
	default:
		b.WriteString(": no bounds set, it always passes")
	}
	return b.String()
}

// decode reads the gate's settings and the training it judges.
func decode(req *pipeline.Request) (Settings, judged, error) {
	var s Settings
	if err := pipeline.Err(schema.Decode(req, &s)); err != nil {
		return s, judged{}, err
	}
	t, err := parseTraining(req.Input("training"))
	return s, t, err
}

// Plan implements pipeline.Kind: it validates the settings and says what the gate will judge. What it
// deletes is only known once the training has finished, so Deletes stays empty.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	s, t, err := decode(req)
	if err != nil {
		return nil, err
	}
	res := &pipeline.Result{Notes: []string{s.describe()}, Effects: []string{replicate.JudgesVersions}}
	if s.OnFail == OnFailDelete {
		res.Notes = append(res.Notes, "on failure: deletes the rejected version (never any other), so the model's latest version stays the last good one; the run exits 3")
	} else {
		res.Notes = append(res.Notes, "on failure: keeps the rejected version (on_fail = \"keep\"); the run exits 3")
	}
	if s.CancelEarly {
		res.Notes = append(res.Notes, "cancel_early: the train stage cancels the training as soon as the smoothed loss falls under min_loss")
	}
	if t.LossesKnown {
		v := Judge(t.Losses, s.config())
		if v.Passed {
			res.Notes = append(res.Notes, "the recorded training would pass: "+v.Reason)
		} else {
			res.Notes = append(res.Notes, "the recorded training would be refused: "+v.Reason)
		}
	}
	return res, nil
}

// Apply implements pipeline.Kind.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	s, t, err := decode(req)
	if err != nil {
		return nil, err
	}
	v := Judge(t.Losses, s.config())
	if v.Passed && t.Version == "" && t.TrainingID != "" {
		// A training cancelled before its end has a loss curve but no model to accept.
		v.Passed = false
		v.Reason = fmt.Sprintf("training %s produced no version (it was cancelled before the end); %s", t.TrainingID, v.Reason)
	}
	res := &pipeline.Result{Outputs: outputs(s, t, v)}
	if v.Passed {
		if err := replicate.UpdateLedger(req, func(l *replicate.Ledger) {
			if t.TrainingID != "" {
				l.Produced(t.Version, t.TrainingID, t.ImageCount, t.ImagesDigest, time.Time{})
			}
			l.Judge(t.Version, replicate.Accepted)
		}); err != nil {
			return nil, fmt.Errorf("recording the accepted training: %w", err)
		}
		return res, nil
	}
	res.Refused = v.Reason
	reject := s.OnFail != OnFailKeep && v.Judged && t.Version != ""
	// Record the verdict before deleting anything: if the delete does not finish, no stage takes
	// the version for a good one and prune deletes it.
	if err := replicate.UpdateLedger(req, func(l *replicate.Ledger) {
		if reject {
			l.Judge(t.Version, replicate.Rejected)
		} else if a := l.LastAccepted(); a != nil && t.Version != "" && a.Ref == t.Version {
			a.Verdict = "" // accepted before, refused now (stricter bounds): no longer accepted
		}
	}); err != nil {
		return nil, fmt.Errorf("recording the gate's outcome: %w", err)
	}
	switch {
	case !v.Judged:
		// Nothing to judge is not evidence of a bad model: refuse, but delete nothing.
		res.Warnings = append(res.Warnings, "no loss series: the version is kept; judge it by hand or remove the gate for this trainer")
	case s.OnFail == OnFailKeep:
		if t.Version != "" {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the rejected version %s is kept (on_fail = \"keep\"): it is now the model's latest", t.Version))
		}
	case t.Version == "":
		// A training cancelled early produced no version: nothing to delete.
	default:
		deleted, warn, err := deleteVersion(ctx, req, t.Version)
		if err != nil {
			return nil, fmt.Errorf("%s; deleting the rejected version %s failed: %w; hint: run apply again to retry the delete", v.Reason, t.Version, err)
		}
		if warn != "" {
			res.Warnings = append(res.Warnings, warn)
		}
		if deleted {
			res.Deletes = append(res.Deletes, t.Version)
			if err := replicate.UpdateLedger(req, func(l *replicate.Ledger) { l.MarkDeleted(t.Version) }); err != nil {
				return nil, fmt.Errorf("recording the deleted version %s: %w", t.Version, err)
			}
		}
	}
	return res, nil
}

// outputs are the gate's outputs: the verdict, the bounds it used and the curve it judged.
func outputs(s Settings, t judged, v Verdict) map[string]cty.Value {
	num := func(f *float64) cty.Value {
		if f == nil {
			return cty.NullVal(cty.Number)
		}
		return cty.NumberFloatVal(*f)
	}
	out := map[string]cty.Value{
		"passed":     cty.BoolVal(v.Passed),
		"final_loss": cty.NullVal(cty.Number),
		"reason":     cty.StringVal(v.Reason),
		"min_loss":   num(s.MinLoss),
		"max_loss":   num(s.MaxLoss),
		"losses":     cty.MapValEmpty(cty.Number),
	}
	if v.Judged && !math.IsNaN(v.FinalLoss) && !math.IsInf(v.FinalLoss, 0) {
		out["final_loss"] = cty.NumberFloatVal(v.FinalLoss)
	}
	if len(t.Losses) > 0 {
		m := make(map[string]cty.Value, len(t.Losses))
		for _, p := range t.Losses {
			if !math.IsNaN(p.Loss) && !math.IsInf(p.Loss, 0) {
				m[strconv.Itoa(p.Step)] = cty.NumberFloatVal(p.Loss)
			}
		}
		if len(m) > 0 {
			out["losses"] = cty.MapVal(m)
		}
	}
	return out
}

// deleteVersion deletes "owner/name:id". A refusal by the API (the version has other users'
// predictions, is a training base, or a deployment uses it) is a warning with the API's reason; an
// already deleted version counts as deleted.
func deleteVersion(ctx context.Context, req *pipeline.Request, ref string) (bool, string, error) {
	owner, name, id, err := splitVersion(ref)
	if err != nil {
		return false, "", err
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return false, "", err
	}
	err = c.DeleteVersion(ctx, owner, name, id)
	switch {
	case err == nil:
		return true, "", nil
	case replicate.IsNotFound(err):
		return true, "", nil
	}
	var apiErr *replicate.APIError
	if errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 && apiErr.Status != 401 && apiErr.Status != 429 {
		reason := apiErr.Detail
		if reason == "" {
			reason = apiErr.Error()
		}
		return false, fmt.Sprintf("the rejected version %s could not be deleted: %s; it is the model's latest version now: delete it on replicate.com or pin the previous one", ref, reason), nil
	}
	return false, "", err
}

// splitVersion splits "owner/name:id".
func splitVersion(ref string) (owner, name, id string, err error) {
	model, id, ok := strings.Cut(ref, ":")
	owner, name, ok2 := strings.Cut(model, "/")
	if !ok || !ok2 || owner == "" || name == "" || id == "" || strings.Contains(name, "/") {
		return "", "", "", fmt.Errorf("version %q is not owner/name:id", ref)
	}
	return owner, name, id, nil
}
