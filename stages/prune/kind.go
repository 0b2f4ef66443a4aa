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
// What it knows of the model's versions comes from the subject's version ledger
// (replicate.Ledger): the versions its trainings made, the one a gate accepted last, those
// rejected, deleted, or refused deletion. On a model other subjects of the batch share
// (Request.Shared), it counts and deletes only this subject's own versions, never another
// subject's or a foreign one.
//
// Plan (with a token) lists exactly the ids apply deletes: when a stage upstream announces that it
// adds a version to this model in the same apply (Request.Upstream effects), that version counts as
// the newest of keep_last, pushing one more old version out (a training an interrupted run left
// behind that has finished since counts as that version, not as another). Without a token that
// list is known after apply. A version the API refuses to delete (others ran predictions on it, it
// is a training base, a deployment uses it) is a warning with the API's reason, not a failure. It
// never runs while another stage of the instance is failed, refused or unfinished in state.
package prune

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Kind is the prune stage kind.
type Kind struct{}

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"model": {Type: cty.String, Required: true, Check: replicate.CheckModel("model", "prune works on a whole model, not one version"),
			Description: `the model "owner/name" whose old versions are deleted`},
		"keep_last": {Type: cty.Number, Default: cty.NumberIntVal(3), Min: pipeline.Bound(1), Whole: true,
			Description: "how many of the newest versions stay (the version this run produced counts among them)"},
		"keep": {Type: cty.List(cty.String), Default: cty.ListValEmpty(cty.String), Check: checkKeep,
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
	Model    string   `cty:"model"`
	KeepLast int      `cty:"keep_last"`
	KeepRefs []string `cty:"keep"`

	Owner, Name string
	Keep        []string // version ids
	// Shared: other subjects of the batch train into this model too; only own versions count.
	Shared int
}

// checkKeep: every keep entry is a version of the pruned model.
func checkKeep(v, in cty.Value) error {
	m := in.GetAttr("model")
	if !m.IsKnown() || m.IsNull() {
		return nil
	}
	for _, e := range v.AsValueSlice() {
		if e.IsNull() {
			continue
		}
		id, same := versionID(e.AsString(), strings.TrimSpace(m.AsString()))
		if !same {
			return fmt.Errorf("keep entry %q names another model than %s", e.AsString(), m.AsString())
		}
		if id == "" {
			return fmt.Errorf("keep entry %q has no version id", e.AsString())
		}
	}
	return nil
}

// parseSettings reads the attributes; known is false when they are not known yet (plan).
func parseSettings(req *pipeline.Request) (s settings, known bool, err error) {
	if err := pipeline.Err(schema.Decode(req, &s)); err != nil {
		return s, false, err
	}
	if !req.Known("model") || !req.Known("keep_last") || !req.Known("keep") {
		return s, false, nil
	}
	s.Model = strings.TrimSpace(s.Model)
	s.Owner, s.Name, _ = replicate.SplitModel(s.Model)
	for _, ref := range s.KeepRefs {
		id, _ := versionID(ref, s.Model)
		s.Keep = append(s.Keep, id)
	}
	s.Shared = req.Shared[replicate.ModelResource(s.Model)]
	return s, true, nil
}

// Resources implements pipeline.ResourceUser: the pruned model.
func (Kind) Resources(req *pipeline.Request) []string {
	if s, known, err := parseSettings(req); err == nil && known {
		return []string{replicate.ModelResource(s.Model)}
	}
	return nil
}

// pins returns the versions that are never deleted, with why: keep ids, the newest version this
// subject's training produced into the model, the version a loss gate accepted last, and those the
// API refused to delete.
func pins(l *replicate.Ledger, s settings) map[string]string {
	p := map[string]string{}
	for _, id := range s.Keep {
		p[id] = "listed in keep"
	}
	own := l.OfModel(s.Model)
	for i := len(own) - 1; i >= 0; i-- {
		if own[i].Own() && !own[i].Deleted {
			p[bareID(own[i].Ref)] = producedReason
			break
		}
	}
	if a := l.LastAccepted(); a != nil {
		if id, same := versionID(a.Ref, s.Model); same && id != "" {
			if _, ok := p[id]; !ok {
				p[id] = gateReason
			}
		}
	}
	for _, v := range own {
		if v.Refused != "" {
			if _, ok := p[bareID(v.Ref)]; !ok {
				p[bareID(v.Ref)] = "the API refused to delete it before"
			}
		}
	}
	return p
}

// Why a version is pinned.
const (
	gateReason     = "the version a loss gate accepted last"
	producedReason = "the newest version this subject's training produced"
)

func bareID(ref string) string {
	id, _ := versionID(ref, "")
	return id
}

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

// blocked names the other stages of this instance that state records as failed, refused or
// unfinished ("" if none): a good version must exist before old ones go.
func blocked(req *pipeline.Request) string {
	if req.State == nil {
		return ""
	}
	var why []string
	for _, r := range req.State.Records("") {
		if r.Kind == req.Kind && r.Name == req.Name {
			continue
		}
		switch r.Status {
		case pipeline.StatusFailed, pipeline.StatusRefused, pipeline.StatusRunning, pipeline.StatusInterrupted:
			why = append(why, fmt.Sprintf("%s.%s (%s)", r.Kind, r.Name, r.Status))
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
	l := replicate.LedgerOf(req.State)
	up := planUpstream(req, s)
	p := planPins(l, s, up)
	res.Notes = append(res.Notes, fmt.Sprintf("keeps the newest %s of %s%s", plural(s.KeepLast, "version"), s.Model, describePins(p)))
	if s.Shared > 1 {
		res.Notes = append(res.Notes, fmt.Sprintf("%s is shared by %d subjects of this batch: only this subject's own versions are counted and deleted", s.Model, s.Shared))
	}
	switch {
	case !replicate.HasToken(req.Env):
		res.Notes = append(res.Notes, "no REPLICATE_API_TOKEN: which versions it deletes is known after apply")
		return res, nil
	case req.Env.NoRefresh:
		res.Notes = append(res.Notes, "-refresh=false: which versions it deletes is known after apply")
		return res, nil
	case req.Unchanged:
		return res, nil // nothing ran since it last pruned: it has nothing to do, and reads nothing
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, err
	}
	versions, err := c.ListVersions(ctx, s.Owner, s.Name)
	if replicate.IsNotFound(err) {
		res.Notes = append(res.Notes, fmt.Sprintf("model %s does not exist yet: nothing to delete", s.Model))
		return res, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the versions of %s: %w", s.Model, err)
	}
	versions, unfinished := candidates(l, s, versions)
	as, err := arrivals(ctx, c, l, s, up, versions)
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
		return nil, fmt.Errorf("model, keep_last and keep must be known at apply")
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
		return nil, err
	}
	versions, err := c.ListVersions(ctx, s.Owner, s.Name)
	if replicate.IsNotFound(err) {
		return &pipeline.Result{
			Warnings: []string{fmt.Sprintf("model %s does not exist: nothing to prune (is the name right?)", s.Model)},
			Outputs:  map[string]cty.Value{"deleted": cty.ListValEmpty(cty.String), "kept": cty.ListValEmpty(cty.String)},
		}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the versions of %s: %w", s.Model, err)
	}
	l := replicate.LedgerOf(req.State)
	// A version a gate rejected but could not finish deleting is deleted here first.
	versions, unfinished := candidates(l, s, versions)
	sel := choose(versions, policy{KeepLast: s.KeepLast, Pinned: pins(l, s)})
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
			return nil, fmt.Errorf("deleting version %s of %s: %w (deleted so far: %s); hint: run apply again", id, s.Model, err, strings.Join(deleted, ", "))
		case refusal != "":
			res.Warnings = append(res.Warnings, fmt.Sprintf("version %s of %s was not deleted: %s (it is kept from now on)", id, s.Model, refusal))
			kept = append(kept, id)
			if err := replicate.UpdateLedger(req, func(l *replicate.Ledger) { l.MarkRefused(s.Model+":"+id, refusal) }); err != nil {
				return nil, fmt.Errorf("recording the refused version %s: %w", id, err)
			}
		default:
			deleted = append(deleted, id)
			if err := replicate.UpdateLedger(req, func(l *replicate.Ledger) { l.MarkDeleted(s.Model + ":" + id) }); err != nil {
				return nil, fmt.Errorf("recording the deleted version %s: %w", id, err)
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

// candidates are the listed versions prune may count and delete, and the listed ones a gate
// rejected whose delete did not finish (deleted first). Versions this pipeline deleted may still
// be listed (deletion is asynchronous): they neither count toward keep_last nor get deleted twice.
// On a shared model only the subject's own versions are candidates.
func candidates(l *replicate.Ledger, s settings, listed []replicate.Version) (versions []replicate.Version, unfinished []string) {
	present := map[string]bool{}
	for _, v := range listed {
		present[v.ID] = true
	}
	keep := map[string]bool{}
	for _, id := range s.Keep {
		keep[id] = true
	}
	gone := l.Gone()
	for _, v := range l.Unfinished(s.Model) {
		id := bareID(v.Ref)
		switch {
		case keep[id]:
			delete(gone, id) // keep wins over a gate's verdict: counted and kept like any pinned one
		case present[id] && (s.Shared <= 1 || l.Owns(id)):
			unfinished = append(unfinished, id)
		}
	}
	for _, v := range listed {
		if gone[v.ID] || (s.Shared > 1 && !l.Owns(v.ID)) {
			continue
		}
		versions = append(versions, v)
	}
	return versions, unfinished
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
