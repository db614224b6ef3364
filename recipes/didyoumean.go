package recipes

import (
	"fmt"
	"sort"

	"github.com/agext/levenshtein"
)

// didYouMean returns " Did you mean "x"?" when one of the candidates is close to the given
// name, the way HCL words its own suggestions, or "".
func didYouMean(given string, candidates []string) string {
	best, bestDist := "", 3
	sort.Strings(candidates)
	for _, c := range candidates {
		if d := levenshtein.Distance(given, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
