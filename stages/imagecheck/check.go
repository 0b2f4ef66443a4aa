package imagecheck

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/photosource"
)

// Config is one check's settings (the stage's attributes, resolved).
type Config struct {
	// Dir is the directory as the user wrote it; reported paths are Dir joined with the file name.
	Dir string
	// Root is Dir resolved to an absolute path.
	Root              string
	Patterns          []string
	MinCount          int
	MaxCount          int
	MinSide           int
	MaxAspect         float64
	MaxPixels         float64
	DuplicateDistance int
	// MinSharpness < 0 means "relative to the set's median".
	MinSharpness float64
	MaxDark      float64
	MaxBright    float64
	OnWarning    string
	// Figures is the analysis cache, keyed by content (the shared pipeline.Cache); nil: none.
	Figures pipeline.Cache
	// CacheDir keeps, on this machine, photos fetched from a bucket and the digests of local
	// files (so an unchanged file is not read again); "" uses the system's temp directory.
	CacheDir string
	// Workers bounds parallel decoding (0: one per CPU).
	Workers int
	// Progress, when set, is told how many of the files to analyse are done.
	Progress func(done, total int)
}

// DefaultPatterns are the file names considered: the formats we read plus those people upload that
// we must reject with advice rather than ignore.
var DefaultPatterns = []string{"*.jpg", "*.jpeg", "*.png", "*.webp", "*.heic", "*.heif", "*.avif", "*.gif", "*.tif", "*.tiff", "*.bmp"}

// DefaultConfig returns the SPEC defaults for dir.
func DefaultConfig(dir string) Config {
	abs, _ := filepath.Abs(dir)
	return Config{
		Dir: dir, Root: abs, Patterns: DefaultPatterns,
		MinCount: 15, MaxCount: 50, MinSide: 1024, MaxAspect: 2.0, MaxPixels: 50e6,
		DuplicateDistance: 10, MinSharpness: -1, MaxDark: 0.5, MaxBright: 0.5, OnWarning: "continue",
	}
}

const (
	// recommendedCount: fewer accepted photos than this is worth a warning even above min_count.
	recommendedCount = 15
	// blurRatio: a photo whose sharpness is below this share of the set's median is rejected as blurry.
	blurRatio = 0.35
	// softFaceRatio: a face whose edge sharpness is below this share of the set's median looks out of
	// focus even when the photo as a whole passes the blur rule (the research: 0.75 at a σ=2 blur).
	softFaceRatio = 0.8
	// lowDiversity: below this the set is called too uniform.
	lowDiversity = 0.25
	// minForRelative: the relative blur rule needs a median worth the name.
	minForRelative = 3
)

// Duplicate is a near-duplicate pair: Files[0] is kept, Files[1] is rejected.
type Duplicate struct {
	Files    []string
	Distance int
}

// Image is one considered file and what the check made of it.
type Image struct {
	Name string // file name inside the directory
	Path string // how outputs name it: Dir joined with Name, or the object's URL
	analysis
	Reasons  []string // why it is rejected (empty: accepted)
	Warnings []string
	Cached   bool
	obj      photosource.Object
	// readErr: the file could not be read (permissions, I/O); never cached, since fixing
	// permissions does not change the content.
	readErr bool
}

// Accepted reports whether the image passed every rule.
func (im *Image) Accepted() bool { return len(im.Reasons) == 0 }

// Report is the outcome of a check.
type Report struct {
	Images     []*Image // in name order
	Accepted   []string
	Rejected   map[string]string
	Warnings   []string
	Duplicates []Duplicate
	Diversity  float64
	// Lighting, Colour and Composition are the parts of Diversity.
	Lighting, Colour, Composition float64
	Digest                        string
	MedianSharpness               float64
	MedianTexture                 float64
	Decoded, FromCache            int
	// CacheErr is why the analysis cache could not be written (the next check decodes again).
	CacheErr error
	// Refused is set when the set fails a rule that stops the run (count, on_warning).
	Refused string
}

// Check lists the directory (cfg.Root, or cfg.Dir when it is a bucket URL), analyses every
// considered file (from the cache when its content was analysed before) and applies the rules.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	src, err := openSource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	objs, err := src.List(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Rejected: map[string]string{}}
	for _, o := range objs {
		if strings.HasPrefix(o.Name, ".") || !matchAny(cfg.Patterns, o.Name) {
			continue
		}
		rep.Images = append(rep.Images, &Image{Name: o.Name, Path: o.Ref, obj: o})
	}
	if err := analyzeAll(ctx, cfg, src, rep); err != nil {
		return nil, err
	}
	for _, im := range rep.Images {
		switch {
		case im.Cached:
			rep.FromCache++
		case im.Decoded:
			rep.Decoded++
		}
	}
	applyRules(cfg, rep)
	return rep, nil
}

// openSource opens the photos' directory: a bucket URL as written, a local one where Root says,
// reported by the dir as written.
func openSource(ctx context.Context, cfg Config) (*photosource.Dir, error) {
	opts := photosource.Options{CacheDir: cfg.CacheDir, Figures: cfg.Figures, Name: cfg.Dir}
	if photosource.IsURL(cfg.Dir) {
		return photosource.Open(ctx, cfg.Dir, opts)
	}
	root := cfg.Root
	if root == "" {
		root = cfg.Dir
	}
	return photosource.Open(ctx, root, opts)
}

// matchAny matches a file name against the patterns case-insensitively (cameras write .JPG).
func matchAny(patterns []string, name string) bool {
	lname := strings.ToLower(name)
	for _, p := range patterns {
		if ok, _ := filepath.Match(strings.ToLower(p), lname); ok {
			return true
		}
	}
	return false
}

// analyzeAll examines the images on a bounded pool: each worker holds one full-size decode at a
// time, so memory stays at workers × one photo.
func analyzeAll(ctx context.Context, cfg Config, src *photosource.Dir, rep *Report) error {
	workers := cfg.Workers
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), 8)
	}
	workers = min(workers, len(rep.Images))
	next := make(chan *Image)
	var done atomic.Int64
	var mu sync.Mutex
	var fatal error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for im := range next {
				cacheErr, err := examine(ctx, cfg, src, im)
				mu.Lock()
				if err != nil && fatal == nil {
					fatal = err
				}
				if cacheErr != nil && rep.CacheErr == nil {
					rep.CacheErr = cacheErr
				}
				mu.Unlock()
				if cfg.Progress != nil {
					cfg.Progress(int(done.Add(1)), len(rep.Images))
				}
			}
		}()
	}
	var cerr error
feed:
	for _, im := range rep.Images {
		select {
		case next <- im:
		case <-ctx.Done():
			cerr = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	return errors.Join(cerr, fatal)
}

// examine fills in one image's analysis: from the cache when its content was analysed before,
// else analysed and cached. The file is read once: its header is judged first (a bomb is never
// read whole), then its sha256 is looked up before anything is decoded. A local file that cannot
// be read is rejected with the reason; a bucket object that cannot be read fails the check (the
// bucket, not the photo, is wrong). cacheErr is why the analysis could not be cached.
func examine(ctx context.Context, cfg Config, src *photosource.Dir, im *Image) (cacheErr, err error) {
	if im.obj.Problem != "" {
		im.analysis = analysis{Format: "unknown", Unreadable: im.obj.Problem}
		im.readErr = true
		return nil, nil
	}
	if im.obj.Size == 0 {
		im.analysis = analysis{Format: "empty", Unreadable: "empty file (0 bytes): copy the photo again"}
		return nil, nil
	}
	if sha, ok := src.Known(ctx, im.obj); ok {
		if a, ok := cachedAnalysis(ctx, cfg.Figures, sha, cfg.MaxPixels); ok {
			im.analysis, im.Cached = a, true
			return nil, nil
		}
	}
	unreadable := func(err error) {
		// The photo is unusable, not the whole check: reject it and say why.
		im.analysis = analysis{Format: "unknown", Unreadable: fmt.Sprintf("cannot read the file (%v): check its permissions and copy it again", err)}
		im.readErr = true
	}
	f, err := src.OpenFile(ctx, im.obj)
	if err != nil {
		if src.IsBucket() {
			return nil, err
		}
		unreadable(err)
		return nil, nil
	}
	defer f.Close()
	lookup := func(sha string) (analysis, bool) { return cachedAnalysis(ctx, cfg.Figures, sha, cfg.MaxPixels) }
	a, cached, err := analyzeFile(ctx, f, im.obj.Size, cfg.MaxPixels, lookup)
	if err != nil {
		unreadable(err)
		return nil, nil
	}
	if a.SHA256 == "" { // judged by its header alone: cache it if the content is known anyway
		sha, ok := src.Known(ctx, im.obj) // (a fetched bucket object), else judge again next time
		if !ok {
			im.analysis = a
			return nil, nil
		}
		a.SHA256 = sha
	}
	im.analysis, im.Cached = a, cached
	src.Remember(ctx, im.obj, a.SHA256)
	if cached {
		return nil, nil
	}
	return saveAnalysis(ctx, cfg.Figures, a), nil
}

// applyRules turns the analyses into the verdicts: per-image rules, duplicates, count, diversity.
func applyRules(cfg Config, rep *Report) {
	var sharp []float64
	for _, im := range rep.Images {
		if im.Decoded {
			sharp = append(sharp, im.Sharpness)
		}
	}
	rep.MedianSharpness = median(sharp)

	for _, im := range rep.Images {
		im.Reasons = imageReasons(cfg, rep, im)
	}
	findDuplicates(cfg, rep)
	faceWarnings(rep)

	for _, im := range rep.Images {
		if im.Accepted() {
			rep.Accepted = append(rep.Accepted, im.Path)
			rep.Warnings = append(rep.Warnings, im.Warnings...)
		} else {
			rep.Rejected[im.Path] = strings.Join(im.Reasons, "; ")
		}
	}
	rep.Digest = digest(rep)
	diversity(rep)

	dir := filepath.ToSlash(cfg.Dir)
	n := len(rep.Accepted)
	if n >= 2 && rep.Diversity < lowDiversity {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: diversity %.2f is low (lighting %.2f, colour %.2f, composition %.2f): the photos look alike, so the model learns the setting along with the face; add photos with other light, clothes, backgrounds and angles",
			dir, rep.Diversity, rep.Lighting, rep.Colour, rep.Composition))
	}
	if n > cfg.MaxCount {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %d accepted photos > max_count %d: more photos lengthen training without improving likeness; keep the best %d", dir, n, cfg.MaxCount, cfg.MaxCount))
	}
	switch {
	case n < cfg.MinCount:
		rep.Refused = fmt.Sprintf("%s: only %d of %d photos accepted, below min_count %d (%d rejected, see rejected): add photos or fix the rejected ones; retraining on too few photos overfits",
			dir, n, len(rep.Images), cfg.MinCount, len(rep.Rejected))
	case n < recommendedCount:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: only %d accepted photos; %d or more are recommended for a stable likeness", dir, n, recommendedCount))
	}
	if rep.Refused == "" && cfg.OnWarning == "fail" && len(rep.Warnings) > 0 {
		rep.Refused = fmt.Sprintf("on_warning = \"fail\" and %d warning(s): %s", len(rep.Warnings), strings.Join(rep.Warnings, " | "))
	}
}

// imageReasons lists every rule one image fails.
func imageReasons(cfg Config, rep *Report, im *Image) []string {
	if im.Unreadable != "" {
		return []string{im.Unreadable}
	}
	var rs []string
	short, long := min(im.Width, im.Height), max(im.Width, im.Height)
	if px := im.pixels(); px > cfg.MaxPixels {
		rs = append(rs, fmt.Sprintf("%d×%d = %.1f MP > max_pixels %.1f MP: not decoded (protects memory); downscale the photo", im.Width, im.Height, px/1e6, cfg.MaxPixels/1e6))
	}
	if short < cfg.MinSide {
		rs = append(rs, fmt.Sprintf("short side %d < min_side %d", short, cfg.MinSide))
	}
	if aspect := float64(long) / float64(short); aspect > cfg.MaxAspect {
		rs = append(rs, fmt.Sprintf("aspect %.2f > max_aspect %g", aspect, cfg.MaxAspect))
	}
	if !im.Decoded {
		return rs
	}
	switch {
	case cfg.MinSharpness == 0:
	case cfg.MinSharpness > 0:
		if im.Sharpness < cfg.MinSharpness {
			rs = append(rs, fmt.Sprintf("blurry: sharpness %.1f < min_sharpness %g", im.Sharpness, cfg.MinSharpness))
		}
	case len(sharpOf(rep)) >= minForRelative && rep.MedianSharpness > 0:
		if ratio := im.Sharpness / rep.MedianSharpness; ratio < blurRatio {
			rs = append(rs, fmt.Sprintf("blurry: sharpness %.1f is %.2f× the set median %.1f (< %.2f×)", im.Sharpness, ratio, rep.MedianSharpness, blurRatio))
		}
	}
	if im.Dark > cfg.MaxDark {
		rs = append(rs, fmt.Sprintf("underexposed: %.0f%% of pixels at luma ≤ 10 > max_dark %.0f%%", 100*im.Dark, 100*cfg.MaxDark))
	}
	if im.Bright > cfg.MaxBright {
		rs = append(rs, fmt.Sprintf("overexposed: %.0f%% of pixels at luma ≥ 250 > max_bright %.0f%%", 100*im.Bright, 100*cfg.MaxBright))
	}
	return rs
}

func sharpOf(rep *Report) []float64 {
	var s []float64
	for _, im := range rep.Images {
		if im.Decoded {
			s = append(s, im.Sharpness)
		}
	}
	return s
}

// hashDistance compares a with b and with b's mirror image, so a flipped copy is still a duplicate.
func hashDistance(a, b *Image) int {
	return min(bits.OnesCount64(a.Hash^b.Hash), bits.OnesCount64(a.Hash^b.Mirror))
}

// findDuplicates keeps, in name order, the first of each group of near-duplicates among the photos
// that pass every other rule; later ones are rejected as duplicates of the nearest kept photo.
// Photos already rejected for other reasons are still told when they duplicate a kept photo.
func findDuplicates(cfg Config, rep *Report) {
	var kept []*Image
	nearest := func(im *Image) (*Image, int) {
		var best *Image
		bd := math.MaxInt
		for _, k := range kept {
			if d := hashDistance(im, k); d < bd {
				best, bd = k, d
			}
		}
		return best, bd
	}
	var others []*Image
	for _, im := range rep.Images {
		if !im.Decoded {
			continue
		}
		if !im.Accepted() {
			others = append(others, im)
			continue
		}
		if k, d := nearest(im); k != nil && d <= cfg.DuplicateDistance {
			im.Reasons = append(im.Reasons, fmt.Sprintf("duplicate of %s (distance %d)", k.Path, d))
			im.Warnings = nil
			rep.Duplicates = append(rep.Duplicates, Duplicate{Files: []string{k.Path, im.Path}, Distance: d})
			continue
		}
		kept = append(kept, im)
	}
	for _, im := range others {
		if k, d := nearest(im); k != nil && d <= cfg.DuplicateDistance {
			im.Reasons = append(im.Reasons, fmt.Sprintf("duplicate of %s (distance %d)", k.Path, d))
			rep.Duplicates = append(rep.Duplicates, Duplicate{Files: []string{k.Path, im.Path}, Distance: d})
		}
	}
	sort.SliceStable(rep.Duplicates, func(i, j int) bool { return rep.Duplicates[i].Files[1] < rep.Duplicates[j].Files[1] })
}

// digest is the content digest of the accepted set: sha256 over the sorted "name content-sha256"
// lines. Renaming, adding, removing or editing an accepted photo changes it; touching does not.
func digest(rep *Report) string {
	var lines []string
	for _, im := range rep.Images {
		if im.Accepted() {
			lines = append(lines, im.Name+"\x00"+im.SHA256+"\n")
		}
	}
	slices.Sort(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// diversity scores the spread of the accepted photos, 0 (all alike) to 1, as the mean of three
// parts, each the mean pairwise distance of a descriptor scaled so that "clearly different photos"
// reach 1: lighting (mean brightness and contrast), colour (mean chroma: white balance, clothes,
// backgrounds) and composition (perceptual-hash distance: framing, pose, background layout).
func diversity(rep *Report) {
	var acc []*Image
	for _, im := range rep.Images {
		if im.Accepted() {
			acc = append(acc, im)
		}
	}
	if len(acc) < 2 {
		return
	}
	var light, col, comp float64
	pairs := 0
	for i := range acc {
		for j := i + 1; j < len(acc); j++ {
			a, b := acc[i], acc[j]
			light += math.Hypot(a.Luma-b.Luma, a.Contrast-b.Contrast)
			col += math.Hypot(a.Cb-b.Cb, a.Cr-b.Cr)
			comp += float64(bits.OnesCount64(a.Hash ^ b.Hash))
			pairs++
		}
	}
	p := float64(pairs)
	rep.Lighting = math.Min(1, light/p/lightingScale)
	rep.Colour = math.Min(1, col/p/colourScale)
	rep.Composition = math.Min(1, comp/p/compositionScale)
	rep.Diversity = round3((rep.Lighting + rep.Colour + rep.Composition) / 3)
	rep.Lighting, rep.Colour, rep.Composition = round3(rep.Lighting), round3(rep.Colour), round3(rep.Composition)
}

const (
	// lightingScale: mean pairwise distance in (mean luma, luma std), 0–255 units, that counts as fully varied.
	lightingScale = 50
	// colourScale: mean pairwise distance of mean (Cb, Cr) that counts as fully varied.
	colourScale = 20
	// compositionScale: mean pairwise dHash distance of unrelated pictures (half of 64 bits).
	compositionScale = 32
)

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}
