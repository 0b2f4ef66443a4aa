package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/examples/kinds/caption"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

// A new kind is its package plus one registration line: examples/kinds/caption, registered here
// the way main.go registers the shipped kinds, validates, plans and applies like them.
func TestANewKindIsOneRegistrationLine(t *testing.T) {
	old := registered
	t.Cleanup(func() { registered = old })
	registered = append(registered, caption.Kind{})

	srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
	t.Cleanup(srv.Close)
	srv.AddModel("acme", "ana-lora", 1)
	t.Setenv("REPLICATE_BASE_URL", srv.URL())
	t.Setenv("REPLICATE_API_TOKEN", srv.Token())
	t.Setenv("CI", "true")
	dir := t.TempDir()
	conf := filepath.Join(dir, "cover.hcl")
	cfg := "stage \"caption\" \"cover\" {\n  version = \"acme/ana-lora:" + srv.VersionIDs("acme", "ana-lora")[0] + "\"\n  prompt  = \"a photo of TOK\"\n}\n" +
		"output \"cover\" { value = caption.cover.output }\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("stage \"caption\" \"cover\" {\n  version = \"abc\"\n  prompt  = \"x\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "validate", bad); r.code != 1 || !strings.Contains(r.stderr, "bad.hcl:2:") {
		t.Errorf("validate holds the new kind's schema too: %s", r)
	}
	if r := cli(t, "apply", "-auto-approve", conf); r.code != 0 || srv.Count("created prediction") != 1 {
		t.Fatalf("apply with the new kind: %s (predictions %d)", r, srv.Count("created prediction"))
	}
	if r := cli(t, "plan", "-detailed-exitcode", conf); r.code != 0 {
		t.Errorf("a second plan has nothing to do: %s", r)
	}
}
