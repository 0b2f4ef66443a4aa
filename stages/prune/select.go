package prune

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// policy is what prune keeps.
type policy struct {
	// KeepLast is how many of the newest versions stay (at least 1).
	KeepLast int
	// Pinned are version ids that are never deleted, with why ("keep", "produced by train.lora", ...).
	Pinned map[string]string
}

// selection is the outcome of applying a policy to a model's versions.
type selection struct {
	// Delete and Keep are version ids, newest first.
	Delete, Keep []string
	// Why says why each kept version is kept.
	Why map[string]string
}

// choose splits versions into those to keep and those to delete. Versions are ordered newest first
// here whatever order the API used, so "the newest keep_last" never depends on page order.
func choose(versions []replicate.Version, p policy) selection {
	vs := append([]replicate.Version(nil), versions...)
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].CreatedAt.After(vs[j].CreatedAt) })
	sel := selection{Why: map[string]string{}}
	for i, v := range vs {
		switch why, pinned := p.Pinned[v.ID]; {
		case pinned:
			sel.Keep = append(sel.Keep, v.ID)
			sel.Why[v.ID] = why
		case i < p.KeepLast:
			sel.Keep = append(sel.Keep, v.ID)
			sel.Why[v.ID] = fmt.Sprintf("one of the newest %d", p.KeepLast)
		default:
			sel.Delete = append(sel.Delete, v.ID)
		}
	}
	return sel
}

// versionID reduces "owner/name:id" (or a bare id) to the id, and reports whether a qualified
// reference names the given model.
func versionID(ref, model string) (id string, sameModel bool) {
	ref = strings.TrimSpace(ref)
	if i := strings.LastIndex(ref, ":"); i >= 0 {
		return ref[i+1:], ref[:i] == model
	}
	return ref, true
}
