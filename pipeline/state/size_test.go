package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var fixturePhoto = regexp.MustCompile(`^data/ana/ana-\d\d\.jpg$`)

// subject50 is a realistic instance of one subject with 50 photos: the fixture's "ana" (every
// stage of examples/retrain.hcl, recorded by a real simulated apply) with each per-photo list and
// map grown from its 16 photos to 50, named by photo(n). withStats keeps image_check's per-photo
// stats, which the cache serves instead.
func subject50(t testing.TB, photo func(n int) string, withStats bool) *Instance {
	t.Helper()
	raw, err := os.ReadFile(v1Fixture)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Instances map[string]json.RawMessage `json:"instances"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(f.Instances["ana"]))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	v = growPhotos(v, photo)
	if !withStats {
		ic := v.(map[string]any)["records"].(map[string]any)["image_check.photos"].(map[string]any)["outputs"].(map[string]any)
		delete(ic["value"].(map[string]any), "stats")
		delete(ic["type"].([]any)[1].(map[string]any), "stats")
	}
	b, _ := json.Marshal(v)
	var in Instance
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	in.compactRaw()
	return &in
}

// growPhotos replaces every list of the fixture's photo paths by 50 photos, and gives every map
// keyed by photo paths an entry for each of the 50 (its first photo's value, varied per photo as
// real figures are, so that compression is not flattered by 50 equal entries).
func growPhotos(v any, photo func(int) string) any {
	switch x := v.(type) {
	case []any:
		photos := len(x) > 0
		for i, e := range x {
			x[i] = growPhotos(e, photo)
			s, ok := e.(string)
			photos = photos && ok && fixturePhoto.MatchString(s)
		}
		if !photos {
			return x
		}
		out := make([]any, 50)
		for i := range out {
			out[i] = photo(i + 1)
		}
		return out
	case map[string]any:
		var tmpl any
		for k, e := range x {
			x[k] = growPhotos(e, photo)
			if fixturePhoto.MatchString(k) {
				tmpl = x[k]
				delete(x, k)
			}
		}
		if tmpl != nil {
			for n := 1; n <= 50; n++ {
				x[photo(n)] = vary(tmpl, n)
			}
		}
		return x
	case string:
		if fixturePhoto.MatchString(x) {
			var n int
			fmt.Sscanf(x[len("data/ana/ana-"):], "%d", &n)
			return photo(n)
		}
	}
	return v
}

// TestStateBytesPerSubject: what one subject of 50 photos costs in state, as each backend writes
// it: the per-instance file is the compact JSON, well under what the single v1 file spent on it.
// (The 16 KB bound itself is held end to end, on the records the engine writes for a real
// 50-photo subject: cmd/pipeline's TestStateOfA50PhotoSubjectStaysSmall.)
func TestStateBytesPerSubject(t *testing.T) {
	ctx := context.Background()
	names := map[string]func(int) string{
		"example names": func(n int) string { return fmt.Sprintf("data/ana/ana-%02d.jpg", n) },
		"long names": func(n int) string {
			return fmt.Sprintf("photos/ana.lopez@example.com/IMG_20260412_%06d.jpg", 101500+n*37)
		},
	}
	for label, photo := range names {
		t.Run(label, func(t *testing.T) {
			for _, stats := range []bool{false, true} {
				in := subject50(t, photo, stats)
				if got := len(in.Records["train.lora"].Inputs["images"]); got < 50*len(photo(1)) {
					t.Fatalf("the train stage's images input was not grown to 50 photos (%d bytes)", got)
				}
				dir := filepath.Join(t.TempDir(), "s.state")
				st := openDir(t, dir, "")
				if err := st.Put(ctx, "ana", in); err != nil {
					t.Fatal(err)
				}
				fi, err := os.Stat(filepath.Join(dir, "ana.json"))
				if err != nil {
					t.Fatal(err)
				}
				js, _ := compactInstance(in)
				indented, _ := json.MarshalIndent(in, "    ", "  ")
				t.Logf("stats %-5v: per-instance file %5d B; compact JSON (remote object, single file) %5d B; v1 indented %5d B",
					stats, fi.Size(), len(js), len(indented))
				if fi.Size() != int64(len(js)) || fi.Size() > int64(len(indented))*65/100 {
					t.Errorf("the per-instance file is %d bytes: want the compact JSON (%d), under 65%% of the indented v1 form (%d)", fi.Size(), len(js), len(indented))
				}
			}
		})
	}
}

// vary gives photo n its own figures: every number scaled by a factor of its own, every hash
// string replaced.
func vary(v any, n int) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = vary(e, n)
			if k == "hash" {
				out[k] = fmt.Sprintf("%016x", uint64(n)*0x9e3779b97f4a7c15)
			}
		}
		return out
	case json.Number:
		f, err := x.Float64()
		if err != nil || f == 0 {
			return x
		}
		return json.Number(fmt.Sprintf("%.3f", f*(0.9+float64((n*7919)%211)/1000)))
	}
	return v
}
