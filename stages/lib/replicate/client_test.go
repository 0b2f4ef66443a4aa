package replicate_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// fakeClock records the client's waits and advances a fake time instead of sleeping.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sleeps = append(f.sleeps, d)
	f.t = f.t.Add(d)
	return ctx.Err()
}

func (f *fakeClock) total() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var t time.Duration
	for _, d := range f.sleeps {
		t += d
	}
	return t
}

func newClient(t *testing.T, srv *replicatetest.Server) (*replicate.Client, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithSleep(clk.sleep), replicate.WithClock(clk.now), replicate.WithRetry(5, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

func newServer(t *testing.T) *replicatetest.Server {
	t.Helper()
	srv := replicatetest.NewServer(replicatetest.Options{})
	t.Cleanup(srv.Close)
	return srv
}

// photoZip makes a zip with n textured PNG photos.
func photoZip(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i < n; i++ {
		img := image.NewNRGBA(image.Rect(0, 0, 64, 64))
		for y := 0; y < 64; y++ {
			for x := 0; x < 64; x++ {
				v := uint8(120 + (x*7+y*13+i*31)%40)
				img.Set(x, y, color.NRGBA{v, v - 20, v - 40, 255})
			}
		}
		w, err := zw.Create("photo" + string(rune('a'+i)) + ".png")
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(w, img); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func upload(t *testing.T, c *replicate.Client) *replicate.File {
	t.Helper()
	f, err := c.UploadFile(context.Background(), "images.zip", photoZip(t, 3), "application/zip")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func follow(t *testing.T, c *replicate.Client, id string) *replicate.Training {
	t.Helper()
	for i := 0; i < 20; i++ {
		tr, err := c.GetTraining(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Terminal() {
			return tr
		}
	}
	t.Fatalf("training %s never finished", id)
	return nil
}

func TestCreateModelSurvivesServerErrorsAndLostAnswers(t *testing.T) {
	for name, fault := range map[string]func(*replicatetest.Server){
		"two 503s, nothing created":   func(s *replicatetest.Server) { s.Fail("POST", "/v1/models", 503, 2) },
		"created, then a 500":         func(s *replicatetest.Server) { s.FailAfter("POST", "/v1/models", 500, 1) },
		"created, connection dropped": func(s *replicatetest.Server) { s.Drop("POST", "/v1/models", 1) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := newServer(t)
			c, _ := newClient(t, srv)
			fault(srv)
			m, err := c.CreateModel(context.Background(), "acme", "ana-lora", "gpu-t4")
			if err != nil {
				t.Fatalf("one server error ended the run: %v", err)
			}
			if m.Owner != "acme" || m.Name != "ana-lora" || m.Visibility != "private" {
				t.Fatalf("model %+v", m)
			}
			if n := srv.Count("created model"); n != 1 {
				t.Fatalf("%d models created, want 1", n)
			}
		})
	}
}

func TestTrainingHappyPath(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	if _, err := c.GetModel(ctx, "acme", "ana-lora"); !replicate.IsNotFound(err) {
		t.Fatalf("GetModel of a missing model: want 404, got %v", err)
	}
	m, err := c.CreateModel(ctx, "acme", "ana-lora", "gpu-t4")
	if err != nil {
		t.Fatal(err)
	}
	if m.Visibility != "private" || m.LatestVersion != nil {
		t.Fatalf("new model = %+v", m)
	}
	f := upload(t, c)
	if !strings.HasPrefix(f.URL, srv.URL()) || f.Size == 0 || f.Checksums["sha256"] == "" {
		t.Fatalf("file = %+v", f)
	}
	input := map[string]any{"input_images": f, "steps": 1000, "lora_rank": 16, "trigger_word": "TOK"}
	tr, err := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", input)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status != "starting" || tr.Version != replicatetest.TrainerVersion || tr.Input["input_images"] != f.URL {
		t.Fatalf("created training = %+v", tr)
	}
	done := follow(t, c, tr.ID)
	if done.Status != "succeeded" || !strings.HasPrefix(done.Output.Version, "acme/ana-lora:") || done.Output.Weights == "" {
		t.Fatalf("finished training = %+v", done)
	}
	prog := replicate.ParseLogs(done.Logs)
	if prog.Step != 1000 || prog.Total != 1000 || len(prog.Losses) < 30 {
		t.Fatalf("progress = step %d/%d, %d losses", prog.Step, prog.Total, len(prog.Losses))
	}
	last := prog.Losses[len(prog.Losses)-1].Loss
	if last < 0.25 || last > 0.36 {
		t.Errorf("final loss of research defaults = %.3f, want 0.25..0.36", last)
	}
	vs, err := c.ListVersions(ctx, "acme", "ana-lora")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || "acme/ana-lora:"+vs[0].ID != done.Output.Version {
		t.Fatalf("versions = %+v, want the training's %s", vs, done.Output.Version)
	}
	weights, err := c.Download(ctx, done.Output.Weights)
	if err != nil || len(weights) == 0 {
		t.Fatalf("weights: %d bytes, %v", len(weights), err)
	}
	if n := srv.Count("created training"); n != 1 {
		t.Errorf("created trainings = %d, want 1", n)
	}
}

func TestListVersionsFollowsAbsoluteNextLinks(t *testing.T) {
	srv := newServer(t) // page size 3
	srv.AddModel("acme", "bob-lora", 8)
	c, _ := newClient(t, srv)
	vs, err := c.ListVersions(context.Background(), "acme", "bob-lora")
	if err != nil {
		t.Fatal(err)
	}
	want := srv.VersionIDs("acme", "bob-lora")
	if len(vs) != 8 {
		t.Fatalf("got %d versions, want 8", len(vs))
	}
	for i := range vs {
		if vs[i].ID != want[i] {
			t.Fatalf("version %d = %s, want %s (newest first)", i, vs[i].ID, want[i])
		}
		if i > 0 && vs[i].CreatedAt.After(vs[i-1].CreatedAt) {
			t.Fatalf("versions not newest first at %d", i)
		}
	}
	if n := srv.Count("GET /v1/models/{owner}/{name}/versions"); n != 3 {
		t.Errorf("pages fetched = %d, want 3", n)
	}
}

func TestRateLimitStormHonoursRetryAfter(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 1)
	srv.RateLimit("GET", "/v1/models/acme", 2, 4)
	c, clk := newClient(t, srv)
	start := time.Now()
	m, err := c.GetModel(context.Background(), "acme", "ana-lora")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "ana-lora" {
		t.Fatalf("model = %+v", m)
	}
	if n := srv.Count("429"); n != 4 {
		t.Errorf("429 answers = %d, want 4", n)
	}
	if got := clk.total(); got != 8*time.Second {
		t.Errorf("waited %v in total, want 4×Retry-After 2s = 8s (sleeps %v)", got, clk.sleeps)
	}
	if real := time.Since(start); real > 5*time.Second {
		t.Errorf("the test really waited %v: sleeps must go through the injected clock", real)
	}
}

func TestRateLimitOnCreateIsRetriedWithTheSameBody(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 0)
	c, clk := newClient(t, srv)
	f := upload(t, c)
	srv.RateLimit("POST", "/v1/models/ostris", 1, 2)
	tr, err := c.CreateTraining(context.Background(), replicatetest.Trainer, "acme/ana-lora", map[string]any{"input_images": f.URL, "steps": 500})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Input["steps"] != float64(500) || tr.Input["input_images"] != f.URL {
		t.Fatalf("the retried create lost its body: input = %v", tr.Input)
	}
	if n := srv.Count("created training"); n != 1 {
		t.Errorf("created trainings = %d, want 1", n)
	}
	if n := srv.Count("POST /v1/trainings"); n != 3 {
		t.Errorf("create attempts = %d, want 3 (two 429s, then success)", n)
	}
	if clk.total() != 2*time.Second {
		t.Errorf("waited %v, want 2s", clk.total())
	}
}

func TestServerErrorOnGetIsRetried(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 2)
	srv.Fail("GET", "/v1/models/acme/ana-lora", 503, 3)
	c, clk := newClient(t, srv)
	if _, err := c.GetModel(context.Background(), "acme", "ana-lora"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Count("GET /v1/models/{owner}/{name}"); n != 4 {
		t.Errorf("attempts = %d, want 4", n)
	}
	if len(clk.sleeps) != 3 {
		t.Fatalf("backoff sleeps = %v, want 3", clk.sleeps)
	}
	for i, d := range clk.sleeps {
		base := 100 * time.Millisecond << i
		if d < base/2 || d > base {
			t.Errorf("backoff %d = %v, want jittered within [%v, %v]", i, d, base/2, base)
		}
	}
}

func TestServerErrorStormGivesUpWithHint(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 1)
	srv.Fail("GET", "/v1/models/acme", 500, 100)
	c, _ := newClient(t, srv)
	_, err := c.GetModel(context.Background(), "acme", "ana-lora")
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 500 {
		t.Fatalf("err = %v, want an APIError 500", err)
	}
	if !strings.Contains(err.Error(), "hint") || !strings.Contains(err.Error(), "get model acme/ana-lora") {
		t.Errorf("error lacks operation or hint: %v", err)
	}
	if n := srv.Count("GET /v1/models/{owner}/{name}"); n != 6 {
		t.Errorf("attempts = %d, want 1 + 5 retries", n)
	}
}

func TestServerErrorOnCreateIsNotRetried(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 0)
	c, _ := newClient(t, srv)
	f := upload(t, c)
	input := map[string]any{"input_images": f.URL, "steps": 1000}
	srv.Fail("POST", "/v1/models/ostris", 500, 1)
	_, err := c.CreateTraining(context.Background(), replicatetest.Trainer, "acme/ana-lora", input)
	if !replicate.IsMaybeCreated(err) {
		t.Fatalf("err = %v, want MaybeCreatedError", err)
	}
	if n := srv.Count("POST /v1/trainings"); n != 1 {
		t.Errorf("create attempts = %d, want exactly 1 (never blindly retried)", n)
	}
	if n := srv.Count("created training"); n != 0 {
		t.Errorf("created = %d, want 0", n)
	}
}

func TestMaybeCreatedIsReconciledWithFindTraining(t *testing.T) {
	for _, mode := range []string{"5xx after create", "dropped connection"} {
		t.Run(mode, func(t *testing.T) {
			srv := newServer(t)
			srv.AddModel("acme", "ana-lora", 0)
			c, _ := newClient(t, srv)
			f := upload(t, c)
			input := map[string]any{"input_images": f.URL, "steps": 1000, "hf_token": "hf_secret"}
			intent := time.Now()
			if mode == "dropped connection" {
				srv.Drop("POST", "/v1/models/ostris", 1)
			} else {
				srv.FailAfter("POST", "/v1/models/ostris", 502, 1)
			}
			_, err := c.CreateTraining(context.Background(), replicatetest.Trainer, "acme/ana-lora", input)
			if !replicate.IsMaybeCreated(err) {
				t.Fatalf("err = %v, want MaybeCreatedError", err)
			}
			if strings.Contains(err.Error(), srv.Token()) || strings.Contains(err.Error(), "hf_secret") {
				t.Fatalf("error leaks a secret: %v", err)
			}
			got, err := c.FindTraining(context.Background(), replicatetest.Trainer, input, intent)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("FindTraining did not find the training the lost create made")
			}
			if n := srv.Count("created training"); n != 1 {
				t.Errorf("created = %d, want 1", n)
			}
			if got.Logs == "" && got.Status != "starting" {
				t.Errorf("found training should be read in full (with logs)")
			}
		})
	}
}

func TestFindTrainingMatching(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 0)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	f := upload(t, c)
	start := time.Now()
	var want *replicate.Training
	// 7 trainings so the match is on the third page (page size 3), newest first.
	for i := 0; i < 7; i++ {
		in := map[string]any{"input_images": f.URL, "steps": 1000 + i}
		tr, err := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", in)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = tr
		}
	}
	got, err := c.FindTraining(ctx, replicatetest.TrainerVersion, map[string]any{"steps": 1000.0, "input_images": f.URL}, start)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.ID != want.ID {
		t.Fatalf("found %+v, want %s", got, want.ID)
	}
	// Other trainer version, other input, or created before `after`: no match.
	for name, q := range map[string]struct {
		version string
		input   map[string]any
		after   time.Time
	}{
		"other version": {"ostris/flux-dev-lora-trainer:4ffd32160efd92e956d39c5338a9b8fbafca58e03f791f6d8011f3e20e8ea6fa", map[string]any{"input_images": f.URL, "steps": 1000}, start},
		"other input":   {replicatetest.Trainer, map[string]any{"input_images": f.URL, "steps": 999}, start},
		"extra key":     {replicatetest.Trainer, map[string]any{"input_images": f.URL, "steps": 1000, "lora_rank": 16}, start},
		"too old":       {replicatetest.Trainer, map[string]any{"input_images": f.URL, "steps": 1000}, time.Now().Add(time.Hour)},
	} {
		got, err := c.FindTraining(ctx, q.version, q.input, q.after)
		if err != nil || got != nil {
			t.Errorf("%s: got %+v, %v; want no match", name, got, err)
		}
	}
}

func TestUnauthorizedIsClearAndNeverShowsTheToken(t *testing.T) {
	srv := newServer(t)
	c, err := replicate.New(srv.URL(), "r8_wrong_token_123")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetTraining(context.Background(), "abc")
	if !replicate.IsUnauthorized(err) {
		t.Fatalf("err = %v, want 401", err)
	}
	if !strings.Contains(err.Error(), "REPLICATE_API_TOKEN") || strings.Contains(err.Error(), "r8_wrong_token_123") {
		t.Errorf("401 message = %q: must name REPLICATE_API_TOKEN and never the token", err)
	}
	if n := srv.Count("401"); n != 1 {
		t.Errorf("401 answers = %d, want 1 (not retried)", n)
	}
}

func TestFromEnv(t *testing.T) {
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	if replicate.HasToken(env) {
		t.Fatal("HasToken with no token")
	}
	_, err := replicate.FromEnv(env)
	var mt *replicate.MissingTokenError
	if !errors.As(err, &mt) || !strings.Contains(err.Error(), "set REPLICATE_API_TOKEN") || !strings.Contains(err.Error(), "-simulate") {
		t.Fatalf("err = %v", err)
	}
	srv := newServer(t)
	vars := map[string]string{"REPLICATE_API_TOKEN": srv.Token(), "REPLICATE_BASE_URL": srv.URL()}
	env = &pipeline.Env{Getenv: func(k string) string { return vars[k] }}
	c1, err := replicate.FromEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := replicate.FromEnv(env)
	if c1 != c2 || !replicate.HasToken(env) {
		t.Fatal("FromEnv must return one shared client per env")
	}
	if _, err := c1.GetModel(context.Background(), "ostris", "flux-dev-lora-trainer"); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteVersion(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 3)
	ids := srv.VersionIDs("acme", "ana-lora")
	srv.ForbidDelete(ids[2], "Cannot delete this version: other users have made predictions with it.")
	c, _ := newClient(t, srv)
	ctx := context.Background()
	if err := c.DeleteVersion(ctx, "acme", "ana-lora", ids[1]); err != nil {
		t.Fatalf("delete: %v", err)
	}
	err := c.DeleteVersion(ctx, "acme", "ana-lora", ids[2])
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Detail, "other users") {
		t.Fatalf("refused delete: err = %v, want an APIError with the API's detail", err)
	}
	if err := c.DeleteVersion(ctx, "acme", "ana-lora", ids[1]); !replicate.IsNotFound(err) {
		t.Fatalf("second delete: %v, want 404", err)
	}
	vs, _ := c.ListVersions(ctx, "acme", "ana-lora")
	if len(vs) != 2 || vs[0].ID != ids[0] || vs[1].ID != ids[2] {
		t.Fatalf("versions after delete = %+v", vs)
	}
}

func TestTrainerInputs(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	in, err := c.TrainerInputs(context.Background(), replicatetest.Trainer)
	if err != nil {
		t.Fatal(err)
	}
	steps := in["steps"]
	if steps.Type != "integer" || steps.Minimum == nil || *steps.Minimum != 3 || *steps.Maximum != 6000 || steps.Default != float64(1000) {
		t.Errorf("steps = %+v", steps)
	}
	if r := in["lora_rank"]; *r.Maximum != 128 || r.Default != float64(16) {
		t.Errorf("lora_rank = %+v", r)
	}
	if in["input_images"].Format != "uri" || in["hf_token"].Format != "password" {
		t.Errorf("formats: input_images %q, hf_token %q", in["input_images"].Format, in["hf_token"].Format)
	}
	for _, knob := range []string{"num_repeats", "network_alpha"} {
		if _, ok := in[knob]; ok {
			t.Errorf("the flux trainer has no %s", knob)
		}
	}
	if _, err := c.TrainerInputs(context.Background(), "ostris/flux-dev-lora-trainer"); err == nil {
		t.Error("a trainer without a version must be an error")
	}
}

func TestCancelAndFailedTraining(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 0)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	f := upload(t, c)
	tr, err := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", map[string]any{"input_images": f.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTraining(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}
	canceled, err := c.CancelTraining(ctx, tr.ID)
	if err != nil || canceled.Status != "canceled" || !canceled.Terminal() {
		t.Fatalf("cancel: %+v, %v", canceled, err)
	}
	failing, err := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", map[string]any{"input_images": f.URL, "trigger_word": "FAIL"})
	if err != nil {
		t.Fatal(err)
	}
	done := follow(t, c, failing.ID)
	if done.Status != "failed" || !strings.Contains(done.Error, "out of memory") {
		t.Fatalf("FAIL training = %s %q", done.Status, done.Error)
	}
	if vs, _ := c.ListVersions(ctx, "acme", "ana-lora"); len(vs) != 0 {
		t.Fatalf("failed/canceled trainings made versions: %+v", vs)
	}
	// Validation errors are plain 4xx, not "maybe created".
	_, err = c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", map[string]any{"input_images": f.URL, "steps": 9000})
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 422 || replicate.IsMaybeCreated(err) || !strings.Contains(err.Error(), "6000") {
		t.Fatalf("out-of-range steps: %v", err)
	}
	_, err = c.CreateTraining(ctx, replicatetest.Trainer, "acme/missing", map[string]any{"input_images": f.URL})
	if !replicate.IsNotFound(err) || !strings.Contains(err.Error(), "destination") {
		t.Fatalf("missing destination: %v", err)
	}
}

func TestPredictionsAndDownload(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 0)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	f := upload(t, c)
	tr, _ := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", map[string]any{"input_images": f.URL})
	done := follow(t, c, tr.ID)
	input := map[string]any{"prompt": "a photo of TOK", "seed": 1, "guidance_scale": 3.5, "output_format": "png"}
	start := time.Now()
	p, err := c.CreatePrediction(ctx, done.Output.Version, input)
	if err != nil {
		t.Fatal(err)
	}
	found, err := c.FindPrediction(ctx, done.Output.Version, input, start)
	if err != nil || found == nil || found.ID != p.ID {
		t.Fatalf("FindPrediction = %+v, %v", found, err)
	}
	for !p.Terminal() {
		if p, err = c.GetPrediction(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if p.Status != "succeeded" || len(p.Output) != 1 {
		t.Fatalf("prediction = %+v", p)
	}
	data, err := c.Download(ctx, p.Output[0])
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("output is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1024 || b.Dy() != 1024 {
		t.Errorf("output size = %v", b)
	}
	if _, err := c.CreatePrediction(ctx, "acme/ana-lora:nope", input); err == nil || replicate.IsMaybeCreated(err) {
		t.Errorf("unknown version: %v, want a plain 422", err)
	}
}

func TestTransportErrorOnGetIsRetried(t *testing.T) {
	srv := newServer(t)
	clk := &fakeClock{t: time.Now()}
	flaky := &flakyTransport{fails: 2, base: http.DefaultTransport}
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithHTTPClient(&http.Client{Transport: flaky}), replicate.WithSleep(clk.sleep), replicate.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetModel(context.Background(), "ostris", "flux-dev-lora-trainer"); err != nil {
		t.Fatalf("GET after two connection resets: %v", err)
	}
	flaky.fails = 1
	srv.AddModel("acme", "ana-lora", 0)
	_, err = c.CreatePrediction(context.Background(), replicatetest.TrainerVersion, map[string]any{"prompt": "x"})
	if !replicate.IsMaybeCreated(err) {
		t.Fatalf("create after a connection reset: %v, want MaybeCreatedError", err)
	}
}

type flakyTransport struct {
	mu    sync.Mutex
	fails int
	base  http.RoundTripper
}

type resetErr struct{}

func (resetErr) Error() string   { return "read tcp: connection reset by peer" }
func (resetErr) Timeout() bool   { return false }
func (resetErr) Temporary() bool { return true }

func (f *flakyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return nil, resetErr{}
	}
	return f.base.RoundTrip(r)
}

func TestPoller(t *testing.T) {
	p := replicate.Poller{Initial: 2 * time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for i := 0; i < 5; i++ {
		got = append(got, p.Next())
	}
	want := []time.Duration{2 * time.Second, 3 * time.Second, 4500 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("intervals = %v, want %v", got, want)
		}
	}
	p.Reset()
	if d := p.Next(); d != 2*time.Second {
		t.Fatalf("after Reset = %v", d)
	}
}

func TestRateLimitBeyondRetriesFailsWithoutRealSleep(t *testing.T) {
	srv := newServer(t)
	srv.RateLimit("", "/v1/trainings", 30, 100)
	c, clk := newClient(t, srv)
	start := time.Now()
	_, err := c.GetTraining(context.Background(), "abc")
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 429 || !strings.Contains(err.Error(), "rate limited") {
		t.Fatalf("err = %v, want a 429 APIError with a hint", err)
	}
	if n := srv.Count("429"); n != 6 {
		t.Errorf("attempts = %d, want 1 + 5 retries", n)
	}
	if clk.total() != 5*30*time.Second {
		t.Errorf("fake waits = %v, want 5×30s", clk.total())
	}
	if real := time.Since(start); real > 10*time.Second {
		t.Fatalf("really slept %v (replicate-go must not sleep on Retry-After itself)", real)
	}
}

func TestBaseURLForms(t *testing.T) {
	srv := newServer(t)
	for _, base := range []string{srv.URL(), srv.URL() + "/", srv.URL() + "/v1", srv.URL() + "/v1/"} {
		c, err := replicate.New(base, srv.Token())
		if err != nil {
			t.Fatalf("%q: %v", base, err)
		}
		if _, err := c.GetModel(context.Background(), "ostris", "flux-dev-lora-trainer"); err != nil {
			t.Errorf("base %q: %v", base, err)
		}
	}
	if _, err := replicate.New("api.replicate.com", "tok"); err == nil || !strings.Contains(err.Error(), "REPLICATE_BASE_URL") {
		t.Errorf("a base URL without scheme: %v", err)
	}
	if _, err := replicate.New(srv.URL(), " "); err == nil {
		t.Error("an empty token must be refused")
	}
}

func TestInstall(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	env := &pipeline.Env{Getenv: func(string) string { return "" }}
	replicate.Install(env, c)
	got, err := replicate.FromEnv(env)
	if err != nil || got != c || !replicate.HasToken(env) {
		t.Fatalf("FromEnv after Install = %p, %v", got, err)
	}
}

// A Retry-After pauses every request of the client, not only the one that was throttled.
func TestRetryAfterPausesTheWholeClient(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 1)
	srv.RateLimit("GET", "/v1/models/acme", 5, 1)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := start
	waits := make(chan time.Duration)
	release := make(chan struct{})
	sleep := func(ctx context.Context, d time.Duration) error {
		waits <- d
		<-release
		return ctx.Err()
	}
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithSleep(sleep), replicate.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { _, err := c.GetModel(context.Background(), "acme", "ana-lora"); errs <- err }()
	if d := <-waits; d != 5*time.Second {
		t.Fatalf("throttled request waits %v, want Retry-After 5s", d)
	}
	go func() { _, err := c.GetTraining(context.Background(), "abc"); errs <- err }()
	if d := <-waits; d != 5*time.Second {
		t.Fatalf("second request waits %v, want the same pause", d)
	}
	if n := srv.Count("GET /v1/trainings/{id}"); n != 0 {
		t.Fatalf("the second request reached the API during the pause (%d)", n)
	}
	mu.Lock()
	now = now.Add(5 * time.Second)
	mu.Unlock()
	close(release)
	if err := <-errs; err != nil && !replicate.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := <-errs; err != nil && !replicate.IsNotFound(err) {
		t.Fatal(err)
	}
}

// A 429 may carry its wait only in the JSON body ("retry_after"), not in a Retry-After header:
// the client waits that long, not its own short backoff.
func TestRateLimitWaitFromBody(t *testing.T) {
	srv := newServer(t)
	srv.RateLimitInBody("GET", "/v1/models/ostris", 7, 3)
	c, clk := newClient(t, srv)
	if _, err := c.GetModel(context.Background(), "ostris", "flux-dev-lora-trainer"); err != nil {
		t.Fatalf("after three 429s: %v", err)
	}
	if n := srv.Count("429"); n != 3 {
		t.Fatalf("429 answers = %d, want 3", n)
	}
	if got := clk.total(); got != 21*time.Second {
		t.Errorf("waited %v, want 3 × the body's retry_after 7s", got)
	}
	// Exhausted retries still return the whole error answer.
	srv.RateLimitInBody("GET", "/v1/models/ostris", 2, 100)
	_, err := c.GetModel(context.Background(), "ostris", "flux-dev-lora-trainer")
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 429 || !strings.Contains(apiErr.Detail, "Expected available in 2 seconds") {
		t.Fatalf("err = %v, want the 429 with its detail", err)
	}
}

// Inputs match when every non-secret key we sent is JSON-equal on the remote side; keys the API
// added (defaults) do not matter, keys we sent that differ or are missing do.
func TestFindPredictionIgnoresAddedDefaults(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 1)
	srv.EchoDefaults(true)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	version := "acme/ana-lora:" + srv.VersionIDs("acme", "ana-lora")[0]
	start := time.Now()
	sent := map[string]any{"prompt": "a photo of TOK", "seed": 1, "guidance_scale": 3.5}
	p, err := c.CreatePrediction(ctx, version, sent)
	if err != nil {
		t.Fatal(err)
	}
	if p.Input["num_inference_steps"] == nil {
		t.Fatalf("the server did not echo defaults: %v", p.Input)
	}
	got, err := c.FindPrediction(ctx, version, sent, start)
	if err != nil || got == nil || got.ID != p.ID {
		t.Fatalf("FindPrediction = %+v, %v; want %s", got, err, p.ID)
	}
	for name, in := range map[string]map[string]any{
		"other seed":        {"prompt": "a photo of TOK", "seed": 2, "guidance_scale": 3.5},
		"key not on remote": {"prompt": "a photo of TOK", "seed": 1, "guidance_scale": 3.5, "extra": true},
	} {
		if got, err := c.FindPrediction(ctx, version, in, start); err != nil || got != nil {
			t.Errorf("%s: got %+v, %v; want no match", name, got, err)
		}
	}
	// A secret-named key is never shown back: it does not decide the match.
	withSecret := map[string]any{"prompt": "a photo of TOK", "seed": 1, "guidance_scale": 3.5, "api_key": "k"}
	if got, err := c.FindPrediction(ctx, version, withSecret, start); err != nil || got == nil {
		t.Errorf("secret-named key: got %+v, %v; want the match", got, err)
	}
}

// An error whose detail is not a string (a validation list, an object) keeps its content as
// readable text, on replicate-go's paths and on our own.
func TestNonStringErrorDetailIsReadable(t *testing.T) {
	srv := newServer(t)
	srv.AddModel("acme", "ana-lora", 1)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	list := []any{
		map[string]any{"loc": []any{"body", "input", "steps"}, "msg": "ensure this value is less than or equal to 6000", "type": "value_error"},
		map[string]any{"loc": []any{"body", "destination"}, "msg": "field required"},
	}
	srv.FailWithDetail("POST", "/v1/models/ostris", 422, list, 1)
	_, err := c.CreateTraining(ctx, replicatetest.Trainer, "acme/ana-lora", map[string]any{"steps": 9000})
	var apiErr *replicate.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 422 ||
		apiErr.Detail != "body.input.steps: ensure this value is less than or equal to 6000; body.destination: field required" {
		t.Fatalf("list detail: %#v (%v)", apiErr, err)
	}
	srv.FailWithDetail("GET", "/v1/models/acme/ana-lora/versions", 400, map[string]any{"reason": "bad cursor"}, 1)
	_, err = c.ListVersions(ctx, "acme", "ana-lora")
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(err.Error(), `{"reason":"bad cursor"}`) {
		t.Fatalf("object detail: %v", err)
	}
}

// countingTransport counts the requests that leave the client, by method and path.
type countingTransport struct {
	mu   sync.Mutex
	n    map[string]int
	base http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[r.Method+" "+r.URL.Path]++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// Uploads have no fixed whole-request timeout: the allowance grows with the size. An upload that
// keeps timing out is given up after three attempts instead of being sent again and again.
func TestUploadTimeoutScalesWithSizeAndIsBounded(t *testing.T) {
	srv := newServer(t)
	clk := &fakeClock{t: time.Now()}
	ct := &countingTransport{n: map[string]int{}, base: http.DefaultTransport}
	// 150 ms per attempt, plus the size at 1 MB/s for uploads.
	c, err := replicate.New(srv.URL(), srv.Token(), replicate.WithHTTPClient(&http.Client{Transport: ct}),
		replicate.WithTimeouts(150*time.Millisecond, 1<<20), replicate.WithSleep(clk.sleep), replicate.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// 512 KB may take 150 ms + 0.5 s: a 300 ms answer is fine.
	srv.Stall("POST", "/v1/files", 300*time.Millisecond, 1)
	big := bytes.Repeat([]byte("x"), 512<<10)
	if _, err := c.UploadFile(ctx, "big.zip", big, "application/zip"); err != nil {
		t.Fatalf("a 512 KB upload answered in 300 ms: %v", err)
	}
	if n := ct.count("POST /v1/files"); n != 1 {
		t.Fatalf("%d upload attempts, want 1", n)
	}
	// A small upload gets little more than 150 ms: stalled every time, it is tried three times.
	srv.Stall("POST", "/v1/files", 500*time.Millisecond, 10)
	_, err = c.UploadFile(ctx, "small.zip", []byte("tiny"), "application/zip")
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("stalled upload: %v, want a timeout", err)
	}
	if n := ct.count("POST /v1/files"); n != 1+3 {
		t.Errorf("%d upload attempts after timeouts, want 3", n-1)
	}
	// Ordinary requests keep their per-attempt timeout and are retried.
	srv.Stall("GET", "/v1/models/ostris", 500*time.Millisecond, 1)
	if _, err := c.GetModel(ctx, "ostris", "flux-dev-lora-trainer"); err != nil {
		t.Fatalf("GET after one stalled attempt: %v", err)
	}
	if n := ct.count("GET /v1/models/ostris/flux-dev-lora-trainer"); n < 2 {
		t.Errorf("%d GET attempts, want the stalled one timed out and retried", n)
	}
}

// A delivery URL whose output is gone answers 404, 410 or (on some CDNs) 403: all count as gone,
// so generate runs the prediction again; a server error does not.
func TestDownloadGoneStatuses(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	delivery := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
	}))
	t.Cleanup(delivery.Close)
	for code, gone := range map[int]bool{403: true, 404: true, 410: true, 500: false} {
		_, err := c.Download(context.Background(), fmt.Sprintf("%s/%d", delivery.URL, code))
		if err == nil || replicate.IsGone(err) != gone {
			t.Errorf("download answered %d: err %v, IsGone %v; want %v", code, err, replicate.IsGone(err), gone)
		}
	}
}
