package main

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/pipeline-dev/pipeline/pipeline/engine"
)

// planCommand is `pipeline plan [flags] FILE...`.
type planCommand struct {
	cmdIO
	ui *ui
}

// Run implements command. Its final error is also a -json diagnostic.
func (c *planCommand) Run(args []string) error {
	err := c.run(args)
	return c.ui.jsonErrors(err)
}

func (pc *planCommand) run(args []string) error {
	stdout, stderr := pc.stdout, pc.stderr
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, true)
	detailed := fs.Bool("detailed-exitcode", false, "exit 0 when nothing would change, 2 when changes are pending")
	out := fs.String("out", "", "save the plan to this file (apply it with: pipeline apply FILE)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline plan [flags] FILE...\n\nShows what apply would do. Read-only checks (image_check, params) run for real; nothing remote is written and state is never changed.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	u := newUI(&c, stdout, stderr)
	pc.ui = u
	l, err := load(ctx, &c, u, fs.Args(), nil)
	if err != nil {
		return err
	}
	defer l.close()
	plan, err := l.engine.Plan(ctx)
	if err != nil {
		return planError(u, l, err)
	}
	if missing := remoteWithoutToken(l); len(missing) > 0 && plan.Changes() > 0 {
		u.log("Note: REPLICATE_API_TOKEN is not set, so remote stages were planned without reading Replicate; apply needs the token (or -simulate).")
	}
	if *out != "" && plan.Errored() {
		u.log("Not saving the plan to %s: some instances could not be planned (see above).", *out)
	} else if *out != "" {
		saved, err := engine.NewSavedPlan(l.files, l.vars, sensitiveVars(l), l.engine.Secrets(), plan)
		if err != nil {
			return exitWith(exitError, fmt.Errorf("saving the plan: %w", err))
		}
		saved.State, saved.Only, saved.Shard, saved.Replace, saved.Simulate = c.statePath, c.only, c.shard, c.replace, c.simulate
		if err := saved.Write(*out); err != nil {
			return exitWith(exitError, fmt.Errorf("saving the plan: %w", err))
		}
		u.log("Saved the plan to %s. Apply it with: pipeline apply %s", *out, *out)
	}
	return shown(plan.Err(*detailed))
}

func planError(u *ui, l *loaded, err error) error {
	if de, ok := err.(*engine.DiagError); ok {
		u.diagnostics(l.mod.Files(), de.Diags)
		return exitWith(exitError, nil)
	}
	return exitWith(exitError, err)
}

// sensitiveVars names the variables declared sensitive or named like a secret (*token*, *key*,
// *secret*): their values never reach a plan file.
func sensitiveVars(l *loaded) map[string]bool {
	out := map[string]bool{}
	for _, v := range l.mod.Config().Variables {
		if v.Sensitive || engine.SensitiveName(v.Name) {
			out[v.Name] = true
		}
	}
	return out
}
