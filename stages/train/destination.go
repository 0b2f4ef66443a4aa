package train

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Resources implements pipeline.ResourceUser: the destination model, which many subjects of a
// batch may share (Replicate recommends one model with many versions).
func (Kind) Resources(req *pipeline.Request) []string {
	if !known(req, "destination") {
		return nil
	}
	var a struct {
		Destination string `cty:"destination"`
	}
	var set replicate.Settings
	schema.Decode(req, &a)
	schema.DecodeSettings(req, "replicate", &set)
	dest := firstNonEmpty(a.Destination, set.Destination)
	if _, _, ok := replicate.SplitModel(dest); !ok {
		return nil
	}
	return []string{replicate.ModelResource(dest)}
}

// sharedBy is how many subjects of the batch share the destination (0: it is this one's own).
func sharedBy(req *pipeline.Request, dest string) int {
	if n := req.Shared[replicate.ModelResource(dest)]; n > 1 {
		return n
	}
	return 0
}

// modelKey names one model of one client: the unit of the process-wide single flight.
type modelKey struct {
	c     *replicate.Client
	model string
}

// modelFlight is one look-up-or-create of a model that concurrent stages share.
type modelFlight struct {
	done chan struct{}
	m    *replicate.Model
	err  error
}

var (
	modelsMu sync.Mutex
	// flights are the look-ups under way; existing are the models this process saw exist,
	// which a shared destination's subjects need not read again.
	flights  = map[modelKey]*modelFlight{}
	existing = map[modelKey]bool{}
)

// ensureModel returns the model, creating it (private, on hardware) when it does not exist. All
// stages of the process that ask for one model while a look-up is under way share it, so 1,000
// subjects racing for one shared destination create it once; a racing creator in another process
// is handled by CreateModel (409: it exists, read it back). created reports that this call's
// flight created it.
func ensureModel(ctx context.Context, c *replicate.Client, owner, name, hardware string, onCreate func()) (m *replicate.Model, created bool, err error) {
	k := modelKey{c: c, model: owner + "/" + name}
	for {
		modelsMu.Lock()
		f, waiting := flights[k]
		if !waiting {
			f = &modelFlight{done: make(chan struct{})}
			flights[k] = f
		}
		modelsMu.Unlock()
		if waiting {
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
			if f.err != nil && errors.Is(f.err, context.Canceled) && ctx.Err() == nil {
				continue // the stage that looked was interrupted, not this one: look again
			}
			return f.m, false, f.err
		}
		f.m, created, f.err = lookUpOrCreate(ctx, c, owner, name, hardware, onCreate)
		modelsMu.Lock()
		delete(flights, k)
		if f.err == nil {
			existing[k] = true
		}
		modelsMu.Unlock()
		close(f.done)
		return f.m, created, f.err
	}
}

func lookUpOrCreate(ctx context.Context, c *replicate.Client, owner, name, hardware string, onCreate func()) (*replicate.Model, bool, error) {
	m, err := c.GetModel(ctx, owner, name)
	if err == nil {
		return m, false, nil
	}
	if !replicate.IsNotFound(err) {
		return nil, false, fmt.Errorf("reading destination model %s/%s: %w", owner, name, err)
	}
	onCreate()
	m, err = c.CreateModel(ctx, owner, name, hardware)
	if err != nil {
		return nil, false, fmt.Errorf("creating destination model %s/%s: %w", owner, name, err)
	}
	return m, true, nil
}

// knownToExist reports whether this process already saw the model exist.
func knownToExist(c *replicate.Client, model string) bool {
	modelsMu.Lock()
	defer modelsMu.Unlock()
	return existing[modelKey{c: c, model: model}]
}

// destination makes sure the destination model exists and returns the version the new one
// follows ("owner/name:id", "" if none): on a shared destination the subject's own previous
// version (from its ledger: every other version is another subject's), otherwise the model's
// newest version this pipeline kept.
func (r *run) destination(ctx context.Context) (string, error) {
	cfg := r.cfg
	shared := sharedBy(r.req, cfg.Destination) > 0
	if shared && knownToExist(r.c, cfg.Destination) {
		return replicate.LedgerOf(r.req.State).PreviousOwn(cfg.Destination, ""), nil
	}
	m, _, err := ensureModel(ctx, r.c, cfg.DestOwner, cfg.DestName, cfg.Hardware, func() {
		r.req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("creating destination %s (private, hardware %s)", cfg.Destination, cfg.Hardware)})
	})
	if err != nil {
		return "", err
	}
	if shared {
		return replicate.LedgerOf(r.req.State).PreviousOwn(cfg.Destination, ""), nil
	}
	return r.latestKept(ctx, m)
}

// latestKept is the destination's newest version that this pipeline did not delete
// ("owner/name:id", "" if none). Deleting a version is asynchronous on Replicate: a version a
// loss gate or generate's gate deleted may still be the model's latest_version for a while.
func (r *run) latestKept(ctx context.Context, m *replicate.Model) (string, error) {
	cfg := r.cfg
	if m.LatestVersion == nil || m.LatestVersion.ID == "" {
		return "", nil
	}
	deleted := replicate.LedgerOf(r.req.State).Gone()
	if !deleted[m.LatestVersion.ID] {
		return cfg.Destination + ":" + m.LatestVersion.ID, nil
	}
	versions, err := r.c.ListVersions(ctx, cfg.DestOwner, cfg.DestName)
	if err != nil {
		return "", fmt.Errorf("listing the versions of %s (its latest, %s, is being deleted): %w", cfg.Destination, m.LatestVersion.ID, err)
	}
	for _, v := range versions { // newest first
		if !deleted[v.ID] {
			return cfg.Destination + ":" + v.ID, nil
		}
	}
	return "", nil
}
