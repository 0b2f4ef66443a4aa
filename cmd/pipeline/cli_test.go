package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// The CLI tests drive `pipeline` exactly as users and CI do: in process through run() for most,
// and as a child process (this test binary re-executed with PIPELINE_TEST_MAIN=1) where a second
// process or a signal is part of the story. Remote stages talk to the project's Replicate test
// server over loopback; nothing leaves the machine.

func TestMain(m *testing.M) {
	if os.Getenv("PIPELINE_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

// cli runs the command in process.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (r result) String() string {
	return "exit " + itoa(r.code) + "\n--- stdout\n" + r.stdout + "\n--- stderr\n" + r.stderr
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// examplesData is the committed synthetic dataset.
func examplesData(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs("../../examples/data")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// retrainConfig is a one- or two-subject pipeline like the example, fast to poll.
func retrainConfig(t *testing.T, subjects string) string {
	return `
variable "subjects" {
  type    = list(string)
  default = ` + subjects + `
}
variable "rank" {
  type    = number
  default = 16
}
variable "hf_token" {
  type      = string
  default   = "hf_DoNotLeakThisValue"
  sensitive = true
}
variable "wandb_api_key" {
  type    = string
  default = "wandb_NotMarkedSensitiveButNamedLikeASecret"
}
batch { for_each = toset(var.subjects) }
replicate {
  trainer     = "` + replicatetest.Trainer + `"
  destination = "acme/${each.key}-lora"
}
stage "image_check" "photos" {
  dir       = "` + examplesData(t) + `/${each.key}"
  min_count = 12
}
stage "params" "tuned" {
  image_count = image_check.photos.count
  limit "lora_rank" { max = 64 }
}
stage "train" "lora" {
  images        = image_check.photos.accepted
  input         = merge(params.tuned.values, { trigger_word = "TOK", lora_rank = var.rank, hf_token = var.hf_token, wandb_api_key = var.wandb_api_key })
  poll_interval = "1s"
}
stage "loss_gate" "fit" {
  training = train.lora
}
stage "generate" "check" {
  version       = train.lora.version
  prompts       = ["a portrait photo of TOK"]
  seeds         = [1, 2, 3]
  reference     = image_check.photos
  out_dir       = "gen/${each.key}"
  poll_interval = "1s"
  depends_on    = [loss_gate.fit]
}
stage "prune" "old" {
  model      = "acme/${each.key}-lora"
  keep_last  = 2
  depends_on = [generate.check]
}
output "version" { value = train.lora.version }
`
}

// world is a test server plus a config directory wired to it through the environment.
type world struct {
	srv  *replicatetest.Server
	dir  string
	conf string
}

func newWorld(t *testing.T, subjects string) *world {
	t.Helper()
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	conf := filepath.Join(dir, "retrain.hcl")
	if err := os.WriteFile(conf, []byte(retrainConfig(t, subjects)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REPLICATE_BASE_URL", srv.URL())
	t.Setenv("REPLICATE_API_TOKEN", srv.Token())
	t.Setenv("CI", "true")
	return &world{srv: srv, dir: dir, conf: conf}
}

func (w *world) stateFile() string { return filepath.Join(w.dir, ".pipeline", "retrain.state.json") }

func assertNoSecret(t *testing.T, where, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains a secret (%q)", where, sec)
		}
	}
}

func TestApplyHappyPathThenNothingToDo(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ana"]`)
	w.srv.AddModel("acme", "ana-lora", 3)
	r := cli(t, "apply", "-auto-approve", w.conf)
	if r.code != 0 {
		t.Fatalf("apply failed: %s", r)
	}
	if n := w.srv.Count("created training"); n != 1 {
		t.Errorf("%d trainings created, want 1", n)
	}
	if n := w.srv.Count("created prediction"); n != 6 {
		t.Errorf("%d predictions, want 6 (3 seeds on the new and on the previous version)", n)
	}
	// prune keeps 2 (the new one counts): two of the three older versions go.
	if n := w.srv.Count("deleted version"); n != 2 {
		t.Errorf("%d versions deleted, want 2", n)
	}
	if n := len(w.srv.VersionIDs("acme", "ana-lora")); n != 2 {
		t.Errorf("%d versions left, want 2", n)
	}
	for _, f := range []string{"gen/ana/report.html", "gen/ana/contact_sheet.png"} {
		if _, err := os.Stat(filepath.Join(w.dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	st, _ := os.ReadFile(w.stateFile())
	assertNoSecret(t, "state", string(st), w.srv.Token(), "hf_DoNotLeakThisValue", "wandb_NotMarked")
	assertNoSecret(t, "output", r.stdout+r.stderr, w.srv.Token(), "hf_DoNotLeakThisValue", "wandb_NotMarked")

	r = cli(t, "plan", "-detailed-exitcode", w.conf)
	if r.code != 0 {
		t.Fatalf("plan after apply should find nothing to do (exit 0): %s", r)
	}
	r = cli(t, "apply", "-auto-approve", w.conf)
	if r.code != 0 || w.srv.Count("created training") != 1 {
		t.Fatalf("second apply: %s (trainings %d)", r, w.srv.Count("created training"))
	}
	r = cli(t, "output", "version", w.conf)
	if r.code != 0 || !strings.Contains(r.stdout, "acme/ana-lora:") {
		t.Errorf("output version: %s", r)
	}
	// With -state the config file is optional; NAME still picks one output.
	r = cli(t, "output", "-json", "-state", w.stateFile(), "version")
	var byKey map[string]string
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &byKey) != nil || !strings.HasPrefix(byKey["ana"], "acme/ana-lora:") {
		t.Errorf("output -json -state PATH version: %s", r)
	}
}

func TestOverfitIsRejectedAndTheBadVersionDeleted(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ana"]`)
	w.srv.AddModel("acme", "ana-lora", 2)
	before := w.srv.VersionIDs("acme", "ana-lora")
	r := cli(t, "apply", "-auto-approve", "-var", "rank=48", w.conf)
	if r.code != 3 {
		t.Fatalf("overfit apply should exit 3: %s", r)
	}
	if !strings.Contains(r.stdout, "overfit") {
		t.Errorf("no overfitting reason in the output: %s", r)
	}
	after := w.srv.VersionIDs("acme", "ana-lora")
	if strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("versions after a rejected retrain = %v, want the old ones untouched %v", after, before)
	}
	if n := w.srv.Count("created prediction"); n != 0 {
		t.Errorf("generate ran %d predictions after a gate failure", n)
	}
	if !strings.Contains(r.stdout, `generate.check["ana"] skipped`) || !strings.Contains(r.stdout, `prune.old["ana"] skipped`) {
		t.Errorf("downstream stages should be reported skipped: %s", r)
	}
	if !strings.Contains(r.stdout, "::error") {
		t.Errorf("CI=true should print a GitHub Actions annotation: %s", r)
	}
}

func TestMissingTokenFailsBeforeAnythingRuns(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	t.Setenv("REPLICATE_API_TOKEN", "")
	r := cli(t, "apply", "-auto-approve", w.conf)
	if r.code != 1 || !strings.Contains(r.stderr, "REPLICATE_API_TOKEN is not set") || !strings.Contains(r.stderr, "-simulate") {
		t.Fatalf("want a clear token error with a hint: %s", r)
	}
	if w.srv.Count("uploaded file")+w.srv.Count("created training") != 0 {
		t.Errorf("something reached the API without a token")
	}
	if _, err := os.Stat(w.stateFile()); err == nil {
		t.Errorf("state was written although nothing ran")
	}
}

func TestPlanJSONEventsAreOneObjectPerLine(t *testing.T) {
	w := newWorld(t, `["ana", "ben"]`)
	r := cli(t, "plan", "-json", w.conf)
	if r.code != 0 {
		t.Fatalf("plan: %s", r)
	}
	types := map[string]int{}
	planned := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		if ev["@timestamp"] == nil {
			t.Errorf("event without @timestamp: %v", ev)
		}
		typ, _ := ev["type"].(string)
		types[typ]++
		if typ == "planned_change" {
			planned[ev["address"].(string)], _ = ev["action"].(string)
		}
		if typ == "stage_outputs" && ev["address"] == `params.tuned["ana"]` {
			values := ev["outputs"].(map[string]any)["values"].(map[string]any)
			if _, ok := values["lora_rank"].(float64); !ok {
				t.Errorf("params values.lora_rank should be a JSON number: %v", values)
			}
		}
	}
	if len(planned) != 12 {
		t.Errorf("%d planned_change events, want 12 (6 stages × 2 subjects): %v", len(planned), planned)
	}
	if planned[`train.lora["ben"]`] != "run" {
		t.Errorf("train action %q", planned[`train.lora["ben"]`])
	}
	if types["stage_outputs"] != 4 || types["change_summary"] != 1 {
		t.Errorf("event types = %v, want 4 stage_outputs (read-only stages) and 1 change_summary", types)
	}
}

func TestValidateReportsErrorsWithFileLineAndSnippet(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.hcl")
	os.WriteFile(conf, []byte(`
stage "image_check" "photos" {
  dir      = "x"
  min_cont = 3
}
stage "params" "tuned" {
  image_count = image_check.photos.cuont
}
`), 0o644)
	r := cli(t, "validate", "-no-color", conf)
	if r.code != 1 {
		t.Fatalf("validate should fail: %s", r)
	}
	for _, want := range []string{"bad.hcl:4", "min_cont", "min_count", "bad.hcl:7", "cuont", "count"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("diagnostics lack %q: %s", want, r)
		}
	}
	r = cli(t, "validate", "-json", conf)
	if r.code != 1 || !strings.Contains(r.stdout, `"type":"diagnostic"`) || !strings.Contains(r.stdout, `"line":4`) {
		t.Errorf("-json diagnostics: %s", r)
	}
}

func TestFmtCheckExitsThreeOnUnformattedFiles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "p.hcl")
	os.WriteFile(conf, []byte("stage \"image_check\" \"p\" {\n dir=\"x\"\n}\n"), 0o644)
	if r := cli(t, "fmt", "-check", conf); r.code != 3 {
		t.Fatalf("fmt -check on an unformatted file: %s", r)
	}
	if r := cli(t, "fmt", conf); r.code != 0 {
		t.Fatalf("fmt: %s", r)
	}
	if r := cli(t, "fmt", "-check", conf); r.code != 0 {
		t.Fatalf("fmt -check after fmt: %s", r)
	}
}

func TestGraphPrintsDOT(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	r := cli(t, "graph", w.conf)
	if r.code != 0 || !strings.HasPrefix(strings.TrimSpace(r.stdout), "digraph") || !strings.Contains(r.stdout, "train.lora") {
		t.Fatalf("graph: %s", r)
	}
}

func TestApplyRefusesWithoutConfirmationWhenNotInteractive(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	r := cli(t, "apply", w.conf)
	if r.code != 1 || !strings.Contains(r.stderr, "-auto-approve") {
		t.Fatalf("non-interactive apply without -auto-approve: %s", r)
	}
	if w.srv.Count("created training") != 0 {
		t.Error("a training started without confirmation")
	}
}

func TestSavedPlanIsRefusedWhenStateMovedOn(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ana"]`)
	planFile := filepath.Join(w.dir, "plan.out")
	if r := cli(t, "plan", "-out", planFile, w.conf); r.code != 0 {
		t.Fatalf("plan -out: %s", r)
	}
	b, _ := os.ReadFile(planFile)
	assertNoSecret(t, "plan file", string(b), "hf_DoNotLeakThisValue", "wandb_NotMarked", w.srv.Token())
	if r := cli(t, "apply", "-auto-approve", w.conf); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	r := cli(t, "apply", planFile)
	if r.code != 1 || !strings.Contains(r.stderr, "stale") {
		t.Fatalf("a stale saved plan must be refused: %s", r)
	}
	if w.srv.Count("created training") != 1 {
		t.Errorf("the stale plan started a training")
	}
}

func TestStateListShowRm(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ana"]`)
	if r := cli(t, "apply", "-auto-approve", w.conf); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	r := cli(t, "state", "list", w.conf)
	if r.code != 0 || !strings.Contains(r.stdout, `train.lora["ana"]`) || !strings.Contains(r.stdout, "complete") {
		t.Fatalf("state list: %s", r)
	}
	r = cli(t, "state", "show", "-json", `train.lora["ana"]`, w.conf)
	if r.code != 0 || !strings.Contains(r.stdout, "training_id") {
		t.Fatalf("state show: %s", r)
	}
	// In a batch a stage's address needs its key: say which one was meant.
	for _, addr := range []string{"train.lora", `train.lora["anna"]`} {
		r = cli(t, "state", "show", addr, w.conf)
		if r.code != 1 || !strings.Contains(r.stderr, `did you mean train.lora["ana"]? (or state list)`) {
			t.Errorf("state show %s: %s", addr, r)
		}
	}
	r = cli(t, "state", "rm", `prune.old["ana"]`, w.conf)
	if r.code != 0 {
		t.Fatalf("state rm: %s", r)
	}
	r = cli(t, "plan", "-json", w.conf)
	if !strings.Contains(r.stdout, `"action":"run","address":"prune.old[\"ana\"]"`) {
		t.Errorf("after state rm the stage should plan to run: %s", r)
	}
}

// child starts this test binary as the pipeline CLI.
func child(t *testing.T, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "PIPELINE_TEST_MAIN=1"), env...)
	return cmd
}

func TestPlanFileNeverHoldsAValueThatReachedASecretInput(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	conf := strings.Replace(retrainConfig(t, `["ana"]`), `variable "rank" {`, `variable "hf" {
  type = string
}
variable "rank" {`, 1)
	conf = strings.Replace(conf, "hf_token = var.hf_token", "hf_token = var.hf", 1)
	os.WriteFile(w.conf, []byte(conf), 0o644)
	planFile := filepath.Join(w.dir, "plan.out")
	r := cli(t, "plan", "-out", planFile, "-var", "hf=hf_FromAPlainVariable", w.conf)
	if r.code != 0 {
		t.Fatalf("plan -out: %s", r)
	}
	b, _ := os.ReadFile(planFile)
	assertNoSecret(t, "plan file", string(b), "hf_FromAPlainVariable")
	assertNoSecret(t, "plan output", r.stdout+r.stderr, "hf_FromAPlainVariable")
	// Applying the plan asks for the value again instead of guessing, and knows a different one.
	r = cli(t, "apply", planFile)
	if r.code != 1 || !strings.Contains(r.stderr, `"hf"`) {
		t.Errorf("apply of a plan without the secret's value: %s", r)
	}
	r = cli(t, "apply", "-var", "hf=hf_SomethingElse", planFile)
	if r.code != 1 || !strings.Contains(r.stderr, "differs from the planned one") {
		t.Errorf("apply of a plan with another secret value: %s", r)
	}
	if w.srv.Count("created training") != 0 {
		t.Error("a refused saved plan started a training")
	}
}

func TestHelpExitsZeroAndMissingConfigIsAnError(t *testing.T) {
	for _, args := range [][]string{{"plan", "-h"}, {"apply", "-h"}, {"state", "-h"}, {"validate", "-h"}} {
		if r := cli(t, args...); r.code != 0 {
			t.Errorf("%v: exit %d, want 0\n%s", args, r.code, r)
		}
	}
	for _, args := range [][]string{{"output", "nonexist.hcl"}, {"state", "list", "nonexist.hcl"}, {"output", "version"}} {
		if r := cli(t, args...); r.code != 1 || !strings.Contains(r.stderr, "no such config file") {
			t.Errorf("%v: %s, want exit 1 naming the missing config", args, r)
		}
	}
}

// validate catches what plan would only find later: a stage of the wrong kind where a whole stage
// is expected, values outside an attribute's choices or bounds, and malformed durations.
func TestValidateChecksStageKindsChoicesAndBounds(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.hcl")
	os.WriteFile(conf, []byte(`
stage "image_check" "photos" {
  dir = "x"
}
stage "params" "tuned" {
  image_count = image_check.photos.count
}
stage "train" "lora" {
  images        = image_check.photos.accepted
  poll_interval = "soon"
}
stage "loss_gate" "fit" {
  training = image_check.photos
}
stage "generate" "g" {
  version    = train.lora.version
  prompts    = ["p"]
  reference  = params.tuned
  on_plastic = "explode"
}
stage "prune" "p" {
  model     = "acme/x"
  keep_last = -1
}
`), 0o644)
	r := cli(t, "validate", "-no-color", conf)
	if r.code != 1 {
		t.Fatalf("validate should fail: %s", r)
	}
	for _, want := range []string{"bad.hcl:10:", "not a positive duration", "bad.hcl:13:", "whole train stage", "bad.hcl:18:", "whole image_check stage",
		"bad.hcl:19:", `"explode" is not one of "warn", "fail"`, "bad.hcl:23:", "below its minimum 1"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, r.stderr)
		}
	}
}
