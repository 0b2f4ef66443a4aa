package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// TestSecondProcessGetsLockedExitFour: while one process holds the state lock, apply in another
// process exits 4 and says who holds it.
func TestSecondProcessGetsLockedExitFour(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	st, err := state.Open(context.Background(), "", w.conf)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lock, err := st.Lock(context.Background(), "ana", state.NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	summary := w.dir + "/summary.md"
	cmd := child(t, []string{"GITHUB_STEP_SUMMARY=" + summary}, "apply", "-auto-approve", w.conf)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("want exit 4, got %v\n%s", err, out)
	}
	host, _ := os.Hostname()
	for _, want := range []string{"locked by pid " + itoa(os.Getpid()), host} {
		if !strings.Contains(string(out), want) {
			t.Errorf("lock error lacks %q:\n%s", want, out)
		}
	}
	if w.srv.Count("created training") != 0 {
		t.Error("a locked apply started a training")
	}
	// Under -json the reason is a diagnostic event on stdout too.
	js, _ := child(t, nil, "apply", "-auto-approve", "-json", w.conf).Output()
	if !strings.Contains(string(js), `"type":"diagnostic"`) || !strings.Contains(string(js), "locked by pid") {
		t.Errorf("-json lock error should be a diagnostic event:\n%s", js)
	}
	b, err := os.ReadFile(summary)
	if err != nil || !strings.Contains(string(b), "| ana | locked elsewhere: state is locked by pid "+itoa(os.Getpid())) {
		t.Errorf("the job summary should name the subject locked elsewhere (err %v):\n%s", err, b)
	}
	// The state commands exit 0 or 1 (SPEC): a held lock is an error that names its holder.
	out, err = child(t, nil, "state", "rm", `train.lora["ana"]`, w.conf).CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "locked by pid") {
		t.Errorf("state rm on a locked subject: %v, want exit 1 naming the holder\n%s", err, out)
	}
}

// TestCtrlCDuringTrainingNeverCancelsItAndTheNextApplyReattaches sends SIGINT to a real apply
// process once its training reports progress.
func TestCtrlCDuringTrainingNeverCancelsItAndTheNextApplyReattaches(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ana"]`)
	stderr, err := signalWhenTraining(t, child(t, nil, "apply", "-auto-approve", "-json", w.conf), syscall.SIGINT)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("an interrupted apply must exit non-zero, got %v", err)
	}
	if w.srv.Count("canceled training") != 0 {
		t.Fatal("Ctrl-C cancelled a paid training")
	}
	if !strings.Contains(stderr, "Stopping") {
		t.Errorf("no stopping message on stderr: %s", stderr)
	}
	if !strings.Contains(stderr, `‖ train.lora["ana"] interrupted`) || strings.Contains(stderr, "failed") {
		t.Errorf("the interrupt should read as interrupted, not failed: %s", stderr)
	}
	// The plan names the recorded training: re-attached, not a new paid one.
	plan := cli(t, "plan", "-json", w.conf)
	if !strings.Contains(plan.stdout, `"action":"reattach","address":"train.lora[\"ana\"]"`) {
		t.Errorf("plan after the interrupt should re-attach the training: %s", plan)
	}
	if human := cli(t, "plan", w.conf); !strings.Contains(human.stdout, `↻ train.lora["ana"] will re-attach`) {
		t.Errorf("plan after the interrupt: %s", human)
	}
	// The lock was released: the next apply can take it, re-attaches, and creates nothing new.
	r := cli(t, "apply", "-auto-approve", w.conf)
	if r.code != 0 {
		t.Fatalf("resumed apply: %s", r)
	}
	if n := w.srv.Count("created training"); n != 1 {
		t.Errorf("%d trainings created across the interrupted and the resumed apply, want 1", n)
	}
}

// TestStepSummaryForGitHubActions: with GITHUB_STEP_SUMMARY set, apply appends a Markdown table
// with one row per subject.
func TestStepSummaryForGitHubActions(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ana", "ben"]`)
	summary := w.dir + "/summary.md"
	t.Setenv("GITHUB_STEP_SUMMARY", summary)
	r := cli(t, "apply", "-auto-approve", "-only", "ben", w.conf)
	if r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"| subject | outcome | photos | rank | steps | final loss | version | report | cost |", "| ben | trained | 16 | 16 |", "acme/ben-lora:", "gen/ben/report.html"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "| ana |") {
		t.Errorf("-only ben must not report ana:\n%s", s)
	}
}
