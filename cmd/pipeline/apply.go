package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline/engine"
)

func runApplyCmd(uiOut **ui, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs, true)
	autoApprove := fs.Bool("auto-approve", false, "skip the confirmation prompt")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pipeline apply [flags] FILE... | PLANFILE\n\nPlans, asks for confirmation on a terminal, then runs the pipeline, recording state after every stage transition.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	files := fs.Args()
	var saved *engine.SavedPlan
	if len(files) == 1 {
		sp, err := engine.ReadSavedPlan(files[0])
		switch {
		case err == nil:
			saved = sp
		case errors.Is(err, engine.ErrNotPlanFile):
		case errors.Is(err, os.ErrNotExist):
			return exitWith(exitError, fmt.Errorf("%s: no such file", files[0]))
		default:
			return exitWith(exitError, err)
		}
	}
	var savedVars map[string]cty.Value
	if saved != nil {
		paths, err := saved.ConfigPaths()
		if err != nil {
			return exitWith(exitError, err)
		}
		files = paths
		vals, err := saved.VarValues()
		if err != nil {
			return exitWith(exitError, err)
		}
		savedVars = vals
		if c.statePath == "" {
			c.statePath = saved.State
		}
		c.only, c.shard, c.replace, c.simulate = saved.Only, saved.Shard, saved.Replace, saved.Simulate
	}

	// First Ctrl-C/SIGTERM: stop starting work, let running stages record, save, unlock.
	// Second: abort now (state stays valid: every write is atomic).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var release func()
	go func() {
		<-sigs
		fmt.Fprintln(stderr, "\nStopping: no new stages start; running stages record what they know (remote trainings keep running and are re-attached by the next apply). Press Ctrl-C again to abort now.")
		cancel()
		<-sigs
		fmt.Fprintln(stderr, "Aborting. State on disk is valid; run apply again to resume.")
		if release != nil {
			release()
		}
		os.Exit(130)
	}()

	u := newUI(&c, stdout, stderr)
	*uiOut = u
	l, err := load(ctx, &c, u, files, savedVars)
	if err != nil {
		return err
	}
	defer l.close()
	if saved != nil {
		if err := saved.CheckSensitive(l.vars); err != nil {
			return exitWith(exitError, err)
		}
	}
	if missing := remoteWithoutToken(l); len(missing) > 0 {
		return exitWith(exitError, fmt.Errorf("REPLICATE_API_TOKEN is not set, and remote stages need it (%s).\nSet it (export REPLICATE_API_TOKEN=r8_...), or run with -simulate to use the offline simulator", strings.Join(missing, ", ")))
	}
	rel, err := l.engine.Acquire(ctx, "apply")
	if err != nil {
		if le := lockedExit(err); le != nil {
			// Every selected subject is locked by one holder: the job summary still says so.
			if keys, kerr := l.engine.Keys(); kerr == nil && l.mod.HasBatch() {
				locked := map[string]error{}
				for _, k := range keys {
					locked[k] = err
				}
				writeStepSummary(l, &engine.Outcome{Locked: locked})
			}
			return le
		}
		return exitWith(exitError, err)
	}
	release = rel
	defer rel()

	plan, err := l.engine.Plan(ctx)
	if err != nil {
		return planError(u, l, err)
	}
	if saved != nil {
		if err := saved.CheckCurrent(plan); err != nil {
			return exitWith(exitError, err)
		}
	}
	if plan.Changes() > 0 && saved == nil && !*autoApprove {
		if err := confirm(stdin, stderr); err != nil {
			return err
		}
	}
	outcome, err := l.engine.Apply(ctx, plan)
	if err != nil {
		return exitWith(exitError, err)
	}
	writeStepSummary(l, outcome)
	if code := outcome.ExitStatus(); code != 0 {
		if plan.Errored() && code == 0 {
			code = exitError
		}
		return exitWith(code, nil)
	}
	if plan.Errored() {
		return exitWith(exitError, nil)
	}
	return nil
}

// confirm asks on a terminal; without one (or in CI) apply refuses instead of guessing.
func confirm(stdin io.Reader, stderr io.Writer) error {
	f, ok := stdin.(*os.File)
	if ciMode() || !ok || !isTerminal(f) {
		return exitWith(exitError, errors.New("apply needs confirmation, but stdin is not a terminal (or CI=true): review the plan and re-run with -auto-approve"))
	}
	fmt.Fprint(stderr, "\nDo you want to perform these actions? Only 'yes' will be accepted: ")
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return exitWith(exitError, errors.New("apply cancelled"))
	}
	return nil
}

func runApply(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var u *ui
	err := runApplyCmd(&u, args, stdin, stdout, stderr)
	return u.jsonErrors(err)
}
