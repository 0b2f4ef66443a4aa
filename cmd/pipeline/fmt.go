package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipeline-dev/pipeline/pipeline/config"
)

// fmtCommand is `pipeline fmt [-check] FILE...`.
type fmtCommand struct{ cmdIO }

// Run implements command.
func (fc *fmtCommand) Run(args []string) error {
	stdout, stderr := fc.stdout, fc.stderr
	fs := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "do not write: list files that are not formatted and exit 3")
	var c common
	c.register(fs, false)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline fmt [-check] FILE...\n\nRewrites files in canonical HCL format.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() == 0 {
		return exitWith(exitError, fmt.Errorf("no file given: pipeline fmt [-check] FILE..."))
	}
	u := newUI(&c, stdout, stderr)
	unformatted := 0
	failed := false
	for _, path := range fs.Args() {
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

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".fmt-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
