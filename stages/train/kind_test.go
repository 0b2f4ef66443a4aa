package train

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
	"github.com/pipeline-dev/pipeline/stages/lossgate"
)

var goodInput = []any{"steps", 1000, "lora_rank", 16, "learning_rate", 4e-4, "trigger_word", "TOK"}

func TestApplyHappyPath(t *testing.T) {
	h := newHarness(t)
	h.lockstep() // every step is seen
	rec := &recorder{}
	in := input(goodInput...)

	plan, err := Kind{}.Plan(context.Background(), h.request(in, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(plan.Notes, "\n")
	if !strings.Contains(notes, "destination acme/ana-lora will be created (private, hardware gpu-t4)") {
		t.Fatalf("plan notes:\n%s", notes)
	}
	if h.srv.Count("POST /v1/trainings") != 0 || h.srv.Count("uploaded file") != 0 || h.srv.Count("created model") != 0 {
		t.Fatal("plan changed something remote")
	}

	res, err := h.apply(h.request(in, nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	out := res.Outputs
	version := str(out["version"])
	if !strings.HasPrefix(version, "acme/ana-lora:") || len(version) < len("acme/ana-lora:")+10 {
		t.Fatalf("version %q", version)
	}
	if ids := h.srv.VersionIDs("acme", "ana-lora"); len(ids) != 1 || "acme/ana-lora:"+ids[0] != version {
		t.Fatalf("server versions %v, output %s", ids, version)
	}
	if str(out["training_id"]) == "" || !strings.Contains(str(out["weights"]), "trained_model.tar") {
		t.Fatalf("outputs %v", out)
	}
	if str(out["images_digest"]) != plan.Digest["images"] || plan.Digest["images"] == "" {
		t.Fatalf("images_digest %s, plan digest %s", str(out["images_digest"]), plan.Digest["images"])
	}
	if n, _ := out["image_count"].AsBigFloat().Int64(); n != 3 {
		t.Fatalf("image_count %d", n)
	}
	if str(out["previous_version"]) != "" {
		t.Fatalf("previous_version %q for a new model", str(out["previous_version"]))
	}
	losses := out["losses"].AsValueMap()
	if len(losses) < 30 {
		t.Fatalf("only %d loss points", len(losses))
	}
	if l, ok := losses["1000"]; !ok || l.AsBigFloat().Sign() <= 0 {
		t.Fatalf("no loss at the last step: %v", losses)
	}
	inOut := out["input"].AsValueMap()
	if !inOut["steps"].RawEquals(cty.NumberIntVal(1000)) || str(inOut["trigger_word"]) != "TOK" || inOut["input_images"] != cty.NilVal {
		t.Fatalf("input output %v", inOut)
	}
	for k, want := range map[string]int{"created training": 1, "uploaded file": 1, "created model": 1} {
		if got := h.srv.Count(k); got != want {
			t.Errorf("%s: %d, want %d", k, got, want)
		}
	}
	r := rec.record()
	if r.TrainingID != str(out["training_id"]) || r.Intent == nil || r.Upload == nil || r.Status != "succeeded" {
		t.Fatalf("recorded %+v", r)
	}
	var sawLoss, sawETA bool
	for _, p := range rec.progress {
		if _, ok := p.Metrics["loss"]; ok && p.Total == 1000 {
			sawLoss = true
		}
		if strings.Contains(p.Message, "ETA") {
			sawETA = true
		}
	}
	if !sawLoss || !sawETA {
		t.Fatalf("progress lacks loss or ETA: %+v", rec.progress)
	}

	// A re-run (-replace) of the same photos: the upload is reused, a second training starts and
	// previous_version is the first training's version.
	rec2 := &recorder{}
	res2, err := h.apply(h.request(in, &pipeline.Prior{Status: pipeline.StatusComplete, SameInputs: true, Data: rec.data}, rec2))
	if err != nil {
		t.Fatal(err)
	}
	if h.srv.Count("uploaded file") != 1 || h.srv.Count("created training") != 2 || h.srv.Count("created model") != 1 {
		t.Fatalf("re-run: uploads %d trainings %d models %d", h.srv.Count("uploaded file"), h.srv.Count("created training"), h.srv.Count("created model"))
	}
	if str(res2.Outputs["previous_version"]) != version {
		t.Fatalf("previous_version %q, want %q", str(res2.Outputs["previous_version"]), version)
	}
}

func TestPlanChecksInputAgainstTrainerSchema(t *testing.T) {
	h := newHarness(t)
	_, err := Kind{}.Plan(context.Background(), h.request(input("lora_rnak", 16, "steps", 9000), nil, &recorder{}))
	if err == nil {
		t.Fatal("plan accepted an unknown input and an out-of-bounds value")
	}
	for _, want := range []string{`did you mean "lora_rank"?`, "steps = 9000 is above the trainer's maximum 6000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	// Apply refuses the same before spending anything.
	_, err = h.apply(h.request(input("lora_rnak", 16), nil, &recorder{}))
	if err == nil || h.srv.Count("uploaded file") != 0 || h.srv.Count("POST /v1/trainings") != 0 {
		t.Fatalf("apply with a bad input: err %v, uploads %d", err, h.srv.Count("uploaded file"))
	}

	// Without a token nothing remote is read.
	h.srv.AddModel("acme", "ana-lora", 1)
	noToken := &pipeline.Env{Getenv: func(string) string { return "" }}
	req := h.request(input(goodInput...), nil, &recorder{})
	req.Env = noToken
	before := h.srv.Count("GET version") + h.srv.Count("GET /v1/models/{owner}/{name}")
	res, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if after := h.srv.Count("GET version") + h.srv.Count("GET /v1/models/{owner}/{name}"); after != before {
		t.Fatal("plan without a token read the API")
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "no REPLICATE_API_TOKEN") || res.Digest["images"] == "" {
		t.Fatalf("notes %v digest %v", res.Notes, res.Digest)
	}
	// With a token and an existing model: no creation announced.
	res, err = Kind{}.Plan(context.Background(), h.request(input(goodInput...), nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Join(res.Notes, "\n"); strings.Contains(n, "will be created") || !strings.Contains(n, "becomes previous_version") {
		t.Fatalf("notes %s", n)
	}
}

func TestDigestFollowsPhotoContent(t *testing.T) {
	h := newHarness(t)
	p1, err := Kind{}.Plan(context.Background(), h.request(input(goodInput...), nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := Kind{}.Plan(context.Background(), h.request(input(goodInput...), nil, &recorder{}))
	if p1.Digest["images"] != p2.Digest["images"] {
		t.Fatal("same photos, different digests")
	}
	writePhoto(t, filepath.Join(h.dir, "photo1.jpg"), 7) // retouched
	p3, _ := Kind{}.Plan(context.Background(), h.request(input(goodInput...), nil, &recorder{}))
	if p3.Digest["images"] == p1.Digest["images"] {
		t.Fatal("changed photo content kept the digest: training would not re-run")
	}
}

// TestResumeAfterKillAtEveryStep kills the apply at each remote step and proves the next apply
// finishes with exactly one training created. hf_token is set so that reconciling matches a
// training whose listed input shows the secret redacted.
func TestResumeAfterKillAtEveryStep(t *testing.T) {
	in := input(append(append([]any{}, goodInput...), "hf_token", "hf_very_secret")...)
	cases := []struct {
		name string
		kill func(r *recorder)
		// created is how many trainings exist right after the kill.
		created int
	}{
		// Save 1 records the upload, Save 2 the intent, Save 3 the training id.
		{"after the upload is recorded", func(r *recorder) { r.CancelAfter = 1 }, 0},
		{"after the intent is recorded", func(r *recorder) { r.CancelAfter = 2 }, 0},
		{"after create, before the id is recorded", func(r *recorder) { r.FailOn = 3 }, 1},
		{"after the id is recorded", func(r *recorder) { r.CancelAfter = 3 }, 1},
		{"while polling", func(r *recorder) { r.CancelAfterProgress = 4 }, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.lockstep() // killed while following, not after the watcher ran it to its end
			rec := &recorder{}
			c.kill(rec)
			_, err := h.apply(h.request(in, nil, rec))
			if err == nil {
				t.Fatal("killed apply returned no error")
			}
			if got := h.srv.Count("created training"); got != c.created {
				t.Fatalf("after the kill: %d trainings, want %d", got, c.created)
			}
			if strings.Contains(string(rec.data), "hf_very_secret") {
				t.Fatal("the secret reached state")
			}
			status := pipeline.StatusInterrupted
			if err == errKilled || strings.Contains(err.Error(), errKilled.Error()) {
				status = pipeline.StatusRunning // the process died: state still says running
			}
			rec2 := &recorder{}
			res, err := h.apply(h.request(in, resume(rec, status), rec2))
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if got := h.srv.Count("created training"); got != 1 {
				t.Fatalf("%d trainings created in all, want exactly 1", got)
			}
			if h.srv.Count("uploaded file") != 1 {
				t.Fatalf("%d uploads, want 1 (reused on resume)", h.srv.Count("uploaded file"))
			}
			if !strings.HasPrefix(str(res.Outputs["version"]), "acme/ana-lora:") {
				t.Fatalf("outputs %v", res.Outputs)
			}
			if strings.Contains(string(rec2.data), "hf_very_secret") {
				t.Fatal("the secret reached state")
			}
		})
	}
}

func TestCreateWithoutClearAnswerIsReconciled(t *testing.T) {
	const createPath = "/v1/models/ostris/flux-dev-lora-trainer/versions/"
	cases := []struct {
		name    string
		fault   func(h *harness)
		creates int // create requests that reach the server
	}{
		{"500 after the training was created", func(h *harness) { h.srv.FailAfter("POST", createPath, 500, 1) }, 1},
		{"connection dropped after create", func(h *harness) { h.srv.Drop("POST", createPath, 1) }, 1},
		{"503 before anything was created", func(h *harness) { h.srv.Fail("POST", createPath, 503, 1) }, 2},
		{"500 after create, listed only from the fourth look", func(h *harness) {
			h.srv.FailAfter("POST", createPath, 500, 1)
			h.srv.ListLag(3)
		}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			c.fault(h)
			rec := &recorder{}
			res, err := h.apply(h.request(input(goodInput...), nil, rec))
			if err != nil {
				t.Fatal(err)
			}
			if got := h.srv.Count("created training"); got != 1 {
				t.Fatalf("%d trainings created, want 1", got)
			}
			if got := h.srv.Count("POST /v1/trainings"); got != c.creates {
				t.Fatalf("%d create calls, want %d", got, c.creates)
			}
			if h.srv.Count("GET /v1/trainings") == 0 {
				t.Fatal("never listed trainings to reconcile")
			}
			if str(res.Outputs["training_id"]) != rec.record().TrainingID {
				t.Fatal("recorded id differs from the output")
			}
		})
	}
}

func TestStormsOf429And5xx(t *testing.T) {
	h := newHarness(t)
	h.srv.RateLimit("GET", "/v1/trainings/", 2, 4)
	h.srv.Fail("GET", "/v1/trainings/", 503, 3)
	h.srv.RateLimit("POST", "/v1/files", 1, 2)
	h.srv.Fail("POST", "/v1/files", 502, 2)
	h.srv.RateLimit("POST", "/v1/models/ostris/", 3, 2)
	res, err := h.apply(h.request(input(goodInput...), nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if h.srv.Count("created training") != 1 || h.srv.Count("429") != 8 || h.srv.Count("5xx") != 5 {
		t.Fatalf("trainings %d, 429s %d, 5xx %d", h.srv.Count("created training"), h.srv.Count("429"), h.srv.Count("5xx"))
	}
	if str(res.Outputs["version"]) == "" {
		t.Fatal("no version")
	}
	// Retry-After was honoured (the client waited 1–3 s per 429 instead of hammering).
	var waited bool
	for _, d := range h.sleep.delays {
		if d.Seconds() >= 2.9 {
			waited = true
		}
	}
	if !waited {
		t.Fatalf("Retry-After not honoured: delays %v", h.sleep.delays)
	}

	// A longer outage while polling: the stage gives up waiting with a hint, the training runs
	// on, and the next apply re-attaches to it.
	h2 := newHarness(t)
	rec := &recorder{}
	rec.OnProgress = func(n int) {
		if n == 2 {
			h2.srv.Fail("GET", "/v1/trainings/", 500, 100)
		}
	}
	_, err = h2.apply(h2.request(input(goodInput...), nil, rec))
	if err == nil || !strings.Contains(err.Error(), "run apply again to re-attach") {
		t.Fatalf("outage: %v", err)
	}
	h2.srv.Fail("GET", "/v1/trainings/", 500, 0)
	clearFaults(h2)
	if _, err := h2.apply(h2.request(input(goodInput...), resume(rec, pipeline.StatusFailed), &recorder{})); err != nil {
		t.Fatal(err)
	}
	if h2.srv.Count("created training") != 1 {
		t.Fatalf("%d trainings after the outage", h2.srv.Count("created training"))
	}
}

// clearFaults uses up any remaining injected failures on training GETs.
func clearFaults(h *harness) {
	c, _ := replicate.New(h.srv.URL(), h.srv.Token(), replicate.WithRetry(0, 0))
	for i := 0; i < 200; i++ {
		if _, err := c.GetTraining(context.Background(), "none"); replicate.IsNotFound(err) {
			return
		}
	}
}

func TestFailedTraining(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	in := input("steps", 1000, "trigger_word", "FAIL")
	_, err := h.apply(h.request(in, nil, rec))
	if err == nil || !strings.Contains(err.Error(), "CUDA out of memory") || pipeline.IsRefused(err) {
		t.Fatalf("failed training: %v", err)
	}
	if !strings.Contains(err.Error(), "failed") || !strings.Contains(err.Error(), rec.record().TrainingID) {
		t.Fatalf("error does not name the training: %v", err)
	}
	// The next apply (state: failed) starts a new training instead of re-reporting the old one.
	_, err = h.apply(h.request(in, resume(rec, pipeline.StatusFailed), &recorder{}))
	if err == nil || h.srv.Count("created training") != 2 {
		t.Fatalf("retry: err %v, trainings %d", err, h.srv.Count("created training"))
	}
	if h.srv.Count("uploaded file") != 1 {
		t.Fatalf("retry re-uploaded: %d uploads", h.srv.Count("uploaded file"))
	}
}

func TestTrainingCanceledElsewhere(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	other, _ := replicate.New(h.srv.URL(), h.srv.Token())
	rec.OnProgress = func(n int) {
		if n == 3 {
			if id := rec.record().TrainingID; id != "" {
				if _, err := other.CancelTraining(context.Background(), id); err != nil {
					t.Error(err)
				}
			}
		}
	}
	_, err := h.apply(h.request(input(goodInput...), nil, rec))
	if err == nil || !strings.Contains(err.Error(), "canceled outside this pipeline") || pipeline.IsRefused(err) {
		t.Fatalf("canceled training: %v", err)
	}
}

func TestCtrlCNeverCancelsTheTraining(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{CancelAfterProgress: 3}
	_, err := h.apply(h.request(input(goodInput...), nil, rec))
	if err != context.Canceled {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	id := rec.record().TrainingID
	if id == "" || h.srv.Count("canceled training") != 0 {
		t.Fatalf("id %q, cancels %d", id, h.srv.Count("canceled training"))
	}
	if st := h.srv.TrainingStatus(id); st != "processing" && st != "starting" {
		t.Fatalf("training %s after Ctrl-C", st)
	}
}

// gateConsultants are what the engine hands train for a dependent loss_gate (it asks the gate's
// kind, a pipeline.Consultant; nothing when cancel_early is off).
func gateConsultants(cancelEarly bool) []pipeline.Consultation {
	c := lossgate.Kind{}.Consultation(cty.ObjectVal(map[string]cty.Value{
		"training":     cty.DynamicVal,
		"min_loss":     cty.NumberFloatVal(0.2),
		"max_loss":     cty.NullVal(cty.Number),
		"smoothing":    cty.NullVal(cty.Number),
		"cancel_early": cty.BoolVal(cancelEarly),
		"on_fail":      cty.StringVal("delete_version"),
	}), "train.lora")
	if c == nil {
		return nil
	}
	c.Address = "loss_gate.fit"
	return []pipeline.Consultation{*c}
}

func TestCancelEarly(t *testing.T) {
	// lora_rank 48 overfits: the simulated loss settles near 0.06.
	in := input("steps", 1000, "lora_rank", 48, "trigger_word", "TOK")
	h := newHarness(t)
	h.lockstep() // the gate judges every step the watcher sees
	rec := &recorder{}
	req := h.request(in, nil, rec)
	req.Blocks = []pipeline.Block{maxLimit("lora_rank", 48)} // on purpose: the gate is under test
	req.Consultants = gateConsultants(true)
	res, err := h.apply(req)
	if err != nil {
		t.Fatal(err)
	}
	if h.srv.Count("canceled training") != 1 {
		t.Fatalf("training not cancelled (%d)", h.srv.Count("canceled training"))
	}
	r := rec.record()
	if !r.CanceledEarly || !strings.Contains(r.CancelReason, "< min_loss 0.2") || r.Step >= 1000 {
		t.Fatalf("record %+v", r)
	}
	if str(res.Outputs["version"]) != "" || len(res.Outputs["losses"].AsValueMap()) == 0 {
		t.Fatalf("outputs %v", res.Outputs)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "cancelled training") {
		t.Fatalf("warnings %v", res.Warnings)
	}
	if ids := h.srv.VersionIDs("acme", "ana-lora"); len(ids) != 0 {
		t.Fatalf("a cancelled training produced versions %v", ids)
	}

	// Too many steps overfit only late in the run: cancelled past the middle, before the end.
	hs := newHarness(t)
	hs.lockstep()
	recs := &recorder{}
	req = hs.request(input("steps", 2000, "lora_rank", 16, "trigger_word", "TOK"), nil, recs)
	req.Consultants = gateConsultants(true)
	if _, err := hs.apply(req); err != nil {
		t.Fatal(err)
	}
	if r := recs.record(); hs.srv.Count("canceled training") != 1 || r.Step <= 1000 || r.Step >= 2000 {
		t.Fatalf("2000 steps: cancels %d, cancelled at step %d", hs.srv.Count("canceled training"), r.Step)
	}

	// Without cancel_early the same training runs to the end.
	h2 := newHarness(t)
	req = h2.request(in, nil, &recorder{})
	req.Blocks = []pipeline.Block{maxLimit("lora_rank", 48)}
	req.Consultants = gateConsultants(false)
	res, err = h2.apply(req)
	if err != nil || h2.srv.Count("canceled training") != 0 || str(res.Outputs["version"]) == "" {
		t.Fatalf("without cancel_early: err %v cancels %d", err, h2.srv.Count("canceled training"))
	}

	// A healthy training is never cancelled.
	h3 := newHarness(t)
	req = h3.request(input(goodInput...), nil, &recorder{})
	req.Consultants = gateConsultants(true)
	if _, err := h3.apply(req); err != nil || h3.srv.Count("canceled training") != 0 {
		t.Fatalf("healthy: err %v cancels %d", err, h3.srv.Count("canceled training"))
	}
}

func TestRecordedDataIsJSONWithoutSecrets(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	in := input("steps", 1000, "wandb_api_key", "wb_secret_123", "trigger_word", "TOK")
	res, err := h.apply(h.request(in, nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.data, &m); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rec.data), "wb_secret_123") {
		t.Fatal("secret in state")
	}
	if _, ok := res.Outputs["input"].AsValueMap()["wandb_api_key"]; ok {
		t.Fatal("secret in outputs")
	}
	for _, p := range rec.progress {
		if strings.Contains(p.Message, "wb_secret_123") {
			t.Fatal("secret in progress")
		}
	}
	_ = replicatetest.SecretMarker
}

func TestExpiredUploadIsReplacedAndChangedInputsStartOver(t *testing.T) {
	h := newHarness(t)
	h.lockstep()
	in := input(goodInput...)
	rec := &recorder{CancelAfterProgress: 4}
	if _, err := h.apply(h.request(in, nil, rec)); err != context.Canceled {
		t.Fatalf("interrupt: %v", err)
	}
	first := rec.record()
	// The upload expired (deleted on the server).
	req, _ := http.NewRequest(http.MethodDelete, h.srv.URL()+"/v1/files/"+first.Upload.FileID, nil)
	req.Header.Set("Authorization", "Bearer "+h.srv.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("deleting the upload: %v %v", err, resp)
	}
	resp.Body.Close()
	// Inputs changed after the interruption: the in-flight training is not re-attached (its
	// outputs would not match the config); a new one starts with a fresh upload.
	prior := resume(rec, pipeline.StatusInterrupted)
	prior.SameInputs = false
	rec2 := &recorder{}
	res, err := h.apply(h.request(input("steps", 800, "trigger_word", "TOK"), prior, rec2))
	if err != nil {
		t.Fatal(err)
	}
	if h.srv.Count("created training") != 2 || h.srv.Count("uploaded file") != 2 {
		t.Fatalf("trainings %d uploads %d", h.srv.Count("created training"), h.srv.Count("uploaded file"))
	}
	if rec2.record().TrainingID == first.TrainingID || !strings.Contains(strings.Join(res.Warnings, "\n"), first.TrainingID+" of an earlier run with other inputs") {
		t.Fatalf("warnings %v", res.Warnings)
	}
}

// A training the API aborts (terminated before it ran) ends the follow as a failure with the
// usual hint instead of being polled forever; the next apply starts a new one.
func TestAbortedTrainingIsAFailure(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	aborted := false
	rec.OnProgress = func(int) {
		if id := rec.record().TrainingID; id != "" && !aborted {
			aborted = h.srv.Abort(id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec.cancel = cancel
	_, err := Kind{}.Apply(ctx, h.request(input(goodInput...), nil, rec))
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "aborted") || !strings.Contains(err.Error(), "run apply again") {
		t.Fatalf("aborted training: %v (ctx %v)", err, ctx.Err())
	}
	if _, err := h.apply(h.request(input(goodInput...), resume(rec, pipeline.StatusFailed), &recorder{})); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := h.srv.Count("created training"); n != 2 {
		t.Errorf("%d trainings, want 2 (the aborted one replaced)", n)
	}
}

// The API shows a training's input with the trainer's defaults filled in. Reconciling a create
// whose answer was lost must still find the training by what was sent (a subset match), not
// create a second, paid one.
func TestReconcileFindsTrainingWhoseInputGainedDefaults(t *testing.T) {
	h := newHarness(t)
	h.srv.EchoDefaults(true)
	h.srv.FailAfter("POST", "/v1/models/ostris/flux-dev-lora-trainer/versions/", 500, 1)
	rec := &recorder{}
	res, err := h.apply(h.request(input(append([]any{"hf_token", "hf_secret_value"}, goodInput...)...), nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created training"); n != 1 {
		t.Fatalf("%d trainings created, want exactly 1 (the lost one found despite the added defaults)", n)
	}
	if str(res.Outputs["training_id"]) != rec.record().TrainingID {
		t.Fatal("recorded id differs from the output")
	}
}

// A legacy trainer declares its inputs as components.schemas.Input: the local check still works.
// A trainer version whose openapi_schema is null or junk cannot be checked locally: plan and apply
// go on with a warning (Replicate validates the input when the training is created).
func TestTrainerSchemaLegacyAndUnknown(t *testing.T) {
	h := newHarness(t)
	h.srv.SetVersionSchema(replicatetest.TrainerVersion, replicatetest.LegacyTrainerSchema())
	_, err := Kind{}.Plan(context.Background(), h.request(input("lora_rnak", 16), nil, &recorder{}))
	if err == nil || !strings.Contains(err.Error(), `did you mean "lora_rank"?`) {
		t.Fatalf("plan against a legacy (Input) schema: %v, want the unknown input refused", err)
	}
	for name, schema := range map[string]string{"null": `null`, "junk": `"not a schema"`} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.srv.SetVersionSchema(replicatetest.TrainerVersion, []byte(schema))
			res, err := Kind{}.Plan(context.Background(), h.request(input(goodInput...), nil, &recorder{}))
			if err != nil {
				t.Fatalf("plan with an unknown schema: %v", err)
			}
			if !strings.Contains(strings.Join(res.Warnings, "\n"), "schema unknown") {
				t.Errorf("plan warnings %q lack the skipped check", res.Warnings)
			}
			res, err = h.apply(h.request(input(goodInput...), nil, &recorder{}))
			if err != nil {
				t.Fatalf("apply with an unknown schema: %v", err)
			}
			if !strings.Contains(strings.Join(res.Warnings, "\n"), "schema unknown") || str(res.Outputs["version"]) == "" {
				t.Errorf("apply: warnings %q, version %q", res.Warnings, str(res.Outputs["version"]))
			}
		})
	}
}

// A version a loss gate deleted may still be the model's latest_version while Replicate finishes
// the (asynchronous) delete: previous_version is the newest version the pipeline kept.
func TestPreviousVersionSkipsVersionsBeingDeleted(t *testing.T) {
	h := newHarness(t)
	h.srv.DeleteDelay(50)
	h.srv.AddModel("acme", "ana-lora", 2)
	ids := h.srv.VersionIDs("acme", "ana-lora") // newest first
	c, _ := replicate.FromEnv(h.env)
	if err := c.DeleteVersion(context.Background(), "acme", "ana-lora", ids[0]); err != nil {
		t.Fatal(err)
	}
	gate, _ := json.Marshal(map[string]any{"last_accepted": nil, "deleted_versions": []string{"acme/ana-lora:" + ids[0]}})
	req := h.request(input(goodInput...), nil, &recorder{})
	req.State = records{{Kind: "loss_gate", Name: "fit", Status: pipeline.StatusRefused, Data: gate}}
	res, err := h.apply(req)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := str(res.Outputs["previous_version"]), "acme/ana-lora:"+ids[1]; got != want {
		t.Fatalf("previous_version %s, want %s (the version being deleted skipped)", got, want)
	}
}

type records = pipeline.RecordList

// A training that answers 404 while it is followed is gone: the stage forgets it (so the next
// apply does not re-attach to it) and says to run apply again, instead of counting failed polls.
func TestTrainingVanishedWhileFollowed(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	removed := false
	rec.OnProgress = func(int) {
		if id := rec.record().TrainingID; id != "" && !removed {
			removed = h.srv.RemoveTraining(id)
		}
	}
	_, err := h.apply(h.request(input(goodInput...), nil, rec))
	if err == nil || !strings.Contains(err.Error(), "vanished on Replicate") || !strings.Contains(err.Error(), "run apply again to start a new one") {
		t.Fatalf("vanished training: %v", err)
	}
	if n := h.srv.Count("GET /v1/trainings/{id}"); n > 2 {
		t.Errorf("%d polls of a training that answers 404, want it given up at once", n)
	}
	if got := rec.record(); got.TrainingID != "" || got.Intent != nil {
		t.Fatalf("the vanished training is still recorded: %+v", got)
	}
	if _, err := h.apply(h.request(input(goodInput...), resume(rec, pipeline.StatusFailed), &recorder{})); err != nil {
		t.Fatalf("next apply: %v", err)
	}
	if n := h.srv.Count("created training"); n != 2 {
		t.Errorf("%d trainings, want 2 (a new one after the vanished one)", n)
	}
}

// Replicate keeps the name of a deleted model: creating it answers 409 although GET answers 404.
// The error says so and what to do, instead of a bare conflict.
func TestDestinationNameOfADeletedModel(t *testing.T) {
	h := newHarness(t)
	h.srv.ReserveModelName("acme", "ana-lora")
	_, err := h.apply(h.request(input(goodInput...), nil, &recorder{}))
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "reserved") || !strings.Contains(err.Error(), "use another destination name") {
		t.Fatalf("creating a reserved destination: %v", err)
	}
	if n := h.srv.Count("created training"); n != 0 {
		t.Errorf("%d trainings created without a destination", n)
	}
}
