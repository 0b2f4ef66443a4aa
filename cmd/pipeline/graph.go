package main

import (
	"flag"
	"fmt"
)

// graphCommand is `pipeline graph FILE...`.
type graphCommand struct{ cmdIO }

// Run implements command.
func (gc *graphCommand) Run(args []string) error {
	stdout, stderr := gc.stdout, gc.stderr
	fs := flag.NewFlagSet("graph", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, false)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline graph FILE...\n\nPrints the stage DAG as Graphviz DOT (pipe it to `dot -Tsvg`).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	u := newUI(&c, stdout, stderr)
	mod, err := loadModule(u, fs.Args())
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, mod.Graph().DOT())
	return nil
}
