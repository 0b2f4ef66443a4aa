package prune

import (
	"context"
	"encoding/json"
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

// trainData is the part of a train stage's recorded data that prune reads (field names as the
// train package writes them): where its last training went and which training is in flight.
type trainData struct {
	TrainingID string `json:"training_id"`
	Intent     *struct {
		Destination string `json:"destination"`
	} `json:"intent"`
}

// arrival is a version an upstream train stage contributes to this model in this apply.
type arrival struct {
	Train string // "train.NAME"
	// ID is the version when the training already finished (a resumed run re-attaches to it and
	// produces exactly that version); "" when the version does not exist yet.
	ID string
}

// upstreamPlan is what the stages that run before prune in this apply change for its plan.
type upstreamPlan struct {
	// Trains are the upstream train stages that will run and add a version to this model.
	Trains []string
	// Elsewhere are upstream train stages that will run but train another model, with its name.
	Elsewhere map[string]string
	// GateRuns is true when a loss_gate upstream will run: on success its last accepted version is
	// then the new one, so the version it accepted before loses that pin.
	GateRuns bool
}

// planUpstream reads req.Upstream. A train stage counts toward this model unless every destination
// known for it (the replicate block's, the one its last training recorded) names another model:
// counting it wrongly makes plan list one deletion more than apply makes, never one fewer.
func planUpstream(req *pipeline.Request, s settings) upstreamPlan {
	up := upstreamPlan{Elsewhere: map[string]string{}}
	for _, u := range req.Upstream {
		if u.Action != pipeline.ActionRun && u.Action != pipeline.ActionRerun {
			continue
		}
		switch u.Kind {
		case "loss_gate":
			up.GateRuns = true
		case "train":
			dests := trainDestinations(req, u.Name)
			other := ""
			for _, d := range dests {
				if d == s.Model {
					other = ""
					break
				}
				other = d
			}
			if other != "" {
				up.Elsewhere["train."+u.Name] = other
				continue
			}
			up.Trains = append(up.Trains, u.Name)
		}
	}
	return up
}

// trainDestinations lists the models a train stage may add its version to, as far as prune can see.
func trainDestinations(req *pipeline.Request, name string) []string {
	var out []string
	if set, ok := req.Settings["replicate"]; ok {
		if d := outputString(set, "destination"); d != "" {
			out = append(out, d)
		}
	}
	if r := findTrain(req, name); r != nil {
		var d trainData
		if len(r.Data) > 0 && json.Unmarshal(r.Data, &d) == nil && d.Intent != nil && d.Intent.Destination != "" {
			out = append(out, d.Intent.Destination)
		}
		if v := outputString(r.Outputs, "version"); v != "" {
			if i := strings.LastIndex(v, ":"); i > 0 {
				out = append(out, v[:i])
			}
		}
	}
	return out
}

// findTrain returns the state record of train stage name in this instance (nil if none).
func findTrain(req *pipeline.Request, name string) *pipeline.StageRecord {
	if req.State == nil {
		return nil
	}
	for _, r := range req.State.Records("train") {
		if r.Name == name {
			return &r
		}
	}
	return nil
}

// planPins are the pins apply will see once the upstream stages have run: a train stage that runs
// replaces the version it recorded with its new one, and a gate that runs accepts that new one.
func planPins(req *pipeline.Request, s settings, up upstreamPlan) map[string]string {
	p := pins(req, s)
	for _, name := range up.Trains {
		for id, why := range p {
			if why == "produced by train."+name {
				delete(p, id)
			}
		}
		p[newPrefix+name] = "the version train." + name + " adds in this apply"
	}
	if up.GateRuns && len(up.Trains) > 0 {
		for id, why := range p {
			if why == gateReason {
				delete(p, id)
			}
		}
	}
	return p
}

// arrivals resolves each upstream train stage's version: a training a previous run left in flight
// may have finished since (the version is listed already and apply re-attaches to it); otherwise
// the version is new. Only the recorded training is asked about, with one GET.
func arrivals(ctx context.Context, c *replicate.Client, req *pipeline.Request, s settings, up upstreamPlan, versions []replicate.Version) ([]arrival, error) {
	listed := map[string]bool{}
	for _, v := range versions {
		listed[v.ID] = true
	}
	var out []arrival
	for _, name := range up.Trains {
		a := arrival{Train: "train." + name}
		if r := findTrain(req, name); r != nil && r.Status != pipeline.StatusComplete {
			var d trainData
			if len(r.Data) > 0 && json.Unmarshal(r.Data, &d) == nil && d.TrainingID != "" {
				t, err := c.GetTraining(ctx, d.TrainingID)
				switch {
				case replicate.IsNotFound(err):
					// Gone: train starts a new one.
				case err != nil:
					return nil, fmt.Errorf("%s: reading training %s that %s left in flight (to know whether its version exists already): %w", req.Address, d.TrainingID, a.Train, err)
				case t.Status == "succeeded" && t.Output.Version != "":
					if id, same := versionID(t.Output.Version, s.Model); same && listed[id] {
						a.ID = id
					}
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
		key := newPrefix + strings.TrimPrefix(a.Train, "train.")
		if a.ID != "" {
			delete(p, key)
			p[a.ID] = "produced by " + a.Train
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
			notes = append(notes, fmt.Sprintf("%s's training left in flight by an earlier run has finished as version %s: apply re-attaches to it, and it counts as the newest of keep_last %d", a.Train, a.ID, s.KeepLast))
		} else {
			notes = append(notes, fmt.Sprintf("%s runs first in this apply and adds a version to %s: it counts as the newest of keep_last %d, so the list below is what apply deletes if it succeeds", a.Train, s.Model, s.KeepLast))
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
