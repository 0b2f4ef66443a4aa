package imagecheck

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// cacheVersion changes whenever analysis figures are computed differently, so old entries are
// recomputed rather than mixed with new ones.
const cacheVersion = 6

// The analysis cache is keyed by a photo's content (sha256), not its path: the same photo in
// another directory, on another CI runner or renamed is the same entry, and an edited photo is a
// new one. It lives in the shared pipeline.Cache (beside remote state when there is one), which
// holds figures only: an entry is the analysis below, never pixels.

func cacheKey(sha string) string { return fmt.Sprintf("imagecheck/v%d/%s", cacheVersion, sha) }

// cachedAnalysis returns the cached analysis of the content sha, when there is one that a check
// with this max_pixels can use: a photo over an earlier, lower max_pixels was never decoded.
func cachedAnalysis(ctx context.Context, c pipeline.Cache, sha string, maxPixels float64) (analysis, bool) {
	if c == nil {
		return analysis{}, false
	}
	raw, ok, err := c.Get(ctx, cacheKey(sha))
	if err != nil || !ok {
		return analysis{}, false // a cache that cannot be read only costs a decode
	}
	var a analysis
	if json.Unmarshal(raw, &a) != nil || a.SHA256 != sha || a.Format == "" {
		return analysis{}, false
	}
	if !a.Decoded && a.Unreadable == "" && a.pixels() <= maxPixels {
		return analysis{}, false
	}
	return a, true
}

// saveAnalysis stores an analysis under its content digest.
func saveAnalysis(ctx context.Context, c pipeline.Cache, a analysis) error {
	if c == nil || a.SHA256 == "" {
		return nil
	}
	raw, err := json.Marshal(&a)
	if err != nil {
		return err
	}
	return c.Put(ctx, cacheKey(a.SHA256), raw)
}
