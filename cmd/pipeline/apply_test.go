package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Two Ctrl-Cs that arrive while apply is still taking its locks: the second aborts (exit 130)
// after releasing whatever locks exist, and the handler never races the command for them
// (`go test -race` would report the handler reading the release function while apply sets it).
func TestSecondSignalDuringStartAbortsWithoutARace(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "checks.hcl")
	cfg := "stage \"image_check\" \"photos\" {\n  dir       = \"" + filepath.ToSlash(examplesData(t)) + "/ana\"\n  min_count = 12\n}\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 2)
	sigs <- os.Interrupt
	sigs <- os.Interrupt
	aborted := make(chan int, 1)
	var stdout, stderr bytes.Buffer
	cmd := &applyCommand{
		cmdIO:   cmdIO{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr},
		signals: sigs,
		abort: func(code int) {
			aborted <- code
			runtime.Goexit() // in place of os.Exit: this goroutine ends, the test goes on
		},
	}
	err := cmd.Run([]string{"-auto-approve", conf})
	if code := <-aborted; code != 130 {
		t.Errorf("second signal aborted with %d, want 130", code)
	}
	if err == nil {
		t.Errorf("an interrupted apply returned no error:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "Aborting. State on disk is valid") {
		t.Errorf("no abort message:\n%s", stderr.String())
	}
	// The locks are free again: a new apply runs to the end.
	if r := cli(t, "apply", "-auto-approve", conf); r.code != 0 {
		t.Errorf("apply after the aborted one: %s", r)
	}
}
