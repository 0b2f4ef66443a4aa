package pipeline

import "testing"

func TestSuggest(t *testing.T) {
	cands := []string{"lora_rank", "learning_rate", "steps", "min_count", "count"}
	for _, tc := range []struct{ in, want string }{
		{"lora_rnak", "lora_rank"},
		{"LORA_RANK", "lora_rank"},
		{"step", "steps"},
		{"min_cont", "min_count"},
		{"cuont", "count"},
		{"resolution", ""},
		{"xy", ""},
	} {
		if got := Suggest(tc.in, cands); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if d := EditDistance("kitten", "sitting"); d != 3 {
		t.Errorf("EditDistance(kitten, sitting) = %d, want 3", d)
	}
}
