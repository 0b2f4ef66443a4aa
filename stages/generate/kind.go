// Package generate is the `generate` stage kind: it runs test prompts on a newly trained LoRA
// version (and on the model's previous version, to compare), downloads the images, scores the skin
// texture of every face against the subject's own photos (the plastic-skin guard, package skin),
// and writes a contact sheet and an HTML report a person can check at a glance.
//
//	stage "generate" "check" {
//	  version           = train.lora.version        # "owner/name:id"
//	  prompts           = ["a photo of TOK", "TOK smiling, outdoors"]
//	  seeds             = [1, 2]                    # every prompt × seed runs once per version
//	  guidance_scale    = 3.5                       # portraits: 3.5 or below avoids waxy skin
//	  reference         = image_check.photos        # the photos' texture figures
//	  on_plastic        = "fail"                    # exit 3 and delete the version when plastic
//	  gate              = loss_gate.fit             # report: the loss curve and its thresholds
//	  params            = params.tuned              # report: the chosen parameters and why
//	  training          = train.lora                # report: the input the training was sent
//	}
//
// The report (report.html) shows the verdicts, the training's parameters with params' reasons
// (a value the training was sent other than params' choice is marked), the photo count and the
// rejections (reference: count, rejected), the loss curve with min_loss and max_loss drawn in its
// scale (gate: losses, min_loss, max_loss, passed, reason), and the run's cost: this stage's
// predictions and, when the train stage reports one, the training's cost_usd. All of it comes from
// the stages the config hands over, never from other kinds' records in state, so the report shows
// what the pipeline passed along. Leaving gate, params or training out leaves that part out.
//
// Money: plan's Result.Cost estimates the predictions apply would start (each prompt × seed on
// each version, less those the prior record supplies) × this subject's mean predict_time from
// earlier runs (kept in the record), else SPEC's 8 s, × the replicate block's
// prediction_hardware price (PriceTable with its prices); max_cost_usd is Result.CostLimit.
// Apply's Result.Cost is each prediction's metrics.predict_time × that price, counted once: a
// reused prediction costs nothing new, an interrupted apply's are reported by the one that
// re-attaches to them.
//
// Outputs: images (paths under out_dir, relative to the config's directory like out_dir itself),
// report, contact_sheet, texture (image path → texture index; -1 when the image has no face large
// enough to score, as in image_check's stats), texture_ratio (median of the new version's images ÷
// median of the photos; null when unscored), verdict (natural | plastic | blur | unscored),
// previous_version, previous_texture_ratio, previous_verdict (null without a previous version),
// reason. In a batch the files go to out_dir/KEY unless out_dir already names the key.
//
// Predictions are paid for: each one's intent and id are recorded through the Recorder before it is
// waited on, and a later apply re-attaches to it (or finds it by version + input) instead of
// running it twice. While the batch runs on Replicate the stage holds Recorder.Wait (no
// -parallelism slot), and takes a slot back before it downloads and scores.
package generate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// Kind implements pipeline.Kind for `stage "generate" "NAME"`.
type Kind struct{}

// Name implements pipeline.Kind.
func (Kind) Name() string { return "generate" }

// Values of on_plastic and on_fail.
const (
	OnPlasticWarn = "warn"
	OnPlasticFail = "fail"
	OnFailDelete  = "delete_version"
	OnFailKeep    = "keep"
)

// PortraitGuidance is the guidance scale above which the research found portraits turn waxy.
const PortraitGuidance = 3.5

var schema = &pipeline.Schema{
	Attributes: map[string]*pipeline.Attribute{
		"version": {Type: cty.String, Required: true, Check: checkVersion,
			Description: `the version to test, "owner/name:id" (e.g. train.lora.version)`},
		"prompts": {Type: cty.List(cty.String), Required: true, Check: checkPrompts,
			Description: "test prompts; each runs once per seed on each version"},
		"seeds": {Type: cty.List(cty.Number), Default: cty.ListVal([]cty.Value{cty.NumberIntVal(1), cty.NumberIntVal(2)}), Check: checkSeeds,
			Description: "seeds (integers): the same seed on both versions makes the comparison fair"},
		"guidance_scale": {Type: cty.Number, Default: cty.NumberFloatVal(3.5), Min: pipeline.Bound(0), Max: pipeline.Bound(10),
			Description: "guidance scale (the Flux LoRA models accept 0–10); portraits: 3.5 or below avoids waxy skin"},
		"num_inference_steps": {Type: cty.Number, Default: cty.NumberIntVal(28), Min: pipeline.Bound(1), Max: pipeline.Bound(50), Whole: true},
		"lora_scale": {Type: cty.Number, Default: cty.NumberFloatVal(1.0), Min: pipeline.Bound(-1), Max: pipeline.Bound(2),
			Description: "how strongly the LoRA applies (the Flux LoRA models accept -1–2)"},
		"compare_previous": {Type: cty.Bool, Default: cty.True,
			Description: "also run the prompts on the model's previous version (skipped with a note when there is none)"},
		"out_dir": {Type: cty.String, Default: cty.StringVal("generated"), Check: notBlank("out_dir", `out_dir = "generated"`),
			Description: "where images, contact sheet and report are written (relative to the config file); in a batch, a subdirectory per key unless out_dir already names the key"},
		"gate": {Type: cty.DynamicPseudoType, StageKind: "loss_gate", NoDigest: true,
			Description: "a loss_gate stage (e.g. loss_gate.fit): the report draws the training's loss curve and the gate's threshold"},
		"params": {Type: cty.DynamicPseudoType, StageKind: "params", NoDigest: true,
			Description: "a params stage (e.g. params.tuned): the report lists the chosen training parameters and why"},
		"training": {Type: cty.DynamicPseudoType, StageKind: "train", NoDigest: true,
			Description: "a train stage (e.g. train.lora): the report lists the input the training was sent (and its cost, when the stage reports one)"},
		"reference": {Type: cty.DynamicPseudoType, StageKind: "image_check", DigestBy: "digest",
			Description: "an image_check stage (e.g. image_check.photos): the subject's photos and their texture figures"},
		"min_texture_ratio": {Type: cty.Number, Default: cty.NumberFloatVal(skin.DefaultMinTextureRatio), Min: pipeline.Bound(0.01), Max: pipeline.Bound(2),
			Description: "texture ratio (generated ÷ photos) below which the skin counts as plastic; 0.65 is the default, from simulated smoothing of real photos"},
		"on_plastic": {Type: cty.String, Default: cty.StringVal(OnPlasticWarn), OneOf: []string{OnPlasticWarn, OnPlasticFail},
			Description: `"warn" or "fail" (a gate: exit 3, later stages skipped, the version handled per on_fail)`},
		"on_fail": {Type: cty.String, Default: cty.StringVal(OnFailDelete), OneOf: []string{OnFailDelete, OnFailKeep},
			Description: `with on_plastic = "fail": "delete_version" (the model's latest stays the last good one) or "keep"`},
		"poll_interval": {Type: cty.String, Default: cty.StringVal("2s"), Duration: true,
			Description: "first interval between polls of a running prediction (backs off)"},
	},
	Outputs: map[string]cty.Type{
		"images":                 cty.List(cty.String),
		"report":                 cty.String,
		"contact_sheet":          cty.String,
		"texture":                cty.Map(cty.Number),
		"texture_ratio":          cty.Number,
		"verdict":                cty.String,
		"previous_version":       cty.String,
		"previous_texture_ratio": cty.Number,
		"previous_verdict":       cty.String,
		"reason":                 cty.String,
	},
	Remote:             true,
	Settings:           []string{"replicate"},
	SettingsAttributes: map[string]map[string]*pipeline.Attribute{"replicate": replicate.SettingsSchema},
	Summary:            []pipeline.SummaryColumn{{Title: "report", Path: "report", Order: 60}},
}

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

// config is the evaluated stage configuration (pipeline.Decode fills it from the schema).
// Fields whose value is unknown during plan keep their zero value and are flagged in known.
type config struct {
	Version         string        `cty:"version"`
	Prompts         []string      `cty:"prompts"`
	Seeds           []int64       `cty:"seeds"`
	Guidance        float64       `cty:"guidance_scale"`
	Steps           int64         `cty:"num_inference_steps"`
	LoraScale       float64       `cty:"lora_scale"`
	ComparePrevious bool          `cty:"compare_previous"`
	OutDir          string        `cty:"out_dir"`
	MinRatio        float64       `cty:"min_texture_ratio"`
	OnPlastic       string        `cty:"on_plastic"`
	OnFail          string        `cty:"on_fail"`
	PollInterval    time.Duration `cty:"poll_interval"`
	Reference       cty.Value     `cty:"reference"`
	Gate            cty.Value     `cty:"gate"`
	Params          cty.Value     `cty:"params"`
	Training        cty.Value     `cty:"training"`
	// money is the replicate block's money settings (never part of a digest).
	money money

	versionKnown, promptsKnown, seedsKnown bool
}

// parseConfig decodes the inputs; unknown values are allowed only while planning.
func parseConfig(req *pipeline.Request, planning bool) (*config, error) {
	c := &config{}
	var set replicate.Settings
	diags := schema.Decode(req, c)
	diags = append(diags, schema.DecodeSettings(req, "replicate", &set)...)
	if err := pipeline.Err(diags); err != nil {
		return nil, err
	}
	c.money = moneyOf(set)
	c.Version = strings.TrimSpace(c.Version)
	c.versionKnown, c.promptsKnown, c.seedsKnown = req.Known("version"), req.Known("prompts"), req.Known("seeds")
	if c.Reference == cty.NilVal {
		c.Reference = cty.NullVal(cty.DynamicPseudoType)
	}
	if !planning && (!c.versionKnown || !c.promptsKnown || !c.seedsKnown) {
		return nil, fmt.Errorf("version, prompts and seeds must be known when the stage runs")
	}
	return c, nil
}

// checkVersion: the version to test is "owner/name:id" (a bare id names no model to compare in).
func checkVersion(v, _ cty.Value) error {
	ref := strings.TrimSpace(v.AsString())
	if ref == "" {
		return errors.New("version is empty; hint: use the train stage's output, e.g. version = train.lora.version")
	}
	if owner, name, id, err := replicate.SplitVersion(ref); err != nil || owner == "" || name == "" || id == "" {
		return fmt.Errorf("version %q is not \"owner/name:id\"; hint: use the train stage's output, e.g. version = train.lora.version", ref)
	}
	return nil
}

func checkPrompts(v, _ cty.Value) error {
	if v.LengthInt() == 0 {
		return errors.New("prompts is empty; hint: add at least one test prompt with the trigger word, e.g. [\"a photo of TOK\"]")
	}
	for i, p := range v.AsValueSlice() {
		if p.IsNull() || strings.TrimSpace(p.AsString()) == "" {
			return fmt.Errorf("prompts[%d] is empty", i)
		}
	}
	return nil
}

func checkSeeds(v, _ cty.Value) error {
	if v.LengthInt() == 0 {
		return errors.New("seeds is empty; hint: seeds = [1, 2]")
	}
	seen := map[int64]bool{}
	for i, s := range v.AsValueSlice() {
		f := math.NaN()
		if !s.IsNull() {
			f, _ = s.AsBigFloat().Float64()
		}
		if f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
			return fmt.Errorf("seeds[%d] = %s is not a whole number from 0 to %d", i, s.AsBigFloat().String(), math.MaxInt32)
		}
		if seen[int64(f)] {
			return fmt.Errorf("seeds[%d] = %d is listed twice", i, int64(f))
		}
		seen[int64(f)] = true
	}
	return nil
}

// notBlank refuses an empty string, with an example of a good value.
func notBlank(name, example string) func(v, _ cty.Value) error {
	return func(v, _ cty.Value) error {
		if strings.TrimSpace(v.AsString()) == "" {
			return fmt.Errorf("%s is empty; hint: %s", name, example)
		}
		return nil
	}
}

// outDirFor keeps the batch instances of one stage apart: in a batch (key != ""), images go to
// out_dir/KEY unless out_dir already has the key as a path element (out_dir = "gen/${each.key}").
// Otherwise every subject would overwrite the others' new-p1-s1.png.
func outDirFor(outDir, key string) string {
	if key == "" {
		return outDir
	}
	for _, el := range strings.Split(filepath.ToSlash(filepath.Clean(outDir)), "/") {
		if el == key {
			return outDir
		}
	}
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '@', r == '+':
			return r
		}
		return '_'
	}, key)
	if strings.Trim(safe, ".") == "" {
		safe = "_" + safe
	}
	return filepath.Join(outDir, safe)
}

// input is the prediction input for one prompt × seed: the same map on both versions.
func (c *config) input(prompt string, seed int64) map[string]any {
	return map[string]any{
		"prompt":              prompt,
		"seed":                seed,
		"guidance_scale":      c.Guidance,
		"num_inference_steps": c.Steps,
		"lora_scale":          c.LoraScale,
		"output_format":       "png", // JPEG re-encoding raises the texture index and could hide plastic skin
		"num_outputs":         1,
	}
}

// prevLookup is what plan knows of the version apply will compare with.
type prevLookup struct {
	note    string
	version string // "" when there is none
	known   bool   // false: it could not be looked up now (apply will)
}

// previousNote says which version plan expects to compare with: read from the API when the new
// version is known and a token (or the simulator) is available, a general sentence otherwise.
func previousNote(ctx context.Context, req *pipeline.Request, c *config) prevLookup {
	general := prevLookup{note: "and the same on the model's previous version, to compare (skipped with a note if there is none)"}
	if prev, ok := recordedPrevious(req, c); ok {
		return prev
	}
	// -refresh=false reads nothing remote; an unchanged stage has nothing to look up.
	if !c.versionKnown || !replicate.HasToken(req.Env) || req.Env.NoRefresh || req.Unchanged {
		return general
	}
	cl, err := replicate.FromEnv(req.Env)
	if err != nil {
		return general
	}
	prev, note, err := previousFor(ctx, req, cl, c.Version)
	switch {
	case err != nil:
		general.note += "; the versions could not be listed now: " + err.Error()
		return general
	case prev != "":
		return prevLookup{note: "and the same on the previous version " + prev + ", to compare", version: prev, known: true}
	}
	return prevLookup{note: note, known: true}
}

// recordedPrevious is the comparison an earlier apply of this version resolved: apply keeps it,
// so plan reads it from the record instead of listing the model's versions.
func recordedPrevious(req *pipeline.Request, c *config) (prevLookup, bool) {
	var prior record
	if ok, err := req.Prior.Decode(&prior); !ok || err != nil || !c.versionKnown || prior.Version != c.Version || !prior.PreviousResolved {
		return prevLookup{}, false
	}
	if prior.Previous == "" {
		note := prior.PreviousNote
		if note == "" {
			note = "compare_previous: skipped, no earlier version (as recorded)"
		}
		return prevLookup{note: note, known: true}, true
	}
	return prevLookup{note: "and the same on the previous version " + prior.Previous + ", to compare", version: prior.Previous, known: true}, true
}

// guidanceWarning is the plan warning for guidance above the research's advice.
func guidanceWarning(g float64) string {
	return fmt.Sprintf("guidance_scale = %g is above %g: the research on Flux LoRA portraits advises %g or below, "+
		"higher guidance gives waxy, plastic-looking skin; the texture guard will show what it does", g, PortraitGuidance, PortraitGuidance)
}

// Plan implements pipeline.Kind: it lists the runs and the guard's settings; outputs stay unknown.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	c, err := parseConfig(req, true)
	if err != nil {
		return nil, err
	}
	c.OutDir = outDirFor(c.OutDir, req.Key)
	res := &pipeline.Result{}
	version := c.Version
	if !c.versionKnown {
		version = "the new version (known after apply)"
	}
	runs := "each prompt × seed"
	if c.promptsKnown && c.seedsKnown {
		runs = fmt.Sprintf("%d prompt(s) × %d seed(s) = %d prediction(s)", len(c.Prompts), len(c.Seeds), len(c.Prompts)*len(c.Seeds))
		for _, p := range c.Prompts {
			for _, s := range c.Seeds {
				res.Notes = append(res.Notes, fmt.Sprintf("run %q seed %d", p, s))
			}
		}
	}
	head := fmt.Sprintf("would run %s on %s at guidance %g, %d steps, lora_scale %g, PNG output",
		runs, version, c.Guidance, c.Steps, c.LoraScale)
	notes := []string{head}
	var prev prevLookup
	if c.ComparePrevious {
		prev = previousNote(ctx, req, c)
		notes = append(notes, prev.note)
	}
	res.CostLimit = c.money.limit
	if cost, warn := planCost(req, c, prev); warn != "" {
		res.Warnings = append(res.Warnings, warn)
	} else {
		res.Cost = cost
	}
	ref := referenceOf(c.Reference)
	switch {
	case !ref.known:
		notes = append(notes, fmt.Sprintf("plastic-skin guard: texture vs the reference photos (known after their check), min ratio %.2f, on_plastic = %q", c.MinRatio, c.OnPlastic))
	case ref.missing:
		notes = append(notes, "plastic-skin guard: no reference photos (set reference = image_check.NAME): the verdict will be \"unscored\"")
	case ref.invalid != "":
		res.Warnings = append(res.Warnings, "plastic-skin guard: "+ref.invalid+"; the verdict will be \"unscored\"")
	case len(ref.texture) < skin.DefaultMinScored:
		res.Warnings = append(res.Warnings, fmt.Sprintf("plastic-skin guard: only %d of the %d reference photos have a face large enough to score (need %d); the verdict will be \"unscored\"",
			len(ref.texture), ref.photos, skin.DefaultMinScored))
	default:
		notes = append(notes, fmt.Sprintf("plastic-skin guard: texture vs %d scored reference photo(s), median %.2f; min ratio %.2f, on_plastic = %q",
			len(ref.texture), skin.Median(ref.texture), c.MinRatio, c.OnPlastic))
	}
	if c.OnPlastic == OnPlasticFail {
		if c.OnFail == OnFailDelete {
			notes = append(notes, "if the skin is plastic: the run exits 3 and the version is deleted (on_fail = \"delete_version\")")
		} else {
			notes = append(notes, "if the skin is plastic: the run exits 3 and the version is kept (on_fail = \"keep\")")
		}
	}
	notes = append(notes, fmt.Sprintf("writes images, contact_sheet.png and report.html under %s", c.OutDir))
	res.Notes = append(notes, res.Notes...)
	if c.Guidance > PortraitGuidance {
		res.Warnings = append(res.Warnings, guidanceWarning(c.Guidance))
	}
	res.Reattach = recordedPredictions(req)
	return res, nil
}

// recordedPredictions names the predictions an interrupted run with the same inputs recorded by
// id and did not download yet: apply follows them again (plan's action "reattach").
func recordedPredictions(req *pipeline.Request) []string {
	if req.Prior == nil || !req.Prior.SameInputs || req.Prior.Status == pipeline.StatusComplete {
		return nil
	}
	var rec record
	if ok, err := req.Prior.Decode(&rec); !ok || err != nil {
		return nil
	}
	var out []string
	for _, r := range rec.Runs {
		if r.PredictionID != "" && r.File == "" {
			out = append(out, "prediction "+r.PredictionID)
		}
	}
	return out
}
