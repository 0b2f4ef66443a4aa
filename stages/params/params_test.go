package params

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/limits"
	"github.com/zclconf/go-cty/cty"
)

type states = pipeline.RecordList

func request(count int, blocks ...pipeline.Block) *pipeline.Request {
	return &pipeline.Request{
		Address: "params.tuned",
		Inputs: cty.ObjectVal(map[string]cty.Value{
			"image_count":          cty.NumberIntVal(int64(count)),
			"diversity":            cty.NullVal(cty.Number),
			"previous_image_count": cty.NullVal(cty.Number),
			"on_fewer_images":      cty.StringVal("warn"),
		}),
		Blocks:   blocks,
		Settings: map[string]cty.Value{},
		Env:      &pipeline.Env{Getenv: func(string) string { return "" }},
	}
}

func setInput(req *pipeline.Request, name string, v cty.Value) {
	m := req.Inputs.AsValueMap()
	m[name] = v
	req.Inputs = cty.ObjectVal(m)
}

func rule(name string, attrs map[string]cty.Value) pipeline.Block {
	return pipeline.Block{Type: "rule", Labels: []string{name}, Attrs: attrs,
		Range: hcl.Range{Filename: "retrain.hcl", Start: hcl.Pos{Line: 12}}}
}

func limit(name string, lo, hi cty.Value) pipeline.Block {
	return pipeline.Block{Type: "limit", Labels: []string{name}, Attrs: map[string]cty.Value{"min": lo, "max": hi},
		Range: hcl.Range{Filename: "retrain.hcl", Start: hcl.Pos{Line: 20}}}
}

func run(t *testing.T, req *pipeline.Request) *pipeline.Result {
	t.Helper()
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func values(t *testing.T, res *pipeline.Result) map[string]cty.Value {
	t.Helper()
	v := res.Outputs["values"]
	if !v.Type().IsObjectType() {
		t.Fatalf("values is %s", v.Type().FriendlyName())
	}
	return v.AsValueMap()
}

func num(v cty.Value) float64 { f, _ := v.AsBigFloat().Float64(); return f }

func reasonFor(res *pipeline.Result, key string) string {
	for _, r := range res.Outputs["reasons"].AsValueSlice() {
		if strings.HasPrefix(r.AsString(), key+" = ") {
			return r.AsString()
		}
	}
	return ""
}

func TestBuiltinsForDefaultTrainer(t *testing.T) {
	res := run(t, request(17))
	v := values(t, res)
	want := map[string]float64{"lora_rank": 16, "steps": 1000 + 50*1, "learning_rate": 4e-4, "batch_size": 1}
	// 17 photos: steps 1000 + (17-15)·200/15 ≈ 27 → rounded to 50.
	for k, w := range want {
		if got, ok := v[k]; !ok || got.Type() != cty.Number || num(got) != w {
			t.Errorf("%s = %#v, want %g", k, got, w)
		}
	}
	for _, k := range []string{"num_repeats", "network_alpha", "dropout", "weight_decay"} {
		if _, ok := v[k]; ok {
			t.Errorf("%s passed to ostris/flux-dev-lora-trainer, which lacks it", k)
		}
		if r := reasonFor(res, k); !strings.Contains(r, "not passed") {
			t.Errorf("reason for %s: %q", k, r)
		}
	}
	if r := reasonFor(res, "network_alpha"); !strings.HasPrefix(r, "network_alpha = 16") || !strings.Contains(r, "alpha always equals lora_rank") {
		t.Errorf("alpha reason %q", r)
	}
	if r := reasonFor(res, "num_repeats"); !strings.HasPrefix(r, "num_repeats = 9:") {
		t.Errorf("repeats for 17 photos: %q", r)
	}
	if r := reasonFor(res, "passes per photo"); !strings.Contains(r, "1050 steps × batch 1 ÷ 17 photos = 61.8") {
		t.Errorf("passes: %q", r)
	}
	if p := num(res.Outputs["passes_per_image"]); p != 61.8 {
		t.Errorf("passes_per_image %g", p)
	}
	if res.Refused != "" || len(res.Warnings) != 0 {
		t.Errorf("refused %q warnings %q", res.Refused, res.Warnings)
	}
	if !res.Outputs["previous_image_count"].IsNull() {
		t.Error("previous_image_count without state")
	}
}

func TestBuiltinsScaleWithSetSize(t *testing.T) {
	small := values(t, run(t, request(8)))
	if num(small["lora_rank"]) != 8 || num(small["learning_rate"]) != 1e-4 || num(small["steps"]) != 1000 {
		t.Errorf("8 photos: %v", small)
	}
	big := run(t, request(40))
	if v := values(t, big); num(v["lora_rank"]) != 16 || num(v["steps"]) != 1200 {
		t.Errorf("40 photos: %v", v)
	}
	if r := reasonFor(big, "num_repeats"); !strings.HasPrefix(r, "num_repeats = 5:") {
		t.Errorf("40 photos repeats: %q", r)
	}
	req := request(30)
	setInput(req, "diversity", cty.NumberFloatVal(0.1))
	res := run(t, req)
	if v := values(t, res); num(v["steps"]) != 1000 || !strings.Contains(reasonFor(res, "steps"), "low diversity 0.10") {
		t.Errorf("uniform set steps %v: %q", v["steps"], reasonFor(res, "steps"))
	}
}

func TestRulesDefaultsOrder(t *testing.T) {
	req := request(12,
		rule("never", map[string]cty.Value{"when": cty.False, "lora_rank": cty.NumberIntVal(4)}),
		rule("small set", map[string]cty.Value{"when": cty.True, "lora_rank": cty.NumberIntVal(8), "trigger_word": cty.StringVal("ANA")}),
		rule("also matches", map[string]cty.Value{"when": cty.True, "steps": cty.NumberIntVal(1500)}),
		pipeline.Block{Type: "defaults", Attrs: map[string]cty.Value{
			"lora_rank": cty.NumberIntVal(24), "steps": cty.NumberIntVal(1100), "autocaption": cty.False,
		}},
	)
	res := run(t, req)
	v := values(t, res)
	if num(v["lora_rank"]) != 8 || !strings.Contains(reasonFor(res, "lora_rank"), `rule "small set"`) {
		t.Errorf("lora_rank %v: %q (first matching rule wins)", v["lora_rank"], reasonFor(res, "lora_rank"))
	}
	if num(v["steps"]) != 1100 || !strings.Contains(reasonFor(res, "steps"), "defaults") {
		t.Errorf("steps %v: only the first matching rule applies, then defaults", v["steps"])
	}
	if v["trigger_word"].AsString() != "ANA" || v["autocaption"].True() {
		t.Errorf("typed values lost: %v", v)
	}
	if r := reasonFor(res, "network_alpha"); !strings.HasPrefix(r, "network_alpha = 8") {
		t.Errorf("alpha does not follow the rule's rank: %q", r)
	}
	if num(v["learning_rate"]) != 2e-4 || !strings.Contains(reasonFor(res, "learning_rate"), "built-in") {
		t.Errorf("learning_rate %v", v["learning_rate"])
	}
}

func TestLimits(t *testing.T) {
	aggressive := rule("aggressive", map[string]cty.Value{"when": cty.True, "lora_rank": cty.NumberIntVal(48), "num_repeats": cty.NumberIntVal(20)})
	res := run(t, request(20, aggressive))
	for _, part := range []string{`lora_rank = 48 (rule "aggressive") > max 32 (built-in)`, `limit "lora_rank" { max = 48 }`, `num_repeats = 20 (rule "aggressive") > max 12`} {
		if !strings.Contains(res.Refused, part) {
			t.Errorf("refusal %q lacks %q", res.Refused, part)
		}
	}
	// Raising the limit explicitly replaces the built-in one.
	res = run(t, request(20, aggressive, limit("lora_rank", cty.NullVal(cty.Number), cty.NumberIntVal(64)), limit("num_repeats", cty.NullVal(cty.Number), cty.NumberIntVal(20))))
	if res.Refused != "" {
		t.Errorf("raised limits still refuse: %q", res.Refused)
	}
	// The limits the values were held to are published for the train stage that reads them.
	published, ok := limits.FromValue(res.Outputs["limits"])
	if !ok || published["lora_rank"].Max == nil || *published["lora_rank"].Max != 64 ||
		published["lora_rank"].Source != `limit "lora_rank" at retrain.hcl:20` || published["num_repeats"].Max == nil {
		t.Errorf("published limits %#v", res.Outputs["limits"])
	}
	// A config limit can be stricter, and has a min.
	res = run(t, request(20, limit("steps", cty.NumberIntVal(1100), cty.NumberIntVal(2000))))
	if !strings.Contains(res.Refused, "steps = 1050 (built-in) < min 1100 (limit \"steps\" at retrain.hcl:20)") {
		t.Errorf("min limit: %q", res.Refused)
	}
	res = run(t, request(20, limit("lora_rnk", cty.NullVal(cty.Number), cty.NumberIntVal(8))))
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], `limit "lora_rnk" bounds no chosen value`) {
		t.Errorf("misnamed limit: %q", res.Warnings)
	}
}

func TestFewerImages(t *testing.T) {
	rec := pipeline.StageRecord{Kind: "loss_gate", Name: "fit", Status: pipeline.StatusComplete,
		Data: json.RawMessage(`{"last_accepted":{"training_id":"t1","version":"acme/ana-lora:v1","image_count":18,"images_digest":"sha256:x","input":{"lora_rank":16}}}`)}
	req := request(14)
	req.State = states{rec, {Kind: "train", Name: "lora", Data: json.RawMessage(`{"image_count":99}`)}}
	res := run(t, req)
	if res.Refused != "" || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "retrain on 14 photos < 18 in the last accepted training (version acme/ana-lora:v1)") {
		t.Errorf("warn: refused %q warnings %q", res.Refused, res.Warnings)
	}
	if num(res.Outputs["previous_image_count"]) != 18 {
		t.Errorf("previous_image_count %v", res.Outputs["previous_image_count"])
	}
	setInput(req, "on_fewer_images", cty.StringVal("fail"))
	if res = run(t, req); !strings.Contains(res.Refused, "retrain on 14 photos < 18") {
		t.Errorf("fail: refused %q", res.Refused)
	}
	// The attribute overrides state; as many photos as before is fine.
	setInput(req, "previous_image_count", cty.NumberIntVal(14))
	if res = run(t, req); res.Refused != "" || len(res.Warnings) != 0 {
		t.Errorf("equal count: refused %q warnings %q", res.Refused, res.Warnings)
	}
	setInput(req, "on_fewer_images", cty.StringVal("explode"))
	if _, err := (Kind{}).Apply(context.Background(), req); err == nil || !strings.Contains(err.Error(), `is not one of "warn", "fail"`) {
		t.Errorf("bad on_fewer_images: %v", err)
	}
}

func TestUnknownInputsAndMistakes(t *testing.T) {
	req := request(20, pipeline.Block{Type: "defaults", Attrs: map[string]cty.Value{"lora_rnk": cty.NumberIntVal(8)}})
	res := run(t, req)
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "did you mean lora_rank?") {
		t.Errorf("typo warning: %q", res.Warnings)
	}
	if _, ok := values(t, res)["lora_rnk"]; ok {
		t.Error("unknown input passed to the trainer")
	}
	// Unknown during plan: outputs stay unknown.
	req = request(20)
	setInput(req, "image_count", cty.UnknownVal(cty.Number))
	if res = run(t, req); len(res.Outputs) != 0 {
		t.Errorf("unknown count gave outputs %v", res.Outputs)
	}
	if _, err := (Kind{}).Apply(context.Background(), request(20, rule("no when", map[string]cty.Value{"steps": cty.NumberIntVal(5)}))); err == nil || !strings.Contains(err.Error(), "retrain.hcl:12") {
		t.Errorf("rule without when: %v", err)
	}
	if _, err := (Kind{}).Apply(context.Background(), request(20, rule("bad when", map[string]cty.Value{"when": cty.StringVal("maybe")}))); err == nil || !strings.Contains(err.Error(), "when must be true or false") {
		t.Errorf("bad when: %v", err)
	}
}

func TestOtherTrainer(t *testing.T) {
	trainerSettings := func(ref string) map[string]cty.Value {
		return map[string]cty.Value{"replicate": cty.ObjectVal(map[string]cty.Value{"trainer": cty.StringVal(ref)})}
	}
	// Without a token: only the inputs every Flux LoRA trainer has.
	req := request(20)
	req.Settings = trainerSettings("acme/other-trainer:abc123")
	res := run(t, req)
	v := values(t, res)
	if len(v) != 3 || v["lora_rank"] == cty.NilVal || v["steps"] == cty.NilVal || v["learning_rate"] == cty.NilVal {
		t.Errorf("no token: values %v", v)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "unknown without REPLICATE_API_TOKEN") {
		t.Errorf("no token warnings %q", res.Warnings)
	}
	// With a token: the schema decides (served by a loopback test server).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/models/acme/other-trainer/versions/abc123") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"abc123","openapi_schema":{"components":{"schemas":{"TrainingInput":{"type":"object","properties":{
			"input_images":{"type":"string","format":"uri"},"lora_rank":{"type":"integer","maximum":128},"steps":{"type":"integer"},
			"learning_rate":{"type":"number"},"num_repeats":{"type":"integer"},"network_alpha":{"type":"integer"},"weight_decay":{"type":"number"}}}}}}}`))
	}))
	defer srv.Close()
	req.Env = &pipeline.Env{Getenv: func(k string) string {
		return map[string]string{"REPLICATE_API_TOKEN": "r8_test", "REPLICATE_BASE_URL": srv.URL}[k]
	}}
	res = run(t, req)
	v = values(t, res)
	for _, k := range []string{"num_repeats", "network_alpha", "weight_decay", "lora_rank"} {
		if _, ok := v[k]; !ok {
			t.Errorf("%s missing though the trainer's schema has it: %v (warnings %q)", k, v, res.Warnings)
		}
	}
	if _, ok := v["dropout"]; ok {
		t.Error("dropout passed to a trainer without it")
	}
	if num(v["network_alpha"]) != num(v["lora_rank"]) {
		t.Errorf("alpha %v != rank %v", v["network_alpha"], v["lora_rank"])
	}
	for _, r := range res.Notes {
		if strings.Contains(r, "r8_test") {
			t.Fatal("token in notes")
		}
	}
	for _, d := range res.Details {
		if strings.Contains(d.Text, "r8_test") {
			t.Fatal("token in details")
		}
	}
}
