package pipeline

import (
	"sort"
	"strings"
)

// Suggest returns the candidate closest to name for a "did you mean" hint, or "" when none is
// close: the edit distance (case-insensitive, by rune) may be at most a third of name's length,
// and at least 2. Ties go to the candidate first in sorted order.
func Suggest(name string, candidates []string) string {
	limit := max(len([]rune(name))/3, 2)
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted)
	best, bestD := "", limit+1
	lower := strings.ToLower(name)
	for _, c := range sorted {
		if d := EditDistance(lower, strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// EditDistance is the Levenshtein distance between a and b, by rune.
func EditDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
