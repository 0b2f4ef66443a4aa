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
//	}
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
// running it twice.
package generate

import (
	"context"
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
		"version": {Type: cty.String, Required: true,
			Description: `the version to test, "owner/name:id" (e.g. train.lora.version)`},
		"prompts": {Type: cty.List(cty.String), Required: true,
			Description: "test prompts; each runs once per seed on each version"},
		"seeds": {Type: cty.List(cty.Number), Default: cty.ListVal([]cty.Value{cty.NumberIntVal(1), cty.NumberIntVal(2)}),
			Description: "seeds (integers): the same seed on both versions makes the comparison fair"},
		"guidance_scale": {Type: cty.Number, Default: cty.NumberFloatVal(3.5), Min: pipeline.Bound(0),
			Description: "guidance scale; portraits: 3.5 or below avoids waxy skin"},
		"num_inference_steps": {Type: cty.Number, Default: cty.NumberIntVal(28), Min: pipeline.Bound(1)},
		"lora_scale":          {Type: cty.Number, Default: cty.NumberFloatVal(1.0), Min: pipeline.Bound(-1), Max: pipeline.Bound(2)},
		"compare_previous": {Type: cty.Bool, Default: cty.True,
			Description: "also run the prompts on the model's previous version (skipped with a note when there is none)"},
		"out_dir": {Type: cty.String, Default: cty.StringVal("generated"),
			Description: "where images, contact sheet and report are written (relative to the config file); in a batch, a subdirectory per key unless out_dir already names the key"},
		"reference": {Type: cty.DynamicPseudoType, StageKind: "image_check",
			Description: "an image_check stage (e.g. image_check.photos): the subject's photos and their texture figures"},
		"min_texture_ratio": {Type: cty.Number, Default: cty.NumberFloatVal(skin.DefaultMinTextureRatio), Min: pipeline.Bound(0),
			Description: "texture ratio (generated ÷ photos) below which the skin counts as plastic"},
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
	Remote:   true,
	Settings: []string{"replicate"},
}

// Schema implements pipeline.Kind.
func (Kind) Schema() *pipeline.Schema { return schema }

// config is the evaluated stage configuration. Fields whose value is unknown during plan keep
// their zero value and are flagged in known.
type config struct {
	Version         string
	Prompts         []string
	Seeds           []int64
	Guidance        float64
	Steps           int64
	LoraScale       float64
	ComparePrevious bool
	OutDir          string
	MinRatio        float64
	OnPlastic       string
	OnFail          string
	PollInterval    time.Duration
	Reference       cty.Value

	versionKnown, promptsKnown, seedsKnown bool
}

// parseConfig converts and checks the inputs; unknown values are allowed only while planning.
func parseConfig(in cty.Value, planning bool) (*config, error) {
	c := &config{}
	get := func(name string) (cty.Value, bool) {
		if in == cty.NilVal || in.IsNull() || !in.Type().IsObjectType() || !in.Type().HasAttribute(name) {
			return cty.NilVal, false
		}
		v, _ := in.GetAttr(name).Unmark()
		if !v.IsWhollyKnown() {
			return v, false
		}
		return v, true
	}
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }

	if v, ok := get("version"); ok && !v.IsNull() {
		c.Version = strings.TrimSpace(v.AsString())
		c.versionKnown = true
		if c.Version == "" {
			bad("version is empty; hint: use the train stage's output, e.g. version = train.lora.version")
		}
	} else if ok {
		bad("version is null; hint: use the train stage's output, e.g. version = train.lora.version")
	}
	if v, ok := get("prompts"); ok {
		c.promptsKnown = true
		if v.IsNull() || v.LengthInt() == 0 {
			bad("prompts is empty; hint: add at least one test prompt with the trigger word, e.g. [\"a photo of TOK\"]")
		} else {
			for i, p := range v.AsValueSlice() {
				if p.IsNull() || strings.TrimSpace(p.AsString()) == "" {
					bad("prompts[%d] is empty", i)
					continue
				}
				c.Prompts = append(c.Prompts, p.AsString())
			}
		}
	}
	if v, ok := get("seeds"); ok {
		c.seedsKnown = true
		if v.IsNull() || v.LengthInt() == 0 {
			bad("seeds is empty; hint: seeds = [1, 2]")
		} else {
			seen := map[int64]bool{}
			for i, s := range v.AsValueSlice() {
				f, _ := s.AsBigFloat().Float64()
				if s.IsNull() || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
					bad("seeds[%d] = %s is not a whole number from 0 to %d", i, s.AsBigFloat().String(), math.MaxInt32)
					continue
				}
				if seen[int64(f)] {
					bad("seeds[%d] = %d is listed twice", i, int64(f))
					continue
				}
				seen[int64(f)] = true
				c.Seeds = append(c.Seeds, int64(f))
			}
		}
	}
	num := func(name string, dst *float64, lo, hi float64, hint string) {
		if v, ok := get(name); ok && !v.IsNull() {
			f, _ := v.AsBigFloat().Float64()
			if f < lo || f > hi || math.IsNaN(f) {
				bad("%s = %g is outside %g–%g%s", name, f, lo, hi, hint)
				return
			}
			*dst = f
		}
	}
	c.Guidance, c.LoraScale, c.MinRatio = PortraitGuidance, 1, skin.DefaultMinTextureRatio
	num("guidance_scale", &c.Guidance, 0, 10, " (the Flux LoRA models accept 0–10)")
	num("lora_scale", &c.LoraScale, -1, 2, " (the Flux LoRA models accept -1–2)")
	num("min_texture_ratio", &c.MinRatio, 0.01, 2, "; hint: 0.65 is the default, from simulated smoothing of real photos")
	steps := 28.0
	num("num_inference_steps", &steps, 1, 50, "")
	if steps != math.Trunc(steps) {
		bad("num_inference_steps = %g is not a whole number", steps)
	}
	c.Steps = int64(steps)
	c.ComparePrevious = true
	if v, ok := get("compare_previous"); ok && !v.IsNull() {
		c.ComparePrevious = v.True()
	}
	c.OutDir = "generated"
	if v, ok := get("out_dir"); ok && !v.IsNull() {
		c.OutDir = v.AsString()
		if strings.TrimSpace(c.OutDir) == "" {
			bad("out_dir is empty; hint: out_dir = \"generated\"")
		}
	}
	c.OnPlastic = OnPlasticWarn
	if v, ok := get("on_plastic"); ok && !v.IsNull() {
		c.OnPlastic = v.AsString()
		if c.OnPlastic != OnPlasticWarn && c.OnPlastic != OnPlasticFail {
			bad("on_plastic = %q is not one of %q, %q", c.OnPlastic, OnPlasticWarn, OnPlasticFail)
		}
	}
	c.OnFail = OnFailDelete
	if v, ok := get("on_fail"); ok && !v.IsNull() {
		c.OnFail = v.AsString()
		if c.OnFail != OnFailDelete && c.OnFail != OnFailKeep {
			bad("on_fail = %q is not one of %q, %q", c.OnFail, OnFailDelete, OnFailKeep)
		}
	}
	c.PollInterval = 2 * time.Second
	if v, ok := get("poll_interval"); ok && !v.IsNull() {
		d, err := time.ParseDuration(v.AsString())
		if err != nil || d <= 0 {
			bad("poll_interval = %q is not a positive duration; hint: Go syntax such as \"2s\" or \"500ms\"", v.AsString())
		} else {
			c.PollInterval = d
		}
	}
	if in != cty.NilVal && !in.IsNull() && in.Type().IsObjectType() && in.Type().HasAttribute("reference") {
		c.Reference, _ = in.GetAttr("reference").UnmarkDeep()
	} else {
		c.Reference = cty.NullVal(cty.DynamicPseudoType)
	}
	if !planning && (!c.versionKnown || !c.promptsKnown || !c.seedsKnown) {
		bad("version, prompts and seeds must be known when the stage runs")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return c, nil
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

// previousNote says which version plan expects to compare with: read from the API when the new
// version is known and a token (or the simulator) is available, a general sentence otherwise.
func previousNote(ctx context.Context, req *pipeline.Request, c *config) string {
	general := "and the same on the model's previous version, to compare (skipped with a note if there is none)"
	if !c.versionKnown || !replicate.HasToken(req.Env) {
		return general
	}
	cl, err := replicate.FromEnv(req.Env)
	if err != nil {
		return general
	}
	prev, note, err := previousOf(ctx, cl, c.Version, replicate.DeletedVersions(req.State))
	switch {
	case err != nil:
		return general + "; the versions could not be listed now: " + err.Error()
	case prev != "":
		return "and the same on the previous version " + prev + ", to compare"
	}
	return note
}

// guidanceWarning is the plan warning for guidance above the research's advice.
func guidanceWarning(g float64) string {
	return fmt.Sprintf("guidance_scale = %g is above %g: the research on Flux LoRA portraits advises %g or below, "+
		"higher guidance gives waxy, plastic-looking skin; the texture guard will show what it does", g, PortraitGuidance, PortraitGuidance)
}

// Plan implements pipeline.Kind: it lists the runs and the guard's settings; outputs stay unknown.
func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	c, err := parseConfig(req.Inputs, true)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", req.Address, req.DeclRange, err)
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
	if c.ComparePrevious {
		notes = append(notes, previousNote(ctx, req, c))
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
	return res, nil
}
