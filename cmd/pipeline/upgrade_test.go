package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyTree copies a directory tree (the example photos).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A state written by the previous release (one file, format 1, no version ledger, image_check's
// per-photo figures inside) plans as "nothing to do" with the config and photos it was written
// for: no stage re-runs because this release digests, decodes or records differently.
func TestStateFromThePreviousReleasePlansAsNoChanges(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, examplesData(t), filepath.Join(dir, "data"))
	if err := os.Remove(filepath.Join(dir, "data", "ana", "ana-18-iphone.heic")); err != nil {
		t.Fatal(err) // added to the example after that release
	}
	if err := os.MkdirAll(filepath.Join(dir, ".pipeline"), 0o755); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{
		"retrain.hcl":            "retrain.hcl",
		"retrain.state.json":     ".pipeline/retrain.state.json",
		"retrain.simulator.json": ".pipeline/retrain.simulator.json",
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "v1", from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CI", "true")
	conf := filepath.Join(dir, "retrain.hcl")
	r := cli(t, "plan", "-simulate", "-detailed-exitcode", conf)
	if r.code != 0 || strings.Contains(r.stdout, "re-run") && !strings.Contains(r.stdout, "0 to re-run") {
		t.Fatalf("the previous release's state must plan with nothing to do (exit 0): %s", r)
	}
	// And an apply changes nothing remote: no training, no prediction, no delete.
	r = cli(t, "apply", "-simulate", "-auto-approve", conf)
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "0 complete") {
		t.Fatalf("apply over the previous release's state must do nothing: %s", r)
	}
}
