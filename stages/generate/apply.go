package generate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // models may answer JPEG despite output_format (scored as is, with a warning)
	_ "image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "golang.org/x/image/webp"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Sides of a comparison.
const (
	sideNew      = "new"
	sidePrevious = "previous"
)

// record is the stage's private data in state: which version was compared with which, and every
// prediction's intent, id and downloaded file, saved before anything is waited on.
type record struct {
	Version string `json:"version"`
	// Previous is the version compared with ("" when none); PreviousResolved says the lookup was
	// done (a resumed run compares with the same version even if the model changed since).
	Previous         string `json:"previous,omitempty"`
	PreviousResolved bool   `json:"previous_resolved,omitempty"`
	PreviousNote     string `json:"previous_note,omitempty"`
	Runs             []*run `json:"runs"`
	// Deleted is the version deleted by the plastic-skin gate (a resumed run does not try again;
	// the subject's version ledger tells the other stages).
	Deleted string `json:"deleted,omitempty"`
	// Rejected is the version whose rejection this stage recorded in the ledger and did not
	// delete, RejectedOver the verdict it had before: when the version passes later (the guard
	// relaxed on purpose) or on_fail becomes "keep", the rejection is withdrawn, so that prune,
	// which deletes unfinished rejections, does not delete a version the user now keeps.
	Rejected     string `json:"rejected,omitempty"`
	RejectedOver string `json:"rejected_over,omitempty"`
	// SecondsPerPrediction is the mean predict_time of this subject's last measured predictions
	// (PredictionsMeasured of them): plan's estimate multiplies by it.
	SecondsPerPrediction float64 `json:"seconds_per_prediction,omitempty"`
	PredictionsMeasured  int     `json:"predictions_measured,omitempty"`
	// Carried* are predictions no longer in Runs (run again, or of a changed config) whose cost no
	// apply reported yet: the next reported cost includes them.
	CarriedPredictions int     `json:"carried_predictions,omitempty"`
	CarriedSeconds     float64 `json:"carried_seconds,omitempty"`
}

// run is one prompt × seed on one version.
type run struct {
	Side         string         `json:"side"`
	Version      string         `json:"version"`
	Prompt       int            `json:"prompt"` // index into prompts
	Seed         int64          `json:"seed"`
	Input        map[string]any `json:"input"`
	IntentAt     time.Time      `json:"intent_at,omitzero"`
	PredictionID string         `json:"prediction_id,omitempty"`
	Status       string         `json:"status,omitempty"`
	Error        string         `json:"error,omitempty"`
	// File is the downloaded image, as the `images` output shows it (out_dir/name); SHA256 its bytes.
	File   string `json:"file,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Format is what the bytes are ("png", "jpeg", "webp").
	Format string `json:"format,omitempty"`
	// PredictTime is the prediction's metrics.predict_time (what Replicate bills); CostUnreported
	// says no apply's Result.Cost included it yet (set when this stage creates or adopts it).
	PredictTime    float64 `json:"predict_time,omitempty"`
	CostUnreported bool    `json:"cost_unreported,omitempty"`
}

// key identifies a prediction: the same version and input give the same image, so a recorded run
// with the same key is reused even when other settings changed.
func (r *run) key() string {
	b, _ := json.Marshal(canonicalInput(r.Input))
	return r.Version + "\x00" + string(b)
}

// canonicalInput round-trips through JSON so that 1 and 1.0, int64 and float64 compare equal.
func canonicalInput(in map[string]any) map[string]any {
	b, err := json.Marshal(in)
	if err != nil {
		return in
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return in
	}
	return out
}

func (r *run) label(prompts []string) string {
	p := fmt.Sprintf("prompt %d", r.Prompt+1)
	if r.Prompt < len(prompts) {
		p = fmt.Sprintf("%q", prompts[r.Prompt])
	}
	return fmt.Sprintf("%s seed %d on the %s version %s", p, r.Seed, r.Side, r.Version)
}

func (r *run) fileName(ext string) string {
	return fmt.Sprintf("%s-p%d-s%d.%s", r.Side, r.Prompt+1, r.Seed, ext)
}

// generator carries one Apply.
type generator struct {
	req      *pipeline.Request
	cfg      *config
	c        *replicate.Client
	rec      *record
	warnings []string
}

func (g *generator) save() error {
	g.rec.remeasure()
	if err := g.req.Recorder.Save(g.rec); err != nil {
		return fmt.Errorf("recording predictions in state: %w", err)
	}
	return nil
}

// stop records what is known and returns ctx's error (Ctrl-C: paid predictions are not cancelled;
// the next apply re-attaches to them).
func (g *generator) stop(ctx context.Context) error {
	if serr := g.save(); serr != nil {
		return errors.Join(ctx.Err(), serr)
	}
	return ctx.Err()
}

// Apply implements pipeline.Kind.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	cfg, err := parseConfig(req, false)
	if err != nil {
		return nil, err
	}
	owner, name, _, err := replicate.SplitVersion(cfg.Version)
	if err != nil {
		return nil, err // checkVersion already refused anything else
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, err
	}
	cfg.OutDir = outDirFor(cfg.OutDir, req.Key)
	outAbs := cfg.OutDir
	if !filepath.IsAbs(outAbs) {
		outAbs = filepath.Join(req.BaseDir, outAbs)
	}
	g := &generator{req: req, cfg: cfg, c: c, rec: &record{Version: cfg.Version}}

	var prior record
	if _, err := req.Prior.Decode(&prior); err != nil {
		req.Recorder.Warn(fmt.Sprintf("ignoring unreadable recorded data (predictions may be looked up again): %v", err))
	}
	if prior.Version == cfg.Version {
		g.rec.Deleted = prior.Deleted // a gate that already deleted this version does not try again
		g.rec.Rejected, g.rec.RejectedOver = prior.Rejected, prior.RejectedOver
	}
	g.rec.SecondsPerPrediction, g.rec.PredictionsMeasured = prior.SecondsPerPrediction, prior.PredictionsMeasured
	g.rec.CarriedPredictions, g.rec.CarriedSeconds = prior.CarriedPredictions, prior.CarriedSeconds
	if cfg.ComparePrevious {
		if prior.Version == cfg.Version && prior.PreviousResolved {
			g.rec.Previous, g.rec.PreviousResolved, g.rec.PreviousNote = prior.Previous, true, prior.PreviousNote
		} else if err := g.resolvePrevious(ctx, owner, name); err != nil {
			return nil, err
		}
	}
	g.planRuns(&prior)
	if err := g.save(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outAbs, 0o755); err != nil {
		return nil, fmt.Errorf("creating out_dir %s: %w; hint: check out_dir and its permissions", outAbs, err)
	}
	var imgs []outImage
	for attempt := 0; ; attempt++ {
		if err := g.startAll(ctx); err != nil {
			return nil, err
		}
		if err := g.waitRemote(ctx); err != nil {
			return nil, err
		}
		var expired []*run
		imgs, expired, err = g.downloadAll(ctx)
		if err != nil {
			return nil, err
		}
		if len(expired) == 0 {
			break
		}
		if attempt > 0 {
			return nil, fmt.Errorf("the output of %s is gone right after it finished; hint: run apply again", expired[0].label(cfg.Prompts))
		}
		// Replicate deletes API predictions' outputs after an hour: an apply resumed later runs
		// those again (nothing else can bring the image back).
		for _, r := range expired {
			g.warnings = append(g.warnings, fmt.Sprintf("the output of prediction %s (%s) has expired: running it again", r.PredictionID, r.label(cfg.Prompts)))
			g.rec.forget(r)
		}
	}
	if failed := g.failed(sideNew); len(failed) > 0 {
		return nil, fmt.Errorf("%d prediction(s) on the new version failed: %s; hint: run apply again to retry them (the %d finished ones are reused)",
			len(failed), strings.Join(failed, "; "), len(imgs))
	}
	return g.finish(ctx, imgs)
}

// resolvePrevious finds the version to compare with: the destination's newest version older than
// the new one that this pipeline did not delete — on a destination other subjects share, this
// subject's own previous version.
func (g *generator) resolvePrevious(ctx context.Context, owner, name string) error {
	prev, note, err := previousFor(ctx, g.req, g.c, g.cfg.Version)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("listing the versions of %s/%s to find the previous one: %w; hint: set compare_previous = false to skip the comparison", owner, name, err)
	}
	g.rec.Previous, g.rec.PreviousNote, g.rec.PreviousResolved = prev, note, true
	return nil
}

// previousFor is the version to compare version with. The subject's version ledger decides on a
// shared destination (no request: every other version is another subject's); otherwise the
// model's versions are listed.
func previousFor(ctx context.Context, req *pipeline.Request, c *replicate.Client, version string) (prev, note string, err error) {
	owner, name, vid, err := replicate.SplitVersion(version)
	if err != nil {
		return "", "", err
	}
	model := owner + "/" + name
	l := replicate.LedgerOf(req.State)
	if n := req.Shared[replicate.ModelResource(model)]; n > 1 {
		if prev := l.PreviousOwn(model, version); prev != "" {
			return prev, "", nil
		}
		return "", fmt.Sprintf("compare_previous: skipped, this subject has no version of %s older than %s (the model is shared by %d subjects: others' versions are not compared)", model, shortID(vid), n), nil
	}
	return previousOf(ctx, c, version, l.Gone())
}

// previousOf returns the newest version of version's model older than it ("owner/name:id") and
// not in deleted (version ids this pipeline deleted: deletion is asynchronous, so they may still
// be listed), or "" and a note saying why there is none.
func previousOf(ctx context.Context, c *replicate.Client, version string, deleted map[string]bool) (prev, note string, err error) {
	owner, name, vid, err := replicate.SplitVersion(version)
	if err != nil {
		return "", "", err
	}
	versions, err := c.ListVersions(ctx, owner, name)
	if err != nil {
		return "", "", err
	}
	for i, v := range versions { // newest first
		if v.ID != vid {
			continue
		}
		skipped := 0
		for _, older := range versions[i+1:] {
			if deleted[older.ID] {
				skipped++
				continue
			}
			return fmt.Sprintf("%s/%s:%s", owner, name, older.ID), "", nil
		}
		note := fmt.Sprintf("compare_previous: skipped, %s/%s has no version older than %s", owner, name, shortID(vid))
		if skipped > 0 {
			note += fmt.Sprintf(" (not counting %d this pipeline deleted)", skipped)
		}
		return "", note, nil
	}
	return "", fmt.Sprintf("compare_previous: skipped, version %s is not among the %d versions of %s/%s", shortID(vid), len(versions), owner, name), nil
}

// wantedRuns lists every prompt × seed on the new version and, when previous is set, on it.
func (c *config) wantedRuns(previous string) []*run {
	sides := []struct{ side, version string }{{sideNew, c.Version}}
	if previous != "" {
		sides = append(sides, struct{ side, version string }{sidePrevious, previous})
	}
	var out []*run
	for _, s := range sides {
		for pi, p := range c.Prompts {
			for _, seed := range c.Seeds {
				out = append(out, &run{Side: s.side, Version: s.version, Prompt: pi, Seed: seed, Input: canonicalInput(c.input(p, seed))})
			}
		}
	}
	return out
}

// byKey indexes recorded runs by version + input.
func byKey(runs []*run) map[string]*run {
	out := map[string]*run{}
	for _, r := range runs {
		if r != nil && r.Input != nil {
			out[r.key()] = r
		}
	}
	return out
}

// planRuns lists every prompt × seed for both sides, reusing the prior record's runs with the same
// version and input (their predictions exist and were paid for).
func (g *generator) planRuns(prior *record) {
	old := byKey(prior.Runs)
	for _, r := range g.cfg.wantedRuns(g.rec.Previous) {
		if o := old[r.key()]; o != nil {
			delete(old, r.key())
			r.IntentAt, r.PredictionID, r.Status, r.Error = o.IntentAt, o.PredictionID, o.Status, o.Error
			r.File, r.SHA256, r.Format = o.File, o.SHA256, o.Format
			r.PredictTime, r.CostUnreported = o.PredictTime, o.CostUnreported
			if replicate.Unsuccessful(r.Status) {
				// A failed prediction is tried again: that is what re-running apply asks for.
				g.rec.forget(r)
			}
		}
		g.rec.Runs = append(g.rec.Runs, r)
	}
	for _, o := range old { // no longer wanted: their cost still counts once
		g.rec.forget(o)
	}
}

// startAll makes sure every run has a prediction: re-attached by id, found by version + input
// after a crash between the create call and recording its id, or created (intent saved first).
func (g *generator) startAll(ctx context.Context) error {
	for _, r := range g.rec.Runs {
		if r.PredictionID != "" || g.haveFile(r) || (r.Side == sidePrevious && g.rec.Previous == "") {
			continue
		}
		if err := g.create(ctx, r); err != nil {
			if reason := refusal(err); r.Side == sidePrevious && reason != "" {
				// The previous version cannot run (deleted meanwhile, or not ours to run): the
				// comparison is a nicety, the new version's check goes on without it.
				if err := g.skipPrevious(reason); err != nil {
					return err
				}
				continue
			}
			return err
		}
	}
	return nil
}

// refusal returns the API's reason when err is a 4xx refusal (not 401 or 429), "" otherwise.
func refusal(err error) string {
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status < 400 || apiErr.Status >= 500 ||
		apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusTooManyRequests {
		return ""
	}
	if apiErr.Detail != "" {
		return fmt.Sprintf("%d %s", apiErr.Status, apiErr.Detail)
	}
	return apiErr.Error()
}

// skipPrevious drops the comparison with the previous version, with a warning and a note.
func (g *generator) skipPrevious(reason string) error {
	prev := g.rec.Previous
	note := fmt.Sprintf("compare_previous: skipped, Replicate refused a prediction on the previous version %s (%s)", prev, reason)
	g.warnings = append(g.warnings, "comparison skipped: "+strings.TrimPrefix(note, "compare_previous: skipped, "))
	g.rec.Previous, g.rec.PreviousNote = "", note
	runs := g.rec.Runs[:0]
	for _, r := range g.rec.Runs {
		if r.Side != sidePrevious {
			runs = append(runs, r)
		} else {
			g.rec.forget(r) // a comparison run that did start still counts once
		}
	}
	g.rec.Runs = runs
	return g.save()
}

// create starts r's prediction through replicate.CreateOnce: an intent an earlier run recorded
// is looked up first, and a create without a clear answer is reconciled before it is repeated.
func (g *generator) create(ctx context.Context, r *run) error {
	once := &replicate.Intent{At: r.IntentAt, ID: r.PredictionID}
	save := func() error {
		r.IntentAt, r.PredictionID = once.At, once.ID
		return g.save()
	}
	p, found, err := replicate.CreateOnce(ctx, g.c, once, save,
		func(ctx context.Context) (*replicate.Prediction, string, error) {
			p, err := g.c.CreatePrediction(ctx, r.Version, r.Input)
			if err != nil {
				return nil, "", err
			}
			return p, p.ID, nil
		},
		func(ctx context.Context, after time.Time) (*replicate.Prediction, string, bool, error) {
			p, err := g.c.FindPrediction(ctx, r.Version, r.Input, after)
			if err != nil || p == nil {
				return nil, "", false, err
			}
			return p, p.ID, true, nil
		})
	if err != nil {
		if ctx.Err() != nil {
			return g.stop(ctx)
		}
		return fmt.Errorf("starting a prediction (%s): %w; hint: run apply again (a prediction that did start is found by its input)", r.label(g.cfg.Prompts), err)
	}
	r.Status, r.CostUnreported = p.Status, true
	if p.Terminal() {
		r.PredictTime = p.PredictTime
	}
	if found {
		g.req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("re-attached to prediction %s (%s) started by an earlier run", p.ID, p.Status)})
	}
	return nil
}

func (g *generator) haveFile(r *run) bool { return fileIntact(g.req.BaseDir, r) }

// fileIntact reports whether r's downloaded image is on disk with the bytes recorded.
func fileIntact(base string, r *run) bool {
	if r.File == "" || r.SHA256 == "" {
		return false
	}
	b, err := os.ReadFile(absUnder(base, r.File))
	return err == nil && sum(b) == r.SHA256
}

func (g *generator) abs(p string) string { return absUnder(g.req.BaseDir, p) }

// absUnder resolves p against the config's directory.
func absUnder(base, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// terminalStatus is the client's notion of final (aborted included), so a wait always ends.
func terminalStatus(s string) bool { return replicate.TerminalStatus(s) }

// waitAll polls the unfinished predictions together (they run in parallel on Replicate) until all
// are done, recording each status change.
func (g *generator) waitAll(ctx context.Context) error {
	poll := replicate.Poller{Initial: g.cfg.PollInterval, Max: max(g.cfg.PollInterval, 30*time.Second)}
	total := int64(len(g.rec.Runs))
	for {
		pending := 0
		changed := false
		for _, r := range g.rec.Runs {
			if r.PredictionID == "" || terminalStatus(r.Status) {
				continue
			}
			p, err := g.c.GetPrediction(ctx, r.PredictionID)
			if err != nil {
				if ctx.Err() != nil {
					return g.stop(ctx)
				}
				return fmt.Errorf("following prediction %s (%s): %w; hint: run apply again to re-attach", r.PredictionID, r.label(g.cfg.Prompts), err)
			}
			if p.Status != r.Status {
				r.Status, r.Error, changed = p.Status, p.Error, true
				if p.Terminal() {
					r.PredictTime = p.PredictTime
				}
			}
			if !terminalStatus(p.Status) {
				pending++
			}
		}
		if changed {
			if err := g.save(); err != nil {
				return err
			}
			poll.Reset()
		}
		if pending == 0 {
			return nil
		}
		g.req.Recorder.Progress(pipeline.Progress{Current: total - int64(pending), Total: total,
			Message: fmt.Sprintf("%d of %d prediction(s) finished", total-int64(pending), total)})
		if g.c.Sleep(ctx, poll.Next()) != nil {
			return g.stop(ctx)
		}
	}
}

// waitRemote follows the running predictions while holding no -parallelism slot (they run on
// Replicate, this process only polls); done takes one back before downloads and scoring. On an
// error the engine releases whatever the stage holds.
func (g *generator) waitRemote(ctx context.Context) error {
	if !g.running() {
		return nil
	}
	done, err := g.req.Recorder.Wait(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return g.stop(ctx)
		}
		return err
	}
	if err := g.waitAll(ctx); err != nil {
		return err
	}
	done()
	return nil
}

// running reports whether a prediction is still to be followed.
func (g *generator) running() bool {
	for _, r := range g.rec.Runs {
		if r.PredictionID != "" && !terminalStatus(r.Status) {
			return true
		}
	}
	return false
}

// failed lists the failed runs of one side.
func (g *generator) failed(side string) []string {
	var out []string
	for _, r := range g.rec.Runs {
		if r.Side == side && replicate.Unsuccessful(r.Status) && !g.haveFile(r) {
			msg := fmt.Sprintf("%s: %s", r.label(g.cfg.Prompts), r.Status)
			if r.Error != "" {
				msg += " (" + r.Error + ")"
			}
			out = append(out, msg)
		}
	}
	return out
}

// image is one downloaded and decoded output.
type outImage struct {
	run *run
	img image.Image
}

// downloadAll fetches every succeeded prediction's image into out_dir (or reuses the recorded file
// when its bytes are unchanged) and decodes it as it is: the guard scores exactly those bytes.
func (g *generator) downloadAll(ctx context.Context) ([]outImage, []*run, error) {
	var out []outImage
	var expired []*run
	for _, r := range g.rec.Runs {
		var data []byte
		if g.haveFile(r) {
			data, _ = os.ReadFile(g.abs(r.File))
			// A changed out_dir gets its own copy, so that the report's relative paths hold.
			if want := filepath.Join(g.cfg.OutDir, r.fileName(strings.TrimPrefix(filepath.Ext(r.File), "."))); want != r.File {
				if err := writeAtomic(g.abs(want), data); err != nil {
					return nil, nil, fmt.Errorf("writing %s: %w; hint: check out_dir and its permissions", g.abs(want), err)
				}
				r.File = want
			}
		} else {
			if r.Status != "succeeded" {
				if r.Side == sidePrevious && replicate.Unsuccessful(r.Status) {
					msg := fmt.Sprintf("the prediction %s %s", r.label(g.cfg.Prompts), r.Status)
					if r.Error != "" {
						msg += ": " + r.Error
					}
					g.warnings = append(g.warnings, msg+"; the comparison has one image fewer")
				}
				continue
			}
			var err error
			var gone bool
			data, gone, err = g.fetch(ctx, r)
			if err != nil {
				return nil, nil, err
			}
			if gone {
				expired = append(expired, r)
				continue
			}
		}
		format := sniff(data)
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, nil, fmt.Errorf("the image of prediction %s (%s) does not decode: %v; hint: the model answered something that is not an image", r.PredictionID, r.label(g.cfg.Prompts), err)
		}
		if format != "png" {
			g.warnings = append(g.warnings, fmt.Sprintf("%s: the model answered %s although PNG was requested; scored as is, but JPEG compression raises the texture index and can hide plastic skin", r.File, strings.ToUpper(format)))
		}
		r.Format = format
		out = append(out, outImage{run: r, img: img})
	}
	return out, expired, g.save()
}

// fetch downloads r's output and writes it atomically under out_dir; gone reports an output the
// API no longer serves (expired).
func (g *generator) fetch(ctx context.Context, r *run) (data []byte, gone bool, err error) {
	p, err := g.c.GetPrediction(ctx, r.PredictionID)
	if err == nil && r.PredictTime == 0 {
		r.PredictTime = p.PredictTime
	}
	if err == nil && p.Gone() {
		// The API removed its input, output and logs (an hour after it finished): data_removed
		// or a succeeded prediction with a null output.
		return nil, true, nil
	}
	if err == nil {
		data, err = g.c.Download(ctx, p.Output[0])
		if replicate.IsGone(err) {
			return nil, true, nil
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, g.stop(ctx)
		}
		return nil, false, fmt.Errorf("downloading the image of prediction %s (%s): %w; hint: run apply again", r.PredictionID, r.label(g.cfg.Prompts), err)
	}
	ext := sniff(data)
	if ext == "jpeg" {
		ext = "jpg"
	}
	rel := filepath.Join(g.cfg.OutDir, r.fileName(ext))
	if err := writeAtomic(g.abs(rel), data); err != nil {
		return nil, false, fmt.Errorf("writing %s: %w; hint: check out_dir and its permissions", g.abs(rel), err)
	}
	r.File, r.SHA256 = rel, sum(data)
	return data, false, g.save()
}

// sniff names an image format by its magic bytes.
func sniff(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff}):
		return "jpeg"
	case len(b) >= 12 && string(b[0:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "webp"
	}
	return "bin"
}

// writeAtomic writes data to a temp file beside path and renames it over path.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// Images and reports are for people and web servers to read: not the temp file's 0600.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp)
		return errors.Join(werr, cerr)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
