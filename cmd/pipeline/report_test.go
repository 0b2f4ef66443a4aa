package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// The report tests run the real kinds against the test server and keep what people read as
// golden files (go test -update rewrites them).

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// relativeWorld is a world whose config names its photos relative to itself (data/KEY), so what
// plan prints does not depend on where the test runs. data links each subject to a directory.
func relativeWorld(t *testing.T, data map[string]string) *world {
	t.Helper()
	w := newWorld(t, `[]`)
	var keys []string
	for k, dir := range data {
		keys = append(keys, fmt.Sprintf("%q", k))
		if err := os.MkdirAll(filepath.Join(w.dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir, filepath.Join(w.dir, "data", k)); err != nil {
			t.Fatal(err)
		}
	}
	conf := strings.Replace(retrainConfig(t, "["+strings.Join(keys, ", ")+"]"), examplesData(t)+"/${each.key}", "data/${each.key}", 1)
	if err := os.WriteFile(w.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestNoChangePlanOfThreeSubjects: after an apply, the plan of a 3-subject batch is one line per
// stage (plus the warnings about the data) and ends with "No changes.", in at most 25 lines.
func TestNoChangePlanOfThreeSubjects(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	data := examplesData(t)
	w := relativeWorld(t, map[string]string{"ana": data + "/ana", "ben": data + "/ben", "cyd": data + "/ana"})
	if r := cli(t, "apply", "-auto-approve", w.conf); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	r := cli(t, "plan", "-detailed-exitcode", w.conf)
	if r.code != 0 {
		t.Fatalf("plan after apply should find nothing to do (exit 0): %s", r)
	}
	golden(t, "plan_no_changes.golden", r.stdout)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) > 25 || lines[len(lines)-1] != "No changes." {
		t.Errorf("a no-change plan of 3 subjects is %d lines (want at most 25) ending %q", len(lines), lines[len(lines)-1])
	}
	if strings.Contains(r.stdout, "would run") || strings.Contains(r.stdout, "rank 16 learns a face") {
		t.Errorf("up-to-date stages take one line, parameter reasons only when a value changes:\n%s", r.stdout)
	}
	full := cli(t, "plan", "-details", w.conf)
	if !strings.Contains(full.stdout, "rank 16 learns a face") || !strings.Contains(full.stdout, "would run") {
		t.Errorf("-details shows every note and reason:\n%s", full.stdout)
	}
}

// noFaces writes n photos with no face in them (different backgrounds and clothes).
func noFaces(t *testing.T, n int, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	for i := range n {
		img := imagechecktest.Portrait(imagechecktest.Options{Seed: seed + uint64(i)*7919, NoFace: true})
		if err := imagechecktest.WriteJPEG(filepath.Join(dir, fmt.Sprintf("p%02d.jpg", i+1)), img, 90); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestFirstPlanOnPhotosWithoutFaces: one folded warning per subject in the plan, every warning in
// -json.
func TestFirstPlanOnPhotosWithoutFaces(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := relativeWorld(t, map[string]string{"kim": noFaces(t, 16, 1), "lou": noFaces(t, 16, 1000)})
	r := cli(t, "plan", w.conf)
	if r.code != 0 {
		t.Fatalf("plan: %s", r)
	}
	golden(t, "plan_no_faces.golden", r.stdout)
	folded := regexp.MustCompile(`warning: (\d+) of 16 photos: no face found: .*\n +in data/(\w+)/: p\d\d.jpg, `)
	hits := folded.FindAllStringSubmatch(r.stdout, -1)
	if len(hits) != 2 || hits[0][2] != "kim" || hits[1][2] != "lou" {
		t.Fatalf("want one folded no-face warning per subject, got %q:\n%s", hits, r.stdout)
	}
	if n := strings.Count(r.stdout, "no face found"); n != 2 {
		t.Errorf("%d no-face warnings printed, want 2 (one per subject):\n%s", n, r.stdout)
	}
	js := cli(t, "plan", "-json", w.conf)
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(js.stdout), "\n") {
		var ev struct {
			Type     string   `json:"type"`
			Warnings []string `json:"warnings"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Type == "planned_change" {
			for _, w := range ev.Warnings {
				if strings.Contains(w, "no face found") {
					n++
				}
			}
		}
	}
	if want := atoi(hits[0][1]) + atoi(hits[1][1]); n != want || n < 28 {
		t.Errorf("-json keeps every warning: %d no-face warnings, want %d (the folded counts)", n, want)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestFmtDiffAndTheCurrentDirectory: fmt -diff shows a unified diff; fmt with no FILE formats the
// .hcl files of the current directory, as Terraform's does.
func TestFmtDiffAndTheCurrentDirectory(t *testing.T) {
	dir := t.TempDir()
	messy := "stage \"image_check\" \"p\" {\n dir=\"x\"\n}\n"
	for _, n := range []string{"a.hcl", "b.hcl", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(messy), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	r := cli(t, "fmt", "-check", "-diff")
	if r.code != 3 {
		t.Fatalf("fmt -check -diff on unformatted files: %s", r)
	}
	for _, want := range []string{"--- old/a.hcl\n+++ new/a.hcl\n", "- dir=\"x\"\n", "+  dir = \"x\"\n", "--- old/b.hcl"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the diff lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := cli(t, "fmt"); r.code != 0 || r.stdout != "a.hcl\nb.hcl\n" {
		t.Fatalf("fmt with no FILE should format a.hcl and b.hcl: %s", r)
	}
	if b, _ := os.ReadFile("notes.txt"); string(b) != messy {
		t.Errorf("fmt touched a file that is not .hcl")
	}
	if r := cli(t, "fmt", "-check"); r.code != 0 {
		t.Errorf("fmt -check after fmt: %s", r)
	}
}

// TestOutputPrintsHCLAndRaw: output prints values in HCL as apply does; -raw prints a string as is.
func TestOutputPrintsHCLAndRaw(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an image check")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "p.hcl")
	src := `
stage "image_check" "photos" {
  dir       = "` + examplesData(t) + `/ana"
  min_count = 12
}
output "count" { value = image_check.photos.count }
output "first" { value = image_check.photos.accepted[0] }
output "sizes" { value = { small = 1, large = "x" } }
`
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "apply", "-auto-approve", conf); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	first := examplesData(t) + "/ana/ana-01.jpg"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"output", conf}, "count = 17\nfirst = \"" + first + "\"\nsizes = {\n  \"large\" = \"x\"\n  \"small\" = 1\n}\n"},
		{[]string{"output", "first", conf}, "\"" + first + "\"\n"},
		{[]string{"output", "-raw", "first", conf}, first},
		{[]string{"output", "-raw", "count", conf}, "17"},
		{[]string{"output", "-json", "count", conf}, "17\n"},
	} {
		if r := cli(t, tc.args...); r.code != 0 || r.stdout != tc.want {
			t.Errorf("%v: %s\nwant stdout %q", tc.args, r, tc.want)
		}
	}
	if r := cli(t, "output", "-raw", "sizes", conf); r.code != 1 || !strings.Contains(r.stderr, "-raw prints only") {
		t.Errorf("-raw of a map should explain itself: %s", r)
	}
	// apply printed the outputs the same way.
	r := cli(t, "apply", "-auto-approve", conf)
	if !strings.Contains(r.stdout, "sizes = {\n  \"large\" = \"x\"\n  \"small\" = 1\n}\n") {
		t.Errorf("apply should print outputs as output does:\n%s", r.stdout)
	}
}

// TestCostEstimateAndActualCost: with the real kinds against the test server, plan shows each
// paid stage's estimate and the total (human and -json); apply reports what the jobs cost from
// their metrics.predict_time (human, -json and the job summary's cost column).
func TestCostEstimateAndActualCost(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	// Predictions long enough for the client to see them run: predict_time is then above zero.
	srv := replicatetest.NewServer(replicatetest.Options{Auto: true, PredictionTime: 1500 * time.Millisecond})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	conf := filepath.Join(dir, "retrain.hcl")
	if err := os.WriteFile(conf, []byte(retrainConfig(t, `["ana", "ben"]`)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REPLICATE_BASE_URL", srv.URL())
	t.Setenv("REPLICATE_API_TOKEN", srv.Token())
	t.Setenv("CI", "true")

	plan := cli(t, "plan", conf)
	if !regexp.MustCompile(`(?m)^      estimated cost \$[0-9.]+ \(an estimate: .*prediction`).MatchString(plan.stdout) ||
		!regexp.MustCompile(`Estimated cost \$[0-9.]+: an estimate\.`).MatchString(plan.stdout) {
		t.Errorf("plan should show each paid stage's estimate and the total:\n%s", plan.stdout)
	}
	js := events(t, cli(t, "plan", "-json", conf).stdout)
	sum, perStage := 0.0, 0.0
	for _, ev := range js {
		switch ev["type"] {
		case "planned_change":
			if c, ok := ev["estimated_cost_usd"].(float64); ok {
				perStage += c
			}
		case "change_summary":
			sum, _ = ev["estimated_cost_usd"].(float64)
		}
	}
	if sum <= 0 || !near(sum, perStage) {
		t.Errorf("plan -json: estimated_cost_usd %v, want the stages' estimates' sum %v (> 0)", sum, perStage)
	}

	summary := filepath.Join(dir, "summary.md")
	t.Setenv("GITHUB_STEP_SUMMARY", summary)
	r := cli(t, "apply", "-auto-approve", "-only", "ana", conf)
	if r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	if !regexp.MustCompile(`✓ generate.check\["ana"\] complete: .*\(cost \$[0-9.]+\)`).MatchString(r.stdout) ||
		!regexp.MustCompile(`Apply finished: .* Cost \$[0-9.]+ \(from the jobs' run time\)\.`).MatchString(r.stdout) {
		t.Errorf("apply should show what the jobs cost:\n%s", r.stdout)
	}
	if b, _ := os.ReadFile(summary); !regexp.MustCompile(`\| ana \| .* \| \$[0-9.]+ \|\n`).Match(b) {
		t.Errorf("the job summary's cost column is empty:\n%s", b)
	}

	r = cli(t, "apply", "-auto-approve", "-json", "-only", "ben", conf)
	if r.code != 0 {
		t.Fatalf("apply -json: %s", r)
	}
	total, stages := -1.0, 0.0
	for _, ev := range events(t, r.stdout) {
		switch {
		case ev["type"] == "stage_complete" && ev["address"] == `generate.check["ben"]`:
			if c, _ := ev["cost_usd"].(float64); c <= 0 {
				t.Errorf("generate's stage_complete should carry its cost_usd (> 0): %v", ev)
			}
			fallthrough
		case ev["type"] == "stage_complete":
			if c, ok := ev["cost_usd"].(float64); ok {
				stages += c
			}
		case ev["type"] == "change_summary" && ev["operation"] == "apply":
			total, _ = ev["cost_usd"].(float64)
		}
	}
	if total <= 0 || !near(total, stages) {
		t.Errorf("apply change_summary cost_usd %v, want the stages' sum %v (> 0)", total, stages)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-5 }

// events decodes -json lines.
func events(t *testing.T, stdout string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		out = append(out, ev)
	}
	return out
}

// TestMaxCostUSDRefusesAtPlanAndApply: with the real kinds, an estimate over the replicate block's
// max_cost_usd exits 3 at plan and at apply, says the figure, the limit and how to proceed, and
// nothing is uploaded or created.
func TestMaxCostUSDRefusesAtPlanAndApply(t *testing.T) {
	w := newWorld(t, `["ana", "ben"]`)
	conf := strings.Replace(retrainConfig(t, `["ana", "ben"]`), `destination = "acme/${each.key}-lora"`,
		"destination = \"acme/${each.key}-lora\"\n  max_cost_usd = 1", 1)
	if err := os.WriteFile(w.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "plan", w.conf)
	if r.code != 3 || !regexp.MustCompile(`estimated at \$[0-9.]+ .*over\s+max_cost_usd = \$1.00`).MatchString(r.stdout) || !strings.Contains(r.stdout, "-shard I/N") {
		t.Errorf("plan over max_cost_usd should exit 3 with the figure, the limit and how to proceed: %s", r)
	}
	r = cli(t, "apply", "-auto-approve", w.conf)
	if r.code != 3 || !strings.Contains(r.stdout, "Nothing was started") {
		t.Errorf("apply over max_cost_usd should exit 3 and start nothing: %s", r)
	}
	if n := w.srv.Count("uploaded file") + w.srv.Count("created training") + w.srv.Count("created prediction"); n != 0 {
		t.Errorf("%d uploads or creates over max_cost_usd, want none", n)
	}
}

// `prices` written in the replicate block as users write it (an HCL object, not a map) overrides
// the built-in price: plan estimates with it instead of refusing to plan.
func TestPricesInTheReplicateBlockArePlanned(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	conf := strings.Replace(retrainConfig(t, `["ana"]`), `destination = "acme/${each.key}-lora"`,
		"destination = \"acme/${each.key}-lora\"\n  prices = { \"gpu-h100\" = 0.0001 }", 1)
	if err := os.WriteFile(w.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "plan", w.conf)
	if r.code != 0 || strings.Contains(r.stdout, "cannot be planned") || !strings.Contains(r.stdout, "estimated cost") {
		t.Fatalf("plan with prices in the replicate block: %s", r)
	}
	cheap := regexp.MustCompile(`Estimated cost \$([0-9.]+)`).FindStringSubmatch(r.stdout)
	if cheap == nil {
		t.Fatalf("no total estimate: %s", r)
	}
	if f, _ := strconv.ParseFloat(cheap[1], 64); f <= 0 || f > 0.5 {
		t.Errorf("estimate $%s at $0.0001/s: the override was not applied", cheap[1])
	}
}

// The report prices the training from what train reported (cost_usd, from the training's
// metrics.predict_time), not "not known", when generate is handed `training = train.lora`.
func TestReportShowsTheTrainingsCost(t *testing.T) {
	w := newWorld(t, `["ana"]`)
	conf := strings.Replace(retrainConfig(t, `["ana"]`), "  depends_on    = [loss_gate.fit]",
		"  training      = train.lora\n  depends_on    = [loss_gate.fit]", 1)
	if !strings.Contains(conf, "training      = train.lora") {
		t.Fatal("the config has no generate stage to hand the training to")
	}
	if err := os.WriteFile(w.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "apply", "-auto-approve", w.conf); r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	html, err := os.ReadFile(filepath.Join(w.dir, "gen/ana/report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`id="cost-training">\$[0-9]`).Match(html) {
		t.Errorf("the report shows no training cost: %s", regexp.MustCompile(`id="cost-training">[^<]*`).Find(html))
	}
}
