package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// portraitOptions are distinct synthetic portraits of one made-up subject, 1024×1280.
func portraitOptions(i int) imagechecktest.Options {
	return imagechecktest.Options{Seed: uint64(1000 + i*7), Skin: color.NRGBA{200, 160, 130, 255}, Hair: color.NRGBA{60, 40, 30, 255},
		Width: 1024, Height: 1280, Light: []float64{-0.6, -0.3, 0, 0.3, 0.6}[i%5], Gain: 0.9 + 0.05*float64(i%4),
		Warmth: -0.5 + 0.25*float64(i%5), FaceX: 0.35 + 0.06*float64(i%6), FaceScale: 0.3 + 0.02*float64(i%5), FaceY: 0.35 + 0.03*float64(i%4)}
}

func writeJPEG(path string, o imagechecktest.Options) error {
	return imagechecktest.WriteJPEG(path, imagechecktest.Portrait(o), 90)
}

// writePortraits makes n distinct synthetic portraits of one made-up subject in dir, named as a
// phone names them.
func writePortraits(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := writeJPEG(filepath.Join(dir, fmt.Sprintf("IMG_20260412_%06d.jpg", 101500+i*37)), portraitOptions(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// A subject of 50 photos costs at most 16 KB of state (per-photo figures live in the cache), after
// its first training and after many retrains, and
// a plan that finds nothing to do makes at most 2 API requests per subject — none with
// -refresh=false.
func TestStateOfA50PhotoSubjectStaysSmall(t *testing.T) {
	const trainings = 3
	if testing.Short() {
		t.Skip("end to end")
	}
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
	t.Cleanup(srv.Close)
	t.Setenv("REPLICATE_BASE_URL", srv.URL())
	t.Setenv("REPLICATE_API_TOKEN", srv.Token())
	t.Setenv("CI", "true")
	dir := t.TempDir()
	writePortraits(t, filepath.Join(dir, "photos", "ana.lopez@example.com"), 50)
	conf := filepath.Join(dir, "retrain.hcl")
	cfg := `
batch { for_each = toset(["ana.lopez@example.com"]) }
replicate {
  trainer     = "` + replicatetest.Trainer + `"
  destination = "acme/ana-lora"
}
stage "image_check" "photos" {
  dir = "photos/${each.key}"
}
stage "params" "tuned" {
  image_count = image_check.photos.count
  diversity   = image_check.photos.diversity
}
stage "train" "lora" {
  images        = image_check.photos.accepted
  input         = merge(params.tuned.values, { trigger_word = "TOK" })
  poll_interval = "1s"
}
stage "loss_gate" "fit" {
  training = train.lora
}
stage "generate" "check" {
  version       = train.lora.version
  prompts       = ["a portrait photo of TOK"]
  reference     = image_check.photos
  gate          = loss_gate.fit
  poll_interval = "1s"
}
stage "prune" "old" {
  model      = "acme/ana-lora"
  depends_on = [generate.check]
}
`
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	stateSize := func() int64 {
		files, _ := filepath.Glob(filepath.Join(dir, ".pipeline", "retrain.state", "*.json"))
		var size int64
		for _, f := range files {
			if strings.HasSuffix(f, ".meta.json") {
				continue
			}
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			size += fi.Size()
		}
		if len(files) != 2 || size == 0 {
			t.Fatalf("state files %v: want one instance file beside the meta file", files)
		}
		return size
	}
	// The first training, then retrains (each a new version): the version history grows the state
	// a little each time, up to a bound (the ledger's, TestTheLedgerOfARetrainedSubjectStaysSmall
	// in package replicate: 2.2 KB after 104 weekly retrains).
	for i := 0; i < trainings; i++ {
		c := strings.Replace(cfg, `trigger_word = "TOK"`, fmt.Sprintf(`trigger_word = "TOK%d"`, i), 1)
		if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := cli(t, "apply", "-auto-approve", conf); r.code != 0 {
			t.Fatalf("apply %d: %s", i, r)
		}
		size := stateSize()
		if size > 16<<10 {
			t.Fatalf("state of one 50-photo subject after %d training(s): %d bytes, want at most 16 KB", i+1, size)
		}
		t.Logf("state of a 50-photo subject after %d training(s): %d bytes", i+1, size)
	}

	before := srv.Stats().Requests
	if r := cli(t, "plan", "-detailed-exitcode", conf); r.code != 0 {
		t.Fatalf("plan after apply should find nothing to do: %s", r)
	}
	if n := srv.Stats().Requests - before; n > 2 {
		t.Errorf("a no-change plan made %d API requests for one subject, want at most 2", n)
	}
	before = srv.Stats().Requests
	if r := cli(t, "plan", "-refresh=false", "-detailed-exitcode", conf); r.code != 0 {
		t.Fatalf("plan -refresh=false: %s", r)
	}
	if n := srv.Stats().Requests - before; n != 0 {
		t.Errorf("plan -refresh=false made %d API requests, want none", n)
	}
}

// kill -9 with 200 trainings in flight: the rerun re-attaches to every one of them and pays for
// none twice.
func TestKillNineWith200TrainingsInFlightReattachesAll(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end, 200 subjects")
	}
	const n = 200
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true, PageSize: 100})
	t.Cleanup(srv.Close)
	t.Setenv("REPLICATE_BASE_URL", srv.URL())
	t.Setenv("REPLICATE_API_TOKEN", srv.Token())
	t.Setenv("CI", "true")
	dir := t.TempDir()
	writePortraits(t, filepath.Join(dir, "photos"), 4)
	var keys []string
	for i := 1; i <= n; i++ {
		keys = append(keys, fmt.Sprintf("%q", fmt.Sprintf("s%03d", i)))
	}
	conf := filepath.Join(dir, "batch.hcl")
	cfg := `batch { for_each = toset([` + strings.Join(keys, ", ") + `]) }
replicate {
  trainer     = "` + replicatetest.Trainer + `"
  destination = "acme/${each.key}-lora"
}
stage "image_check" "photos" {
  dir       = "photos"
  min_count = 2
}
stage "params" "tuned" {
  image_count = image_check.photos.count
}
stage "train" "lora" {
  images        = image_check.photos.accepted
  input         = merge(params.tuned.values, { trigger_word = "SLOW" })
  poll_interval = "1s"
}
`
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := child(t, nil, "apply", "-auto-approve", "-json", "-max-in-flight", "1000", conf)
	followed := killWhenFollowing(t, cmd, n)
	if followed < n {
		t.Fatalf("only %d trainings were followed at once before the kill, want %d", followed, n)
	}
	created := srv.Count("created training")
	if created != n {
		t.Fatalf("%d trainings before the kill, want %d", created, n)
	}
	r := cli(t, "apply", "-auto-approve", "-max-in-flight", "1000", conf)
	if r.code != 0 {
		t.Fatalf("rerun after kill -9: %s", r)
	}
	if got := srv.Count("created training"); got != n {
		t.Errorf("%d trainings after the rerun, want %d: every one re-attached, none paid twice", got, n)
	}
}

// killWhenFollowing starts an apply with -json and kills it (SIGKILL) once n distinct training
// stages report progress from Replicate; it returns how many did.
func killWhenFollowing(t *testing.T, cmd *exec.Cmd, n int) int {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		var ev struct {
			Type, Address string
			Message       string
		}
		if len(seen) >= n || json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		if ev.Type == "stage_progress" && strings.HasPrefix(ev.Address, "train.") && strings.Contains(ev.Message, "training ") {
			seen[ev.Address] = true
			if len(seen) == n {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	_ = cmd.Wait()
	if len(seen) < n {
		t.Logf("stderr:\n%s", stderr.String())
	}
	return len(seen)
}
