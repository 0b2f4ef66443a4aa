package lang

import (
	"fmt"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// suggest returns the candidate closest to name, or "" (see pipeline.Suggest).
func suggest(name string, candidates []string) string { return pipeline.Suggest(name, candidates) }

// didYouMean formats a suggestion as a sentence to append to a detail, or "".
func didYouMean(name string, candidates []string) string {
	if s := suggest(name, candidates); s != "" {
		return fmt.Sprintf(" Did you mean %q?", s)
	}
	return ""
}
