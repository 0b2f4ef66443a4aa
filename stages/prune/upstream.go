package prune

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// newPrefix marks the placeholder id of a version an upstream train stage will add in this apply.
// It cannot collide with a Replicate version id (hex) and never reaches Result.Deletes: it is pinned.
const newPrefix = "\x00new:"

// arrival is a version an upstream stage contributes to this model in this apply.
type arrival struct {
	Stage string // its address, for notes ("train.lora")
	// ID is the version when the training already finished (a resumed run re-attaches to it and
	// produces exactly that version); "" when the version does not exist yet.
	ID string
}

// upstreamPlan is what the stages that run before prune in this apply change for its plan.
type upstreamPlan struct {
	// Adds are the upstream stages that will run and add a version to this model.
	Adds []string
	// Elsewhere are upstream stages that will run and add a version to another model, with it.
	Elsewhere map[string]string
	// GateRuns is true when an upstream stage judges the new version: on success the version it
	// accepted before loses that pin.
	GateRuns bool
}

// planUpstream reads the effects the upstream stages' plans announced (req.Upstream).
func planUpstream(req *pipeline.Request, s settings) upstreamPlan {
	up := upstreamPlan{Elsewhere: map[string]string{}}
	for _, u := range req.Upstream {
		if u.Action != pipeline.ActionRun && u.Action != pipeline.ActionRerun && u.Action != pipeline.ActionReattach {
			continue // a re-attached training still adds its version
		}
		addr := u.Kind + "." + u.Name
		for _, e := range u.Effects {
			switch {
			case e == replicate.JudgesVersions:
				up.GateRuns = true
			case e == replicate.AddsVersionTo(s.Model):
				up.Adds = append(up.Adds, addr)
			case strings.HasPrefix(e, replicate.AddsVersionTo("")):
				up.Elsewhere[addr] = strings.TrimPrefix(e, replicate.AddsVersionTo(""))
			}
		}
	}
	return up
}

// planPins are the pins apply will see once the upstream stages have run: a stage that adds a
// version makes it the newest this subject produced, and a gate that runs accepts that new one.
func planPins(l *replicate.Ledger, s settings, up upstreamPlan) map[string]string {
	p := pins(l, s)
	if len(up.Adds) == 0 {
		return p
	}
	for id, why := range p {
		if why == producedReason || (up.GateRuns && why == gateReason) {
			delete(p, id)
		}
	}
	for _, a := range up.Adds {
		p[newPrefix+a] = "the version " + a + " adds in this apply"
	}
	return p
}

// arrivals resolves each upstream stage's version: a training a previous run left in flight (the
// subject's ledger lists it as pending) may have finished since, so its version is listed already
// and apply re-attaches to it; otherwise the version is new. Only pending trainings are asked
// about, with one GET each.
func arrivals(ctx context.Context, c *replicate.Client, l *replicate.Ledger, s settings, up upstreamPlan, versions []replicate.Version) ([]arrival, error) {
	listed := map[string]bool{}
	for _, v := range versions {
		listed[v.ID] = true
	}
	var pending []string
	for _, p := range l.Pending {
		if p.Destination == s.Model {
			pending = append(pending, p.Training)
		}
	}
	var out []arrival
	for i, stage := range up.Adds {
		a := arrival{Stage: stage}
		if i < len(pending) {
			t, err := c.GetTraining(ctx, pending[i])
			switch {
			case replicate.IsNotFound(err):
				// Gone: a new one starts.
			case err != nil:
				return nil, fmt.Errorf("reading training %s left in flight (to know whether its version exists already): %w", pending[i], err)
			case t.Status == "succeeded" && t.Output.Version != "":
				if id, same := versionID(t.Output.Version, s.Model); same && listed[id] {
					a.ID = id
				}
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// withArrivals returns the versions apply will list: the listed ones plus a placeholder, newer than
// all of them, for each version not created yet; and moves each arrival's pin onto its version.
func withArrivals(versions []replicate.Version, as []arrival, p map[string]string) []replicate.Version {
	all := append([]replicate.Version(nil), versions...)
	newest := time.Time{}
	for _, v := range versions {
		if v.CreatedAt.After(newest) {
			newest = v.CreatedAt
		}
	}
	for i, a := range as {
		key := newPrefix + a.Stage
		if a.ID != "" {
			delete(p, key)
			p[a.ID] = "produced by " + a.Stage
			continue
		}
		all = append(all, replicate.Version{ID: key, CreatedAt: newest.Add(time.Duration(i+1) * time.Hour)})
	}
	return all
}

// realIDs drops placeholders from a list of version ids.
func realIDs(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !strings.HasPrefix(id, newPrefix) {
			out = append(out, id)
		}
	}
	return out
}

// arrivalNotes say what the plan assumed about the upstream stages, so a reader can check it.
func arrivalNotes(s settings, up upstreamPlan, as []arrival) []string {
	var notes []string
	for _, a := range as {
		if a.ID != "" {
			notes = append(notes, fmt.Sprintf("%s's training left in flight by an earlier run has finished as version %s: apply re-attaches to it, and it counts as the newest of keep_last %d", a.Stage, a.ID, s.KeepLast))
		} else {
			notes = append(notes, fmt.Sprintf("%s runs first in this apply and adds a version to %s: it counts as the newest of keep_last %d, so the list below is what apply deletes if it succeeds", a.Stage, s.Model, s.KeepLast))
		}
	}
	for _, t := range sortedKeys(up.Elsewhere) {
		notes = append(notes, fmt.Sprintf("%s runs first but trains %s, not %s: its version does not count here", t, up.Elsewhere[t], s.Model))
	}
	return notes
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
