package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// unlockCommand is `pipeline force-unlock [-force] ID`.
type unlockCommand struct{ cmdIO }

// Run implements command.
func (uc *unlockCommand) Run(args []string) error {
	stdout, stderr := uc.stdout, uc.stderr
	fs := flag.NewFlagSet("force-unlock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "remove the lock even if it does not look stale")
	statePath := fs.String("state", "", "state location: a path or a URL")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline force-unlock [-force] [-state URL] ID [FILE]\n\nRemoves a lock left by a dead process. The lock error of a later run prints the ID to use.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() < 1 {
		return exitWith(exitError, errors.New("usage: pipeline force-unlock [-force] [-state URL] ID [FILE]"))
	}
	id := fs.Arg(0)
	config := fs.Arg(1)
	if err := configExists(config); err != nil {
		return err
	}
	location := *statePath
	if location == "" && config != "" {
		location = stateURLFromConfig(config)
	}
	if location == "" && config == "" {
		return exitWith(exitError, errors.New("which state? give -state URL or the config FILE"))
	}
	ctx := context.Background()
	st, err := state.Open(ctx, location, config)
	if err != nil {
		return exitWith(exitError, err)
	}
	defer st.Close()
	if err := st.ForceUnlock(ctx, id, *force); err != nil {
		return exitWith(exitError, err)
	}
	fmt.Fprintf(stdout, "Lock %s removed from %s.\n", id, st.Describe())
	return nil
}
