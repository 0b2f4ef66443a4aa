// Package ci_test checks the GitHub Actions workflow examples/github-actions/retrain.yml: actionlint
// (as a library, without shellcheck or pyflakes, so the test is hermetic) reports nothing, the
// workflow keeps its structural promises (schedule and manual triggers, a shard matrix feeding
// -shard, one run at a time, the token only from secrets), and its apply step, run the way a GitHub
// runner runs it against a loopback Replicate test server and file:// remote state, trains every
// subject once across concurrent shards, surfaces exit 4 for a subject locked elsewhere, and leaves
// resumable state when cancelled with SIGINT.
//
//	go test ./examples/ci_test/            # everything (builds cmd/pipeline, ~30 s)
//	go test -short ./examples/ci_test/     # lint and structure only
package ci_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rhysd/actionlint"

	"github.com/pipeline-dev/pipeline/pipeline/state"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

const workflowPath = "../github-actions/retrain.yml"

func readWorkflow(t *testing.T) (string, []byte, *actionlint.Workflow) {
	t.Helper()
	path, err := filepath.Abs(workflowPath)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the workflow: %v", err)
	}
	wf, errs := actionlint.Parse(src)
	for _, e := range errs {
		t.Errorf("%s:%d:%d: %s", workflowPath, e.Line, e.Column, e.Message)
	}
	if wf == nil {
		t.Fatalf("%s does not parse as a workflow", workflowPath)
	}
	return path, src, wf
}

// newLinter is actionlint with no external tools: an empty Shellcheck or Pyflakes means "do not
// run it", whatever is on PATH.
func newLinter(t *testing.T, out *bytes.Buffer) *actionlint.Linter {
	t.Helper()
	l, err := actionlint.NewLinter(out, &actionlint.LinterOptions{Shellcheck: "", Pyflakes: ""})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestWorkflowPassesActionlint(t *testing.T) {
	path, src, _ := readWorkflow(t)
	var out bytes.Buffer
	errs, err := newLinter(t, &out).LintFile(path, nil)
	if err != nil {
		t.Fatalf("actionlint could not lint %s: %v", workflowPath, err)
	}
	for _, e := range errs {
		t.Errorf("%s:%d:%d: %s [%s]", workflowPath, e.Line, e.Column, e.Message, e.Kind)
	}

	// The linter is really wired: the same file with a misspelt matrix key must fail.
	broken := bytes.Replace(src, []byte("${{ matrix.shard }}"), []byte("${{ matrix.shards }}"), 1)
	if bytes.Equal(broken, src) {
		t.Fatal("the workflow no longer uses ${{ matrix.shard }}")
	}
	out.Reset()
	errs, err = newLinter(t, &out).Lint(path, broken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) == 0 {
		t.Fatal("actionlint found nothing wrong with ${{ matrix.shards }}: the lint above proves nothing")
	}
}

// env returns a step's or job's env map (name → value).
func env(e *actionlint.Env) map[string]string {
	m := map[string]string{}
	if e == nil {
		return m
	}
	for _, v := range e.Vars {
		m[v.Name.Value] = v.Value.Value
	}
	return m
}

// stepByID finds a step by its id.
func stepByID(j *actionlint.Job, id string) *actionlint.Step {
	for _, s := range j.Steps {
		if s.ID != nil && s.ID.Value == id {
			return s
		}
	}
	return nil
}

// stepUsing finds the first step that uses action (without the @version).
func stepUsing(j *actionlint.Job, action string) (*actionlint.Step, *actionlint.ExecAction) {
	for _, s := range j.Steps {
		if a, ok := s.Exec.(*actionlint.ExecAction); ok && strings.HasPrefix(a.Uses.Value, action+"@") {
			return s, a
		}
	}
	return nil, nil
}

func input(a *actionlint.ExecAction, name string) string {
	if in, ok := a.Inputs[name]; ok && in.Value != nil {
		return in.Value.Value
	}
	return ""
}

// applyJob returns the one job of the workflow.
func applyJob(t *testing.T, wf *actionlint.Workflow) *actionlint.Job {
	t.Helper()
	j := wf.Jobs["apply"]
	if j == nil || len(wf.Jobs) != 1 {
		t.Fatalf("want exactly one job, apply; have %d", len(wf.Jobs))
	}
	return j
}

// shardCount checks the matrix is exactly shard: [1..N] (so strategy.job-total is N) and returns N.
func shardCount(t *testing.T, j *actionlint.Job) int {
	t.Helper()
	if j.Strategy == nil || j.Strategy.Matrix == nil {
		t.Fatal("the apply job has no matrix")
	}
	m := j.Strategy.Matrix
	if m.Expression != nil || m.Include != nil || m.Exclude != nil || len(m.Rows) != 1 || m.Rows["shard"] == nil {
		t.Fatal("the matrix must be exactly `shard: [1, ..., N]`: strategy.job-total is N only then")
	}
	row := m.Rows["shard"]
	if row.Expression != nil || len(row.Values) < 2 {
		t.Fatalf("matrix.shard must list at least 2 literal shards, has %d", len(row.Values))
	}
	for i, v := range row.Values {
		s, ok := v.(*actionlint.RawYAMLString)
		if !ok || s.Value != strconv.Itoa(i+1) {
			t.Fatalf("matrix.shard[%d] = %v, want %d: shards are 1..N", i, v, i+1)
		}
	}
	return len(row.Values)
}

func TestWorkflowPromises(t *testing.T) {
	_, src, wf := readWorkflow(t)

	// Triggers: a schedule and a manual run with an optional subjects input.
	var cron, manual bool
	for _, ev := range wf.On {
		switch e := ev.(type) {
		case *actionlint.ScheduledEvent:
			cron = len(e.Schedules) > 0
		case *actionlint.WorkflowDispatchEvent:
			in := e.Inputs["subjects"]
			if in == nil || (in.Required != nil && in.Required.Value) {
				t.Error("workflow_dispatch needs an optional `subjects` input")
			}
			manual = true
		}
	}
	if !cron || !manual {
		t.Errorf("triggers: schedule %v, workflow_dispatch %v; want both", cron, manual)
	}

	// One run at a time, never cancelling the one in progress.
	c := wf.Concurrency
	if c == nil || c.Group == nil || strings.TrimSpace(c.Group.Value) == "" {
		t.Fatal("no workflow-level concurrency group: two runs could overlap")
	}
	for _, perRun := range []string{"github.run_id", "github.run_number", "github.run_attempt", "github.sha", "github.ref", "github.event_name"} {
		if strings.Contains(c.Group.Value, perRun) {
			t.Errorf("concurrency group %q varies with %s, so two runs would not share it", c.Group.Value, perRun)
		}
	}
	if c.CancelInProgress == nil || c.CancelInProgress.Expression != nil || c.CancelInProgress.Value {
		t.Error("concurrency must say cancel-in-progress: false (never stop the follower of paid trainings)")
	}
	if p := wf.Permissions; p == nil || p.Scopes["id-token"] == nil || p.Scopes["id-token"].Value.Value != "write" ||
		p.Scopes["contents"] == nil || p.Scopes["contents"].Value.Value != "read" {
		t.Error("permissions must be contents: read and id-token: write (OIDC for the state bucket), nothing more")
	} else if len(p.Scopes) != 2 {
		t.Errorf("permissions grant %d scopes, want only contents and id-token", len(p.Scopes))
	}

	j := applyJob(t, wf)
	n := shardCount(t, j)
	if j.Strategy.FailFast == nil || j.Strategy.FailFast.Value || j.Strategy.FailFast.Expression != nil {
		t.Error("strategy.fail-fast must be false: one refused subject must not cancel other shards' trainings")
	}
	if j.TimeoutMinutes == nil || j.TimeoutMinutes.Value <= 0 || j.TimeoutMinutes.Value > 360 {
		t.Error("the apply job needs a timeout-minutes within GitHub's 6 h")
	}
	if j.ContinueOnError != nil {
		t.Error("continue-on-error on the job would hide exit codes 3 and 4")
	}

	_, setup := stepUsing(j, "actions/setup-go")
	if setup == nil || input(setup, "go-version-file") != "go.mod" {
		t.Error("actions/setup-go must take go-version-file: go.mod")
	}
	build := false
	for _, s := range j.Steps {
		if r, ok := s.Exec.(*actionlint.ExecRun); ok && strings.TrimSpace(r.Run.Value) == "go build -o bin/pipeline ./cmd/pipeline" {
			build = true
		}
	}
	if !build {
		t.Error("no step runs `go build -o bin/pipeline ./cmd/pipeline`")
	}
	if _, aws := stepUsing(j, "aws-actions/configure-aws-credentials"); aws == nil || input(aws, "role-to-assume") == "" {
		t.Error("AWS credentials for the state bucket must come from configure-aws-credentials with role-to-assume (OIDC)")
	}

	apply := stepByID(j, "apply")
	if apply == nil {
		t.Fatal("no step with id: apply")
	}
	run, ok := apply.Exec.(*actionlint.ExecRun)
	if !ok {
		t.Fatal("the apply step must be a run step")
	}
	if apply.ContinueOnError != nil {
		t.Error("continue-on-error on the apply step would hide exit codes 3 and 4")
	}
	e := env(apply.Env)
	for name, want := range map[string]string{
		"REPLICATE_API_TOKEN": "${{ secrets.REPLICATE_API_TOKEN }}",
		"PIPELINE_STATE_URL":  "${{ vars.PIPELINE_STATE_URL }}",
		"SHARD":               "${{ matrix.shard }}",
		"SHARDS":              "${{ strategy.job-total }}",
		"SUBJECTS":            "${{ inputs.subjects }}",
	} {
		if e[name] != want {
			t.Errorf("apply step env %s = %q, want %q", name, e[name], want)
		}
	}
	script := run.Run.Value
	if actionlint.ContainsExpression(script) {
		t.Error("the apply script splices ${{ }} into its text: pass values through env (injection)")
	}
	cmd := regexp.MustCompile(`(?m)^\s*exec bin/pipeline apply -auto-approve -shard "\$SHARD/\$SHARDS" -state "\$PIPELINE_STATE_URL" "\$\{only\[@\]\}" examples/retrain\.hcl\s*$`)
	if !cmd.MatchString(script) {
		t.Errorf("the apply script must exec `bin/pipeline apply -auto-approve -shard \"$SHARD/$SHARDS\" -state \"$PIPELINE_STATE_URL\" ... examples/retrain.hcl` (exec: the cancel signal reaches pipeline); script:\n%s", script)
	}
	for _, bad := range []string{"|| true", "|| :", "set -x", "set +e", "echo $REPLICATE_API_TOKEN", `echo "$REPLICATE_API_TOKEN"`} {
		if strings.Contains(script, bad) {
			t.Errorf("the apply script contains %q", bad)
		}
	}
	// The token goes to the apply step only, from secrets only.
	if got := strings.Count(string(src), "REPLICATE_API_TOKEN }}"); got != 1 {
		t.Errorf("the workflow hands REPLICATE_API_TOKEN out %d times, want once (to the apply step, from secrets)", got)
	}
	if n < 2 {
		t.Errorf("%d shards", n)
	}

	up, upload := stepUsing(j, "actions/upload-artifact")
	if upload == nil {
		t.Fatal("no actions/upload-artifact step")
	}
	if up.If == nil || strings.TrimSpace(up.If.Value) != "always()" {
		t.Error("the upload step must run if: always() (a refused subject's report matters most)")
	}
	if name := input(upload, "name"); !strings.Contains(name, "${{ matrix.shard }}") {
		t.Errorf("artifact name %q must differ per shard (upload-artifact v4+ refuses duplicates)", name)
	}
	if p := input(upload, "path"); strings.TrimSpace(p) != "examples/generated/" {
		t.Errorf("artifact path %q, want examples/generated/ (the example's out_dir)", p)
	}
}

// ---- the apply step, run as a GitHub runner runs it ----

// runner runs the workflow's apply step in a workspace laid out like a checkout after the build step.
type runner struct {
	t         *testing.T
	ws        string // the workspace: bin/pipeline, examples/retrain.hcl, examples/data
	script    string
	stepEnv   map[string]string
	srv       *replicatetest.Server
	shards    int
	baseEnv   []string
	token     string
	summaries []string
}

// job is one run of the apply step.
type job struct {
	cmd     *exec.Cmd
	out     syncBuffer
	summary string
	done    chan struct{} // closed when the process has exited
	err     error         // from Wait, once done
}

// exited reports whether the process has ended.
func (j *job) exited() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// syncBuffer is a bytes.Buffer the process's output pipes and the test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// expressions are the values a runner gives the ${{ }} expressions of the step's env.
func (r *runner) resolve(val string, ctx map[string]string) string {
	m := regexp.MustCompile(`^\$\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}$`).FindStringSubmatch(val)
	if m == nil {
		if actionlint.ContainsExpression(val) {
			r.t.Fatalf("the test cannot evaluate %q", val)
		}
		return val
	}
	v, ok := ctx[m[1]]
	if !ok {
		r.t.Fatalf("the test has no value for %s", m[1])
	}
	return v
}

// start starts the step for one shard with the given state URL and manual input.
func (r *runner) start(shard int, stateURL, subjects string) *job {
	r.t.Helper()
	ctx := map[string]string{
		"secrets.REPLICATE_API_TOKEN": r.token,
		"vars.PIPELINE_STATE_URL":     stateURL,
		"matrix.shard":                strconv.Itoa(shard),
		"strategy.job-total":          strconv.Itoa(r.shards),
		"inputs.subjects":             subjects,
	}
	summary := filepath.Join(r.t.TempDir(), "step_summary.md")
	envv := append([]string(nil), r.baseEnv...)
	envv = append(envv, "GITHUB_STEP_SUMMARY="+summary)
	for k, v := range r.stepEnv {
		envv = append(envv, k+"="+r.resolve(v, ctx))
	}
	script := filepath.Join(r.t.TempDir(), "apply.sh")
	if err := os.WriteFile(script, []byte(r.script), 0o600); err != nil {
		r.t.Fatal(err)
	}
	j := &job{summary: summary, done: make(chan struct{})}
	// GitHub's `shell: bash` default.
	j.cmd = exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", script)
	j.cmd.Dir = r.ws
	j.cmd.Env = envv
	j.cmd.Stdout = &j.out
	j.cmd.Stderr = &j.out
	if err := j.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() {
		j.err = j.cmd.Wait()
		close(j.done)
	}()
	return j
}

// wait waits for the job (bounded) and returns its exit code.
func (r *runner) wait(j *job) int {
	r.t.Helper()
	select {
	case <-j.done:
		var ee *exec.ExitError
		if j.err != nil && !errors.As(j.err, &ee) {
			r.t.Fatal(j.err)
		}
	case <-time.After(3 * time.Minute):
		_ = j.cmd.Process.Kill()
		<-j.done
		r.t.Fatalf("the apply step did not finish in 3 minutes; output:\n%s", j.out.String())
	}
	b, _ := os.ReadFile(j.summary)
	r.summaries = append(r.summaries, j.out.String(), string(b))
	j.summary = string(b)
	return j.cmd.ProcessState.ExitCode()
}

// matrix runs all shards at once, as the matrix does, and returns their exit codes.
func (r *runner) matrix(stateURL string) ([]int, []*job) {
	jobs := make([]*job, r.shards)
	for i := range jobs {
		jobs[i] = r.start(i+1, stateURL, "")
	}
	codes := make([]int, r.shards)
	for i, j := range jobs {
		codes[i] = r.wait(j)
	}
	return codes, jobs
}

func (r *runner) trainings() int { return r.srv.Count("POST /v1/trainings") }

// row returns the step summary's table row for subject ("" if none).
func row(summary, subject string) string {
	for _, l := range strings.Split(summary, "\n") {
		if strings.HasPrefix(l, "| "+subject+" |") {
			return l
		}
	}
	return ""
}

func newRunner(t *testing.T) *runner {
	if testing.Short() {
		t.Skip("-short: builds cmd/pipeline and runs the apply step")
	}
	for _, tool := range []string{"go", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH", tool)
		}
	}
	_, _, wf := readWorkflow(t)
	j := applyJob(t, wf)
	step := stepByID(j, "apply")
	if step == nil {
		t.Fatal("no apply step")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ws := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(ws, "bin", "pipeline"), "./cmd/pipeline")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pipeline: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(ws, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(root, "examples", "retrain.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "examples", "retrain.hcl"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "examples", "data"), filepath.Join(ws, "examples", "data")); err != nil {
		t.Fatal(err)
	}

	token := "r8_ci_test_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true, Token: token})
	t.Cleanup(srv.Close)
	return &runner{
		t: t, ws: ws, script: step.Exec.(*actionlint.ExecRun).Run.Value, stepEnv: env(step.Env), srv: srv,
		shards: shardCount(t, j), token: token,
		baseEnv: []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir(),
			"CI=true", "GITHUB_ACTIONS=true", "NO_COLOR=1",
			"REPLICATE_BASE_URL=" + srv.URL(),
		},
	}
}

// freshRunner wipes what a runner keeps between steps (local caches, generated files): a new
// runner starts from a checkout.
func (r *runner) freshRunner() {
	for _, d := range []string{".pipeline", "generated"} {
		if err := os.RemoveAll(filepath.Join(r.ws, "examples", d)); err != nil {
			r.t.Fatal(err)
		}
	}
}

func TestApplyStepAcrossShards(t *testing.T) {
	r := newRunner(t)
	stateDir := t.TempDir()
	stateURL := "file://" + stateDir
	subjects := []string{"ana", "ben"}

	// Another run holds ana's lock (the test process, alive, so the lock is live, not stale).
	st, err := state.OpenRemote(context.Background(), stateURL, "retrain")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	held, err := st.Lock(context.Background(), "ana", state.NewLockInfo("apply"), 0)
	if err != nil {
		t.Fatal(err)
	}

	// 1. The matrix: every shard at once. ana's shard exits 4 and says so; ben is trained once.
	codes, jobs := r.matrix(stateURL)
	anaShard := 0
	for i, code := range codes {
		switch code {
		case 0:
		case 4:
			if anaShard != 0 {
				t.Fatalf("two shards exited 4: %v", codes)
			}
			anaShard = i + 1
			// The log names the lock and how to break it should its holder be dead.
			if out := jobs[i].out.String(); !strings.Contains(out, `locked`) || !strings.Contains(out, `"ana"`) || !strings.Contains(out, "pipeline force-unlock") {
				t.Errorf("shard %d's log does not say ana is locked, by whom and how to unlock:\n%s", i+1, out)
			}
			// A shard that ran other subjects lists ana in its summary too. (A shard whose every
			// subject is locked stops before it writes a summary; its log and exit code say why.)
			if jobs[i].summary != "" && !strings.Contains(row(jobs[i].summary, "ana"), "locked elsewhere") {
				t.Errorf("shard %d's summary does not say ana is locked elsewhere:\n%s", i+1, jobs[i].summary)
			}
		default:
			t.Fatalf("shard %d exited %d:\n%s", i+1, code, jobs[i].out.String())
		}
	}
	if anaShard == 0 {
		t.Fatalf("no shard reported ana's lock with exit 4: exit codes %v", codes)
	}
	if n := r.trainings(); n != 1 {
		t.Fatalf("%d trainings after the first matrix run, want 1 (ben)", n)
	}
	benRow := ""
	for _, j := range jobs {
		if rw := row(j.summary, "ben"); rw != "" {
			benRow = rw
		}
	}
	if !strings.Contains(benRow, "trained") || !strings.Contains(benRow, "acme/ben-lora:") {
		t.Errorf("ben's summary row %q does not say trained with the new version", benRow)
	}
	for _, f := range []string{"report.html", "contact_sheet.png"} {
		if _, err := os.Stat(filepath.Join(r.ws, "examples", "generated", "ben", f)); err != nil {
			t.Errorf("nothing to upload under the artifact path examples/generated/: %v", err)
		}
	}
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}

	// 2. A fresh runner, manual trigger for ana: cancelled (SIGINT to the step's entry process, as
	// GitHub does) once ana's training exists. Exit non-zero, the lock released.
	r.freshRunner()
	before := r.trainings()
	j := r.start(anaShard, stateURL, "ana")
	deadline := time.Now().Add(2 * time.Minute)
	for r.trainings() == before {
		if time.Now().After(deadline) || j.exited() {
			t.Fatalf("ana's training never started; output:\n%s", j.out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the server's counter, not standing in for it
	}
	if err := j.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if code := r.wait(j); code == 0 {
		t.Fatalf("the cancelled apply step exited 0: the signal did not reach pipeline (exec?); output:\n%s", j.out.String())
	}
	if d := time.Since(sent); d > 7500*time.Millisecond {
		t.Errorf("pipeline took %v after SIGINT; GitHub sends SIGTERM after 7.5 s", d)
	}
	if rw := row(j.summary, "ana"); !strings.Contains(rw, "interrupted") {
		t.Errorf("the cancelled run's summary row for ana: %q", rw)
	}
	probe, err := st.Lock(context.Background(), "ana", state.NewLockInfo("probe"), 0)
	if err != nil {
		t.Fatalf("the cancelled run left ana locked: %v", err)
	}
	if err := probe.Unlock(); err != nil {
		t.Fatal(err)
	}

	// 3. The next scheduled run, on fresh runners: all shards exit 0, ana's training is
	// re-attached (no second one), ben is not trained again.
	r.freshRunner()
	codes, jobs = r.matrix(stateURL)
	for i, code := range codes {
		if code != 0 {
			t.Fatalf("shard %d exited %d on the re-run:\n%s", i+1, code, jobs[i].out.String())
		}
	}
	if n := r.trainings(); n != 2 {
		t.Fatalf("%d trainings in all, want 2 (one per subject): the cancelled one was not re-attached", n)
	}
	if rw := row(jobs[anaShard-1].summary, "ana"); !strings.Contains(rw, "trained") {
		t.Errorf("ana's row after the re-run: %q", rw)
	}
	if _, err := os.Stat(filepath.Join(r.ws, "examples", "generated", "ana", "report.html")); err != nil {
		t.Errorf("ana's report is not under the artifact path: %v", err)
	}

	// The token never shows: not in any log, summary or state object.
	var leaks []string
	for i, s := range r.summaries {
		if strings.Contains(s, r.token) {
			leaks = append(leaks, fmt.Sprintf("output/summary #%d", i))
		}
	}
	_ = filepath.WalkDir(stateDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(r.token)) {
				leaks = append(leaks, p)
			}
		}
		return nil
	})
	if len(leaks) > 0 {
		t.Errorf("REPLICATE_API_TOKEN appears in %s", strings.Join(leaks, ", "))
	}
	for _, s := range subjects {
		if !strings.Contains(strings.Join(r.summaries, "\n"), "| "+s+" |") {
			t.Errorf("no summary row for %s", s)
		}
	}
}
