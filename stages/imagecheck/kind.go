// Package imagecheck is the `image_check` stage kind: it vets a subject's training photos before
// any money is spent — format and corruption, resolution, aspect, near-duplicates, blur, exposure,
// faces and skin texture, the set's size and diversity — and outputs the accepted files with a
// content digest that serves as the training's cache key.
//
//	stage "image_check" "photos" {
//	  dir        = "data/${each.key}"
//	  min_count  = 15
//	  exposure   = { max_dark = 0.4 }
//	  on_warning = "continue"
//	}
//
// dir is a local directory or a bucket URL (s3://, gs://, azblob://, file:///, see
// stages/lib/photosource); the formats are JPEG, PNG, WebP, HEIC/HEIF and AVIF, told apart by
// content (stages/lib/photo). Each photo is decoded once (after its header passed max_pixels),
// shrunk right away to a 1024 px working copy, turned upright and measured on that copy; the
// measurements are cached by the photo's content (sha256) in the run's shared cache, so
// re-planning an unchanged dataset decodes nothing, on this runner or another. The rules run
// afresh on every check. The same engine is available without HCL as Check.
package imagecheck

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/zclconf/go-cty/cty"
)

// Kind implements pipeline.Kind for `stage "image_check"`.
type Kind struct{}

var _ pipeline.Kind = Kind{}

// Name is the stage kind's name in HCL.
func (Kind) Name() string { return "image_check" }

var exposureType = cty.ObjectWithOptionalAttrs(map[string]cty.Type{
	"max_dark":   cty.Number,
	"max_bright": cty.Number,
}, []string{"max_dark", "max_bright"})

// StatType is the type of one entry of the `stats` output.
var StatType = cty.Object(map[string]cty.Type{
	"format":         cty.String,
	"accepted":       cty.Bool,
	"bytes":          cty.Number,
	"width":          cty.Number,
	"height":         cty.Number,
	"orientation":    cty.Number,
	"sharpness":      cty.Number,
	"dark":           cty.Number,
	"bright":         cty.Number,
	"brightness":     cty.Number,
	"contrast":       cty.Number,
	"hash":           cty.String,
	"faces":          cty.Number,
	"face_width":     cty.Number,
	"texture":        cty.Number,
	"face_sharpness": cty.Number,
})

// DuplicateType is the type of one entry of the `duplicates` output.
var DuplicateType = cty.Object(map[string]cty.Type{
	"files":    cty.List(cty.String),
	"distance": cty.Number,
})

func patternsVal() cty.Value {
	vs := make([]cty.Value, len(DefaultPatterns))
	for i, p := range DefaultPatterns {
		vs[i] = cty.StringVal(p)
	}
	return cty.ListVal(vs)
}

var schema = &pipeline.Schema{
	ReadOnly: true,
	Attributes: map[string]*pipeline.Attribute{
		"dir":                {Type: cty.String, Required: true, Check: checkDir, Description: "directory of the subject's photos, relative to the config file (its subdirectories are not searched)"},
		"patterns":           {Type: cty.List(cty.String), Default: patternsVal(), Check: checkPatterns, Description: "file name patterns considered (case-insensitive); names starting with . are ignored"},
		"min_count":          {Type: cty.Number, Default: cty.NumberIntVal(15), Min: pipeline.Bound(0), Whole: true, Description: "fewer accepted photos refuse the run"},
		"max_count":          {Type: cty.Number, Default: cty.NumberIntVal(50), Min: pipeline.Bound(1), Whole: true, Check: checkMaxCount, Description: "more accepted photos are a warning"},
		"min_side":           {Type: cty.Number, Default: cty.NumberIntVal(1024), Min: pipeline.Bound(1), Whole: true, Description: "shortest side in pixels"},
		"max_aspect":         {Type: cty.Number, Default: cty.NumberFloatVal(2.0), Min: pipeline.Bound(1), Description: "long side ÷ short side"},
		"max_pixels":         {Type: cty.Number, Default: cty.NumberFloatVal(50e6), Min: pipeline.Bound(1), Description: "larger headers are rejected before decoding"},
		"duplicate_distance": {Type: cty.Number, Default: cty.NumberIntVal(10), Min: pipeline.Bound(0), Max: pipeline.Bound(64), Whole: true, Description: "perceptual-hash Hamming distance at or under which two photos are near-duplicates (a 64-bit hash differs in at most 64 bits)"},
		"min_sharpness":      {Type: cty.Number, Min: pipeline.Bound(0), Description: "absolute blur threshold (Laplacian variance at 256 px); unset: relative to the set's median; 0: off"},
		"exposure": {Type: exposureType, Default: cty.ObjectVal(map[string]cty.Value{
			"max_dark": cty.NumberFloatVal(0.5), "max_bright": cty.NumberFloatVal(0.5),
		}), Check: checkExposure, Description: "share of pixels at luma ≤ 10 (max_dark) / ≥ 250 (max_bright) above which a photo is rejected"},
		"on_warning": {Type: cty.String, Default: cty.StringVal("continue"), OneOf: []string{"continue", "fail"}, Description: `"continue" or "fail"`},
	},
	Summary: []pipeline.SummaryColumn{{Title: "photos", Path: "count", Order: 10}},
	// The per-photo outputs are served from the cache on every plan; state keeps the figures
	// that say whether anything changed (count, diversity and the content digest).
	Transient: []string{"stats", "accepted", "rejected", "warnings", "duplicates"},
	Outputs: map[string]cty.Type{
		"count":          cty.Number,
		"accepted":       cty.List(cty.String),
		"rejected":       cty.Map(cty.String),
		"warnings":       cty.List(cty.String),
		"duplicates":     cty.List(DuplicateType),
		"diversity":      cty.Number,
		"stats":          cty.Map(StatType),
		"digest":         cty.String,
		"median_texture": cty.Number,
	},
}

// Schema declares the attributes and outputs.
func (Kind) Schema() *pipeline.Schema { return schema }

// Plan is Apply: the check is read-only and cheap once cached.
func (k Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	return k.Apply(ctx, req)
}

// Apply runs the check.
func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	if req.Inputs == cty.NilVal || !req.Inputs.IsWhollyKnown() {
		return &pipeline.Result{}, nil // outputs stay "known after apply"
	}
	cfg, err := configFrom(req)
	if err != nil {
		return nil, err
	}
	if req.Recorder != nil {
		var mu sync.Mutex
		cfg.Progress = func(done, total int) {
			mu.Lock()
			defer mu.Unlock()
			req.Recorder.Progress(pipeline.Progress{Current: int64(done), Total: int64(total), Message: "analysing photos"})
		}
	}
	rep, err := Check(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &pipeline.Result{
		Outputs:  Outputs(rep),
		Warnings: rep.Warnings,
		Refused:  rep.Refused,
		Notes:    Notes(rep),
		Digest:   map[string]string{"images": rep.Digest},
		Items:    &pipeline.Items{Count: len(rep.Images), Noun: "photos"}, // folds per-photo warnings
	}, nil
}

// attrs are the stage's attributes as the schema decodes them.
type attrs struct {
	Dir               string   `cty:"dir"`
	Patterns          []string `cty:"patterns"`
	MinCount          int      `cty:"min_count"`
	MaxCount          int      `cty:"max_count"`
	MinSide           int      `cty:"min_side"`
	MaxAspect         float64  `cty:"max_aspect"`
	MaxPixels         float64  `cty:"max_pixels"`
	DuplicateDistance int      `cty:"duplicate_distance"`
	MinSharpness      *float64 `cty:"min_sharpness"`
	Exposure          struct {
		MaxDark   *float64 `cty:"max_dark"`
		MaxBright *float64 `cty:"max_bright"`
	} `cty:"exposure"`
	OnWarning string `cty:"on_warning"`
}

func configFrom(req *pipeline.Request) (Config, error) {
	var a attrs
	if err := pipeline.Err(schema.Decode(req, &a)); err != nil {
		return Config{}, err
	}
	root := a.Dir
	if !filepath.IsAbs(root) {
		root = filepath.Join(req.BaseDir, root)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return Config{}, fmt.Errorf("dir %q: %w", a.Dir, err)
	}
	cfg := DefaultConfig(a.Dir)
	cfg.Root = root
	if req.Env != nil {
		cfg.CacheDir, cfg.Figures = req.Env.CacheDir, req.Env.Cache
	}
	cfg.Patterns = a.Patterns
	cfg.MinCount, cfg.MaxCount, cfg.MinSide, cfg.DuplicateDistance = a.MinCount, a.MaxCount, a.MinSide, a.DuplicateDistance
	cfg.MaxAspect, cfg.MaxPixels, cfg.OnWarning = a.MaxAspect, a.MaxPixels, a.OnWarning
	if a.MinSharpness != nil {
		cfg.MinSharpness = *a.MinSharpness
	}
	if a.Exposure.MaxDark != nil {
		cfg.MaxDark = *a.Exposure.MaxDark
	}
	if a.Exposure.MaxBright != nil {
		cfg.MaxBright = *a.Exposure.MaxBright
	}
	return cfg, nil
}

func checkDir(v, _ cty.Value) error {
	if strings.TrimSpace(v.AsString()) == "" {
		return fmt.Errorf("dir is empty: set it to the directory of the subject's photos")
	}
	return nil
}

func checkPatterns(v, _ cty.Value) error {
	for _, p := range v.AsValueSlice() {
		if p.IsNull() {
			continue
		}
		if _, err := filepath.Match(p.AsString(), "x"); err != nil {
			return fmt.Errorf("patterns: %q is not a valid pattern (%v): use shell globs such as \"*.jpg\"", p.AsString(), err)
		}
	}
	return nil
}

// checkMaxCount: no set could pass a min_count above max_count.
func checkMaxCount(v, in cty.Value) error {
	lo := in.GetAttr("min_count")
	if !lo.IsKnown() || lo.IsNull() {
		return nil
	}
	minC, _ := lo.AsBigFloat().Int64()
	maxC, _ := v.AsBigFloat().Int64()
	if minC > maxC {
		return fmt.Errorf("min_count %d > max_count %d: raise max_count or lower min_count", minC, maxC)
	}
	return nil
}

// checkExposure: both bounds are shares of the pixels.
func checkExposure(v, _ cty.Value) error {
	for _, name := range []string{"max_dark", "max_bright"} {
		if !v.Type().HasAttribute(name) {
			continue
		}
		f := v.GetAttr(name)
		if f.IsNull() || !f.IsKnown() {
			continue
		}
		if x, _ := f.AsBigFloat().Float64(); x < 0 || x > 1 || math.IsNaN(x) {
			return fmt.Errorf("exposure.%s = %g: must be between 0 and 1", name, x)
		}
	}
	return nil
}

// Outputs converts a report to the stage's outputs (the types the schema declares).
func Outputs(rep *Report) map[string]cty.Value {
	accepted := make([]cty.Value, len(rep.Accepted))
	for i, p := range rep.Accepted {
		accepted[i] = cty.StringVal(p)
	}
	rejected := map[string]cty.Value{}
	for p, r := range rep.Rejected {
		rejected[p] = cty.StringVal(r)
	}
	warnings := make([]cty.Value, len(rep.Warnings))
	for i, w := range rep.Warnings {
		warnings[i] = cty.StringVal(w)
	}
	dups := make([]cty.Value, len(rep.Duplicates))
	for i, d := range rep.Duplicates {
		dups[i] = cty.ObjectVal(map[string]cty.Value{
			"files":    cty.ListVal([]cty.Value{cty.StringVal(d.Files[0]), cty.StringVal(d.Files[1])}),
			"distance": cty.NumberIntVal(int64(d.Distance)),
		})
	}
	stats := map[string]cty.Value{}
	for _, im := range rep.Images {
		stats[im.Path] = statVal(im)
	}
	medTex := -1.0
	if rep.MedianTexture > 0 {
		medTex = round3(rep.MedianTexture)
	}
	return map[string]cty.Value{
		"count":          cty.NumberIntVal(int64(len(rep.Accepted))),
		"accepted":       listOrEmpty(accepted, cty.String),
		"rejected":       mapOrEmpty(rejected, cty.String),
		"warnings":       listOrEmpty(warnings, cty.String),
		"duplicates":     listOrEmpty(dups, DuplicateType),
		"diversity":      cty.NumberFloatVal(rep.Diversity),
		"stats":          mapOrEmpty(stats, StatType),
		"digest":         cty.StringVal(rep.Digest),
		"median_texture": cty.NumberFloatVal(medTex),
	}
}

func statVal(im *Image) cty.Value {
	num := func(v float64, ok bool) cty.Value {
		if !ok {
			return cty.NumberIntVal(-1)
		}
		return cty.NumberFloatVal(round3(v))
	}
	d := im.Decoded
	faces, fw, tex, fs := -1.0, -1.0, -1.0, -1.0
	if f := im.Face; d && f != nil {
		faces = float64(f.Faces)
		if f.Faces > 0 {
			fw = float64(f.Width)
		}
		if f.Scored {
			tex, fs = f.Texture, f.Sharpness
		}
	}
	hash := ""
	if d {
		hash = fmt.Sprintf("%016x", im.Hash)
	}
	known := im.Unreadable == "" // header dimensions are known even when the photo was not decoded
	orientation := im.Orientation
	if orientation == 0 {
		orientation = 1
	}
	return cty.ObjectVal(map[string]cty.Value{
		"format":         cty.StringVal(im.Format),
		"accepted":       cty.BoolVal(im.Accepted()),
		"bytes":          cty.NumberIntVal(im.obj.Size),
		"width":          num(float64(im.Width), known),
		"height":         num(float64(im.Height), known),
		"orientation":    num(float64(orientation), d),
		"sharpness":      num(im.Sharpness, d),
		"dark":           num(im.Dark, d),
		"bright":         num(im.Bright, d),
		"brightness":     num(im.Luma, d),
		"contrast":       num(im.Contrast, d),
		"hash":           cty.StringVal(hash),
		"faces":          num(faces, faces >= 0),
		"face_width":     num(fw, fw >= 0),
		"texture":        num(tex, tex >= 0),
		"face_sharpness": num(fs, fs >= 0),
	})
}

func listOrEmpty(vs []cty.Value, t cty.Type) cty.Value {
	if len(vs) == 0 {
		return cty.ListValEmpty(t)
	}
	return cty.ListVal(vs)
}

func mapOrEmpty(vs map[string]cty.Value, t cty.Type) cty.Value {
	if len(vs) == 0 {
		return cty.MapValEmpty(t)
	}
	return cty.MapVal(vs)
}

// Notes are the lines plan prints under the stage: the verdict, each rejection, the figures.
func Notes(rep *Report) []string {
	notes := []string{fmt.Sprintf("accepted %d of %d photos (%d rejected); diversity %.2f (lighting %.2f, colour %.2f, composition %.2f)",
		len(rep.Accepted), len(rep.Images), len(rep.Rejected), rep.Diversity, rep.Lighting, rep.Colour, rep.Composition)}
	paths := make([]string, 0, len(rep.Rejected))
	for p := range rep.Rejected {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		notes = append(notes, fmt.Sprintf("rejected %s: %s", p, rep.Rejected[p]))
	}
	scored := 0
	for _, im := range rep.Images {
		if im.Accepted() && im.Face != nil && im.Face.Scored {
			scored++
		}
	}
	figs := fmt.Sprintf("median sharpness %.1f (Laplacian variance at %d px)", rep.MedianSharpness, sharpSide)
	if scored > 0 {
		figs += fmt.Sprintf("; skin texture scored on %d of %d accepted photos, median %.2f", scored, len(rep.Accepted), rep.MedianTexture)
	}
	notes = append(notes, figs)
	notes = append(notes, fmt.Sprintf("analysed %d photo(s), %d unchanged from the cache; digest %s", len(rep.Images)-rep.FromCache, rep.FromCache, rep.Digest))
	if rep.CacheErr != nil {
		notes = append(notes, fmt.Sprintf("analysis cache not written (%v): the next check decodes every photo again", rep.CacheErr))
	}
	return notes
}
