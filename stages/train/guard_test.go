package train

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
)

// withSource writes a config whose train stage sets input = expr and points the request's
// input range at it, as the engine does: the stage reads where the value came from there.
func withSource(t *testing.T, req *pipeline.Request, expr string) {
	t.Helper()
	head := "stage \"train\" \"lora\" {\n  input = "
	src := head + expr + "\n}\n"
	path := filepath.Join(t.TempDir(), "retrain.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	start := hcl.Pos{Line: 2, Column: len("  input = ") + 1, Byte: len(head)}
	end := hcl.Pos{Line: 2, Column: start.Column + len(expr), Byte: len(head) + len(expr)}
	req.AttrRanges = map[string]hcl.Range{"input": {Filename: path, Start: start, End: end}}
}

// tunedReads is what the engine hands a train stage that references params.tuned: its outputs,
// values and the limits it published.
func tunedReads(values map[string]int, published limits.Set) map[string]cty.Value {
	vals := map[string]cty.Value{}
	for k, v := range values {
		vals[k] = cty.NumberIntVal(int64(v))
	}
	return map[string]cty.Value{"params.tuned": cty.ObjectVal(map[string]cty.Value{
		"values": cty.ObjectVal(vals), "limits": published.Value(),
	})}
}

// planNoSpend plans and checks that nothing remote was created.
func planNoSpend(t *testing.T, h *harness, req *pipeline.Request) *pipeline.Result {
	t.Helper()
	res, err := Kind{}.Plan(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"POST /v1/trainings", "uploaded file", "created model", "created training"} {
		if n := h.srv.Count(k); n != 0 {
			t.Errorf("plan: %s %d times", k, n)
		}
	}
	return res
}

// The guard holds on the final input, whatever produced it: the merge() override users reach
// for, a literal input, a variable. Each is refused at plan, naming the value, where it came
// from and the block that raises it on purpose; nothing is created.
func TestInputEscapingALimitIsRefusedAtPlan(t *testing.T) {
	cases := []struct {
		name, expr string
		in         cty.Value
		want       []string
	}{
		{"merge bypass", `merge(params.tuned.values, { lora_rank = 48, steps = 1400 })`,
			input("lora_rank", 48, "steps", 1400, "learning_rate", 4e-4),
			[]string{"the literal lora_rank = 48", "a merge() argument that overrides params.tuned.values", "overriding the 16 that params.tuned chose"}},
		{"literal", `{ lora_rank = 48, steps = 1000 }`,
			input("lora_rank", 48, "steps", 1000),
			[]string{"it comes from the literal lora_rank = 48 (", "retrain.hcl:2,25); if you mean it"}},
		{"variable", `merge(params.tuned.values, { lora_rank = var.rank })`,
			input("lora_rank", 48, "steps", 1000, "learning_rate", 4e-4),
			[]string{"variable var.rank (", "overriding the 16 that params.tuned chose"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			req := h.request(c.in, nil, &recorder{})
			req.Reads = tunedReads(map[string]int{"lora_rank": 16, "steps": 1000}, limits.Builtin())
			withSource(t, req, c.expr)
			res := planNoSpend(t, h, req)
			want := append([]string{"input lora_rank = 48 > max 32 (built-in: rank 32 and up memorises the photos",
				`raise the limit on purpose in this train stage: limit "lora_rank" { max = 48 }`, "Nothing was uploaded or started"}, c.want...)
			for _, w := range want {
				if !strings.Contains(res.Refused, w) {
					t.Errorf("refusal lacks %q:\n%s", w, res.Refused)
				}
			}
			// Apply refuses the same before it uploads anything.
			_, err := h.apply(h.request(c.in, nil, &recorder{}))
			if !pipeline.IsRefused(err) || h.srv.Count("uploaded file")+h.srv.Count("POST /v1/trainings") != 0 {
				t.Fatalf("apply: %v (uploads %d)", err, h.srv.Count("uploaded file"))
			}
		})
	}
}

// Without the config's source (a config not on disk) the comparison with params' values still
// says the value was set in this stage.
func TestOriginWithoutSourceComparesWithParams(t *testing.T) {
	h := newHarness(t)
	req := h.request(input("lora_rank", 48), nil, &recorder{})
	req.Reads = tunedReads(map[string]int{"lora_rank": 16}, limits.Builtin())
	res := planNoSpend(t, h, req)
	if !strings.Contains(res.Refused, "it comes from the input written in this stage, overriding the 16 that params.tuned chose") {
		t.Fatalf("refusal %q", res.Refused)
	}
}

// A limit raised on purpose lets the value through: in this stage, or in the params stage the
// input comes from (its published limits). A stricter published limit holds too, and says where
// it is declared.
func TestLimitBlocksRaiseOrTighten(t *testing.T) {
	h := newHarness(t)
	in := input("lora_rank", 48, "steps", 1000, "trigger_word", "TOK")

	req := h.request(in, nil, &recorder{})
	req.Blocks = []pipeline.Block{maxLimit("lora_rank", 48)}
	if res := planNoSpend(t, h, req); res.Refused != "" {
		t.Fatalf("raised in train: %q", res.Refused)
	}

	raised := limits.Builtin().Over(limits.Set{"lora_rank": {Max: fp(64), Source: `limit "lora_rank" at retrain.hcl:20`}})
	req = h.request(in, nil, &recorder{})
	req.Reads = tunedReads(map[string]int{"lora_rank": 48}, raised)
	if res := planNoSpend(t, h, req); res.Refused != "" {
		t.Fatalf("raised in params: %q", res.Refused)
	}

	strict := limits.Builtin().Over(limits.Set{"steps": {Max: fp(800), Source: `limit "steps" at retrain.hcl:21`}})
	req = h.request(input("lora_rank", 16, "steps", 1000), nil, &recorder{})
	req.Reads = tunedReads(map[string]int{"lora_rank": 16, "steps": 1000}, strict)
	res := planNoSpend(t, h, req)
	if !strings.Contains(res.Refused, `input steps = 1000 > max 800 (limit "steps" at retrain.hcl:21, published by params.tuned)`) ||
		!strings.Contains(res.Refused, `limit "steps" { max = 1000 }`) {
		t.Fatalf("published strict limit: %q", res.Refused)
	}

	// This stage's own block wins over params' and is what to change.
	req = h.request(input("lora_rank", 40), nil, &recorder{})
	req.Reads = tunedReads(nil, raised)
	req.Blocks = []pipeline.Block{maxLimit("lora_rank", 24)}
	res = planNoSpend(t, h, req)
	if !strings.Contains(res.Refused, `> max 24 (limit "lora_rank" at retrain.hcl:40)`) || !strings.Contains(res.Refused, "by changing that block") {
		t.Fatalf("train's own block: %q", res.Refused)
	}

	// A non-number under a limit and a limit that bounds nothing.
	req = h.request(input("num_repeats", "lots", "lora_rank", 16), nil, &recorder{})
	req.Blocks = []pipeline.Block{maxLimit("lora_rnak", 8)}
	res = planNoSpend(t, h, req)
	if !strings.Contains(res.Refused, `input num_repeats = "lots" is not a number`) {
		t.Errorf("non-number: %q", res.Refused)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], `limit "lora_rnak" bounds no value of input`) {
		t.Errorf("warnings %q", res.Warnings)
	}
}
