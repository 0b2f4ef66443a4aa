package imagecheck

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// inputs builds the Inputs object as the engine would: every attribute, defaults filled in.
func inputs(t *testing.T, set map[string]cty.Value) cty.Value {
	t.Helper()
	m := map[string]cty.Value{}
	for name, a := range schema.Attributes {
		v := a.Default
		if v == cty.NilVal {
			v = cty.NullVal(a.Type)
		}
		if s, ok := set[name]; ok {
			var err error
			if v, err = convert.Convert(s, a.Type); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		m[name] = v
	}
	return cty.ObjectVal(m)
}

func TestKindOnExampleDataset(t *testing.T) {
	cache := t.TempDir()
	req := &pipeline.Request{
		Address:  `image_check.photos["ana"]`,
		Inputs:   inputs(t, map[string]cty.Value{"dir": cty.StringVal("data/ana")}),
		BaseDir:  filepath.Join("..", "..", "examples"),
		Env:      &pipeline.Env{CacheDir: cache, Cache: pipeline.DirCache(filepath.Join(cache, "figures")), Getenv: func(string) string { return "" }},
		Planning: true,
	}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused != "" {
		t.Fatalf("example dataset refused: %s", res.Refused)
	}
	out := res.Outputs
	if n, _ := out["count"].AsBigFloat().Int64(); n != 17 {
		t.Errorf("count %d, want 17 (19 photos minus the duplicate and the blurry one)", n)
	}
	// The iPhone-style HEIC (stored sideways with irot, in Display P3) is read like a JPEG.
	heic := out["stats"].AsValueMap()["data/ana/ana-18-iphone.heic"].AsValueMap()
	if !heic["accepted"].True() || heic["format"].AsString() != "heic" || heic["width"].AsBigFloat().String() != "1024" ||
		heic["height"].AsBigFloat().String() != "1280" || heic["orientation"].AsBigFloat().String() != "6" || heic["faces"].AsBigFloat().String() != "1" {
		t.Errorf("the HEIC photo: %v", heic)
	}
	rej := out["rejected"].AsValueMap()
	if !strings.HasPrefix(rej["data/ana/ana-17-copy-of-03.jpg"].AsString(), "duplicate of data/ana/ana-03.jpg") ||
		!strings.HasPrefix(rej["data/ana/ana-blurry.jpg"].AsString(), "blurry:") || len(rej) != 2 {
		t.Errorf("rejected %v", rej)
	}
	if d, _ := out["diversity"].AsBigFloat().Float64(); d < 0.5 {
		t.Errorf("diversity %.2f of a varied set", d)
	}
	if !strings.HasPrefix(out["digest"].AsString(), "sha256:") || res.Digest["images"] != out["digest"].AsString() {
		t.Errorf("digest %v / %v", out["digest"], res.Digest)
	}
	if len(res.Notes) == 0 || !strings.HasPrefix(res.Notes[0], "accepted 17 of 19 photos") {
		t.Errorf("notes %q", res.Notes)
	}
	for name, typ := range schema.Outputs {
		if !out[name].Type().Equals(typ) {
			t.Errorf("output %s: %s, want %s", name, out[name].Type().FriendlyName(), typ.FriendlyName())
		}
	}
	// ben's set has a beauty-filtered photo: accepted, with the texture warning.
	reqBen := *req
	reqBen.Inputs = inputs(t, map[string]cty.Value{"dir": cty.StringVal("data/ben")})
	resBen, err := Kind{}.Apply(context.Background(), &reqBen)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := resBen.Outputs["count"].AsBigFloat().Int64(); n != 16 || len(resBen.Warnings) != 1 ||
		!strings.HasPrefix(resBen.Warnings[0], "data/ben/ben-filtered.jpg: skin texture") {
		t.Errorf("ben: count %d, warnings %q", n, resBen.Warnings)
	}
	// Planning again reads everything from the cache.
	before := Decodes()
	if _, err := (Kind{}).Apply(context.Background(), req); err != nil || Decodes() != before {
		t.Errorf("re-plan decoded %d photos (err %v)", Decodes()-before, err)
	}
}

func TestKindRefusesAndValidates(t *testing.T) {
	root := t.TempDir()
	req := &pipeline.Request{Address: "image_check.photos", BaseDir: root,
		Inputs: inputs(t, map[string]cty.Value{"dir": cty.StringVal(".")})}
	res, err := Kind{}.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Refused, "only 0 of 0 photos accepted, below min_count 15") {
		t.Errorf("refused %q", res.Refused)
	}
	if n, _ := res.Outputs["count"].AsBigFloat().Int64(); n != 0 || res.Outputs["accepted"].LengthInt() != 0 {
		t.Error("outputs of an empty set")
	}
	bad := map[string]map[string]cty.Value{
		`on_warning = "sometimes"`:             {"on_warning": cty.StringVal("sometimes")},
		"min_count 20 > max_count 10":          {"min_count": cty.NumberIntVal(20), "max_count": cty.NumberIntVal(10)},
		"min_side = 10.5: must be a whole":     {"min_side": cty.NumberFloatVal(10.5)},
		"exposure.max_dark = 2: must be":       {"exposure": cty.ObjectVal(map[string]cty.Value{"max_dark": cty.NumberIntVal(2)})},
		`patterns: "[" is not a valid pattern`: {"patterns": cty.ListVal([]cty.Value{cty.StringVal("[")})},
	}
	for want, set := range bad {
		set["dir"] = cty.StringVal(".")
		req.Inputs = inputs(t, set)
		if _, err := (Kind{}).Apply(context.Background(), req); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want %q", set, err, want)
		}
	}
	// Unknown inputs during plan: outputs stay unknown.
	req.Inputs = inputs(t, map[string]cty.Value{"dir": cty.UnknownVal(cty.String)})
	if res, err := (Kind{}).Apply(context.Background(), req); err != nil || len(res.Outputs) != 0 {
		t.Errorf("unknown dir: %v %v", res, err)
	}
}
