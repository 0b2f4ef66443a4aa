package generate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// natural is the research's default training: the test server's outputs keep their texture.
var natural = map[string]any{"lora_rank": 16, "steps": 1000, "learning_rate": 4e-4}

// overfit is the failure this project exists for: rank 48, many steps; outputs come out smoothed.
var overfit = map[string]any{"lora_rank": 48, "steps": 2000, "learning_rate": 4e-4}

func TestApplyHappyPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	oldIDs := h.srv.VersionIDs("acme", "ana-lora") // newest first
	version := h.train(natural)
	rec := &recorder{}
	res, err := h.apply(h.request(map[string]cty.Value{
		"version":   cty.StringVal(version),
		"prompts":   strList("a photo of TOK", "TOK smiling"),
		"seeds":     numList(1, 2),
		"reference": h.ref,
	}, nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	out := res.Outputs
	t.Logf("verdict %s ratio %.3f; previous %s %.3f; reason: %s", str(out["verdict"]), number(out["texture_ratio"]),
		str(out["previous_verdict"]), number(out["previous_texture_ratio"]), str(out["reason"]))
	if res.Refused != "" || len(res.Deletes) != 0 {
		t.Errorf("refused %q, deletes %v", res.Refused, res.Deletes)
	}
	if got := str(out["verdict"]); got != skin.Natural {
		t.Errorf("verdict %s, want natural: %s", got, str(out["reason"]))
	}
	if r := number(out["texture_ratio"]); r < 0.8 || r > 1.25 {
		t.Errorf("texture_ratio %.3f, want about 1 for an unchanged face", r)
	}
	if got, want := str(out["previous_version"]), "acme/ana-lora:"+oldIDs[0]; got != want {
		t.Errorf("previous_version %s, want the newest older version %s", got, want)
	}
	if str(out["previous_verdict"]) != skin.Natural || number(out["previous_texture_ratio"]) <= 0 {
		t.Errorf("previous: %s %.3f", str(out["previous_verdict"]), number(out["previous_texture_ratio"]))
	}
	// 2 prompts × 2 seeds on each version, every one requested as a single PNG at portrait guidance.
	if n := h.srv.Count("created prediction"); n != 8 {
		t.Errorf("%d predictions created, want 8", n)
	}
	images := out["images"].AsValueSlice()
	if len(images) != 8 || out["texture"].LengthInt() != 8 {
		t.Fatalf("images %d, texture entries %d; want 8", len(images), out["texture"].LengthInt())
	}
	for _, r := range rec.record().Runs {
		p, err := h.c.GetPrediction(context.Background(), r.PredictionID)
		if err != nil {
			t.Fatal(err)
		}
		if p.Input["output_format"] != "png" || p.Input["num_outputs"] != 1.0 || p.Input["guidance_scale"] != 3.5 ||
			p.Input["num_inference_steps"] != 28.0 || p.Input["lora_scale"] != 1.0 || p.Input["seed"] != float64(r.Seed) {
			t.Errorf("prediction %s input %v", p.ID, p.Input)
		}
		if !strings.HasSuffix(p.Version, r.Version[strings.LastIndex(r.Version, ":")+1:]) {
			t.Errorf("prediction %s ran on %s, recorded %s", p.ID, p.Version, r.Version)
		}
	}
	for _, v := range images {
		rel := v.AsString()
		if !strings.HasPrefix(rel, "generated"+string(filepath.Separator)) || filepath.Ext(rel) != ".png" {
			t.Errorf("image path %q is not under out_dir with .png", rel)
		}
		b := fileExists(t, filepath.Join(h.dir, rel))
		if !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not PNG", rel)
		}
		if tex := out["texture"].Index(cty.StringVal(rel)); number(tex) <= 0 {
			t.Errorf("%s: texture %v", rel, tex.GoString())
		}
	}
	if str(out["report"]) != filepath.Join("generated", "report.html") || str(out["contact_sheet"]) != filepath.Join("generated", "contact_sheet.png") {
		t.Errorf("report %s, contact sheet %s", str(out["report"]), str(out["contact_sheet"]))
	}
	sheet, err := png.Decode(bytes.NewReader(fileExists(t, filepath.Join(h.dir, str(out["contact_sheet"])))))
	if err != nil {
		t.Fatal(err)
	}
	if w := sheet.Bounds().Dx(); w < 2*thumbSide {
		t.Errorf("contact sheet %v is not two columns wide", sheet.Bounds())
	}
	html := string(fileExists(t, filepath.Join(h.dir, str(out["report"]))))
	for _, want := range []string{"new-p1-s1.png", "previous-p2-s2.png", `id="loss-curve"`, "median texture", "natural"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "SIMULATION") {
		t.Error("a real run's report says it is a simulation")
	}
}

func TestComparePrevious(t *testing.T) {
	t.Parallel()
	t.Run("no earlier version", func(t *testing.T) {
		h := newHarness(t, 0)
		version := h.train(natural)
		res, err := h.apply(h.request(map[string]cty.Value{
			"version": cty.StringVal(version), "prompts": strList("a photo of TOK"), "seeds": numList(1, 2, 3), "reference": h.ref,
		}, nil, &recorder{}))
		if err != nil {
			t.Fatal(err)
		}
		if n := h.srv.Count("created prediction"); n != 3 {
			t.Errorf("%d predictions, want 3 (no previous version to run)", n)
		}
		if !res.Outputs["previous_verdict"].IsNull() || !res.Outputs["previous_version"].IsNull() || !res.Outputs["previous_texture_ratio"].IsNull() {
			t.Errorf("previous outputs set without a previous version: %v", res.Outputs)
		}
		if !slices.ContainsFunc(res.Notes, func(n string) bool {
			return strings.Contains(n, "compare_previous: skipped") && strings.Contains(n, "no version older")
		}) {
			t.Errorf("notes %q lack the skip note", res.Notes)
		}
		if str(res.Outputs["verdict"]) != skin.Natural {
			t.Errorf("verdict %s: %s", str(res.Outputs["verdict"]), str(res.Outputs["reason"]))
		}
	})
	t.Run("turned off", func(t *testing.T) {
		h := newHarness(t, 1)
		version := h.train(natural)
		res, err := h.apply(h.request(map[string]cty.Value{
			"version": cty.StringVal(version), "prompts": strList("a photo of TOK"), "seeds": numList(1, 2, 3),
			"reference": h.ref, "compare_previous": cty.False,
		}, nil, &recorder{}))
		if err != nil {
			t.Fatal(err)
		}
		if n := h.srv.Count("created prediction"); n != 3 || !res.Outputs["previous_version"].IsNull() {
			t.Errorf("%d predictions, previous %v; want 3 and none", n, res.Outputs["previous_version"].GoString())
		}
	})
}

// A kill while predictions run re-attaches to them on the next apply; a kill between a create
// call and recording its id finds the prediction by version + input. Nothing is paid twice.
func TestResumeReattachesPredictions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	version := h.train(natural)
	set := func() map[string]cty.Value {
		return map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
			"seeds": numList(1, 2, 3), "reference": h.ref}
	}

	// Ctrl-C while waiting: all six predictions were created and recorded.
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{OnProgress: func(p pipeline.Progress) {
		if p.Total > 0 {
			cancel()
		}
	}}
	_, err := Kind{}.Apply(ctx, h.request(set(), nil, rec))
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted apply: %v, want context.Canceled", err)
	}
	if n := h.srv.Count("created prediction"); n != 6 {
		t.Fatalf("%d predictions before the interruption, want 6", n)
	}
	for _, r := range rec.record().Runs {
		if r.PredictionID == "" {
			t.Errorf("run %+v has no recorded prediction id", r)
		}
	}
	rec2 := &recorder{}
	res, err := h.apply(h.request(set(), rec.prior(pipeline.StatusInterrupted), rec2))
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created prediction"); n != 6 {
		t.Errorf("%d predictions after resuming, want still 6", n)
	}
	if len(res.Outputs["images"].AsValueSlice()) != 6 {
		t.Errorf("images: %v", res.Outputs["images"].GoString())
	}

	// Killed between the create call and recording its id (the state write fails), then resumed.
	h2 := newHarness(t, 0)
	version2 := h2.train(natural)
	set2 := map[string]cty.Value{"version": cty.StringVal(version2), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h2.ref}
	// Saves: 1 the planned runs, 2 the first intent, 3 the first prediction id (fails).
	rec3 := &recorder{FailOn: 3}
	if _, err := h2.apply(h2.request(set2, nil, rec3)); !errors.Is(err, errKilled) {
		t.Fatalf("apply with failing state write: %v", err)
	}
	runs := rec3.record().Runs
	if len(runs) != 3 || runs[0].IntentAt.IsZero() || runs[0].PredictionID != "" {
		t.Fatalf("recorded before the kill: %+v", runs)
	}
	if n := h2.srv.Count("created prediction"); n != 1 {
		t.Fatalf("%d predictions created before the kill, want 1", n)
	}
	rec4 := &recorder{}
	res, err = h2.apply(h2.request(set2, rec3.prior(pipeline.StatusFailed), rec4))
	if err != nil {
		t.Fatal(err)
	}
	if n := h2.srv.Count("created prediction"); n != 3 {
		t.Errorf("%d predictions in all, want 3 (the orphan found, not created again)", n)
	}
	if !slices.ContainsFunc(rec4.progress, func(p pipeline.Progress) bool { return strings.Contains(p.Message, "re-attached") }) {
		t.Error("no progress message about re-attaching")
	}
	if str(res.Outputs["verdict"]) != skin.Natural {
		t.Errorf("verdict after resume: %s", str(res.Outputs["verdict"]))
	}
}

// A create whose answer is lost is reconciled by listing predictions before creating again.
func TestLostCreateAnswerIsReconciled(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	h.srv.Drop("POST", "/v1/predictions", 1)
	res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created prediction"); n != 3 {
		t.Errorf("%d predictions, want 3", n)
	}
	if len(res.Outputs["images"].AsValueSlice()) != 3 {
		t.Errorf("images %v", res.Outputs["images"].GoString())
	}
}

// A prediction whose create answer was lost and which the list shows only later is still found
// before any second create: looking once and creating again would pay for it twice.
func TestLostCreateOfAPredictionListedLateIsPaidOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	h.srv.Drop("POST", "/v1/predictions", 1)
	h.srv.ListLag(4)
	_, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1), "reference": h.ref}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created prediction"); n != 1 {
		t.Errorf("%d predictions created, want 1", n)
	}
	if n := h.srv.Count("POST /v1/predictions"); n != 1 {
		t.Errorf("%d create requests, want 1", n)
	}
}

func TestPlasticSkin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	good := h.srv.VersionIDs("acme", "ana-lora")[0]
	version := h.train(overfit)
	set := func(onPlastic string) map[string]cty.Value {
		return map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
			"seeds": numList(1, 2, 3), "reference": h.ref, "on_plastic": cty.StringVal(onPlastic)}
	}

	// warn: the run goes on with a warning; nothing is deleted.
	rec := &recorder{}
	res, err := h.apply(h.request(set("warn"), nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verdict %s ratio %.3f; previous %s %.3f", str(res.Outputs["verdict"]), number(res.Outputs["texture_ratio"]),
		str(res.Outputs["previous_verdict"]), number(res.Outputs["previous_texture_ratio"]))
	if str(res.Outputs["verdict"]) != skin.Plastic || res.Refused != "" || len(res.Deletes) != 0 {
		t.Fatalf("warn: verdict %s refused %q deletes %v: %s", str(res.Outputs["verdict"]), res.Refused, res.Deletes, str(res.Outputs["reason"]))
	}
	if r := number(res.Outputs["texture_ratio"]); r >= skin.DefaultMinTextureRatio {
		t.Errorf("texture_ratio %.3f", r)
	}
	if str(res.Outputs["previous_verdict"]) != skin.Natural {
		t.Errorf("the previous (good) version: %s", str(res.Outputs["previous_verdict"]))
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "plastic skin") }) {
		t.Errorf("warnings %q", res.Warnings)
	}

	// fail: a gate. The same predictions are reused (same version and input), the run is refused
	// and the version deleted, so the model's latest is the good one again.
	recFail := &recorder{}
	res, err = h.apply(h.request(set("fail"), rec.prior(pipeline.StatusComplete), recFail))
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created prediction"); n != 6 {
		t.Errorf("%d predictions, want 6 (reused by the second apply)", n)
	}
	if res.Refused == "" || !strings.Contains(res.Refused, "plastic") {
		t.Errorf("refused %q", res.Refused)
	}
	if len(res.Deletes) != 1 || res.Deletes[0] != version || h.srv.Count("deleted version") != 1 {
		t.Errorf("deletes %v, server deleted %d", res.Deletes, h.srv.Count("deleted version"))
	}
	ids := h.srv.VersionIDs("acme", "ana-lora")
	if len(ids) != 1 || ids[0] != good {
		t.Errorf("versions left %v, want only the good %s", ids, good)
	}
	// Deletion is asynchronous on Replicate: the deleted version is recorded for other stages.
	if l := replicate.LedgerOf(pipeline.MemState{Memory: &recFail.MemShared}); !l.Gone()[version[strings.LastIndex(version, ":")+1:]] || len(l.Versions) != 1 || !l.Versions[0].Deleted {
		t.Errorf("ledger %+v, want %s deleted", l, version)
	}
	html := string(fileExists(t, filepath.Join(h.dir, "generated", "report.html")))
	if !strings.Contains(html, "version deleted") || !strings.Contains(html, `class="verdict plastic"`) {
		t.Error("report does not show the refusal and deletion")
	}
	// Applying again (the engine re-runs a refused stage) judges from the recorded images and does
	// not delete twice.
	res, err = h.apply(h.request(set("fail"), recFail.prior(pipeline.StatusRefused), &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused == "" || h.srv.Count("DELETE version") != 1 || h.srv.Count("created prediction") != 6 {
		t.Errorf("re-apply: refused %q, delete calls %d, predictions %d", res.Refused, h.srv.Count("DELETE version"), h.srv.Count("created prediction"))
	}
}

// plasticWithDeleteForbidden trains an overfit version the API refuses to delete (a deployment
// uses it) and returns it with a generate config that fails on plastic skin.
func (h *harness) plasticWithDeleteForbidden() (string, map[string]cty.Value) {
	version := h.train(overfit)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref, "on_plastic": cty.StringVal("fail"), "compare_previous": cty.False}
	_, _, id, _ := replicate.SplitVersion(version)
	h.srv.ForbidDelete(id, "Cannot delete version: it is used by a deployment")
	return version, set
}

func TestPlasticKeepAndRefusedDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	_, set := h.plasticWithDeleteForbidden()
	rec := &recorder{}
	res, err := h.apply(h.request(set, nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused == "" || len(res.Deletes) != 0 ||
		!slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "used by a deployment") }) {
		t.Errorf("refused %q deletes %v warnings %q", res.Refused, res.Deletes, res.Warnings)
	}
	set["on_fail"] = cty.StringVal("keep")
	res, err = h.apply(h.request(set, rec.prior(pipeline.StatusRefused), &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused == "" || len(res.Deletes) != 0 || h.srv.Count("DELETE version") != 1 ||
		!slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, `is kept (on_fail = "keep")`) }) {
		t.Errorf("keep: refused %q deletes %v delete calls %d warnings %q", res.Refused, res.Deletes, h.srv.Count("DELETE version"), res.Warnings)
	}
	if n := h.srv.Count("created prediction"); n != 3 {
		t.Errorf("%d predictions, want 3 (the second apply reuses them)", n)
	}
}

// A rejection whose delete did not happen is withdrawn when the user keeps the version on purpose
// (on_fail = "keep", or a relaxed guard that passes it): prune deletes unfinished rejections, so a
// rejection left in the ledger would delete the version the user now keeps.
func TestKeptVersionIsNoLongerRejected(t *testing.T) {
	t.Parallel()
	for _, relax := range []string{"on_fail", "on_plastic"} {
		t.Run(relax, func(t *testing.T) {
			h := newHarness(t, 1)
			version, set := h.plasticWithDeleteForbidden()
			rec := &recorder{}
			if _, err := h.apply(h.request(set, nil, rec)); err != nil {
				t.Fatal(err)
			}
			if v := replicate.LedgerOf(pipeline.MemState{Memory: &rec.MemShared}).VerdictOf(version); v != replicate.Rejected {
				t.Fatalf("after the refused delete the ledger says %q, want %q", v, replicate.Rejected)
			}
			next := &recorder{}
			if err := next.UpdateShared(replicate.LedgerName, func(json.RawMessage) (json.RawMessage, error) {
				return rec.Shared(replicate.LedgerName), nil
			}); err != nil {
				t.Fatal(err)
			}
			if relax == "on_fail" {
				set["on_fail"] = cty.StringVal("keep")
			} else {
				set["on_plastic"] = cty.StringVal("warn")
			}
			res, err := h.apply(h.request(set, rec.prior(pipeline.StatusRefused), next))
			if err != nil {
				t.Fatal(err)
			}
			if v := replicate.LedgerOf(pipeline.MemState{Memory: &next.MemShared}).VerdictOf(version); v == replicate.Rejected {
				t.Errorf("%s relaxed: the ledger still rejects %s, so prune would delete it", relax, version)
			}
			if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "rejection of "+version+" is withdrawn") }) {
				t.Errorf("notes %q do not say the rejection is withdrawn", res.Notes)
			}
			if next.record().Rejected != "" {
				t.Errorf("the record still holds the withdrawn rejection %q", next.record().Rejected)
			}
		})
	}
}

func TestNoReferenceIsUnscored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "on_plastic": cty.StringVal("fail")}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if str(res.Outputs["verdict"]) != skin.Unscored || !strings.Contains(str(res.Outputs["reason"]), "no reference") ||
		!res.Outputs["texture_ratio"].IsNull() || res.Refused != "" {
		t.Errorf("verdict %s ratio %v reason %q refused %q", str(res.Outputs["verdict"]), res.Outputs["texture_ratio"].GoString(), str(res.Outputs["reason"]), res.Refused)
	}
	// Per-image figures are still reported.
	for _, v := range res.Outputs["texture"].AsValueMap() {
		if number(v) <= 0 {
			t.Errorf("texture %v", v.GoString())
		}
	}
}

func TestFailedPredictionIsAnErrorAndRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK", "FAIL please"),
		"seeds": numList(1), "reference": h.ref}
	rec := &recorder{}
	_, err := h.apply(h.request(set, nil, rec))
	if err == nil || !strings.Contains(err.Error(), `"FAIL please" seed 1`) || !strings.Contains(err.Error(), "NSFW") || !strings.Contains(err.Error(), "hint:") {
		t.Fatalf("error %v", err)
	}
	// The next apply reuses the finished prediction and tries the failed one again.
	_, err = h.apply(h.request(set, rec.prior(pipeline.StatusFailed), &recorder{}))
	if err == nil {
		t.Fatal("the simulated failure is deterministic; want the error again")
	}
	if n := h.srv.Count("created prediction"); n != 3 {
		t.Errorf("%d predictions, want 3 (1 reused, the failed one run twice)", n)
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2)
	res, err := Kind{}.Plan(context.Background(), h.request(map[string]cty.Value{
		"version":        cty.UnknownVal(cty.String),
		"prompts":        strList("a photo of TOK", "TOK at the beach"),
		"seeds":          numList(1, 2),
		"guidance_scale": cty.NumberFloatVal(5),
		"reference":      h.ref,
		"on_plastic":     cty.StringVal("fail"),
	}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(res.Notes, "\n")
	for _, want := range []string{"2 prompt(s) × 2 seed(s) = 4 prediction(s)", "known after apply", `run "TOK at the beach" seed 2`,
		"previous version", "median", "exits 3 and the version is deleted"} {
		if !strings.Contains(notes, want) {
			t.Errorf("plan notes lack %q:\n%s", want, notes)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "3.5 or below") || !strings.Contains(res.Warnings[0], "waxy") {
		t.Errorf("warnings %q", res.Warnings)
	}
	if len(res.Outputs) != 0 {
		t.Errorf("plan set outputs %v", res.Outputs)
	}
	if h.srv.Count("created prediction") != 0 {
		t.Error("plan created predictions")
	}
	// A reference that is not a stage, or without enough scored photos, warns already in plan.
	for ref, want := range map[string]cty.Value{
		"not an image_check stage":  strList("a.jpg"),
		"only 1 of the 1 reference": cty.ObjectVal(map[string]cty.Value{"stats": cty.MapVal(map[string]cty.Value{"a.jpg": stat(true, 5, 2)})}),
	} {
		res, err := Kind{}.Plan(context.Background(), h.request(map[string]cty.Value{
			"version": cty.UnknownVal(cty.String), "prompts": strList("a photo of TOK"), "reference": want}, nil, &recorder{}))
		if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], ref) {
			t.Errorf("reference %s: %v %q", want.GoString(), err, res.Warnings)
		}
	}
	// Defaults: no warning at 3.5.
	res, err = Kind{}.Plan(context.Background(), h.request(map[string]cty.Value{
		"version": cty.StringVal("acme/ana-lora:abc"), "prompts": strList("a photo of TOK")}, nil, &recorder{}))
	if err != nil || len(res.Warnings) != 0 {
		t.Errorf("default plan: %v %q", err, res.Warnings)
	}
	if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "version abc is not among the 2 versions") }) {
		t.Errorf("notes %q", res.Notes)
	}
	// With a known version and API access, plan names the version it will compare with.
	ids := h.srv.VersionIDs("acme", "ana-lora")
	res, err = Kind{}.Plan(context.Background(), h.request(map[string]cty.Value{
		"version": cty.StringVal("acme/ana-lora:" + ids[0]), "prompts": strList("a photo of TOK")}, nil, &recorder{}))
	if err != nil || !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "previous version acme/ana-lora:"+ids[1]) }) {
		t.Errorf("plan with a known version: %v %q", err, res.Notes)
	}
}

func TestBatchInstancesWriteApart(t *testing.T) {
	for _, c := range []struct{ dir, key, want string }{
		{"generated", "", "generated"},
		{"generated", "ana", filepath.Join("generated", "ana")},
		{"generated/ana", "ana", "generated/ana"},
		{"out/ana/x", "ana", "out/ana/x"},
		{"generated", "../evil", filepath.Join("generated", ".._evil")},
		{"generated", "..", filepath.Join("generated", "_..")},
	} {
		if got := outDirFor(c.dir, c.key); got != c.want {
			t.Errorf("outDirFor(%q, %q) = %q, want %q", c.dir, c.key, got, c.want)
		}
	}
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	req := h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref}, nil, &recorder{})
	req.Key, req.Address = "ana", `generate.check["ana"]`
	res, err := h.apply(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := str(res.Outputs["report"]); got != filepath.Join("generated", "ana", "report.html") {
		t.Errorf("report %s", got)
	}
	fileExists(t, filepath.Join(h.dir, "generated", "ana", "new-p1-s3.png"))
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	cases := map[string]map[string]cty.Value{
		"on_plastic":                       {"on_plastic": cty.StringVal("panic")},
		"on_fail":                          {"on_fail": cty.StringVal("burn")},
		"prompts is empty":                 {"prompts": cty.ListValEmpty(cty.String)},
		"not a whole number":               {"seeds": cty.ListVal([]cty.Value{cty.NumberFloatVal(1.5)})},
		"listed twice":                     {"seeds": numList(3, 3)},
		"guidance_scale":                   {"guidance_scale": cty.NumberFloatVal(-1)},
		"poll_interval":                    {"poll_interval": cty.StringVal("soon")},
		"min_texture_ratio":                {"min_texture_ratio": cty.NumberFloatVal(0)},
		"num_inference_steps":              {"num_inference_steps": cty.NumberFloatVal(2.5)},
		"lora_scale = 2.5 is outside -1–2": {"lora_scale": cty.NumberFloatVal(2.5)},
	}
	for want, set := range cases {
		if set["prompts"] == cty.NilVal {
			set["prompts"] = strList("a photo of TOK")
		}
		set["version"] = cty.StringVal("acme/ana-lora:abc")
		_, err := Kind{}.Plan(context.Background(), h.request(set, nil, &recorder{}))
		// A config problem is a diagnostic (at the attribute's range; the engine names the stage).
		if err == nil || !strings.Contains(err.Error(), want) || !errors.As(err, new(*pipeline.DiagError)) {
			t.Errorf("%s: error %v", want, err)
		}
	}
	_, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal("abc123"), "prompts": strList("x")}, nil, &recorder{}))
	if err == nil || !strings.Contains(err.Error(), "owner/name:id") {
		t.Errorf("bare version id: %v", err)
	}
	if h.srv.Count("created prediction") != 0 {
		t.Error("invalid config created predictions")
	}
}

func TestSimulatedReportSaysSo(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	h.env.Simulated = true
	version := h.train(natural)
	res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref, "out_dir": cty.StringVal("out/sim")}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	html := string(fileExists(t, filepath.Join(h.dir, "out", "sim", "report.html")))
	if !strings.Contains(html, "SIMULATION") || !strings.Contains(str(res.Outputs["report"]), filepath.Join("out", "sim")) {
		t.Errorf("simulated report: %s", str(res.Outputs["report"]))
	}
	sheet, err := png.Decode(bytes.NewReader(fileExists(t, filepath.Join(h.dir, "out", "sim", "contact_sheet.png"))))
	if err != nil {
		t.Fatal(err)
	}
	if !hasColor(sheet, colSim) {
		t.Error("contact sheet has no SIMULATED label")
	}
}

// hasColor reports whether any pixel of img is exactly c (labels are drawn in pure colours).
func hasColor(img image.Image, c interface{ RGBA() (r, g, b, a uint32) }) bool {
	wr, wg, wb, _ := c.RGBA()
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			if r == wr && g == wg && bb == wb {
				return true
			}
		}
	}
	return false
}

// Guidance above 3.5 stays allowed, with a warning naming the research's advice; the guard then
// shows what it does to the skin of the same version.
func TestHighGuidanceIsAllowedAndMeasured(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	ratio := func(g float64) (float64, *pipeline.Result) {
		res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
			"seeds": numList(1, 2, 3), "reference": h.ref, "guidance_scale": cty.NumberFloatVal(g)}, nil, &recorder{}))
		if err != nil {
			t.Fatal(err)
		}
		return number(res.Outputs["texture_ratio"]), res
	}
	safe, res := ratio(3.5)
	if len(res.Warnings) != 0 {
		t.Errorf("warnings at 3.5: %q", res.Warnings)
	}
	high, res := ratio(6)
	t.Logf("texture ratio at guidance 3.5: %.2f, at 6: %.2f (%s)", safe, high, str(res.Outputs["verdict"]))
	if !(high < safe*0.85) {
		t.Errorf("guidance 6 ratio %.2f not clearly below %.2f at 3.5", high, safe)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "guidance_scale = 6 is above 3.5") }) {
		t.Errorf("warnings %q", res.Warnings)
	}
}

// expireFirst answers 404 to the first download of each listed prediction output, as Replicate does
// once an API prediction's output has expired (an hour after it finished).
type expireFirst struct {
	base http.RoundTripper
	mu   sync.Mutex
	seen map[string]bool
	n    int
}

func (e *expireFirst) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/delivery/predictions/") && strings.HasSuffix(r.URL.Path, "/out-0.png") {
		e.mu.Lock()
		first := !e.seen[r.URL.Path] && e.n < 1
		if first {
			e.seen[r.URL.Path] = true
			e.n++
		}
		e.mu.Unlock()
		if first {
			body := `{"title":"Not found","detail":"No such file","status":404}`
			return &http.Response{StatusCode: 404, Status: "404 Not Found", Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
		}
	}
	return e.base.RoundTrip(r)
}

func TestExpiredOutputIsRunAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	c, err := replicate.New(h.srv.URL(), h.srv.Token(), replicate.WithRetry(2, time.Millisecond),
		replicate.WithHTTPClient(&http.Client{Transport: &expireFirst{base: http.DefaultTransport, seen: map[string]bool{}}}))
	if err != nil {
		t.Fatal(err)
	}
	replicate.Install(h.env, c)
	res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("created prediction"); n != 4 {
		t.Errorf("%d predictions, want 4 (one run again after its output expired)", n)
	}
	if len(res.Outputs["images"].AsValueSlice()) != 3 ||
		!slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "has expired: running it again") }) {
		t.Errorf("images %s warnings %q", res.Outputs["images"].GoString(), res.Warnings)
	}
}

// The real API removes an API prediction's input, output and logs an hour after it finished
// (data_removed: true, output null). An apply resumed later, whose image file is gone, runs that
// prediction once more instead of failing on the missing output.
func TestRemovedPredictionDataIsRunAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2), "reference": h.ref}
	rec := &recorder{}
	if _, err := h.apply(h.request(set, nil, rec)); err != nil {
		t.Fatal(err)
	}
	runs := rec.record().Runs
	if len(runs) != 2 || runs[0].PredictionID == "" || runs[0].File == "" {
		t.Fatalf("recorded runs: %+v", runs)
	}
	// An hour later: the API dropped the first prediction's data and its image file is gone here.
	h.srv.RemovePredictionData(runs[0].PredictionID)
	if err := os.Remove(filepath.Join(h.dir, runs[0].File)); err != nil {
		t.Fatal(err)
	}
	p, err := h.c.GetPrediction(context.Background(), runs[0].PredictionID)
	if err != nil || !p.DataRemoved || !p.Gone() {
		t.Fatalf("prediction after data removal: %+v, %v", p, err)
	}
	prior := rec.prior(pipeline.StatusRunning)
	res, err := h.apply(h.request(set, prior, &recorder{}))
	if err != nil {
		t.Fatalf("resumed apply after data removal: %v", err)
	}
	if n := h.srv.Count("created prediction"); n != 3 {
		t.Errorf("%d predictions, want 3 (the removed one run once more)", n)
	}
	if len(res.Outputs["images"].AsValueSlice()) != 2 ||
		!slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "has expired: running it again") }) {
		t.Errorf("images %s warnings %q", res.Outputs["images"].GoString(), res.Warnings)
	}
}

// "aborted" (terminated before it ran) is final like "failed": the wait ends and the stage fails
// with a hint; the next apply runs the aborted prediction again.
func TestAbortedPredictionIsAFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	version := h.train(natural)
	set := map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2), "reference": h.ref}
	rec := &recorder{}
	var once sync.Once
	rec.OnProgress = func(p pipeline.Progress) {
		if p.Total > 0 {
			once.Do(func() {
				if !h.srv.Abort(rec.record().Runs[1].PredictionID) {
					t.Error("nothing to abort")
				}
			})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Kind{}.Apply(ctx, h.request(set, nil, rec))
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "aborted") || !strings.Contains(err.Error(), "hint:") {
		t.Fatalf("apply with an aborted prediction: %v, want a failure naming it", err)
	}
	if _, err := h.apply(h.request(set, rec.prior(pipeline.StatusFailed), &recorder{})); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := h.srv.Count("created prediction"); n != 3 {
		t.Errorf("%d predictions, want 3 (the aborted one run again)", n)
	}
}

// Version deletion is asynchronous on Replicate: a version this pipeline deleted (recorded by a
// loss gate) may still be listed, and must not be picked as the previous version. A previous
// version that cannot run (deleted by someone else meanwhile: 4xx on create) skips the
// comparison with a warning instead of failing the stage.
func TestPreviousVersionSkipsDeletedOnes(t *testing.T) {
	t.Parallel()
	t.Run("recorded as deleted", func(t *testing.T) {
		h := newHarness(t, 2)
		h.srv.DeleteDelay(50)
		older := h.srv.VersionIDs("acme", "ana-lora") // newest first
		version := h.train(natural)
		if err := h.c.DeleteVersion(context.Background(), "acme", "ana-lora", older[0]); err != nil {
			t.Fatal(err)
		}
		gate, _ := json.Marshal(map[string]any{"last_accepted": nil, "deleted_versions": []string{model + ":" + older[0]}})
		req := h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
			"seeds": numList(1), "reference": h.ref}, nil, &recorder{})
		st := req.State.(pipeline.MemState)
		st.List = append(st.List, pipeline.StageRecord{Kind: "loss_gate", Name: "fit", Status: pipeline.StatusRefused, Data: gate})
		req.State = st
		res, err := h.apply(req)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := str(res.Outputs["previous_version"]), model+":"+older[1]; got != want {
			t.Errorf("previous_version %s, want %s (the deleted %s skipped)", got, want, shortID(older[0]))
		}
	})
	t.Run("refused by the API", func(t *testing.T) {
		h := newHarness(t, 1)
		h.srv.DeleteDelay(50)
		older := h.srv.VersionIDs("acme", "ana-lora")
		version := h.train(natural)
		if err := h.c.DeleteVersion(context.Background(), "acme", "ana-lora", older[0]); err != nil {
			t.Fatal(err)
		}
		res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
			"seeds": numList(1, 2), "reference": h.ref}, nil, &recorder{}))
		if err != nil {
			t.Fatalf("a refused prediction on the previous version failed the stage: %v", err)
		}
		if !res.Outputs["previous_version"].IsNull() || len(res.Outputs["images"].AsValueSlice()) != 2 {
			t.Errorf("previous_version %s images %s", res.Outputs["previous_version"].GoString(), res.Outputs["images"].GoString())
		}
		if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "comparison skipped") }) {
			t.Errorf("warnings %q lack the skipped comparison", res.Warnings)
		}
	})
}

// A prompt holding a secret (the engine's Env.Redact knows it) never reaches the report on disk.
func TestReportRedactsSecretsInPrompts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0)
	h.env.Redact = func(s string) string { return strings.ReplaceAll(s, "SECRETNAME", "(sensitive)") }
	version := h.train(natural)
	res, err := h.apply(h.request(map[string]cty.Value{
		"version":          cty.StringVal(version),
		"prompts":          strList("a photo of SECRETNAME"),
		"seeds":            numList(1),
		"compare_previous": cty.False,
	}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	report := fileExists(t, filepath.Join(h.dir, str(res.Outputs["report"])))
	if strings.Contains(string(report), "SECRETNAME") || !strings.Contains(string(report), "a photo of (sensitive)") {
		t.Errorf("report should show the prompt with the secret redacted")
	}
}
