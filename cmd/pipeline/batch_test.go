package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// Batch retrains in CI: many subjects, shard processes sharing remote state (file:// here, the same
// code path as s3:// through gocloud.dev/blob), overlapping runs, and runners killed mid-training.

// batchConfig trains every subject on the same committed photos (their analysis is cached once),
// with lora_rank from the subject map: 48 overfits and is refused by the gate.
func batchConfig(t *testing.T, subjects map[string]int) string {
	var b strings.Builder
	b.WriteString("batch {\n  for_each = {\n")
	for k, rank := range subjects {
		fmt.Fprintf(&b, "    %s = %d\n", k, rank)
	}
	b.WriteString(`  }
}
replicate {
  trainer     = "` + replicatetest.Trainer + `"
  destination = "acme/${each.key}-lora"
}
stage "image_check" "photos" {
  dir       = "` + examplesData(t) + `/ana"
  min_count = 12
}
stage "params" "tuned" {
  image_count = image_check.photos.count
  limit "lora_rank" { max = 64 }
}
stage "train" "lora" {
  images        = image_check.photos.accepted
  input         = merge(params.tuned.values, { trigger_word = "TOK", lora_rank = each.value })
  poll_interval = "1s"
}
stage "loss_gate" "fit" {
  training = train.lora
}
`)
	return b.String()
}

type batchWorld struct {
	srv      *replicatetest.Server
	dir      string
	conf     string
	stateURL string
	stateDir string
}

func newBatchWorld(t *testing.T, subjects map[string]int) *batchWorld {
	t.Helper()
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	conf := filepath.Join(dir, "batch.hcl")
	if err := os.WriteFile(conf, []byte(batchConfig(t, subjects)), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "bucket")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REPLICATE_BASE_URL", srv.URL())
	t.Setenv("REPLICATE_API_TOKEN", srv.Token())
	t.Setenv("CI", "true")
	return &batchWorld{srv: srv, dir: dir, conf: conf, stateURL: "file://" + stateDir, stateDir: stateDir}
}

// locksLeft lists the state lock objects (<key>.state.json.lock) still in the bucket.
func (w *batchWorld) locksLeft(t *testing.T) []string {
	var out []string
	filepath.Walk(w.stateDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".state.json.lock") && !info.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestShardsAndOverlappingRunsTrainEverySubjectOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end, 6 processes")
	}
	subjects := map[string]int{}
	bad := map[string]bool{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("s%02d", i)
		subjects[k] = 16
		if i%10 == 3 {
			subjects[k] = 48
			bad[k] = true
		}
	}
	w := newBatchWorld(t, subjects)
	// Four shards plus two extra processes running shards 1 and 3 again, all at once.
	shards := []string{"1/4", "2/4", "3/4", "4/4", "1/4", "3/4"}
	codes := make([]int, len(shards))
	outs := make([]string, len(shards))
	var wg sync.WaitGroup
	for i, sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := child(t, nil, "apply", "-auto-approve", "-parallelism", "8", "-shard", sh, "-state", w.stateURL, w.conf)
			out, err := cmd.CombinedOutput()
			outs[i] = string(out)
			var ee *exec.ExitError
			switch {
			case err == nil:
			case errors.As(err, &ee):
				codes[i] = ee.ExitCode()
			default:
				codes[i] = -1
			}
		}()
	}
	wg.Wait()
	for i, c := range codes {
		// 3: a shard holds an overfit subject; 4: the overlapping twin held some subjects.
		if c != 0 && c != 3 && c != 4 {
			t.Errorf("shard %s exited %d:\n%s", shards[i], c, outs[i])
		}
	}
	if n := w.srv.Count("created training"); n != len(subjects) {
		t.Errorf("%d trainings created for %d subjects, want exactly one each", n, len(subjects))
	}
	if locks := w.locksLeft(t); len(locks) > 0 {
		t.Errorf("locks left behind: %v", locks)
	}
	// No state was lost: every subject's record says what happened to it.
	r := cli(t, "plan", "-json", "-state", w.stateURL, w.conf)
	trained, refused := 0, 0
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev["type"] != "planned_change" {
			continue
		}
		addr, _ := ev["address"].(string)
		if !strings.HasPrefix(addr, "loss_gate.fit[") {
			continue
		}
		key := strings.TrimSuffix(strings.TrimPrefix(addr, `loss_gate.fit["`), `"]`)
		switch {
		case ev["action"] != "noop":
			t.Errorf("%s: %v after the batch (%v), want noop", addr, ev["action"], ev["reasons"])
		case ev["refused"] == true:
			refused++
			if !bad[key] {
				t.Errorf("%s refused but its parameters were good", addr)
			}
		default:
			trained++
			if bad[key] {
				t.Errorf("%s passed the gate with lora_rank 48", addr)
			}
		}
	}
	if trained != 36 || refused != 4 {
		t.Errorf("%d subjects trained and %d refused, want 36 and 4:\n%s", trained, refused, r.stderr)
	}
}

func TestKillNineMidTrainingThenTheShardReattaches(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newBatchWorld(t, map[string]int{"ana": 16, "ben": 16})
	cmd := child(t, nil, "apply", "-auto-approve", "-json", "-only", "ana", "-state", w.stateURL, w.conf)
	signalWhenTraining(t, cmd, syscall.SIGKILL)
	if n := w.srv.Count("created training"); n != 1 {
		t.Fatalf("%d trainings before the kill, want 1", n)
	}
	// The rerun finds the dead process's lock (same host, pid gone), breaks it saying so, and
	// re-attaches to the training instead of starting a second one.
	r := cli(t, "apply", "-auto-approve", "-only", "ana", "-state", w.stateURL, w.conf)
	if r.code != 0 {
		t.Fatalf("rerun after kill -9: %s", r)
	}
	if n := w.srv.Count("created training"); n != 1 {
		t.Errorf("%d trainings after the rerun, want 1 (re-attached)", n)
	}
	if locks := w.locksLeft(t); len(locks) > 0 {
		t.Errorf("locks left behind: %v", locks)
	}
}

func TestMigrateLocalStateToRemoteKeepsTheInFlightTraining(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newBatchWorld(t, map[string]int{"ana": 16})
	// A local run is killed mid-training: its state records the training in flight.
	signalWhenTraining(t, child(t, nil, "apply", "-auto-approve", "-json", w.conf), syscall.SIGKILL)
	r := cli(t, "state", "migrate", "-to", w.stateURL, w.conf)
	if r.code != 0 {
		t.Fatalf("state migrate: %s", r)
	}
	r = cli(t, "apply", "-auto-approve", "-state", w.stateURL, w.conf)
	if r.code != 0 {
		t.Fatalf("apply against the migrated state: %s", r)
	}
	if n := w.srv.Count("created training"); n != 1 {
		t.Errorf("%d trainings, want 1: the migrated state must carry the in-flight training", n)
	}
}

// signalWhenTraining starts cmd (an apply with -json), sends sig once a training reports
// progress, and returns the process's stderr and exit error.
func signalWhenTraining(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) (string, error) {
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
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	sent := false
	for sc.Scan() {
		var ev map[string]any
		if sent || json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		if ev["type"] == "stage_progress" && strings.HasPrefix(fmt.Sprint(ev["address"]), "train.") {
			if cur, _ := ev["current"].(float64); cur > 0 {
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				sent = true
			}
		}
	}
	err = cmd.Wait()
	if !sent {
		t.Fatalf("no training progress before the process ended:\n%s", stderr.String())
	}
	return stderr.String(), err
}
