package replicatetest

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

func call(t *testing.T, s *Server, method, path, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	url := path
	if !strings.HasPrefix(path, "http") {
		url = s.URL() + path
	}
	req, _ := http.NewRequest(method, url, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

func TestAuthAndErrorShape(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	code, _, body := call(t, s, "GET", "/v1/trainings", "", nil)
	var e struct {
		Title, Detail string
		Status        int
	}
	if err := json.Unmarshal(body, &e); err != nil || code != 401 || e.Status != 401 || e.Title == "" || e.Detail == "" {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, _, _ := call(t, s, "GET", "/v1/trainings", "wrong", nil); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	if code, _, _ := call(t, s, "GET", "/v1/trainings", s.Token(), nil); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	if s.Count("401") != 2 {
		t.Errorf("401 count = %d", s.Count("401"))
	}
}

func TestPaginationUsesAbsoluteNextAndVersionDeleteIs202Empty(t *testing.T) {
	s := NewServer(Options{PageSize: 2})
	defer s.Close()
	s.AddModel("acme", "m", 5)
	var ids []string
	next := "/v1/models/acme/m/versions"
	for pages := 0; next != ""; pages++ {
		code, _, body := call(t, s, "GET", next, s.Token(), nil)
		var p struct {
			Next    *string
			Results []struct {
				ID            string
				OpenAPISchema map[string]any `json:"openapi_schema"`
			}
		}
		if code != 200 || json.Unmarshal(body, &p) != nil {
			t.Fatalf("page %d: %d %s", pages, code, body)
		}
		for _, r := range p.Results {
			ids = append(ids, r.ID)
			if r.OpenAPISchema == nil {
				t.Fatal("versions carry openapi_schema")
			}
		}
		next = ""
		if p.Next != nil {
			if !strings.HasPrefix(*p.Next, s.URL()+"/v1/") {
				t.Fatalf("next = %q, want an absolute URL", *p.Next)
			}
			next = *p.Next
		}
	}
	want := s.VersionIDs("acme", "m")
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Fatalf("paged ids %v, want %v", ids, want)
	}
	code, _, body := call(t, s, "DELETE", "/v1/models/acme/m/versions/"+want[0], s.Token(), nil)
	if code != 202 || len(body) != 0 {
		t.Fatalf("delete = %d %q, want 202 with an empty body", code, body)
	}
	if code, _, _ := call(t, s, "DELETE", "/v1/models/ostris/flux-dev-lora-trainer/versions/"+TrainerVersion, s.Token(), nil); code != 403 {
		t.Fatalf("deleting someone else's version = %d, want 403", code)
	}
}

// textured makes a photo-like image: skin-toned with fine random texture and a sharp dark edge.
func textured(w, h int, seed uint64) *image.NRGBA {
	r := rand.New(rand.NewPCG(seed, 1))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := (r.Float64() - 0.5) * 30
			c := color.NRGBA{uint8(200 + n), uint8(150 + n), uint8(130 + n), 255}
			if x > w*3/4 {
				c = color.NRGBA{30, 20, 20, 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

// detail is the mean absolute band-pass (pixel minus 3×3 mean) of luminance in the skin area.
func detail(img image.Image) float64 {
	b := img.Bounds()
	lum := func(x, y int) float64 {
		r, g, bb, _ := img.At(x, y).RGBA()
		return 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bb)
	}
	var sum float64
	var n int
	for y := b.Min.Y + b.Dy()/4; y < b.Min.Y+b.Dy()*3/4; y++ {
		for x := b.Min.X + b.Dx()/8; x < b.Min.X+b.Dx()/2; x++ {
			var m float64
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					m += lum(x+dx, y+dy)
				}
			}
			sum += math.Abs(lum(x, y) - m/9)
			n++
		}
	}
	return sum / float64(n)
}

func TestLossModel(t *testing.T) {
	cases := []struct {
		name     string
		input    map[string]any
		min, max float64
	}{
		{"research defaults", map[string]any{}, 0.25, 0.35},
		{"rank 16, 1200 steps", map[string]any{"lora_rank": 16.0, "steps": 1200.0}, 0.25, 0.35},
		{"rank 32", map[string]any{"lora_rank": 32.0}, 0, 0.2},
		{"rank 48, 2000 steps", map[string]any{"lora_rank": 48.0, "steps": 2000.0}, 0, 0.2},
		{"1400 steps", map[string]any{"steps": 1400.0}, 0, 0.2},
		{"high learning rate", map[string]any{"learning_rate": 1e-3}, 0, 0.2},
		{"300 steps underfit", map[string]any{"steps": 300.0}, 0.4, 1},
	}
	for _, c := range cases {
		steps := trainingSteps(c.input)
		// The gate smooths the last ~10%: average them.
		var sum float64
		n := 0
		for s := steps * 9 / 10; s <= steps; s++ {
			sum += Loss(c.input, s)
			n++
		}
		final := sum / float64(n)
		if final < c.min || final > c.max {
			t.Errorf("%s: final loss %.3f, want %.2f..%.2f", c.name, final, c.min, c.max)
		}
	}
	// Steps only overfit once they happen: a 2000-step run is fine until ~1200, then falls below 0.2.
	long := map[string]any{"steps": 2000.0}
	if l := Loss(long, 1000); l < 0.25 {
		t.Errorf("2000-step run at step 1000: loss %.3f, want still natural (>= 0.25)", l)
	}
	if l := Loss(long, 1500); l >= 0.2 {
		t.Errorf("2000-step run at step 1500: loss %.3f, want overfit (< 0.2)", l)
	}
	a, b := Loss(map[string]any{"steps": 1000.0}, 500), Loss(map[string]any{"steps": 1000.0}, 500)
	if a != b {
		t.Error("loss must be deterministic")
	}
}

func TestLogsParseAndGrow(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	s.AddModel("acme", "m", 0)
	c, _ := replicate.New(s.URL(), s.Token())
	ctx := context.Background()
	f, err := c.UploadFile(ctx, "a.zip", []byte("PK not really"), "application/zip")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.CreateTraining(ctx, Trainer, "acme/m", map[string]any{"input_images": f.URL, "steps": 1000, "lora_rank": 32})
	if err != nil {
		t.Fatal(err)
	}
	prevSteps, prevLen := -1, -1
	for !tr.Terminal() {
		if tr, err = c.GetTraining(ctx, tr.ID); err != nil {
			t.Fatal(err)
		}
		p := replicate.ParseLogs(tr.Logs)
		if tr.Status == "processing" && (p.Step < prevSteps || len(tr.Logs) < prevLen) {
			t.Fatalf("logs shrank: step %d after %d", p.Step, prevSteps)
		}
		if tr.Status == "processing" && p.Step > 0 && p.Step < 1000 && strings.HasSuffix(tr.Logs, "]") {
			t.Fatalf("a running training's logs should end in a cut redraw: %q", tr.Logs[len(tr.Logs)-40:])
		}
		prevSteps, prevLen = p.Step, len(tr.Logs)
	}
	p := replicate.ParseLogs(tr.Logs)
	if tr.Status != "succeeded" || p.Step != 1000 {
		t.Fatalf("training %s at step %d", tr.Status, p.Step)
	}
	if l := p.Losses[len(p.Losses)-1].Loss; l >= 0.2 {
		t.Errorf("rank 32 final logged loss = %.3f, want overfit < 0.2", l)
	}
	for _, want := range []string{"Loading checkpoint shards", "\r" + jobName, "lr: 4.0e-04 loss: "} {
		if !strings.Contains(tr.Logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	// The trainer version is now the base of a training: the API refuses to delete it, with a reason.
	code, _, body := call(t, s, "DELETE", "/v1/models/ostris/flux-dev-lora-trainer/versions/"+TrainerVersion, s.Token(), nil)
	if code != 409 || !strings.Contains(string(body), "base of a training") {
		t.Fatalf("deleting a training's base = %d %s", code, body)
	}
	// The list omits logs, like the real API.
	_, _, body = call(t, s, "GET", "/v1/trainings", s.Token(), nil)
	if bytes.Contains(body, []byte(`"logs"`)) {
		t.Error("GET /v1/trainings must not carry logs")
	}
}

func TestAutoModeAdvancesWithTime(t *testing.T) {
	s := NewServer(Options{Auto: true})
	defer s.Close()
	var mu sync.Mutex
	now := time.Now()
	s.mu.Lock()
	s.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s.mu.Unlock()
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s.AddModel("acme", "m", 0)
	c, _ := replicate.New(s.URL(), s.Token())
	ctx := context.Background()
	f, _ := c.UploadFile(ctx, "a.zip", []byte("zip"), "application/zip")
	tr, err := c.CreateTraining(ctx, Trainer, "acme/m", map[string]any{"input_images": f.URL})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetTraining(ctx, tr.ID); got.Status != "starting" {
		t.Fatalf("at 0s: %s", got.Status)
	}
	advance(1300 * time.Millisecond)
	got, _ := c.GetTraining(ctx, tr.ID)
	if p := replicate.ParseLogs(got.Logs); got.Status != "processing" || p.Step == 0 || p.Step >= 1000 {
		t.Fatalf("at 1.3s: %s step %d", got.Status, p.Step)
	}
	advance(2 * time.Second)
	// Nobody polls the training: the version still appears when it ends.
	if ids := s.VersionIDs("acme", "m"); len(ids) != 1 {
		t.Fatalf("versions at 3.3s = %v, want the trained one", ids)
	}
	if got, _ := c.GetTraining(ctx, tr.ID); got.Status != "succeeded" {
		t.Fatalf("at 3.3s: %s", got.Status)
	}
}

func photoZip(t *testing.T) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i < 2; i++ {
		w, _ := zw.Create([]string{"b.png", "a.png"}[i])
		if err := png.Encode(w, textured(600, 800, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	zw.Close()
	return buf.Bytes()
}

func TestGeneratedSkinSmoothsWithOverfitAndGuidance(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	s.AddModel("acme", "m", 0)
	c, _ := replicate.New(s.URL(), s.Token())
	ctx := context.Background()
	f, err := c.UploadFile(ctx, "photos.zip", photoZip(t), "application/zip")
	if err != nil {
		t.Fatal(err)
	}
	train := func(input map[string]any) string {
		input["input_images"] = f.URL
		tr, err := c.CreateTraining(ctx, Trainer, "acme/m", input)
		if err != nil {
			t.Fatal(err)
		}
		for !tr.Terminal() {
			tr, _ = c.GetTraining(ctx, tr.ID)
		}
		return tr.Output.Version
	}
	natural := train(map[string]any{"lora_rank": 16, "steps": 1000})
	overfit := train(map[string]any{"lora_rank": 48, "steps": 2000})
	gen := func(version string, guidance float64) float64 {
		p, err := c.CreatePrediction(ctx, version, map[string]any{"prompt": "a photo of TOK", "seed": 1, "guidance_scale": guidance, "output_format": "png"})
		if err != nil {
			t.Fatal(err)
		}
		for !p.Terminal() {
			p, _ = c.GetPrediction(ctx, p.ID)
		}
		data, err := c.Download(ctx, p.Output[0])
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("not a PNG: %v", err)
		}
		return detail(img)
	}
	ref := detail(render(textured(600, 800, 1), 1, 0)) // seed 1 of 2 photos: "b.png" sorted second
	start := time.Now()
	nat := gen(natural, 3.5)
	t.Logf("one 1024² natural image: %v", time.Since(start))
	start = time.Now()
	over := gen(overfit, 3.5)
	t.Logf("one 1024² smoothed image: %v", time.Since(start))
	high := gen(natural, 5)
	t.Logf("texture ratio: natural %.2f, overfit %.2f, natural at guidance 5 %.2f", nat/ref, over/ref, high/ref)
	if r := nat / ref; r < 0.95 || r > 1.05 {
		t.Errorf("natural version texture ratio %.2f, want ~1", r)
	}
	if r := over / ref; r > 0.6 {
		t.Errorf("overfit version texture ratio %.2f, want < 0.6 (plastic)", r)
	}
	if !(high < nat*0.85 && high > over) {
		t.Errorf("guidance 5 ratio %.2f should sit between overfit %.2f and natural %.2f", high/ref, over/ref, nat/ref)
	}
}

func TestProceduralFallback(t *testing.T) {
	// The stand-in face is found by the same detector the guard uses, and smoothing shows.
	for seed := int64(0); seed < 3; seed++ {
		img := render(nil, seed, 0)
		if img.Bounds().Dx() != OutputSize {
			t.Fatalf("size %v", img.Bounds())
		}
		ref := skin.Measure(img)
		if !ref.Scored || ref.FaceWidth < 300 {
			t.Fatalf("seed %d: procedural face not scored: %+v", seed, ref)
		}
		if seed == 0 {
			m := skin.Measure(render(nil, seed, Smoothing(map[string]any{"lora_rank": 64.0}, 3.5, 1)))
			if !m.Scored || m.Texture/ref.Texture > 0.5 {
				t.Errorf("smoothed procedural face: %+v (ratio %.2f)", m, m.Texture/ref.Texture)
			}
		}
	}
	var c photoCache
	if c.photo("x", []byte("not a zip"), 0) != nil {
		t.Error("garbage zip must give no photos")
	}
	// A photo that does not decode is skipped for the next one.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("a.jpg")
	_, _ = w.Write([]byte("not a jpeg"))
	w, _ = zw.Create("b.png")
	_ = png.Encode(w, textured(300, 200, 1))
	_ = zw.Close()
	if img := c.photo("z", buf.Bytes(), 0); img == nil || img.Rect.Dx() != OutputSize {
		t.Errorf("seed 0 (a.jpg is broken) should fall through to b.png, got %v", img)
	}
}

func TestWorldFilePersists(t *testing.T) {
	dir := t.TempDir()
	wf := filepath.Join(dir, "sim", "world.json")
	s, err := Start(Options{WorldFile: wf})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := replicate.New(s.URL(), s.Token())
	ctx := context.Background()
	if _, err := c.CreateModel(ctx, "acme", "m", "gpu-t4"); err != nil {
		t.Fatal(err)
	}
	f, _ := c.UploadFile(ctx, "a.zip", []byte("hello bytes"), "application/zip")
	tr, _ := c.CreateTraining(ctx, Trainer, "acme/m", map[string]any{"input_images": f.URL})
	for !tr.Terminal() {
		tr, _ = c.GetTraining(ctx, tr.ID)
	}
	s.Close()

	s2, err := Start(Options{WorldFile: wf})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	c2, _ := replicate.New(s2.URL(), s2.Token())
	got, err := c2.GetTraining(ctx, tr.ID)
	if err != nil || got.Status != "succeeded" || got.Output.Version != tr.Output.Version {
		t.Fatalf("reloaded training = %+v, %v", got, err)
	}
	found, err := c2.FindTraining(ctx, Trainer, map[string]any{"input_images": f.URL}, time.Now().Add(-time.Minute))
	if err != nil || found == nil || found.ID != tr.ID {
		t.Fatalf("FindTraining after reload = %+v, %v", found, err)
	}
	vs, _ := c2.ListVersions(ctx, "acme", "m")
	if len(vs) != 1 {
		t.Fatalf("versions after reload = %v", vs)
	}
	// The file's bytes survive too (old URL from the earlier port still resolves by id).
	fi, err := c2.GetFile(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, err := c2.Download(ctx, fi.URL)
	if err != nil || string(data) != "hello bytes" {
		t.Fatalf("file after reload = %q, %v", data, err)
	}
	if err := s2.SaveError(); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(wf, []byte("{broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Options{WorldFile: wf}); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("corrupt world: %v", err)
	}
}

func TestFaultsAfterProcessing(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	body := map[string]any{"owner": "acme", "name": "m", "visibility": "private", "hardware": "gpu-t4"}
	s.FailAfter("POST", "/v1/models", 500, 1)
	if code, _, _ := call(t, s, "POST", "/v1/models", s.Token(), body); code != 500 {
		t.Fatalf("FailAfter answered %d", code)
	}
	if s.Count("created model") != 1 {
		t.Fatal("FailAfter must process the request")
	}
	if code, _, _ := call(t, s, "POST", "/v1/models", s.Token(), body); code != 409 {
		t.Fatalf("second create = %d, want 409", code)
	}
	s.Fail("GET", "/v1/models/acme", 503, 1)
	if code, _, _ := call(t, s, "GET", "/v1/models/acme/m", s.Token(), nil); code != 503 {
		t.Fatal("Fail did not fire")
	}
	s.RateLimit("", "/v1/", 7, 1)
	code, h, _ := call(t, s, "GET", "/v1/models/acme/m", s.Token(), nil)
	if code != 429 || h.Get("Retry-After") != "7" {
		t.Fatalf("RateLimit = %d Retry-After %q", code, h.Get("Retry-After"))
	}
	if s.Count("5xx") != 2 || s.Count("429") != 1 {
		t.Errorf("5xx %d 429 %d", s.Count("5xx"), s.Count("429"))
	}
}

func TestSimulate(t *testing.T) {
	s, err := Simulate(filepath.Join(t.TempDir(), "world.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.Token(), "r8_sim_") || !s.opts.Auto {
		t.Fatalf("token %q auto %v", s.Token(), s.opts.Auto)
	}
	c, _ := replicate.New(s.URL(), s.Token())
	if _, err := c.TrainerInputs(context.Background(), Trainer); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	code, _, body := call(t, s, "PATCH", "/v1/trainings", s.Token(), nil)
	if code != 405 || !strings.Contains(string(body), `"status":405`) {
		t.Fatalf("PATCH /v1/trainings = %d %s", code, body)
	}
	code, _, body = call(t, s, "GET", "/v1/nothing", s.Token(), nil)
	if code != 404 || !strings.Contains(string(body), `"status":404`) {
		t.Fatalf("GET /v1/nothing = %d %s", code, body)
	}
}

// The generated model's schema bounds lora_scale to -1..2, as flux-fine-tuner's predict.py does.
func TestLoraScaleBounds(t *testing.T) {
	srv := NewServer(Options{})
	defer srv.Close()
	srv.AddModel("acme", "ana-lora", 1)
	version := "acme/ana-lora:" + srv.VersionIDs("acme", "ana-lora")[0]
	for scale, want := range map[float64]int{2: http.StatusCreated, 2.5: http.StatusUnprocessableEntity, -1.5: http.StatusUnprocessableEntity} {
		body := fmt.Sprintf(`{"version":%q,"input":{"prompt":"a photo of TOK","lora_scale":%v}}`, version, scale)
		req, _ := http.NewRequest("POST", srv.URL()+"/v1/predictions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+srv.Token())
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("lora_scale %v: %d %s, want %d", scale, resp.StatusCode, b, want)
		}
	}
}
