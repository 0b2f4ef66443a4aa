package lang

import (
	"sync"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// The usual functions are there under their Terraform names.
func TestFunctions(t *testing.T) {
	tests := []struct {
		expr string
		want cty.Value
	}{
		{`length("héllo")`, cty.NumberIntVal(5)},
		{`length([1, 2])`, cty.NumberIntVal(2)},
		{`length({ a = 1 })`, cty.NumberIntVal(1)},
		{`upper(format("%s-%03d", "v", 7))`, cty.StringVal("V-007")},
		{`join(",", sort(["b", "a"]))`, cty.StringVal("a,b")},
		{`merge({ a = 1 }, { b = 2 })`, cty.ObjectVal(map[string]cty.Value{"a": cty.NumberIntVal(1), "b": cty.NumberIntVal(2)})},
		{`jsonencode({ steps = 1000 })`, cty.StringVal(`{"steps":1000}`)},
		{`jsondecode("[1]")[0]`, cty.NumberIntVal(1)},
		{`regex("v([0-9]+)", "v42")[0]`, cty.StringVal("42")},
		{`flatten([[1], [2, 3]])`, cty.TupleVal([]cty.Value{cty.NumberIntVal(1), cty.NumberIntVal(2), cty.NumberIntVal(3)})},
		{`coalesce(null, "x")`, cty.StringVal("x")},
		{`range(3)`, cty.ListVal([]cty.Value{cty.NumberIntVal(0), cty.NumberIntVal(1), cty.NumberIntVal(2)})},
		{`max(1, 5, 3) + min(2, 4) + abs(-1) + ceil(1.2) + floor(1.8)`, cty.NumberIntVal(11)},
		{`tonumber("16")`, cty.NumberIntVal(16)},
		{`element(["a", "b"], 3)`, cty.StringVal("b")},
		{`lookup({ a = "x" }, "b", "dflt")`, cty.StringVal("dflt")},
		{`contains(["a"], "a")`, cty.True},
		{`substr(trimspace("  hello "), 0, 4)`, cty.StringVal("hell")},
		{`replace("a-b", "-", "_")`, cty.StringVal("a_b")},
		{`try(tonumber("x"), 0)`, cty.NumberIntVal(0)},
		{`can(tonumber("x"))`, cty.False},
		{`sha256("")`, cty.StringVal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")},
		{`base64decode(base64encode("TOK"))`, cty.StringVal("TOK")},
		{`dirname("a/b/c.jpg")`, cty.StringVal("a/b")},
		{`keys(tomap(zipmap(["k"], ["v"])))`, cty.ListVal([]cty.Value{cty.StringVal("k")})},
		{`csvdecode("a,b\n1,2")[0].b`, cty.StringVal("2")},
		{`[startswith("flux-dev", "flux"), endswith("a.jpg", ".png"), strcontains("abc", "b")]`, cty.TupleVal([]cty.Value{cty.True, cty.False, cty.True})},
		{`[alltrue([true, 1 < 2]), alltrue([true, false]), anytrue([false, true]), anytrue([])]`, cty.TupleVal([]cty.Value{cty.True, cty.False, cty.True, cty.False})},
		{`sum([1, 2.5, 3])`, cty.NumberFloatVal(6.5)},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			m := load(t, "output \"x\" {\n  value = "+tt.expr+"\n}\n")
			outs, diags := scope(t, m, Instance{}).EvalOutputs()
			if diags.HasErrors() {
				t.Fatal(describe(diags))
			}
			if got := outs["x"]; !got.RawEquals(tt.want) {
				t.Errorf("= %#v, want %#v", got, tt.want)
			}
		})
	}
}

// One scope per batch instance, evaluated concurrently (run with -race).
func TestConcurrentScopes(t *testing.T) {
	m := load(t, `
batch {
  for_each = toset(["a", "b", "c", "d"])
}
locals {
  dir = "data/${each.key}"
}
stage "check" "photos" {
  dir = local.dir
}
stage "work" "lora" {
  images = check.photos.accepted
  label  = "${each.key}-${check.photos.count}"
}
`)
	keys, values, diags := m.BatchKeys(nil)
	if diags.HasErrors() {
		t.Fatal(describe(diags))
	}
	var wg sync.WaitGroup
	errs := make(chan string, len(keys))
	for _, k := range keys {
		wg.Add(1)
		go func(k string) {
			defer wg.Done()
			s, _ := m.NewScope(Instance{Key: k, Batch: true, Value: values[k]})
			for _, st := range m.Stages() {
				if _, _, _, d := s.EvalStage(st); d.HasErrors() {
					errs <- d.Error()
					return
				}
				s.SetStage(st.Addr, cty.ObjectVal(map[string]cty.Value{
					"count": cty.NumberIntVal(int64(len(k))), "accepted": cty.ListValEmpty(cty.String),
					"version": cty.StringVal(k), "losses": cty.ListValEmpty(cty.Number),
				}))
			}
			in, _, _, _ := s.EvalStage(m.Stage("work.lora"))
			if got := in.GetAttr("label").AsString(); got != k+"-1" {
				errs <- "label " + got
			}
		}(k)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
