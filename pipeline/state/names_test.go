package state

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// hostileKeys are batch keys that must each get a file of their own, inside the directory.
var hostileKeys = []string{
	"", "_default", "%5Fdefault", "ana", "Ana", "ANA", "aNa", "../x", "..", ".", "...", "a/b", `a\b`, "a:b",
	"/abs", ".lock", ".meta", ".meta.json", "x.json", "x.json.backup", "x.tmp-1", "user@example.com",
	"User@Example.com", "ünï", "u\u0308ni", "日本", "a b", "tab\tkey", "nul\x00byte", "con", "CON", "con.x",
	"com1", "lpt9", "trailing.", "trailing ", "%41", "%2e", "~", "a~b", "*?<>|\"", "-",
	strings.Repeat("long-", 200), strings.Repeat("long-", 200) + "x", strings.Repeat("é", 300),
}

func TestKeyNamesAreSafeDistinctAndReversible(t *testing.T) {
	seen := map[string]string{}
	folded := map[string]string{}
	for _, k := range hostileKeys {
		n := keyName(k)
		checkSafeName(t, k, n)
		if other, dup := seen[n]; dup {
			t.Errorf("keys %q and %q share the name %q", k, other, n)
		}
		seen[n] = k
		// On a case-insensitive file system names that differ only in case are one file.
		if other, dup := folded[strings.ToLower(n)]; dup {
			t.Errorf("keys %q and %q collide on a case-insensitive file system (%q)", k, other, n)
		}
		folded[strings.ToLower(n)] = k
		if hashedName(n) {
			continue
		}
		if got, ok := nameKey(n); !ok || got != k {
			t.Errorf("nameKey(%q) = %q, %v; want %q", n, got, ok, k)
		}
	}
	// Readable keys stay readable; the rest is escaped as documented.
	for k, want := range map[string]string{
		"ana": "ana", "user-42": "user-42", "a.b@example.com": "a.b@example.com", "": "_default",
		"_default": "%5Fdefault", "Ana": "%41na", "../x": "%2E.%2Fx", ".": "%2E", "..": "%2E%2E",
		"a/b": "a%2Fb", "ünï": "%C3%BCn%C3%AF", "con": "%63on", "x y": "x%20y",
	} {
		if got := keyName(k); got != want {
			t.Errorf("keyName(%q) = %q, want %q", k, got, want)
		}
	}
	// Names keyName never makes are not keys (a stray file is not an instance).
	for _, n := range []string{"Ana", "%41NA", "%4", "%zz", "%2e", "con", ".x", "a%2fb", ""} {
		if k, ok := nameKey(n); ok {
			t.Errorf("nameKey(%q) = %q, want no key", n, k)
		}
	}
}

func checkSafeName(t *testing.T, key, n string) {
	t.Helper()
	if n == "" || n == "." || n == ".." || strings.HasPrefix(n, ".") || strings.ContainsAny(n, "/\\:*?\"<>| \x00") {
		t.Errorf("key %q: unsafe name %q", key, n)
	}
	if len(n) > maxKeyName+33 || !utf8.ValidString(n) {
		t.Errorf("key %q: name %q is %d bytes", key, n, len(n))
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c >= 'A' && c <= 'Z' && (i < 1 || n[i-1] != '%') && (i < 2 || n[i-2] != '%') {
			t.Errorf("key %q: name %q has an upper-case letter outside an escape", key, n)
		}
	}
	if strings.HasSuffix(n, ".") || windowsDevice(n) {
		t.Errorf("key %q: name %q is not valid on Windows", key, n)
	}
}

func FuzzKeyName(f *testing.F) {
	for _, k := range hostileKeys {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, k string) {
		n := keyName(k)
		checkSafeName(t, k, n)
		if !hashedName(n) {
			if got, ok := nameKey(n); !ok || got != k {
				t.Fatalf("nameKey(keyName(%q)) = %q, %v", k, got, ok)
			}
		}
	})
}

// TestHostileKeysOnDisk stores every hostile key in one directory: each is its own file, Keys
// lists exactly them and nothing escapes the directory.
func TestHostileKeysOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir() + "/s.state"
	st := openDir(t, dir, "")
	for i, k := range hostileKeys {
		in := testInstance(fmt.Sprintf("n%d", i), pipeline.StatusComplete)
		if err := st.Put(ctx, k, in); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	other := openDir(t, dir, "")
	keys, err := other.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string(nil), hostileKeys...)
	sortStrings(want)
	if fmt.Sprintf("%q", keys) != fmt.Sprintf("%q", want) {
		t.Fatalf("keys = %q\nwant %q", keys, want)
	}
	for i, k := range hostileKeys {
		in, err := other.Get(ctx, k)
		if err != nil || in == nil || in.Key != k || in.Records[fmt.Sprintf("train.n%d", i)] == nil {
			t.Fatalf("get %q: %+v %v", k, in, err)
		}
	}
	assertOnlyInside(t, dir)
}
