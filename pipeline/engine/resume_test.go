package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// The resume tests interrupt an apply at every step of every remote stage, twice over: with
// Ctrl-C (the context is cancelled, stages record what they know) and with a crash (the process
// exits on the spot, like kill -9). A second apply must reuse finished work and re-attach in-flight
// work: every remote job is created exactly once.

var steps = []string{"start", "saved-intent", "created", "saved-id", "done"}

const resumeConfig = `
batch { for_each = toset(["ana", "ben"]) }
stage "check" "c" { items = ["x", each.key] }
stage "work" "train" { input = check.c.accepted }
stage "work" "gate" { input = work.train.job }
stage "work" "gen" {
  input      = "g"
  depends_on = [work.gate]
}
`

var workStages = []string{`work.train["ana"]`, `work.gate["ana"]`, `work.gen["ana"]`}

func TestResumeAfterCtrlCAtEveryStep(t *testing.T) {
	for _, addr := range workStages {
		for _, step := range steps {
			t.Run(addr+"/"+step, func(t *testing.T) {
				f := newFixture(t, resumeConfig)
				f.work.remote = t.TempDir()
				e, _ := f.engine()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				f.work.onStep = func(a, s string) error {
					if a == addr && s == step {
						cancel()
						return ctx.Err()
					}
					return nil
				}
				_, out := f.apply(ctx, e)
				if out.ExitStatus() == 0 {
					t.Fatalf("interrupted apply exited 0: %v", out.Counts())
				}
				f.work.onStep = nil
				e2, _ := f.engine()
				_, out2 := f.apply(context.Background(), e2)
				if code := out2.ExitStatus(); code != 0 {
					t.Fatalf("resumed apply exit %d: %v", code, out2.Counts())
				}
				assertEachJobOnce(t, f)
			})
		}
	}
}

// TestResumeAfterCrashAtEveryStep re-executes the test binary as the crashing process.
func TestResumeAfterCrashAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	for _, addr := range workStages {
		for _, step := range steps {
			t.Run(addr+"/"+step, func(t *testing.T) {
				f := newFixture(t, resumeConfig)
				f.work.remote = t.TempDir()
				if err := os.WriteFile(filepath.Join(f.dir, "p.hcl"), []byte(resumeConfig), 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
				cmd.Env = append(os.Environ(), "ENGINE_CRASH_DIR="+f.dir, "ENGINE_CRASH_REMOTE="+f.work.remote,
					"ENGINE_CRASH_AT="+addr+"|"+step)
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 9 {
					t.Fatalf("helper should crash with exit 9, got %v\n%s", err, out)
				}
				e2, _ := f.engine()
				_, out2 := f.apply(context.Background(), e2)
				if code := out2.ExitStatus(); code != 0 {
					t.Fatalf("resumed apply exit %d: %v", code, out2.Counts())
				}
				assertEachJobOnce(t, f)
			})
		}
	}
}

// TestCrashHelper is the crashing process of TestResumeAfterCrashAtEveryStep.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv("ENGINE_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	var addr, step string
	at := os.Getenv("ENGINE_CRASH_AT")
	for i := range at {
		if at[i] == '|' {
			addr, step = at[:i], at[i+1:]
		}
	}
	f := &fixture{t: t, dir: dir, check: &checkKind{}, work: newWork()}
	b, _ := os.ReadFile(filepath.Join(dir, "p.hcl"))
	f.src = string(b)
	f.work.remote = os.Getenv("ENGINE_CRASH_REMOTE")
	f.work.onStep = func(a, s string) error {
		if a == addr && s == step {
			os.Exit(9) // like kill -9: no deferred cleanup, no lock release
		}
		return nil
	}
	e, _ := f.engine()
	f.apply(context.Background(), e)
	fmt.Println("helper finished without crashing")
	os.Exit(0)
}

func assertEachJobOnce(t *testing.T, f *fixture) {
	t.Helper()
	for _, key := range []string{"ana", "ben"} {
		for _, s := range []string{"work.train", "work.gate", "work.gen"} {
			addr := s + `["` + key + `"]`
			if n := f.work.created(addr); n != 1 {
				t.Errorf("%s: %d remote jobs created, want exactly 1", addr, n)
			}
		}
	}
	// And a third apply has nothing to do.
	e3, _ := f.engine()
	plan, err := e3.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range plan.Instances {
		for _, s := range ip.Stages {
			if s.Action != pipeline.ActionNoop && !(s.Action == pipeline.ActionRead && s.Unchanged) {
				t.Errorf("%s: %s after resume (%v), want up to date (an unchanged read)", s.Address, s.Action, s.Reasons)
			}
		}
	}
}
