package prune

import (
	"reflect"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

func versions(ids ...string) []replicate.Version {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var vs []replicate.Version
	for i, id := range ids { // oldest first here, to prove choose sorts
		vs = append(vs, replicate.Version{ID: id, CreatedAt: base.Add(time.Duration(i) * time.Hour)})
	}
	return vs
}

func TestChooseKeepsNewestAndPinned(t *testing.T) {
	vs := versions("v1", "v2", "v3", "v4", "v5", "v6")
	sel := choose(vs, policy{KeepLast: 3, Pinned: map[string]string{"v1": "listed in keep"}})
	if !reflect.DeepEqual(sel.Keep, []string{"v6", "v5", "v4", "v1"}) {
		t.Fatalf("keep %v", sel.Keep)
	}
	if !reflect.DeepEqual(sel.Delete, []string{"v3", "v2"}) {
		t.Fatalf("delete %v", sel.Delete)
	}
	// A pinned version among the newest still counts toward keep_last's positions.
	sel = choose(vs, policy{KeepLast: 2, Pinned: map[string]string{"v6": "produced by train.lora", "v2": "accepted"}})
	if !reflect.DeepEqual(sel.Delete, []string{"v4", "v3", "v1"}) {
		t.Fatalf("delete %v", sel.Delete)
	}
	if sel := choose(vs[:2], policy{KeepLast: 3}); len(sel.Delete) != 0 {
		t.Fatalf("fewer versions than keep_last: delete %v", sel.Delete)
	}
}

func TestVersionID(t *testing.T) {
	for _, c := range []struct {
		ref, id string
		same    bool
	}{
		{"abc", "abc", true},
		{"acme/ana:abc", "abc", true},
		{"acme/bob:abc", "abc", false},
	} {
		id, same := versionID(c.ref, "acme/ana")
		if id != c.id || same != c.same {
			t.Errorf("%q: %q %v", c.ref, id, same)
		}
	}
}
