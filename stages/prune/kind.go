// Package prune implements the `prune` stage kind: it deletes a model's old versions beyond a
// retention policy, so versions do not pile up, while never deleting the version this run produced,
// one a loss gate just approved, or one pinned in `keep`.
//
//	stage "prune" "old" {
//	  model      = "acme/ana-lora"
//	  keep_last  = 3                       # the newest three, this run's version among them
//	  keep       = ["5c7d5dc6dd8bf75c"]    # never deleted
//	  depends_on = [generate.check]
//	}
//
// Plan (with a token) lists exactly the ids apply deletes: when a train stage upstream runs in the
// same apply (pipeline.Request.Upstream), the version it will add counts as the newest of
// keep_last, pushing one more old version out (a training an interrupted run left behind that has
// finished since counts as that version, not as another). Without a token that list is known after
// apply. A version the API refuses to delete (others ran predictions on it, it is a training base,
// a deployment uses it) is a warning with the API's reason, not a failure. It never runs while a
// train or loss_gate record of the same instance is failed, refused or unfinished.
package prune

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lossgate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Kind is the prune stage kind.
type Kind struct{}

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"model": {Type: cty.String, Required: true,
			Description: `the model "owner/name" whose old versions are deleted`},
		"keep_last": {Type: cty.Number, Default: cty.NumberIntVal(3), Min: pipeline.Bound(1),
			Description: "how many of the newest versions stay (the version this run produced counts among them)"},
		"keep": {Type: cty.List(cty.String), Default: cty.ListValEmpty(cty.String),
			Description: `version ids (or "owner/name:id") never deleted`},
	},
	Outputs: map[string]cty.Type{
		"deleted": cty.List(cty.String),
		"kept":    cty.List(cty.String),
	},
	Remote:   true,
	Settings: []string{"replicate"},
}

// Name implements pipeline.Kind.
func (Kind) Name() string { return "prune" }

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

// settings are a prune stage's evaluated attributes.
type settings struct {
	Model, Owner, Name string
	KeepLast           int
	Keep               []string
}

// parseSettings reads the attributes; known is false when the model is not known yet (plan).
func parseSettings(req *pipeline.Request) (s settings, known bool, err error) {
	m := req.Input("model")
	m, _ = m.Unmark()
	if m == cty.NilVal || !m.IsKnown() {
		return s, false, nil
	}
	if m.IsNull() || m.Type() != cty.String {
		return s, false, fmt.Errorf(`%s: model must be "owner/name"`, req.Address)
	}
	s.Model = strings.TrimSpace(m.AsString())
	owner, name, ok := strings.Cut(s.Model, "/")
	if !ok || owner == "" || name == "" || strings.ContainsAny(name, "/:") {
		return s, false, fmt.Errorf(`%s: model %q is not "owner/name" (prune works on a whole model, not one version)`, req.Address, s.Model)
	}
	s.Owner, s.Name = owner, name

	s.KeepLast = 3
	if k, _ := req.Input("keep_last").Unmark(); k != cty.NilVal && k.IsKnown() && !k.IsNull() {
		f, _ := k.AsBigFloat().Float64()
		if f != math.Trunc(f) || f < 1 {
			return s, false, fmt.Errorf("%s: keep_last = %v must be a whole number >= 1: prune never deletes every version of a model", req.Address, f)
		}
		if f > 1e6 {
			f = 1e6
		}
		s.KeepLast = int(f)
	} else if k != cty.NilVal && !k.IsKnown() {
		return s, false, nil
	}
	if k, _ := req.Input("keep").UnmarkDeep(); k != cty.NilVal && !k.IsNull() {
		if !k.IsWhollyKnown() {
			return s, false, nil
		}
		for it := k.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() {
				continue
			}
			ref := e.AsString()
			id, same := versionID(ref, s.Model)
			if !same {
				return s, false, fmt.Errorf("%s: keep entry %q names another model than %s", req.Address, ref, s.Model)
			}
			if id == "" {
				return s, false, fmt.Errorf("%s: keep entry %q has no version id", req.Address, ref)
			}
			s.Keep = append(s.Keep, id)
		}
	}
	return s, true, nil
}

// pins returns the versions that are never deleted, with why: keep ids, the version each train
// stage of this instance produced into this model, and the version a loss gate last accepted.
func pins(req *pipeline.Request, s settings) map[string]string {
	p := map[string]string{}
	for _, id := range s.Keep {
		p[id] = "listed in keep"
	}
	if req.State == nil {
		return p
	}
	for _, r := range req.State.Records("train") {
		if v := outputString(r.Outputs, "version"); v != "" {
			if id, same := versionID(v, s.Model); same && id != "" {
				if _, ok := p[id]; !ok {
					p[id] = "produced by train." + r.Name
				}
			}
		}
	}
	if a := lossgate.LastAccepted(req.State); a != nil && a.Version != "" {
		if id, same := versionID(a.Version, s.Model); same && id != "" {
			if _, ok := p[id]; !ok {
				p[id] = gateReason
			}
		}
	}
	for _, ref := range priorData(req).RefusedVersions {
		if id, same := versionID(ref, s.Model); same && id != "" {
			if _, ok := p[id]; !ok {
				p[id] = "the API refused to delete it before"
			}
		}
	}
	return p
}

// gateReason is why the version a loss gate accepted last is kept.
const gateReason = "the version a loss gate accepted last"

// outputString reads a string output from a record's outputs ("" when absent).
func outputString(out cty.Value, name string) string {
	if out == cty.NilVal || out.IsNull() || !out.IsKnown() || !out.Type().IsObjectType() || !out.Type().HasAttribute(name) {
		return ""
	}
	v, _ := out.GetAttr(name).Unmark()
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

// blocked names a train or loss_gate record of this instance that forbids pruning ("" if none).
func blocked(req *pipeline.Request) string {
	if req.State == nil {
		return ""
	}
	var why []string
	for _, kind := range []string{"train", "loss_gate"} {
		for _, r := range req.State.Records(kind) {
			switch r.Status {
			case pipeline.StatusFailed, pipeline.StatusRefused, pipeline.StatusRunning, pipeline.StatusInterrupted:
				why = append(why, fmt.Sprintf("%s.%s (%s)", r.Kind, r.Name, r.Status))
			}
		}
	}
	sort.Strings(why)
	return strings.Join(why, ", ")
}

// Plan implements pipeline.Kind.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	s, known, err := parseSettings(req)
	if err != nil {
		return nil, err
	}
	res := &pipeline.Result{}
	if !known {
		res.Notes = append(res.Notes, "deletes old versions beyond keep_last (model known after apply)")
		return res, nil
	}
	up := planUpstream(req, s)
	p := planPins(req, s, up)
	res.Notes = append(res.Notes, fmt.Sprintf("keeps the newest %s of %s%s", plural(s.KeepLast, "version"), s.Model, describePins(p)))
	if !replicate.HasToken(req.Env) {
		res.Notes = append(res.Notes, "no REPLICATE_API_TOKEN: which versions it deletes is known after apply")
		return res, nil
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Address, err)
	}
	versions, err := c.ListVersions(ctx, s.Owner, s.Name)
	if replicate.IsNotFound(err) {
		res.Notes = append(res.Notes, fmt.Sprintf("model %s does not exist yet: nothing to delete", s.Model))
		return res, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: listing the versions of %s: %w", req.Address, s.Model, err)
	}
	unfinished := unfinishedRejections(req, s, versions, priorData(req).DeletedVersions)
	versions = withoutDeleted(versions, replicate.DeletedVersions(req.State, priorData(req).DeletedVersions...))
	as, err := arrivals(ctx, c, req, s, up, versions)
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, arrivalNotes(s, up, as)...)
	// The versions apply will list: a version trained upstream in this apply counts toward
	// keep_last, so the plan deletes exactly what apply deletes.
	sel := choose(withArrivals(versions, as, p), policy{KeepLast: s.KeepLast, Pinned: p})
	res.Deletes = append(realIDs(sel.Delete), unfinished...)
	if len(unfinished) > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("deletes %s first: rejected by the gate, its delete did not finish", strings.Join(unfinished, ", ")))
	}
	listed := plural(len(versions), "version")
	if n := len(as) - countFound(as); n > 0 {
		listed += fmt.Sprintf(" (+%d added first)", n)
	}
	if len(res.Deletes) == 0 {
		res.Notes = append(res.Notes, listed+", none beyond the policy")
	} else {
		res.Notes = append(res.Notes, fmt.Sprintf("%s: deletes %d (%s), keeps %d", listed, len(res.Deletes), strings.Join(res.Deletes, ", "), len(sel.Keep)))
	}
	if b := blocked(req); b != "" {
		res.Notes = append(res.Notes, "apply prunes only once these have run successfully again: "+b)
	}
	return res, nil
}

// countFound counts arrivals whose version exists already.
func countFound(as []arrival) int {
	n := 0
	for _, a := range as {
		if a.ID != "" {
			n++
		}
	}
	return n
}

// describePins renders the pinned versions for a note.
func describePins(p map[string]string) string {
	if len(p) == 0 {
		return ""
	}
	ids := make([]string, 0, len(p))
	for id := range p {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		if strings.HasPrefix(id, newPrefix) {
			parts = append(parts, p[id]) // not created yet: it has no id
			continue
		}
		parts = append(parts, id+" ("+p[id]+")")
	}
	return ", and always " + strings.Join(parts, ", ")
}

// deleteBackoff is the wait between such retries.
var deleteBackoff = time.Second

// deleteAttempts bounds retries of a delete that failed without a refusal (the client already
// retries 429 and 5xx; this covers a longer outage).
const deleteAttempts = 3

// Apply implements pipeline.Kind.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	s, known, err := parseSettings(req)
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, fmt.Errorf("%s: model, keep_last and keep must be known at apply", req.Address)
	}
	if b := blocked(req); b != "" {
		// The engine skips prune when something upstream failed; this guards versions all the same.
		return &pipeline.Result{
			Refused: fmt.Sprintf("not pruning %s while an upstream stage did not finish well: %s; a good version must exist before old ones go", s.Model, b),
			Outputs: map[string]cty.Value{"deleted": cty.ListValEmpty(cty.String), "kept": cty.ListValEmpty(cty.String)},
		}, nil
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Address, err)
	}
	versions, err := c.ListVersions(ctx, s.Owner, s.Name)
	if replicate.IsNotFound(err) {
		return &pipeline.Result{
			Warnings: []string{fmt.Sprintf("model %s does not exist: nothing to prune (is the name right?)", s.Model)},
			Outputs:  map[string]cty.Value{"deleted": cty.ListValEmpty(cty.String), "kept": cty.ListValEmpty(cty.String)},
		}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: listing the versions of %s: %w", req.Address, s.Model, err)
	}
	data := priorData(req)
	// A version a gate rejected but could not finish deleting is deleted here first.
	unfinished := unfinishedRejections(req, s, versions, data.DeletedVersions)
	// Versions this pipeline already deleted may still be listed (deletion is asynchronous): they
	// neither count toward keep_last nor get deleted twice.
	versions = withoutDeleted(versions, replicate.DeletedVersions(req.State, data.DeletedVersions...))
	sel := choose(versions, policy{KeepLast: s.KeepLast, Pinned: pins(req, s)})
	sel.Delete = append(sel.Delete, unfinished...)
	res := &pipeline.Result{}
	var deleted []string
	kept := append([]string(nil), sel.Keep...)
	// Oldest first: an interrupted prune leaves the newer ones.
	for i := len(sel.Delete) - 1; i >= 0; i-- {
		id := sel.Delete[i]
		req.Recorder.Progress(pipeline.Progress{Current: int64(len(sel.Delete) - 1 - i), Total: int64(len(sel.Delete)),
			Message: fmt.Sprintf("deleting version %s of %s", id, s.Model)})
		refusal, err := deleteVersion(ctx, c, s, id)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%s: deleting version %s of %s: %w (deleted so far: %s); hint: run apply again", req.Address, id, s.Model, err, strings.Join(deleted, ", "))
		case refusal != "":
			res.Warnings = append(res.Warnings, fmt.Sprintf("version %s of %s was not deleted: %s (it is kept from now on)", id, s.Model, refusal))
			kept = append(kept, id)
			data.RefusedVersions = replicate.RememberDeleted(data.RefusedVersions, s.Model+":"+id)
			if err := req.Recorder.Save(data); err != nil {
				return nil, fmt.Errorf("%s: recording the refused version %s: %w", req.Address, id, err)
			}
		default:
			deleted = append(deleted, id)
			data.DeletedVersions = replicate.RememberDeleted(data.DeletedVersions, s.Model+":"+id)
			if err := req.Recorder.Save(data); err != nil {
				return nil, fmt.Errorf("%s: recording the deleted version %s: %w", req.Address, id, err)
			}
		}
	}
	res.Deletes = deleted
	res.Outputs = map[string]cty.Value{"deleted": stringList(deleted), "kept": stringList(orderLike(kept, versions))}
	return res, nil
}

// deleteVersion deletes one version. It returns the API's reason when the API refuses (a warning),
// counts an already deleted version as deleted, and retries other failures a few times.
func deleteVersion(ctx context.Context, c *replicate.Client, s settings, id string) (string, error) {
	var err error
	for attempt := 1; attempt <= deleteAttempts; attempt++ {
		err = c.DeleteVersion(ctx, s.Owner, s.Name, id)
		if err == nil || replicate.IsNotFound(err) {
			return "", nil
		}
		var apiErr *replicate.APIError
		if errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 &&
			apiErr.Status != http.StatusUnauthorized && apiErr.Status != http.StatusTooManyRequests {
			if apiErr.Detail != "" {
				return apiErr.Detail, nil
			}
			return apiErr.Error(), nil
		}
		if ctx.Err() != nil || attempt == deleteAttempts {
			break
		}
		if err := replicate.Sleep(ctx, time.Duration(attempt)*deleteBackoff); err != nil {
			return "", err
		}
	}
	return "", err
}

// pruneData is the stage's private data: the versions it deleted in this and earlier runs
// (bounded), which later runs and other stages skip while Replicate finishes deleting them.
type pruneData struct {
	DeletedVersions []string `json:"deleted_versions,omitempty"`
	// RefusedVersions are versions the API refused to delete (other users' predictions, a training
	// base, a deployment): kept from then on, so plan settles instead of asking again every run.
	RefusedVersions []string `json:"refused_versions,omitempty"`
}

// priorData reads the recorded pruneData (empty when there is none or it is unreadable).
func priorData(req *pipeline.Request) pruneData {
	var d pruneData
	if _, err := req.Prior.Decode(&d); err != nil {
		return pruneData{}
	}
	return d
}

// withoutDeleted drops the versions whose id is in deleted.
// unfinishedRejections lists the ids of versions of the pruned model that a gate rejected and that
// are still listed, except those this prune already deleted (deletion is asynchronous).
func unfinishedRejections(req *pipeline.Request, s settings, versions []replicate.Version, mine []string) []string {
	done := replicate.DeletedVersions(nil, mine...)
	listed := map[string]bool{}
	for _, v := range versions {
		listed[v.ID] = true
	}
	var out []string
	seen := map[string]bool{}
	for _, ref := range replicate.RejectedVersions(req.State) {
		owner, name, id, err := replicate.SplitVersion(ref)
		if err != nil || owner+"/"+name != s.Model || !listed[id] || done[id] || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

func withoutDeleted(versions []replicate.Version, deleted map[string]bool) []replicate.Version {
	if len(deleted) == 0 {
		return versions
	}
	out := make([]replicate.Version, 0, len(versions))
	for _, v := range versions {
		if !deleted[v.ID] {
			out = append(out, v)
		}
	}
	return out
}

// orderLike orders ids newest first as in versions.
func orderLike(ids []string, versions []replicate.Version) []string {
	rank := map[string]int{}
	vs := append([]replicate.Version(nil), versions...)
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].CreatedAt.After(vs[j].CreatedAt) })
	for i, v := range vs {
		rank[v.ID] = i
	}
	sort.SliceStable(ids, func(i, j int) bool { return rank[ids[i]] < rank[ids[j]] })
	return ids
}

func stringList(ids []string) cty.Value {
	if len(ids) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	vals := make([]cty.Value, len(ids))
	for i, id := range ids {
		vals[i] = cty.StringVal(id)
	}
	return cty.ListVal(vals)
}

// plural renders "1 version", "3 versions".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
