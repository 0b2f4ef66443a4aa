package replicate

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// LedgerName is the name of the shared record (pipeline.StateView.Shared) in which a subject's
// state keeps its ledger of model versions.
const LedgerName = "replicate.versions"

// Limits of the ledger: the last MaxOwnVersions versions made for the subject (its last accepted
// one is always kept) and the last MaxDeletedVersions this pipeline deleted (deleting a version
// is asynchronous on Replicate: it may still be listed for a while).
const (
	MaxOwnVersions     = 20
	MaxDeletedVersions = 8
)

// Effects a stage's plan announces about model versions (pipeline.Result.Effects), read by the
// stages downstream of it (prune plans with the version a training adds).
const JudgesVersions = "replicate: judges the new version"

// ModelResource names a model as a resource batch instances may share (pipeline.ResourceUser,
// Request.Shared).
func ModelResource(model string) string { return "replicate model " + model }

// AddsVersionTo is the effect of a stage that adds a version to model ("owner/name").
func AddsVersionTo(model string) string { return "replicate: adds a version to " + model }

// Verdicts a gate records on a version.
const (
	Accepted = "accepted"
	Rejected = "rejected"
)

// Ledger is what a subject's state remembers about the model versions made for it, kept by
// whichever stage learns something (train: produced; loss_gate and generate's guard: accepted or
// rejected; prune and the gates: deleted or refused deleting). Versions belong to the subject
// whose ledger lists them: on a destination many subjects share, prune and generate's previous
// version look only at these. It replaces each kind reading the others' records.
type Ledger struct {
	// Versions are oldest first.
	Versions []LedgerVersion `json:"versions,omitempty"`
	// Pending are trainings started for the subject whose version is not known yet.
	Pending []PendingTraining `json:"pending,omitempty"`
}

// LedgerVersion is one version ("owner/name:id") a stage of this subject made or touched.
type LedgerVersion struct {
	Ref          string    `json:"ref"`
	Training     string    `json:"training,omitempty"` // empty: not made by this subject (a foreign version prune deleted)
	Images       int       `json:"images,omitempty"`
	ImagesDigest string    `json:"images_digest,omitempty"`
	At           time.Time `json:"at,omitzero"`
	Verdict      string    `json:"verdict,omitempty"` // "", Accepted or Rejected
	Deleted      bool      `json:"deleted,omitempty"` // this pipeline deleted it
	// Refused is the API's reason for refusing to delete it (kept from then on).
	Refused string `json:"refused,omitempty"`
}

// Own reports whether the subject's trainings made the version.
func (v LedgerVersion) Own() bool { return v.Training != "" }

// PendingTraining is a training started into Destination whose version is not recorded yet.
type PendingTraining struct {
	Training    string `json:"training"`
	Destination string `json:"destination"`
}

// LedgerOf returns the subject's ledger as state holds it. A state written before the ledger
// existed has none: it is built once from those records' own formats (see legacyLedger).
func LedgerOf(view pipeline.StateView) *Ledger {
	l := &Ledger{}
	if view == nil {
		return l
	}
	raw := view.Shared(LedgerName)
	if len(raw) == 0 {
		return legacyLedger(view)
	}
	if err := json.Unmarshal(raw, l); err != nil {
		return legacyLedger(view)
	}
	return l
}

// UpdateLedger changes the subject's ledger and writes it to state before it returns.
func UpdateLedger(req *pipeline.Request, change func(*Ledger)) error {
	return req.Recorder.UpdateShared(LedgerName, func(old json.RawMessage) (json.RawMessage, error) {
		l := &Ledger{}
		if len(old) == 0 || json.Unmarshal(old, l) != nil {
			l = legacyLedger(req.State)
		}
		change(l)
		l.trim()
		b, err := json.Marshal(l)
		if err != nil {
			return nil, fmt.Errorf("recording the model versions: %w", err)
		}
		return b, nil
	})
}

// find returns the entry for ref, or nil.
func (l *Ledger) find(ref string) *LedgerVersion {
	id := versionID(ref)
	for i := range l.Versions {
		if versionID(l.Versions[i].Ref) == id {
			return &l.Versions[i]
		}
	}
	return nil
}

// entry returns the entry for ref, adding one when there is none.
func (l *Ledger) entry(ref string) *LedgerVersion {
	if v := l.find(ref); v != nil {
		return v
	}
	l.Versions = append(l.Versions, LedgerVersion{Ref: ref})
	return &l.Versions[len(l.Versions)-1]
}

// Produced records a version the subject's training made (and that the training is no longer pending).
func (l *Ledger) Produced(ref, training string, images int, imagesDigest string, at time.Time) {
	v := l.entry(ref)
	v.Training, v.Images, v.ImagesDigest = training, images, imagesDigest
	if v.At.IsZero() {
		v.At = at
	}
	l.Finished(training)
}

// Started records a training in flight into destination.
func (l *Ledger) Started(training, destination string) {
	for _, p := range l.Pending {
		if p.Training == training {
			return
		}
	}
	l.Pending = append(l.Pending, PendingTraining{Training: training, Destination: destination})
}

// Finished forgets a pending training (it produced its version, failed or vanished).
func (l *Ledger) Finished(training string) {
	out := l.Pending[:0]
	for _, p := range l.Pending {
		if p.Training != training {
			out = append(out, p)
		}
	}
	l.Pending = out
}

// Judge records a gate's verdict (Accepted or Rejected) on ref.
func (l *Ledger) Judge(ref, verdict string) { l.entry(ref).Verdict = verdict }

// VerdictOf is the verdict recorded on ref ("" when none).
func (l *Ledger) VerdictOf(ref string) string {
	if v := l.find(ref); v != nil {
		return v.Verdict
	}
	return ""
}

// MarkDeleted records that this pipeline deleted ref.
func (l *Ledger) MarkDeleted(ref string) { l.entry(ref).Deleted = true }

// MarkRefused records the API's refusal to delete ref.
func (l *Ledger) MarkRefused(ref, reason string) { l.entry(ref).Refused = reason }

// LastAccepted is the newest version a gate accepted (nil when none has been).
func (l *Ledger) LastAccepted() *LedgerVersion {
	for i := len(l.Versions) - 1; i >= 0; i-- {
		if l.Versions[i].Verdict == Accepted {
			return &l.Versions[i]
		}
	}
	return nil
}

// Gone is the set of version ids no stage may pick as a good version: deleted by this pipeline
// (the API may still list them) or rejected by a gate (a delete that did not finish).
func (l *Ledger) Gone() map[string]bool {
	out := map[string]bool{}
	for _, v := range l.Versions {
		if v.Deleted || v.Verdict == Rejected {
			out[versionID(v.Ref)] = true
		}
	}
	return out
}

// Unfinished lists the rejected versions of model whose delete did not finish (prune deletes them).
func (l *Ledger) Unfinished(model string) []LedgerVersion {
	var out []LedgerVersion
	for _, v := range l.OfModel(model) {
		if v.Verdict == Rejected && !v.Deleted && v.Refused == "" {
			out = append(out, v)
		}
	}
	return out
}

// OfModel lists the entries of one model ("owner/name"), oldest first.
func (l *Ledger) OfModel(model string) []LedgerVersion {
	var out []LedgerVersion
	for _, v := range l.Versions {
		if modelOf(v.Ref) == model {
			out = append(out, v)
		}
	}
	return out
}

// Owns reports whether the subject's trainings made the version id (or "owner/name:id").
func (l *Ledger) Owns(ref string) bool {
	v := l.find(ref)
	return v != nil && v.Own()
}

// PreviousOwn is the newest version of model that the subject's trainings made before ref (ref
// excluded) and that no gate rejected and this pipeline did not delete; "" when there is none.
// On a destination many subjects share, this is the subject's previous version.
func (l *Ledger) PreviousOwn(model, ref string) string {
	gone := l.Gone()
	end := len(l.Versions)
	for i, v := range l.Versions {
		if ref != "" && versionID(v.Ref) == versionID(ref) {
			end = i
			break
		}
	}
	for i := end - 1; i >= 0; i-- {
		v := l.Versions[i]
		if v.Own() && modelOf(v.Ref) == model && !gone[versionID(v.Ref)] {
			return v.Ref
		}
	}
	return ""
}

// trim keeps the ledger small: the last MaxOwnVersions live versions (the last accepted one
// always) and the last MaxDeletedVersions deleted ones.
func (l *Ledger) trim() {
	last := l.LastAccepted()
	lastRef := ""
	if last != nil {
		lastRef = last.Ref
	}
	live, deleted := 0, 0
	keep := make([]bool, len(l.Versions))
	for i := len(l.Versions) - 1; i >= 0; i-- {
		v := l.Versions[i]
		switch {
		case v.Ref == lastRef:
			keep[i] = true
		case v.Deleted:
			deleted++
			keep[i] = deleted <= MaxDeletedVersions
		default:
			live++
			keep[i] = live <= MaxOwnVersions
		}
	}
	out := l.Versions[:0]
	for i, v := range l.Versions {
		if !keep[i] {
			continue
		}
		if v.Deleted && v.Ref != lastRef {
			// A deleted version is remembered only to be told apart while the API still lists
			// it: what it was trained on no longer matters, and a subject retrained every week
			// must not grow its state.
			v.Images, v.ImagesDigest, v.At = 0, "", time.Time{}
		}
		out = append(out, v)
	}
	l.Versions = out
}

// modelOf is "owner/name" of "owner/name:id" ("" for a bare id).
func modelOf(ref string) string {
	owner, name, _, err := SplitVersion(ref)
	if err != nil || owner == "" {
		return ""
	}
	return owner + "/" + name
}

// legacyLedger builds the ledger of a state written before there was one, from the formats
// those records had (the one place that still reads them; the next update stores the ledger):
// outputs with training_id and version (a finished training), and private data with
// last_accepted, deleted_versions, rejected_versions, refused_versions, deleted, and a
// training_id with an intent destination (a training in flight).
func legacyLedger(view pipeline.StateView) *Ledger {
	l := &Ledger{}
	if view == nil {
		return l
	}
	type accepted struct {
		TrainingID   string `json:"training_id"`
		Version      string `json:"version"`
		ImageCount   int    `json:"image_count"`
		ImagesDigest string `json:"images_digest"`
	}
	for _, r := range view.Records("") {
		if v, id := outputString(r, "version"), outputString(r, "training_id"); v != "" && id != "" {
			l.Produced(v, id, int(outputNumber(r, "image_count")), outputString(r, "images_digest"), time.Time{})
		}
		var d struct {
			LastAccepted *accepted       `json:"last_accepted"`
			Deleted      json.RawMessage `json:"deleted"`
			DeletedRefs  []string        `json:"deleted_versions"`
			Rejected     []string        `json:"rejected_versions"`
			RefusedRefs  []string        `json:"refused_versions"`
			TrainingID   string          `json:"training_id"`
			Intent       *legacyIntent   `json:"intent"`
		}
		if len(r.Data) == 0 || json.Unmarshal(r.Data, &d) != nil {
			continue
		}
		if a := d.LastAccepted; a != nil && a.Version != "" {
			if a.TrainingID != "" {
				l.Produced(a.Version, a.TrainingID, a.ImageCount, a.ImagesDigest, time.Time{})
			}
			l.Judge(a.Version, Accepted)
		}
		for _, ref := range d.Rejected {
			l.Judge(ref, Rejected)
		}
		for _, ref := range d.DeletedRefs {
			l.MarkDeleted(ref)
		}
		var one string
		if len(d.Deleted) > 0 && json.Unmarshal(d.Deleted, &one) == nil && one != "" {
			l.MarkDeleted(one)
		}
		for _, ref := range d.RefusedRefs {
			l.MarkRefused(ref, "the API refused to delete it before")
		}
		if d.TrainingID != "" && d.Intent != nil && d.Intent.Destination != "" && r.Status != pipeline.StatusComplete {
			l.Started(d.TrainingID, d.Intent.Destination)
		}
	}
	l.trim()
	return l
}

type legacyIntent struct {
	Destination string `json:"destination"`
}

// outputString reads a string output of a record ("" when absent).
func outputString(r pipeline.StageRecord, name string) string {
	v := outputAttr(r, name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

// outputNumber reads a number output of a record (0 when absent).
func outputNumber(r pipeline.StageRecord, name string) float64 {
	v := outputAttr(r, name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.Number {
		return 0
	}
	f, _ := v.AsBigFloat().Float64()
	return f
}

func outputAttr(r pipeline.StageRecord, name string) cty.Value {
	out := r.Outputs
	if out == cty.NilVal || out.IsNull() || !out.IsKnown() || !out.Type().IsObjectType() || !out.Type().HasAttribute(name) {
		return cty.NullVal(cty.DynamicPseudoType)
	}
	v, _ := out.GetAttr(name).Unmark()
	return v
}
