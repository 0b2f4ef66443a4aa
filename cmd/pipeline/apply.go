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
	"sync"
	"syscall"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline/engine"
)

// applyCommand is `pipeline apply [flags] FILE... | PLANFILE`.
type applyCommand struct {
	cmdIO
	// signals delivers Ctrl-C/SIGTERM (nil: this process's own); abort ends the process on the
	// second one (nil: os.Exit). Tests inject both.
	signals <-chan os.Signal
	abort   func(code int)

	ui *ui
	// release drops the state locks; the signal handler calls it, so it is guarded.
	mu      sync.Mutex
	release func()
}

// Run implements command. Its final error is also a -json diagnostic.
func (c *applyCommand) Run(args []string) error {
	err := c.run(args)
	return c.ui.jsonErrors(err)
}

func (c *applyCommand) setRelease(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.release = f
}

// releaseLocks drops the locks taken so far (none yet: nothing to do).
func (c *applyCommand) releaseLocks() {
	c.mu.Lock()
	f := c.release
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

// onSignals handles Ctrl-C/SIGTERM until stop is called: the first stops starting work
// (running stages record what they know; remote trainings keep running and are re-attached
// later), the second aborts now (state stays valid: every write is atomic).
func (c *applyCommand) onSignals(cancel context.CancelFunc) (stop func()) {
	sigs, stop := c.signals, func() {}
	if sigs == nil {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		sigs, stop = ch, func() { signal.Stop(ch) }
	}
	abort := c.abort
	if abort == nil {
		abort = os.Exit
	}
	go func() {
		<-sigs
		fmt.Fprintln(c.stderr, "\nStopping: no new stages start; running stages record what they know (remote trainings keep running and are re-attached by the next apply). Press Ctrl-C again to abort now.")
		cancel()
		<-sigs
		fmt.Fprintln(c.stderr, "Aborting. State on disk is valid; run apply again to resume.")
		c.releaseLocks()
		abort(130)
	}()
	return stop
}

func (ac *applyCommand) run(args []string) error {
	stdin, stdout, stderr := ac.stdin, ac.stdout, ac.stderr
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

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer ac.onSignals(cancel)()

	u := newUI(&c, stdout, stderr)
	ac.ui = u
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
	ac.setRelease(rel)
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
	if err := plan.OverBudget(); err != nil {
		return shown(err) // max_cost_usd: the plan said why; nothing may start
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
	if err := outcome.Err(); err != nil {
		return shown(err)
	}
	// An instance that could not be planned was reported and left out; the others ran.
	return shown(plan.Err(false))
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
