// Package train implements the `train` stage kind: it zips a subject's accepted photos reproducibly,
// uploads them once, starts a Replicate training of a Flux LoRA into a destination model and follows
// it to the end, re-attaching after a crash instead of paying for a second training.
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
// and previous_version (the destination's latest version before this training, "" if none).
//
// Crash safety: the stage saves an intent (upload URL, input, time) before it creates the training
// and the training id right after; a later apply re-attaches to the recorded training, or finds the
// one a dead process started (same trainer version, same input including the upload's unique URL,
// created after the intent) before it would ever create another. Ctrl-C never cancels a training.
package train

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Kind is the train stage kind.
type Kind struct{}

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"images": {Type: cty.List(cty.String), Required: true,
			Description: "the photos to train on, e.g. image_check.photos.accepted"},
		"trainer": {Type: cty.String, Check: replicate.CheckTrainer,
			Description: `trainer version "owner/name:version" (default: replicate { trainer })`},
		"destination": {Type: cty.String, Check: replicate.CheckModel("destination", "no version: trainings add versions to it"),
			Description: `model "owner/name" that receives the new version (default: replicate { destination }); created private when missing`},
		"input": {Type: cty.DynamicPseudoType, Default: cty.EmptyObjectVal,
			Description: "trainer inputs by the trainer's own names; input_images is filled in by the stage"},
		"poll_interval": {Type: cty.String, Default: cty.StringVal("5s"), Duration: true, Check: checkPoll,
			Description: "first interval between polls of the training; it backs off from there"},
	},
	Outputs: map[string]cty.Type{
		"training_id":      cty.String,
		"version":          cty.String,
		"weights":          cty.String,
		"losses":           cty.Map(cty.Number),
		"image_count":      cty.Number,
		"images_digest":    cty.String,
		"input":            cty.DynamicPseudoType,
		"previous_version": cty.String,
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

// uploadRecord is an upload of the images zip, reused while its digest matches and the file exists.
type uploadRecord struct {
	Digest    string `json:"digest"`
	ZipSHA256 string `json:"zip_sha256"`
	FileID    string `json:"file_id"`
	URL       string `json:"url"`
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
}

// record is the train stage's private data in state.
type record struct {
	Upload *uploadRecord `json:"upload,omitempty"`
	// PreviousVersion is the destination's latest version before the training ("" if none); it is
	// read once, before the training, because afterwards the latest is the new version.
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
}

// resumable reports whether the recorded data belongs to an unfinished run with the same inputs.
func resumable(req *pipeline.Request) bool {
	return req.Prior != nil && req.Prior.SameInputs && req.Prior.Status != pipeline.StatusComplete
}

// Plan implements pipeline.Kind. Without a token it reads nothing remote; with one it checks the
// input against the trainer's schema and says whether the destination will be created.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	cfg, err := parseConfig(req)
	if err != nil {
		return nil, err
	}
	res := &pipeline.Result{}
	digest := ""
	if cfg.ImagesKnown {
		digest, err = digestImages(cfg.Images)
		if err != nil {
			return nil, err
		}
		res.Digest = map[string]string{"images": digest}
	}
	var prior record
	if _, err := req.Prior.Decode(&prior); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("recorded data unreadable, starting afresh: %v", err))
	}

	if resumable(req) && prior.TrainingID != "" {
		res.Notes = append(res.Notes, fmt.Sprintf("re-attaches to training %s started by an earlier run (not a new one)", prior.TrainingID))
	} else if resumable(req) && prior.Intent != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("an earlier run was about to start a training at %s: looks it up first and re-attaches to it if it exists", prior.Intent.CreatedAfter.Format(time.RFC3339)))
	}
	switch {
	case !cfg.ImagesKnown:
		res.Notes = append(res.Notes, "zips and uploads the images (known after the checks run)")
	case prior.Upload != nil && prior.Upload.Digest == digest:
		res.Notes = append(res.Notes, fmt.Sprintf("zips %d images (%s); reuses upload %s if it still exists", len(cfg.Images), shortDigest(digest), prior.Upload.FileID))
	default:
		res.Notes = append(res.Notes, fmt.Sprintf("zips %d images (%s) and uploads them", len(cfg.Images), shortDigest(digest)))
	}
	trainer, dest := cfg.Trainer, cfg.Destination
	if trainer == "" {
		trainer = "(trainer known after apply)"
	}
	if dest == "" {
		dest = "(destination known after apply)"
	}
	if cfg.InputKnown {
		res.Notes = append(res.Notes, fmt.Sprintf("trains %s into %s with input %s", trainer, dest, describeInput(cfg.Input)))
	} else {
		res.Notes = append(res.Notes, fmt.Sprintf("trains %s into %s (input known after apply)", trainer, dest))
	}
	for _, c := range req.Consultants {
		res.Notes = append(res.Notes, c.Address+": "+c.Note)
	}
	if cfg.Destination != "" {
		res.Effects = []string{replicate.AddsVersionTo(cfg.Destination)}
	}

	if !replicate.HasToken(req.Env) {
		res.Notes = append(res.Notes, "no REPLICATE_API_TOKEN: the trainer's input schema and the destination are checked at apply")
		return res, nil
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, err
	}
	if cfg.Trainer != "" && cfg.InputKnown {
		warn, err := checkAgainstTrainer(ctx, c, req, cfg)
		if err != nil {
			return nil, err
		}
		if warn != "" {
			res.Warnings = append(res.Warnings, warn)
		}
	}
	if cfg.Destination != "" {
		m, err := c.GetModel(ctx, cfg.DestOwner, cfg.DestName)
		switch {
		case replicate.IsNotFound(err):
			res.Notes = append(res.Notes, fmt.Sprintf("destination %s will be created (private, hardware %s)", cfg.Destination, cfg.Hardware))
		case err != nil:
			return nil, fmt.Errorf("reading destination %s: %w", cfg.Destination, err)
		case m.LatestVersion != nil && replicate.LedgerOf(req.State).Gone()[m.LatestVersion.ID]:
			res.Notes = append(res.Notes, fmt.Sprintf("destination %s exists; its latest version %s is being deleted by this pipeline: previous_version is the newest one kept", cfg.Destination, m.LatestVersion.ID))
		case m.LatestVersion != nil:
			res.Notes = append(res.Notes, fmt.Sprintf("destination %s exists; its latest version %s becomes previous_version", cfg.Destination, m.LatestVersion.ID))
		default:
			res.Notes = append(res.Notes, fmt.Sprintf("destination %s exists and has no version yet", cfg.Destination))
		}
	}
	return res, nil
}

// checkAgainstTrainer checks the input against the trainer version's schema. A schema that cannot
// be read (null, not OpenAPI, no TrainingInput/Input) skips the local check with a warning: the
// API still validates the input when the training is created.
func checkAgainstTrainer(ctx context.Context, c *replicate.Client, req *pipeline.Request, cfg *config) (string, error) {
	specs, err := c.TrainerInputs(ctx, cfg.Trainer)
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
	req    *pipeline.Request
	cfg    *config
	c      *replicate.Client
	rec    record
	digest string
	warns  []string
	now    func() time.Time
}

// save persists the record; an error means state could not be written, which ends the run (the
// caller must not go on to spend money it could not record).
func (r *run) save() error {
	if err := r.req.Recorder.Save(r.rec); err != nil {
		return fmt.Errorf("recording progress in state: %w", err)
	}
	return nil
}

// Apply implements pipeline.Kind.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	cfg, err := parseConfig(req)
	if err != nil {
		return nil, err
	}
	if !cfg.ImagesKnown || !cfg.InputKnown || cfg.Trainer == "" || cfg.Destination == "" {
		return nil, fmt.Errorf("images, input, trainer and destination must be known at apply")
	}
	c, err := replicate.FromEnv(req.Env)
	if err != nil {
		return nil, err
	}
	r := &run{req: req, cfg: cfg, c: c, now: time.Now}
	r.digest, err = digestImages(cfg.Images)
	if err != nil {
		return nil, err
	}
	var prior record
	if _, err := req.Prior.Decode(&prior); err != nil {
		r.warns = append(r.warns, fmt.Sprintf("recorded data unreadable, starting afresh: %v", err))
	}
	if resumable(req) {
		r.rec = prior
	} else {
		// A finished run or changed inputs: start over, but keep the upload for reuse.
		r.rec = record{Upload: prior.Upload}
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
		got, ok, err := replicate.Adopt(ctx, once, r.saveOnce(once), r.findTraining(r.rec.Intent.FileURL))
		if err != nil {
			return nil, r.stop(ctx, err)
		}
		if !ok {
			r.rec.Intent = nil // nothing was created: a fresh intent comes before the create
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

// upload returns the URL of the images zip, reusing the recorded upload when its digest matches and
// the file still exists (and will for a while: the trainer downloads it when it starts).
func (r *run) upload(ctx context.Context) (string, error) {
	req := r.req
	if u := r.rec.Upload; u != nil && u.Digest == r.digest && u.FileID != "" {
		f, err := r.c.GetFile(ctx, u.FileID)
		switch {
		case err == nil && (f.ExpiresAt.IsZero() || f.ExpiresAt.After(r.now().Add(time.Hour))) &&
			(f.Checksums["sha256"] == "" || u.ZipSHA256 == "" || f.Checksums["sha256"] == u.ZipSHA256):
			url := f.URL
			if url == "" {
				url = u.URL
			}
			req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("reusing upload %s of the same %d images", u.FileID, len(r.cfg.Images))})
			return url, nil
		case ctx.Err() != nil:
			return "", ctx.Err()
		}
		// Expired, deleted or unreadable: upload again (cheap next to a training).
	}
	data, sum, err := buildZip(r.cfg.Images)
	if err != nil {
		return "", err
	}
	req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("uploading %d images (%d KB zip)", len(r.cfg.Images), len(data)>>10)})
	name := r.cfg.DestName + "-images.zip"
	f, err := r.c.UploadFile(ctx, name, data, "application/zip")
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("uploading the images zip: %w", err)
	}
	if f.URL == "" {
		return "", fmt.Errorf("the upload %s has no urls.get to pass to the trainer", f.ID)
	}
	r.rec.Upload = &uploadRecord{Digest: r.digest, ZipSHA256: sum, FileID: f.ID, URL: f.URL}
	if err := r.save(); err != nil {
		return "", err
	}
	return f.URL, nil
}

// destination makes sure the destination model exists and returns its latest version before the
// training ("owner/name:id", "" if none).
func (r *run) destination(ctx context.Context) (string, error) {
	cfg := r.cfg
	m, err := r.c.GetModel(ctx, cfg.DestOwner, cfg.DestName)
	if replicate.IsNotFound(err) {
		r.req.Recorder.Progress(pipeline.Progress{Message: fmt.Sprintf("creating destination %s (private, hardware %s)", cfg.Destination, cfg.Hardware)})
		m, err = r.c.CreateModel(ctx, cfg.DestOwner, cfg.DestName, cfg.Hardware)
		if err != nil {
			return "", fmt.Errorf("creating destination model %s: %w", cfg.Destination, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("reading destination model %s: %w", cfg.Destination, err)
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

// create records the intent, creates the training and records its id, through
// replicate.CreateOnce: a create without a clear answer (5xx, dropped connection) is reconciled by
// listing trainings before it is ever repeated.
func (r *run) create(ctx context.Context, fileURL string) (*replicate.Training, error) {
	cfg := r.cfg
	in := trainerInput(cfg.Input, fileURL)
	r.rec.Intent = &intentRecord{
		Digest: r.digest, FileURL: fileURL, Trainer: cfg.Trainer, Destination: cfg.Destination,
		Input: publicInput(in, false),
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

// maxPollErrors is how many polls in a row may fail (after the client's own retries) before the
// stage gives up waiting; the training keeps running and the next apply re-attaches.
const maxPollErrors = 5

// follow polls the training to its end, reporting progress and consulting the stages that watch
// it (a loss_gate with cancel_early).
func (r *run) follow(ctx context.Context, t *replicate.Training) (*pipeline.Result, error) {
	poll := r.cfg.Poll
	lastStatus := ""
	failures := 0
	for {
		prog := replicate.ParseLogs(t.Logs)
		r.rec.Status, r.rec.Step, r.rec.Total = t.Status, prog.Step, prog.Total
		r.progress(t, prog)
		if t.Status != lastStatus {
			if lastStatus != "" {
				poll.Reset()
			}
			lastStatus = t.Status
		}
		if !r.rec.CanceledEarly && !t.Terminal() {
			ct, err := r.consult(ctx, t, prog)
			if err != nil {
				return nil, err
			}
			if ct != nil {
				t = ct
				continue
			}
		}
		if t.Terminal() {
			break
		}
		if err := replicate.Sleep(ctx, poll.Next()); err != nil {
			return nil, r.stop(ctx, err)
		}
		nt, err := r.c.GetTraining(ctx, t.ID)
		if replicate.IsNotFound(err) {
			// Gone on Replicate (deleted, or another account's token): polling it again cannot
			// help, and the next apply must not re-attach to it either.
			id := t.ID
			r.rec.TrainingID, r.rec.Intent, r.rec.Status = "", nil, ""
			if serr := r.save(); serr != nil {
				return nil, serr
			}
			if serr := r.ledger(func(l *replicate.Ledger) { l.Finished(id) }); serr != nil {
				return nil, serr
			}
			return nil, fmt.Errorf("training %s vanished on Replicate while it was followed (%v); hint: run apply again to start a new one (the upload is reused)", id, err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, r.stop(ctx, ctx.Err())
			}
			failures++
			if failures >= maxPollErrors {
				return nil, r.stop(ctx, fmt.Errorf("following training %s: %w (%d polls failed in a row; the training keeps running: run apply again to re-attach)", t.ID, err, failures))
			}
			continue
		}
		failures = 0
		t = nt
	}
	r.rec.Status = t.Status
	if err := r.save(); err != nil {
		return nil, err
	}
	return r.finish(t)
}

// consult asks the stages watching this training whether to stop it; when one says so, the
// training is cancelled (on purpose: the only way a training is ever cancelled) and the canceled
// training returned.
func (r *run) consult(ctx context.Context, t *replicate.Training, prog replicate.LogProgress) (*replicate.Training, error) {
	observed := cty.ObjectVal(map[string]cty.Value{
		"step": cty.NumberIntVal(int64(prog.Step)), "total": cty.NumberIntVal(int64(prog.Total)), "losses": lossMap(prog.Losses),
	})
	for _, c := range r.req.Consultants {
		stop, err := c.Consult(observed)
		if err != nil || stop == "" {
			continue // a consultant that cannot judge yet never stops a paid training
		}
		r.rec.CanceledEarly = true
		r.rec.CancelReason = fmt.Sprintf("%s (%s cancel_early)", stop, c.Address)
		if err := r.save(); err != nil {
			return nil, err
		}
		r.warns = append(r.warns, "cancelled training "+t.ID+" early: "+r.rec.CancelReason)
		ct, err := r.c.CancelTraining(ctx, t.ID)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, r.stop(ctx, ctx.Err())
		case err != nil:
			// The gate still refuses the finished training; only GPU time is lost.
			r.warns = append(r.warns, fmt.Sprintf("cancelling training %s failed (%v): following it to the end instead", t.ID, err))
		case ct != nil && ct.Terminal():
			if ct.Logs == "" {
				ct.Logs = t.Logs
			}
			return ct, nil
		}
		return nil, nil
	}
	return nil, nil
}

// progress reports step/total, the smoothed loss and an ETA.
func (r *run) progress(t *replicate.Training, prog replicate.LogProgress) {
	p := pipeline.Progress{Current: int64(prog.Step), Total: int64(prog.Total), Metrics: map[string]float64{}}
	msg := fmt.Sprintf("training %s %s", t.ID, t.Status)
	if prog.Total > 0 {
		msg += fmt.Sprintf(", step %d/%d", prog.Step, prog.Total)
	}
	if sm := replicate.SmoothLosses(prog.Losses, 0, prog.Total); len(sm) > 0 {
		p.Metrics["loss"] = sm[len(sm)-1]
		p.Metrics["raw_loss"] = prog.Losses[len(prog.Losses)-1].Loss
		msg += fmt.Sprintf(", loss %.3f", sm[len(sm)-1])
	}
	if t.StartedAt != nil && prog.Step > 0 && prog.Total > prog.Step && !t.Terminal() {
		elapsed := r.now().Sub(*t.StartedAt)
		if elapsed > 0 {
			eta := time.Duration(float64(elapsed) / float64(prog.Step) * float64(prog.Total-prog.Step))
			p.Metrics["eta_seconds"] = eta.Seconds()
			msg += ", ETA " + eta.Round(time.Second).String()
		}
	}
	p.Message = msg
	r.req.Recorder.Progress(p)
}

// lossMap is a loss series as train's `losses` output: step (as a string key) → loss.
func lossMap(losses []replicate.LossPoint) cty.Value {
	if len(losses) == 0 {
		return cty.MapValEmpty(cty.Number)
	}
	m := make(map[string]cty.Value, len(losses))
	for _, l := range losses {
		m[strconv.Itoa(l.Step)] = cty.NumberFloatVal(l.Loss)
	}
	return cty.MapVal(m)
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
	res := &pipeline.Result{
		Outputs: map[string]cty.Value{
			"training_id":      cty.StringVal(t.ID),
			"version":          cty.StringVal(t.Output.Version),
			"weights":          cty.StringVal(t.Output.Weights),
			"losses":           lossVal,
			"image_count":      cty.NumberIntVal(int64(len(r.cfg.Images))),
			"images_digest":    cty.StringVal(r.digest),
			"input":            inputOutput(sent),
			"previous_version": cty.StringVal(prev),
		},
		Warnings: r.warns,
	}
	return res, nil
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
