package limits

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

func TestBlocksReplaceBuiltinsAndSurviveTheOutput(t *testing.T) {
	blocks := []pipeline.Block{
		{Type: "rule", Labels: []string{"x"}},
		{Type: "limit", Labels: []string{"lora_rank"}, Attrs: map[string]cty.Value{"min": cty.NullVal(cty.Number), "max": cty.NumberIntVal(48)},
			Range: hcl.Range{Filename: "retrain.hcl", Start: hcl.Pos{Line: 7}}},
		{Type: "limit", Labels: []string{"steps"}, Attrs: map[string]cty.Value{"min": cty.NumberIntVal(800)}},
	}
	declared, unknown, err := FromBlocks(blocks)
	if err != nil || unknown != "" {
		t.Fatal(unknown, err)
	}
	s := Builtin().Over(declared)
	if got := s["lora_rank"].Escape(48); got != "" {
		t.Errorf("48 escapes the raised limit: %s", got)
	}
	if got := s["lora_rank"].Escape(49); got != "> max 48" {
		t.Errorf("49: %q", got)
	}
	if got := s["steps"].Escape(700); got != "< min 800" {
		t.Errorf("700 steps: %q", got)
	}
	if got := s["num_repeats"].Escape(13); got != "> max 12" || s["num_repeats"].Why == "" {
		t.Errorf("built-in num_repeats: %q %+v", got, s["num_repeats"])
	}
	back, ok := FromValue(s.Value())
	if !ok || len(back) != 3 || *back["lora_rank"].Max != 48 || back["lora_rank"].Source != `limit "lora_rank" at retrain.hcl:7` ||
		back["steps"].Max != nil || *back["steps"].Min != 800 || back["num_repeats"].Why == "" {
		t.Fatalf("round trip: %#v", back)
	}
	if got := s["lora_rank"].Raise("lora_rank", 64); got != `limit "lora_rank" { max = 64 }` {
		t.Errorf("raise: %s", got)
	}
}

func TestUnknownBoundWaits(t *testing.T) {
	_, unknown, err := FromBlocks([]pipeline.Block{{Type: "limit", Labels: []string{"steps"}, Attrs: map[string]cty.Value{"max": cty.UnknownVal(cty.Number)}}})
	if err != nil || unknown != "steps" {
		t.Fatalf("unknown %q err %v", unknown, err)
	}
	if _, ok := FromValue(cty.UnknownVal(Type)); ok {
		t.Fatal("an unknown value read as limits")
	}
}
