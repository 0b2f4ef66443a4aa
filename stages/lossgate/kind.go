// Package lossgate implements the `loss_gate` stage kind: it judges a finished training's smoothed
// loss curve and refuses an overfit (or underfit) LoRA, deleting the rejected version so that the
// model's latest version stays the last good one.
//
//	stage "loss_gate" "fit" {
//	  training     = train.lora   # the train stage's whole output object
//	  min_loss     = 0.2          # smoothed loss below this = overfitting
//	  cancel_early = true         # train.lora cancels the training once this is certain
//	}
//
// The train kind uses Judge and ShouldCancel (exported here) on the running series when a gate with
// cancel_early = true depends on it. Every outcome saves {"last_accepted": {...}} (see Data): the
// training accepted last, which the params stage reads to compare image counts.
package lossgate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

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
		"training": {Type: cty.DynamicPseudoType, Required: true, StageKind: "train",
			Description: "the train stage whose loss curve is judged: `training = train.lora`"},
		"min_loss": {Type: cty.Number, Default: cty.NumberFloatVal(DefaultMinLoss), Min: pipeline.Bound(0),
			Description: "a smoothed final loss below this is overfitting (null: no lower bound)"},
		"max_loss": {Type: cty.Number, Min: pipeline.Bound(0),
			Description: "a smoothed final loss above this is underfitting (default: none)"},
		"smoothing": {Type: cty.Number, Min: pipeline.Bound(0), Max: pipeline.Bound(1),
			Description: "EMA factor alpha in (0, 1]; default: an EMA spanning ~10% of the steps"},
		"cancel_early": {Type: cty.Bool, Default: cty.False,
			Description: "the train stage cancels the running training as soon as the smoothed loss falls under min_loss"},
		"on_fail": {Type: cty.String, Default: cty.StringVal(OnFailDelete), OneOf: []string{OnFailDelete, OnFailKeep},
			Description: `"delete_version" deletes the rejected version so the model's latest stays the last good one; "keep" leaves it`},
	},
	Outputs: map[string]cty.Type{
		"passed":     cty.Bool,
		"final_loss": cty.Number,
		"reason":     cty.String,
	},
	Remote:   true,
	Settings: []string{"replicate"},
}

// Name implements pipeline.Kind.
func (Kind) Name() string { return "loss_gate" }

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

// Accepted describes the training a gate accepted last.
type Accepted struct {
	TrainingID   string         `json:"training_id"`
	Version      string         `json:"version"`
	ImageCount   int            `json:"image_count"`
	ImagesDigest string         `json:"images_digest"`
	Input        map[string]any `json:"input,omitempty"`
}

// Data is what the gate saves on every outcome: the last accepted training (set from the judged
// training when it passes, carried forward when it fails; nil until one passes).
type Data struct {
	LastAccepted *Accepted `json:"last_accepted"`
	// DeletedVersions are the versions this gate deleted ("owner/name:id", newest last, bounded):
	// deletion is asynchronous on Replicate, so others skip them while they are still listed
	// (replicate.DeletedVersions).
	DeletedVersions []string `json:"deleted_versions,omitempty"`
	// RejectedVersions are the versions this gate rejected with on_fail = "delete_version",
	// recorded before the delete is tried: if the delete does not finish, no stage takes the
	// version for a good one and prune deletes it (replicate.RejectedVersions).
	RejectedVersions []string `json:"rejected_versions,omitempty"`
}

// LastAccepted returns the last accepted training recorded by any loss_gate of a batch instance
// (nil when none has passed yet). Stages downstream of a gate read it through their StateView.
func LastAccepted(view pipeline.StateView) *Accepted {
	if view == nil {
		return nil
	}
	for _, r := range view.Records("loss_gate") {
		var d Data
		if len(r.Data) == 0 || json.Unmarshal(r.Data, &d) != nil || d.LastAccepted == nil {
			continue
		}
		return d.LastAccepted
	}
	return nil
}

// Settings are the gate's attributes other than training.
type Settings struct {
	Config
	CancelEarly bool
	OnFail      string
}

// numberAttr reads an optional number attribute; ok is false when it is absent, null or unknown.
func numberAttr(obj cty.Value, name string) (float64, bool, error) {
	if obj == cty.NilVal || obj.IsNull() || !obj.IsKnown() || !obj.Type().IsObjectType() || !obj.Type().HasAttribute(name) {
		return 0, false, nil
	}
	v, _ := obj.GetAttr(name).Unmark()
	if v.IsNull() || !v.IsKnown() {
		return 0, false, nil
	}
	if v.Type() != cty.Number {
		return 0, false, fmt.Errorf("%s must be a number, got %s", name, v.Type().FriendlyName())
	}
	f, _ := v.AsBigFloat().Float64()
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, fmt.Errorf("%s must be a finite number", name)
	}
	return f, true, nil
}

// ParseSettings reads a gate's attributes (its Request.Inputs, or a Dependent's Inputs as seen by the
// train stage, where absent attributes take their defaults).
func ParseSettings(inputs cty.Value) (Settings, error) {
	s := Settings{OnFail: OnFailDelete}
	has := func(name string) bool {
		return inputs != cty.NilVal && !inputs.IsNull() && inputs.IsKnown() && inputs.Type().IsObjectType() && inputs.Type().HasAttribute(name)
	}
	// min_loss: absent = default; explicitly null = no lower bound.
	if !has("min_loss") {
		m := DefaultMinLoss
		s.MinLoss = &m
	} else if f, ok, err := numberAttr(inputs, "min_loss"); err != nil {
		return s, err
	} else if ok {
		if f < 0 {
			return s, fmt.Errorf("min_loss = %s is negative; hint: losses are >= 0, use e.g. 0.2", fmtLoss(f))
		}
		s.MinLoss = &f
	} else if !inputs.GetAttr("min_loss").IsKnown() {
		return s, fmt.Errorf("min_loss is not known yet")
	}
	if f, ok, err := numberAttr(inputs, "max_loss"); err != nil {
		return s, err
	} else if ok {
		if s.MinLoss != nil && f <= *s.MinLoss {
			return s, fmt.Errorf("max_loss = %s is not above min_loss = %s: no loss could pass", fmtLoss(f), fmtLoss(*s.MinLoss))
		}
		s.MaxLoss = &f
	}
	if f, ok, err := numberAttr(inputs, "smoothing"); err != nil {
		return s, err
	} else if ok {
		if f <= 0 || f > 1 {
			return s, fmt.Errorf("smoothing = %s is outside (0, 1]: it is the EMA factor alpha (1 = no smoothing); leave it unset for an EMA over the last ~10%% of steps", fmtLoss(f))
		}
		s.Alpha = f
	}
	if has("cancel_early") {
		v, _ := inputs.GetAttr("cancel_early").Unmark()
		if v.IsKnown() && !v.IsNull() && v.Type() == cty.Bool {
			s.CancelEarly = v.True()
		}
	}
	if has("on_fail") {
		v, _ := inputs.GetAttr("on_fail").Unmark()
		if v.IsKnown() && !v.IsNull() && v.Type() == cty.String {
			s.OnFail = v.AsString()
		}
	}
	if s.OnFail != OnFailDelete && s.OnFail != OnFailKeep {
		return s, fmt.Errorf("on_fail = %q is not one of %q, %q", s.OnFail, OnFailDelete, OnFailKeep)
	}
	return s, nil
}

// judged is the part of a train stage's outputs the gate uses.
type judged struct {
	TrainingID, Version, ImagesDigest string
	ImageCount                        int
	Losses                            []replicate.LossPoint
	LossesKnown                       bool
	Input                             map[string]any
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
	if in := get("input"); in != cty.NilVal && in.IsWhollyKnown() && !in.IsNull() && in.CanIterateElements() {
		// train's input output: the values sent, with their types.
		t.Input = map[string]any{}
		for it := in.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if k.Type() != cty.String || e.IsNull() {
				continue
			}
			b, err := ctyjson.Marshal(e, e.Type())
			var val any
			if err != nil || json.Unmarshal(b, &val) != nil {
				continue
			}
			t.Input[k.AsString()] = val
		}
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
	if s.Alpha > 0 {
		fmt.Fprintf(&b, "EMA alpha %s", fmtLoss(s.Alpha))
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

// Plan implements pipeline.Kind: it validates the settings and says what the gate will judge. What it
// deletes is only known once the training has finished, so Deletes stays empty.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	s, err := ParseSettings(req.Inputs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Address, err)
	}
	res := &pipeline.Result{Notes: []string{s.describe()}}
	if s.OnFail == OnFailDelete {
		res.Notes = append(res.Notes, "on failure: deletes the rejected version (never any other), so the model's latest version stays the last good one; the run exits 3")
	} else {
		res.Notes = append(res.Notes, "on failure: keeps the rejected version (on_fail = \"keep\"); the run exits 3")
	}
	if s.CancelEarly {
		res.Notes = append(res.Notes, "cancel_early: the train stage cancels the training as soon as the smoothed loss falls under min_loss")
	}
	t, err := parseTraining(req.Input("training"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Address, err)
	}
	if t.LossesKnown {
		v := Judge(t.Losses, s.Config)
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
	s, err := ParseSettings(req.Inputs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Address, err)
	}
	t, err := parseTraining(req.Input("training"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Address, err)
	}
	var prior Data
	if _, err := req.Prior.Decode(&prior); err != nil {
		// Unreadable private data only loses the carried-forward record; say so and go on.
		req.Recorder.Warn(fmt.Sprintf("%s: ignoring unreadable recorded data: %v", req.Address, err))
	}

	v := Judge(t.Losses, s.Config)
	if v.Passed && t.Version == "" && t.TrainingID != "" {
		// A training cancelled before its end has a loss curve but no model to accept.
		v.Passed = false
		v.Reason = fmt.Sprintf("training %s produced no version (it was cancelled before the end); %s", t.TrainingID, v.Reason)
	}
	outputs := map[string]cty.Value{
		"passed":     cty.BoolVal(v.Passed),
		"final_loss": cty.NullVal(cty.Number),
		"reason":     cty.StringVal(v.Reason),
	}
	if v.Judged && !math.IsNaN(v.FinalLoss) && !math.IsInf(v.FinalLoss, 0) {
		outputs["final_loss"] = cty.NumberFloatVal(v.FinalLoss)
	}
	res := &pipeline.Result{Outputs: outputs}

	if v.Passed {
		data := Data{LastAccepted: &Accepted{
			TrainingID: t.TrainingID, Version: t.Version, ImageCount: t.ImageCount,
			ImagesDigest: t.ImagesDigest, Input: t.Input,
		}, DeletedVersions: prior.DeletedVersions, RejectedVersions: prior.RejectedVersions}
		if err := req.Recorder.Save(data); err != nil {
			return nil, fmt.Errorf("%s: recording the accepted training: %w", req.Address, err)
		}
		return res, nil
	}

	res.Refused = v.Reason
	data := prior
	if data.LastAccepted != nil && t.Version != "" && data.LastAccepted.Version == t.Version {
		// The version accepted before is the one refused now (stricter bounds): it is no longer accepted.
		data.LastAccepted = nil
	}
	if s.OnFail != OnFailKeep && v.Judged && t.Version != "" {
		data.RejectedVersions = replicate.RememberDeleted(data.RejectedVersions, t.Version)
	}
	// Record the outcome before deleting anything, so even a failed delete leaves last_accepted
	// right and the rejected version marked.
	if err := req.Recorder.Save(data); err != nil {
		return nil, fmt.Errorf("%s: recording the gate's outcome: %w", req.Address, err)
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
			return nil, fmt.Errorf("%s: %s; deleting the rejected version %s failed: %w; hint: run apply again to retry the delete", req.Address, v.Reason, t.Version, err)
		}
		if warn != "" {
			res.Warnings = append(res.Warnings, warn)
		}
		if deleted {
			res.Deletes = append(res.Deletes, t.Version)
			data.DeletedVersions = replicate.RememberDeleted(data.DeletedVersions, t.Version)
			if err := req.Recorder.Save(data); err != nil {
				return nil, fmt.Errorf("%s: recording the deleted version %s: %w", req.Address, t.Version, err)
			}
		}
	}
	return res, nil
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
