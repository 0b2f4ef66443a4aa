package main

import (
	"flag"
	"fmt"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// validateCommand is `pipeline validate FILE...`.
type validateCommand struct{ cmdIO }

// Run implements command.
func (vc *validateCommand) Run(args []string) error {
	stdout, stderr := vc.stdout, vc.stderr
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, false)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline validate [flags] FILE...\n\nChecks syntax, attribute names and types, references and cycles. Needs no variable values and does no I/O beyond reading the config.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	u := newUI(&c, stdout, stderr)
	if _, err := loadModule(u, fs.Args()); err != nil {
		return err
	}
	if c.json {
		u.json.Emit(validEvent())
		return nil
	}
	fmt.Fprintln(stdout, "Success! The configuration is valid.")
	return nil
}

func validEvent() pipeline.Event {
	return pipeline.Event{Type: pipeline.EventLog, Message: "The configuration is valid."}
}
