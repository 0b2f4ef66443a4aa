// Package train implements the `train` stage kind: it zips prepared copies of a subject's accepted
// photos reproducibly, streams the zip to Replicate's files API once, starts a training of a Flux
// LoRA into a destination model and follows it to the end, re-attaching after a crash instead of
// paying for a second training.
//
//	replicate {
//	  trainer     = "ostris/flux-dev-lora-trainer:<version id>"
//	  destination = "acme/ana-lora"
//	}
//	stage "train" "lora" {
//	  images = image_check.photos.accepted
//	  input  = merge(params.tuned.values, { trigger_word = "TOK" })
//	}
//
// Outputs: training_id, version ("owner/name:id"), weights, losses (step -> loss, the step as a
// string key), image_count, images_digest, input (what was sent, without input_images and without
// secrets, as an object whose values keep their types: train.lora.input.steps is 1000)
// previous_version (the destination's latest version before this training, "" if none) and
// cost_usd (what the training cost, from its metrics.predict_time; null when not reported).
//
// The zip holds prepared copies, never the originals (package photo): upright sRGB JPEGs of
// quality 95, the long side at most max_side [2048], no metadata at all, named NAME.jpg, bytes
// deterministic; copies are cached by content on this machine. Photos may be bucket objects
// (image_check names them by URL). The zip is streamed to the upload with an exact
// Content-Length, never held in memory; plan shows its size and refuses one over the files API's
// 100 MiB. The stage's digest covers the originals' names and content, and max_side.
//
// The guard holds where the money is spent: the final input (whatever merge(), variable or
// literal made it) is held to the research limits (package limits), to the limits a params stage
// it reads publishes, and to this stage's `limit "NAME" { min, max }` blocks; plan refuses
// (exit 3) a value that escapes them, naming where it came from and how to raise it on purpose.
//
// Money: plan estimates a new training (steps × this subject's measured seconds per step, else
// 1.3 s, + 90 s of setup, on training_hardware at its price; a re-attached one costs nothing new);
// apply reports the actual cost from metrics.predict_time.
//
// A destination several subjects of a batch share (pipeline.ResourceUser) is created once per
// process, and previous_version is then the subject's own previous version (its ledger).
//
// Crash safety: the stage saves an intent (upload URL, input, time) before it creates the training
// and the training id right after; a later apply re-attaches to the recorded training, or finds the
// one a dead process started (same trainer version, same input including the upload's unique URL,
// created after the intent) before it would ever create another. Ctrl-C never cancels a training.
package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Kind is the train stage kind.
type Kind struct{}

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"images": {Type: cty.List(cty.String), Required: true,
			Description: "the photos to train on, e.g. image_check.photos.accepted (paths, or bucket URLs)"},
		"trainer": {Type: cty.String, Check: replicate.CheckTrainer,
			Description: `trainer version "owner/name:version" (default: replicate { trainer })`},
		"destination": {Type: cty.String, Check: replicate.CheckModel("destination", "no version: trainings add versions to it"),
			Description: `model "owner/name" that receives the new version (default: replicate { destination }); created private when missing`},
		"input": {Type: cty.DynamicPseudoType, Default: cty.EmptyObjectVal,
			Description: "trainer inputs by the trainer's own names; input_images is filled in by the stage"},
		"poll_interval": {Type: cty.String, Default: cty.StringVal("5s"), Duration: true, Check: checkPoll,
			Description: "first interval between looks at the training; it backs off from there"},
		"max_side": {Type: cty.Number, Default: cty.NumberIntVal(photo.DefaultMaxSide), Whole: true,
			Min: pipeline.Bound(512), Max: pipeline.Bound(8192),
			Description: "the long side of the prepared copies the zip holds, in pixels (lower it when the zip is over the upload limit)"},
	},
	Blocks: map[string]*pipeline.BlockSchema{"limit": limits.Block},
	Outputs: map[string]cty.Type{
		"training_id":      cty.String,
		"version":          cty.String,
		"weights":          cty.String,
		"losses":           cty.Map(cty.Number),
		"image_count":      cty.Number,
		"images_digest":    cty.String,
		"input":            cty.DynamicPseudoType,
		"previous_version": cty.String,
		"cost_usd":         cty.Number,
	},
	Remote:             true,
	Settings:           []string{"replicate"},
	SettingsAttributes: map[string]map[string]*pipeline.Attribute{"replicate": replicate.SettingsSchema},
	Summary:            []pipeline.SummaryColumn{{Title: "version", Path: "version", Order: 50}},
	Done:               "trained",
}

// Name implements pipeline.Kind.
func (Kind) Name() string { return "train" }

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

// uploadRecord is an upload of the images zip, reused while its photos, max_side and way of
// preparing copies match and the file exists.
type uploadRecord struct {
	Digest    string `json:"digest"`
	ZipSHA256 string `json:"zip_sha256"`
	FileID    string `json:"file_id"`
	URL       string `json:"url"`
	// MaxSide and Prepared (photo.PrepareVersion) say how the copies were made; Prepared is 0 for
	// an upload of the originals by an earlier release, which is never reused.
	MaxSide  int `json:"max_side,omitempty"`
	Prepared int `json:"prepared,omitempty"`
	// Photos, ZipBytes and OriginalBytes are the zip's figures, for plan.
	Photos        int   `json:"photos,omitempty"`
	ZipBytes      int64 `json:"zip_bytes,omitempty"`
	OriginalBytes int64 `json:"original_bytes,omitempty"`
}

// reusable reports whether the upload holds these photos prepared as this release prepares them.
func (u *uploadRecord) reusable(digest string, maxSide int) bool {
	return u != nil && u.FileID != "" && u.Digest == digest && u.Prepared == photo.PrepareVersion && u.MaxSide == maxSide
}

// summary is plan's line for the recorded zip.
func (u *uploadRecord) summary() string {
	a := photo.Archive{Entries: make([]photo.ZipEntry, u.Photos), Size: u.ZipBytes, Originals: u.OriginalBytes}
	return a.Summary()
}

// intentRecord is saved before the create call: enough to find the training if the process dies
// before its id is recorded. Input has no secrets; the full input is rebuilt from the config, which
// is the same (a resume needs the same input digest).
type intentRecord struct {
	Digest       string         `json:"digest"`
	FileURL      string         `json:"file_url"`
	Trainer      string         `json:"trainer"`
	Destination  string         `json:"destination"`
	Input        map[string]any `json:"input"`
	CreatedAfter time.Time      `json:"created_after"`
	// MaxSide of the copies uploaded (0: the default, or an earlier release's originals).
	MaxSide int `json:"max_side,omitempty"`
}

// record is the train stage's private data in state.
type record struct {
	Upload *uploadRecord `json:"upload,omitempty"`
	// PreviousVersion is the version the new one follows ("" if none); it is read once, before
	// the training, because afterwards the destination's latest is the training's own version.
	PreviousVersion *string       `json:"previous_version,omitempty"`
	Intent          *intentRecord `json:"intent,omitempty"`
	TrainingID      string        `json:"training_id,omitempty"`
	// CanceledEarly is set when a loss_gate's cancel_early made this stage cancel the training.
	CanceledEarly bool   `json:"canceled_early,omitempty"`
	CancelReason  string `json:"cancel_reason,omitempty"`
	// Status and Step are the last seen state of the training (for people reading state).
	Status string `json:"status,omitempty"`
	Step   int    `json:"step,omitempty"`
	Total  int    `json:"total,omitempty"`
	// PredictTime is the last training's metrics.predict_time; SecondsPerStep what it measured,
	// kept across runs for the next estimate.
	PredictTime    float64 `json:"predict_time,omitempty"`
	SecondsPerStep float64 `json:"seconds_per_step,omitempty"`
}

// resumable reports whether the recorded data belongs to an unfinished run with the same inputs.
func resumable(req *pipeline.Request) bool {
	return req.Prior != nil && req.Prior.SameInputs && req.Prior.Status != pipeline.StatusComplete
}

// Plan implements pipeline.Kind. It reads the photos' digests and plans the zip; without a token
// it reads nothing remote; with one it checks the input against the trainer's schema and says
// what becomes of the destination.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	cfg, err := parseConfig(req)
	if err != nil {
		return nil, err
	}
	p := &planner{req: req, cfg: cfg, res: &pipeline.Result{}}
	if _, err := req.Prior.Decode(&p.prior); err != nil {
		p.res.Warnings = append(p.res.Warnings, fmt.Sprintf("recorded data unreadable, starting afresh: %v", err))
	}
	return p.plan(ctx)
}

// planner is one Plan call's working set.
type planner struct {
	req       *pipeline.Request
	cfg       *config
	prior     record
	res       *pipeline.Result
	digest    string
	originals []photo.Original
	resume    resumption
}

// resumption is what plan expects apply to do with a training an earlier run recorded.
type resumption int

const (
	fresh    resumption = iota // start a new training
	reattach                   // follow the recorded training (interrupted or still running)
	lookup                     // an intent without an id: look for the training before creating one
	retry                      // the last apply failed: re-attach if it runs on, else start anew
)

func (p *planner) plan(ctx context.Context) (*pipeline.Result, error) {
	cfg, res := p.cfg, p.res
	if cfg.ImagesKnown {
		photos := newPhotoSet(p.req.Env)
		defer photos.Close()
		var err error
		if p.originals, err = photos.originals(ctx, cfg.Images); err != nil {
			return nil, err
		}
		if p.digest, err = digestImages(p.originals); err != nil {
			return nil, err
		}
		res.Digest = map[string]string{"images": p.digest}
	}
	if !cfg.LimitsKnown {
		res.Notes = append(res.Notes, fmt.Sprintf("limit %q is known only after apply: the input is held to it then", cfg.unknownLimit))
	} else if cfg.InputKnown {
		refusal, warns := checkLimits(p.req, cfg)
		res.Warnings = append(res.Warnings, warns...)
		if refusal != "" {
			res.Refused = refusal
			return res, nil
		}
	}
	p.resume = p.resumption()
	p.resumeNote()
	if err := p.zip(ctx); err != nil {
		return nil, err
	}
	if res.Refused != "" {
		return res, nil
	}
	p.trainsNote()
	for _, c := range p.req.Consultants {
		res.Notes = append(res.Notes, c.Address+": "+c.Note)
	}
	if cfg.Destination != "" {
		res.Effects = []string{replicate.AddsVersionTo(cfg.Destination)}
	}
	p.cost(ctx)

	if !replicate.HasToken(p.req.Env) {
		res.Notes = append(res.Notes, "no REPLICATE_API_TOKEN: the trainer's input schema and the destination are checked at apply")
		return res, nil
	}
	c, err := replicate.FromEnv(p.req.Env)
	if err != nil {
		return nil, err
	}
	if cfg.Trainer != "" && cfg.InputKnown {
		warn, err := checkInputAgainst(cfg, func() (map[string]replicate.InputSpec, error) {
			return c.PlanTrainerInputs(ctx, p.req.Env, cfg.Trainer) // -refresh=false: the cache only
		})
		if err != nil {
			return nil, err
		}
		if warn != "" {
			res.Warnings = append(res.Warnings, warn)
		}
	}
	if cfg.Destination != "" {
		if err := p.destinationNotes(ctx, c); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// readsRemote reports whether plan may read the destination: not under -refresh=false, nor for
// a stage whose recorded training is up to date (a no-change plan reads next to nothing).
func (p *planner) readsRemote() bool {
	if p.req.Env != nil && p.req.Env.NoRefresh {
		return false
	}
	return !(p.req.Unchanged && p.upToDate())
}

// upToDate reports whether the recorded run trained exactly this config to its end.
func (p *planner) upToDate() bool {
	return p.req.Prior != nil && p.req.Prior.Status == pipeline.StatusComplete && p.sameTraining()
}

// resumption says what apply will do with the training the recorded run started: only a
// training of exactly this config (photos, max_side, trainer, destination, input) is followed
// again.
func (p *planner) resumption() resumption {
	pr := p.req.Prior
	if pr == nil || pr.Status == pipeline.StatusComplete || !p.sameTraining() {
		return fresh
	}
	switch {
	case p.prior.TrainingID == "":
		return lookup
	case pr.Status == pipeline.StatusFailed:
		return retry
	}
	return reattach
}

// sameTraining reports whether the recorded intent is a training of the current config.
func (p *planner) sameTraining() bool {
	in, cfg := p.prior.Intent, p.cfg
	if in == nil || !cfg.InputKnown || p.digest == "" || in.Digest != p.digest || in.Trainer != cfg.Trainer ||
		in.Destination != cfg.Destination || maxSideOf(in.MaxSide) != cfg.MaxSide {
		return false
	}
	return jsonEqual(in.Input, publicInput(trainerInput(cfg.Input, in.FileURL), false))
}

// maxSideOf reads a recorded max_side (0: recorded before there was one, i.e. the default).
func maxSideOf(n int) int {
	if n <= 0 {
		return photo.DefaultMaxSide
	}
	return n
}

func jsonEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func (p *planner) resumeNote() {
	res := p.res
	switch p.resume {
	case reattach:
		res.Notes = append(res.Notes, fmt.Sprintf("re-attaches to training %s started by an earlier run (not a new one): nothing is zipped, uploaded or paid again", p.prior.TrainingID))
		res.Reattach = []string{"training " + p.prior.TrainingID} // plan's action: reattach
	case retry:
		res.Notes = append(res.Notes, fmt.Sprintf("re-attaches to training %s if it still runs (the last apply stopped following it), else starts a new one", p.prior.TrainingID))
	case lookup:
		res.Notes = append(res.Notes, fmt.Sprintf("an earlier run was about to start a training at %s: looks it up first and re-attaches to it if it exists", p.prior.Intent.CreatedAfter.Format(time.RFC3339)))
	}
}

// zip says what apply zips and uploads: the recorded upload when it holds these photos
// prepared the same way, nothing when the recorded training of these photos is up to date, else
// the archive planned here, refused when it is over the files API's limit.
func (p *planner) zip(ctx context.Context) error {
	cfg, res := p.cfg, p.res
	switch {
	case !cfg.ImagesKnown:
		res.Notes = append(res.Notes, "zips and uploads the images (known after the checks run)")
	case p.resume == reattach:
	case p.prior.Upload.reusable(p.digest, cfg.MaxSide):
		res.Notes = append(res.Notes, fmt.Sprintf("%s (%s); reuses upload %s if it still exists", p.prior.Upload.summary(), shortDigest(p.digest), p.prior.Upload.FileID))
	case p.upToDate():
		// Up to date: preparing every photo of every subject on each plan would only be thrown away.
		res.Notes = append(res.Notes, fmt.Sprintf("%d photos (%s), as the recorded training: zipped and uploaded again only if it re-runs", len(cfg.Images), shortDigest(p.digest)))
	default:
		a, err := planArchive(ctx, p.req.Env, cfg.MaxSide, p.originals)
		if err != nil {
			return err
		}
		if why := a.OverLimit(); why != "" {
			res.Refused = why + "; nothing was uploaded or spent"
			return nil
		}
		res.Notes = append(res.Notes, fmt.Sprintf("%s (%s)", a.Summary(), shortDigest(p.digest)))
	}
	return nil
}

func (p *planner) trainsNote() {
	cfg := p.cfg
	trainer, dest := cfg.Trainer, cfg.Destination
	if trainer == "" {
		trainer = "(trainer known after apply)"
	}
	if dest == "" {
		dest = "(destination known after apply)"
	}
	if cfg.InputKnown {
		p.res.Notes = append(p.res.Notes, fmt.Sprintf("trains %s into %s with input %s", trainer, dest, describeInput(cfg.Input)))
	} else {
		p.res.Notes = append(p.res.Notes, fmt.Sprintf("trains %s into %s (input known after apply)", trainer, dest))
	}
}

// cost is plan's estimate of the paid work apply would start: a new training, or nothing for one
// it re-attaches to. The engine counts it only when the stage runs.
func (p *planner) cost(ctx context.Context) {
	p.res.CostLimit = p.cfg.Settings.MaxCostUSD
	if p.resume == reattach {
		p.res.Cost = &pipeline.Cost{Estimate: true, Basis: fmt.Sprintf("re-attaches to training %s: nothing new is paid for", p.prior.TrainingID)}
		return
	}
	c, warn := estimate(ctx, p.req, p.cfg, p.prior)
	p.res.Cost = c
	if warn != "" {
		p.res.Warnings = append(p.res.Warnings, warn)
	}
}

// destinationNotes say what becomes of the destination and which version previous_version
// names: the one recorded before an interrupted training started (never the version that
// training is producing), the subject's own on a shared destination, else the model's latest.
func (p *planner) destinationNotes(ctx context.Context, c *replicate.Client) error {
	cfg, res := p.cfg, p.res
	n := sharedBy(p.req, cfg.Destination)
	recorded := p.resume != fresh && p.prior.PreviousVersion != nil
	if n > 0 {
		prev := replicate.LedgerOf(p.req.State).PreviousOwn(cfg.Destination, "")
		if recorded {
			prev = *p.prior.PreviousVersion
		}
		res.Notes = append(res.Notes, fmt.Sprintf("destination %s is shared by %d subjects: previous_version is this subject's own previous version (%s); apps must pin each subject's version (`pipeline output -json version`), never the model's latest",
			cfg.Destination, n, orNone(prev)))
	} else if recorded {
		res.Notes = append(res.Notes, fmt.Sprintf("previous_version stays %s, read before the interrupted training started", orNone(*p.prior.PreviousVersion)))
	}
	if p.resume == reattach || p.resume == retry {
		return nil // the training runs into the destination: it exists
	}
	if !p.readsRemote() {
		if p.req.Env != nil && p.req.Env.NoRefresh {
			res.Notes = append(res.Notes, fmt.Sprintf("-refresh=false: destination %s is not read now; apply makes sure it exists", cfg.Destination))
		}
		return nil
	}
	if n > 0 && knownToExist(c, cfg.Destination) {
		return nil
	}
	m, err := c.GetModel(ctx, cfg.DestOwner, cfg.DestName)
	switch {
	case replicate.IsNotFound(err) && n > 0:
		res.Notes = append(res.Notes, fmt.Sprintf("destination %s will be created once for all %d subjects (private, hardware %s)", cfg.Destination, n, cfg.Hardware))
	case replicate.IsNotFound(err):
		res.Notes = append(res.Notes, fmt.Sprintf("destination %s will be created (private, hardware %s)", cfg.Destination, cfg.Hardware))
	case err != nil:
		return fmt.Errorf("reading destination %s: %w", cfg.Destination, err)
	case n > 0 || recorded:
	case m.LatestVersion != nil && replicate.LedgerOf(p.req.State).Gone()[m.LatestVersion.ID]:
		res.Notes = append(res.Notes, fmt.Sprintf("destination %s exists; its latest version %s is being deleted by this pipeline: previous_version is the newest one kept", cfg.Destination, m.LatestVersion.ID))
	case m.LatestVersion != nil:
		res.Notes = append(res.Notes, fmt.Sprintf("destination %s exists; its latest version %s becomes previous_version", cfg.Destination, m.LatestVersion.ID))
	default:
		res.Notes = append(res.Notes, fmt.Sprintf("destination %s exists and has no version yet", cfg.Destination))
	}
	return nil
}

func orNone(v string) string {
	if v == "" {
		return "none yet"
	}
	return v
}

// checkAgainstTrainer checks the input against the trainer version's schema. A schema that cannot
// be read (null, not OpenAPI, no TrainingInput/Input) skips the local check with a warning: the
// API still validates the input when the training is created.
func checkAgainstTrainer(ctx context.Context, c *replicate.Client, req *pipeline.Request, cfg *config) (string, error) {
	return checkInputAgainst(cfg, func() (map[string]replicate.InputSpec, error) { return c.TrainerInputs(ctx, cfg.Trainer) })
}

// checkInputAgainst checks the input against the schema read reads.
func checkInputAgainst(cfg *config, read func() (map[string]replicate.InputSpec, error)) (string, error) {
	specs, err := read()
	if replicate.IsSchemaUnknown(err) {
		return fmt.Sprintf("schema unknown: the input is not checked locally: %v", err), nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the input schema of trainer %s: %w", cfg.Trainer, err)
	}
	if err := checkInputs(cfg.Trainer, specs, cfg.Input); err != nil {
		return "", err
	}
	return "", nil
}

// shortDigest shortens "sha256:abcdef..." for notes.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19] + "…"
	}
	return d
}

// run is one Apply call's working set.
type run struct {
	req       *pipeline.Request
	cfg       *config
	c         *replicate.Client
	rec       record
	digest    string
	originals []photo.Original
	warns     []string
	now       func() time.Time
}

// save persists the record; an error means state could not be written, which ends the run (the
// caller must not go on to spend money it could not record).
func (r *run) save() error {
	if err := r.req.Recorder.Save(r.rec); err != nil {
		return fmt.Errorf("recording progress in state: %w", err)
	}
	return nil
}

// Apply implements pipeline.Kind. It holds the input to its limits before anything is uploaded
// or started (plan refused it already; apply may see values plan could not).
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	cfg, err := parseConfig(req)
	if err != nil {
		return nil, err
	}
	if !cfg.ImagesKnown || !cfg.InputKnown || !cfg.LimitsKnown || cfg.Trainer == "" || cfg.Destination == "" {
		return nil, fmt.Errorf("images, input, limits, trainer and destination must be known at apply")
	}
	if refusal, _ := checkLimits(req, cfg); refusal != "" {
		return nil, &pipeline.RefusedError{Reason: refusal}
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, err
	}
	photos := newPhotoSet(req.Env)
	defer photos.Close()
	r := &run{req: req, cfg: cfg, c: c, now: time.Now}
	if r.originals, err = photos.originals(ctx, cfg.Images); err != nil {
		return nil, err
	}
	if r.digest, err = digestImages(r.originals); err != nil {
		return nil, err
	}
	var prior record
	if _, err := req.Prior.Decode(&prior); err != nil {
		r.warns = append(r.warns, fmt.Sprintf("recorded data unreadable, starting afresh: %v", err))
	}
	if resumable(req) {
		r.rec = prior
	} else {
		// A finished run or changed inputs: start over, but keep the upload for reuse and the
		// measured speed for estimates.
		r.rec = record{Upload: prior.Upload, SecondsPerStep: prior.SecondsPerStep}
		if prior.TrainingID != "" && req.Prior != nil && req.Prior.Status != pipeline.StatusComplete {
			r.warns = append(r.warns, fmt.Sprintf("training %s of an earlier run with other inputs is no longer followed (it may still be running on Replicate)", prior.TrainingID))
		}
	}

	t, err := r.attach(ctx)
	if err != nil {
		return nil, err
	}
	if t == nil {
		if t, err = r.start(ctx); err != nil {
			return nil, err
		}
	}
	return r.follow(ctx, t)
}

// attach returns the training an earlier run of this instance started (by recorded id, or found by
// its intent), or nil when there is none to continue.
func (r *run) attach(ctx context.Context) (*replicate.Training, error) {
	var t *replicate.Training
	switch {
	case r.rec.TrainingID != "":
		got, err := r.c.GetTraining(ctx, r.rec.TrainingID)
		if replicate.IsNotFound(err) {
			r.warns = append(r.warns, fmt.Sprintf("recorded training %s no longer exists on Replicate: starting a new one", r.rec.TrainingID))
			r.rec.TrainingID, r.rec.Intent = "", nil
			return nil, nil
		}
		if err != nil {
			return nil, r.stop(ctx, fmt.Errorf("re-attaching to training %s: %w", r.rec.TrainingID, err))
		}
		t = got
	case r.rec.Intent != nil:
		// An earlier run was about to create a training: find it before uploading anything.
		once := r.once()
		got, ok, err := replicate.Adopt(ctx, r.c, once, r.saveOnce(once), r.findTraining(r.rec.Intent.FileURL))
		if err != nil {
			return nil, r.stop(ctx, err)
		}
		if !ok {
			r.rec.Intent = nil // none showed up in the confirm window: a fresh intent comes before the create
			return nil, nil
		}
		t = got
	default:
		return nil, nil
	}
	if (replicate.FailedStatus(t.Status) || (t.Status == "canceled" && !r.rec.CanceledEarly)) && r.req.Prior != nil && r.req.Prior.Status == pipeline.StatusFailed {
		// The last apply already reported this failure: this apply is the retry the hint asked for.
		r.warns = append(r.warns, fmt.Sprintf("training %s of the earlier run %s: starting a new one", t.ID, t.Status))
		r.rec.TrainingID, r.rec.Intent, r.rec.CanceledEarly, r.rec.CancelReason = "", nil, false, ""
		return nil, nil
	}
	r.req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("re-attached to training %s (%s) started by an earlier run", t.ID, t.Status)})
	return t, nil
}

// stop handles an error while a training may be running: on Ctrl-C it saves what it knows and
// returns ctx.Err(); otherwise it returns err.
func (r *run) stop(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if serr := r.save(); serr != nil {
			return errors.Join(ctx.Err(), serr)
		}
		return ctx.Err()
	}
	return err
}

// start checks the input against the trainer, uploads the images (or reuses the upload), makes sure
// the destination exists and creates the training, recording the intent first.
func (r *run) start(ctx context.Context) (*replicate.Training, error) {
	warn, err := checkAgainstTrainer(ctx, r.c, r.req, r.cfg)
	if err != nil {
		return nil, err
	}
	if warn != "" {
		r.warns = append(r.warns, warn)
	}
	fileURL, err := r.upload(ctx)
	if err != nil {
		return nil, err
	}
	// Always make sure the destination exists (it may have been deleted since a failed attempt),
	// but keep the previous version read before the first attempt of this run.
	prev, err := r.destination(ctx)
	if err != nil {
		return nil, err
	}
	if r.rec.PreviousVersion == nil {
		r.rec.PreviousVersion = &prev
	}
	return r.create(ctx, fileURL)
}

// upload returns the URL of the images zip, reusing the recorded upload when it holds these
// photos prepared the same way and the file still exists (and will for a while: the trainer
// downloads it when it starts). Otherwise the prepared copies are zipped straight into the
// upload; a zip over the files API's limit is refused before anything is sent.
func (r *run) upload(ctx context.Context) (string, error) {
	req := r.req
	if u := r.rec.Upload; u.reusable(r.digest, r.cfg.MaxSide) {
		f, err := r.c.GetFile(ctx, u.FileID)
		switch {
		case err == nil && (f.ExpiresAt.IsZero() || f.ExpiresAt.After(r.now().Add(time.Hour))) &&
			(f.Checksums["sha256"] == "" || u.ZipSHA256 == "" || f.Checksums["sha256"] == u.ZipSHA256):
			url := f.URL
			if url == "" {
				url = u.URL
			}
			req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("reusing upload %s of the same %d photos", u.FileID, len(r.cfg.Images))})
			return url, nil
		case ctx.Err() != nil:
			return "", ctx.Err()
		}
		// Expired, deleted or unreadable: upload again (cheap next to a training).
	}
	a, err := planArchive(ctx, req.Env, r.cfg.MaxSide, r.originals)
	if err != nil {
		return "", err
	}
	if why := a.OverLimit(); why != "" {
		return "", &pipeline.RefusedError{Reason: why + "; nothing was uploaded or spent"}
	}
	req.Recorder.Progress(pipeline.Progress{Message: "uploading " + strings.TrimPrefix(a.Summary(), "uploads ")})
	f, sum, err := uploadArchive(ctx, r.c, r.cfg.DestName+"-images.zip", a)
	var tooLarge *replicate.UploadTooLargeError
	switch {
	case err != nil && ctx.Err() != nil:
		return "", ctx.Err()
	case errors.As(err, &tooLarge):
		return "", &pipeline.RefusedError{Reason: tooLarge.Error()}
	case err != nil:
		return "", fmt.Errorf("uploading the training zip: %w", err)
	case f.URL == "":
		return "", fmt.Errorf("the upload %s has no urls.get to pass to the trainer", f.ID)
	}
	r.rec.Upload = &uploadRecord{Digest: r.digest, ZipSHA256: sum, FileID: f.ID, URL: f.URL,
		MaxSide: r.cfg.MaxSide, Prepared: photo.PrepareVersion, Photos: len(a.Entries), ZipBytes: a.Size, OriginalBytes: a.Originals}
	if err := r.save(); err != nil {
		return "", err
	}
	return f.URL, nil
}

// create records the intent, creates the training and records its id, through
// replicate.CreateOnce: a create without a clear answer (5xx, dropped connection) is reconciled by
// listing trainings before it is ever repeated.
func (r *run) create(ctx context.Context, fileURL string) (*replicate.Training, error) {
	cfg := r.cfg
	in := trainerInput(cfg.Input, fileURL)
	r.rec.Intent = &intentRecord{
		Digest: r.digest, FileURL: fileURL, Trainer: cfg.Trainer, Destination: cfg.Destination,
		Input: publicInput(in, false), MaxSide: cfg.MaxSide,
	}
	r.rec.TrainingID, r.rec.CanceledEarly, r.rec.CancelReason = "", false, ""
	once := r.once()
	t, found, err := replicate.CreateOnce(ctx, r.c, once, r.saveOnce(once),
		func(ctx context.Context) (*replicate.Training, string, error) {
			t, err := r.c.CreateTraining(ctx, cfg.Trainer, cfg.Destination, in)
			if err != nil {
				return nil, "", err
			}
			return t, t.ID, nil
		},
		r.findTraining(fileURL))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("starting the training: %w", err)
	}
	if found {
		r.warns = append(r.warns, fmt.Sprintf("the create call got no clear answer, but training %s exists: following it", t.ID))
	}
	return t, nil
}

// once is the record's intent as replicate.CreateOnce sees it.
func (r *run) once() *replicate.Intent {
	in := &replicate.Intent{ID: r.rec.TrainingID}
	if r.rec.Intent != nil {
		in.At = r.rec.Intent.CreatedAfter
	}
	return in
}

// saveOnce writes CreateOnce's intent back into the record (its field names predate CreateOnce,
// so that a state written by an earlier release resumes) and saves it; once the id is known the
// subject's ledger lists the training as in flight.
func (r *run) saveOnce(once *replicate.Intent) func() error {
	return func() error {
		r.rec.TrainingID = once.ID
		if r.rec.Intent != nil {
			r.rec.Intent.CreatedAfter = once.At
		}
		if err := r.save(); err != nil || once.ID == "" {
			return err
		}
		return r.ledger(func(l *replicate.Ledger) { l.Started(once.ID, r.cfg.Destination) })
	}
}

// findTraining looks for the training created with this upload after the intent.
func (r *run) findTraining(fileURL string) replicate.FindFunc[*replicate.Training] {
	in := trainerInput(r.cfg.Input, fileURL)
	return func(ctx context.Context, after time.Time) (*replicate.Training, string, bool, error) {
		t, err := r.c.FindTraining(ctx, r.cfg.TrainerVersion, in, after)
		if err != nil || t == nil {
			return nil, "", false, err
		}
		return t, t.ID, true, nil
	}
}

// ledger records what this training means for the subject's versions.
func (r *run) ledger(change func(*replicate.Ledger)) error {
	if err := replicate.UpdateLedger(r.req, change); err != nil {
		return fmt.Errorf("recording progress in state: %w", err)
	}
	return nil
}

// finish turns a finished training into the stage's result.
func (r *run) finish(t *replicate.Training) (*pipeline.Result, error) {
	switch t.Status {
	case "succeeded":
		if t.Output.Version == "" {
			return nil, fmt.Errorf("training %s succeeded but reported no output.version; hint: check the training on replicate.com", t.ID)
		}
	case "canceled":
		if !r.rec.CanceledEarly {
			return nil, fmt.Errorf("training %s was canceled outside this pipeline (on replicate.com or by another client); hint: run apply again to start a new training", t.ID)
		}
	default:
		msg := strings.TrimSpace(t.Error)
		if msg == "" {
			msg = "no error text"
		}
		if tail := lastLines(t.Logs, 3); tail != "" {
			msg += "; last log lines: " + tail
		}
		return nil, fmt.Errorf("training %s %s: %s; hint: fix the cause and run apply again (a new training starts, the upload is reused)", t.ID, t.Status, msg)
	}
	lossVal := lossMap(replicate.ParseLogs(t.Logs).Losses)
	if t.Status == "succeeded" {
		err := r.ledger(func(l *replicate.Ledger) {
			l.Produced(t.Output.Version, t.ID, len(r.cfg.Images), r.digest, r.now().UTC())
		})
		if err != nil {
			return nil, err
		}
	}
	prev := ""
	if r.rec.PreviousVersion != nil {
		prev = *r.rec.PreviousVersion
	}
	sent := trainerInput(r.cfg.Input, "")
	if r.rec.Intent != nil {
		sent = trainerInput(r.cfg.Input, r.rec.Intent.FileURL)
	}
	cost, warn := actualCost(r.cfg, t)
	if warn != "" {
		r.warns = append(r.warns, warn)
	}
	res := &pipeline.Result{
		Cost: cost,
		Outputs: map[string]cty.Value{
			"training_id":      cty.StringVal(t.ID),
			"version":          cty.StringVal(t.Output.Version),
			"weights":          cty.StringVal(t.Output.Weights),
			"losses":           lossVal,
			"image_count":      cty.NumberIntVal(int64(len(r.cfg.Images))),
			"images_digest":    cty.StringVal(r.digest),
			"input":            inputOutput(sent),
			"previous_version": cty.StringVal(prev),
			"cost_usd":         costOutput(cost),
		},
		Warnings: r.warns,
	}
	return res, nil
}

// costOutput is the training's actual cost in USD, for generate's report (`training =
// train.lora`); null when the API reported no run time to price.
func costOutput(c *pipeline.Cost) cty.Value {
	if c == nil || c.Estimate {
		return cty.NullVal(cty.Number)
	}
	return cty.NumberFloatVal(c.USD)
}

// lastLines returns the last n non-empty log lines (after \r redraws), joined with " | ".
func lastLines(logs string, n int) string {
	var lines []string
	for _, l := range strings.FieldsFunc(logs, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
