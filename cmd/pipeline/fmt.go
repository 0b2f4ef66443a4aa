package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/aymanbagabas/go-udiff"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipeline-dev/pipeline/pipeline/config"
)

// fmtCommand is `pipeline fmt [-check] [-diff] [FILE...]`, as Terraform's: no FILE means the
// .hcl files of the current directory.
type fmtCommand struct{ cmdIO }

// Run implements command.
func (fc *fmtCommand) Run(args []string) error {
	stdout, stderr := fc.stdout, fc.stderr
	fs := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "do not write: list files that are not formatted and exit 3")
	diff := fs.Bool("diff", false, "show the formatting changes as a unified diff")
	var c common
	c.register(fs, false)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline fmt [-check] [-diff] [FILE...]\n\nRewrites files in canonical HCL format; with no FILE, the .hcl files of the current directory.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	files := fs.Args()
	if len(files) == 0 {
		var err error
		if files, err = hclFilesHere(); err != nil {
			return exitWith(exitError, err)
		}
	}
	u := newUI(&c, stdout, stderr)
	unformatted := 0
	failed := false
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			failed = true
			continue
		}
		out, diags := config.Format(src, path)
		if diags.HasErrors() {
			u.diagnostics(map[string]*hcl.File{path: {Bytes: src}}, diags)
			failed = true
			continue
		}
		if bytes.Equal(src, out) {
			continue
		}
		unformatted++
		fmt.Fprintln(stdout, path)
		if *diff {
			fmt.Fprint(stdout, udiff.Unified("old/"+path, "new/"+path, string(src), string(out)))
		}
		if *check {
			continue
		}
		info, err := os.Stat(path)
		if err != nil {
			return exitWith(exitError, err)
		}
		if err := writeFileAtomic(path, out, info.Mode().Perm()); err != nil {
			return exitWith(exitError, err)
		}
	}
	switch {
	case failed:
		return exitWith(exitError, nil)
	case *check && unformatted > 0:
		return exitWith(exitRefused, nil)
	}
	return nil
}

// hclFilesHere lists the .hcl files of the current directory, in name order.
func hclFilesHere() ([]string, error) {
	files, err := filepath.Glob("*.hcl")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .hcl files in the current directory: give a FILE")
	}
	sort.Strings(files)
	return files, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".fmt-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
