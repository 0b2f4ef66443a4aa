package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// limitConfig is the test pipeline for one subject without params' raised limit, with the train
// stage's input written as input.
func limitConfig(t *testing.T, w *world, input, trainExtra string) string {
	t.Helper()
	conf := retrainConfig(t, `["ben"]`)
	conf = strings.Replace(conf, "  limit \"lora_rank\" { max = 64 }\n", "", 1)
	i := strings.Index(conf, "  input         = merge(")
	j := i + strings.Index(conf[i:], "\n")
	conf = conf[:i] + "  input         = " + input + "\n" + trainExtra + conf[j:]
	path := filepath.Join(w.dir, "limit.hcl")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The guard holds where the money is spent: an input over the research limits is refused at
// plan (exit 3) and by apply, whatever expression produced it, naming where the value came from
// and how to raise it, with nothing uploaded or created; a limit block raises it on purpose.
func TestTrainInputOverALimitIsRefusedWhateverProducedIt(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	w := newWorld(t, `["ben"]`)
	cases := []struct {
		name, input string
		vars        []string
		origin      string
	}{
		{"merge bypass", `merge(params.tuned.values, { lora_rank = 48, steps = 1400, trigger_word = "TOK" })`, nil,
			"the literal lora_rank = 48 (" + filepath.Join(w.dir, "limit.hcl")},
		{"literal", `{ lora_rank = 48, steps = 1000, trigger_word = "TOK" }`, nil, "the literal lora_rank = 48"},
		{"variable", `merge(params.tuned.values, { trigger_word = "TOK", lora_rank = var.rank })`, []string{"-var", "rank=48"}, "variable var.rank"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conf := limitConfig(t, w, c.input, "")
			for _, cmd := range [][]string{{"plan"}, {"apply", "-auto-approve"}} {
				args := append(append(cmd, c.vars...), conf)
				r := cli(t, args...)
				out := r.stdout + r.stderr
				if r.code != 3 {
					t.Fatalf("%s: want exit 3: %s", cmd[0], r)
				}
				for _, want := range []string{"lora_rank = 48 > max 32", c.origin, `limit "lora_rank" { max = 48 }`} {
					if !strings.Contains(out, want) {
						t.Errorf("%s output lacks %q: %s", cmd[0], want, r)
					}
				}
			}
			for _, k := range []string{"uploaded file", "created model", "POST /v1/trainings"} {
				if n := w.srv.Count(k); n != 0 {
					t.Fatalf("%s: %d after a refusal", k, n)
				}
			}
		})
	}
	conf := limitConfig(t, w, cases[0].input, "  limit \"lora_rank\" { max = 48 }\n")
	if r := cli(t, "plan", "-detailed-exitcode", conf); r.code != 2 {
		t.Fatalf("raised on purpose: want exit 2 (changes): %s", r)
	}
}
