package engine

import (
	"errors"
	"fmt"
)

// Status is what happened to one stage instance in an apply.
type Status string

// The statuses of a stage instance after an apply. Their string values are the keys of
// Outcome.Counts and the words of the apply's change_summary.
const (
	StatusComplete    Status = "complete"    // the stage ran and finished
	StatusNoop        Status = "noop"        // up to date: nothing to do
	StatusRead        Status = "read"        // a read-only check ran again: never a change
	StatusFailed      Status = "failed"      // an error (exit 1)
	StatusRefused     Status = "refused"     // a check refused the data or the model (exit 3)
	StatusSkipped     Status = "skipped"     // not run because something upstream did not finish well
	StatusInterrupted Status = "interrupted" // stopped by Ctrl-C/SIGTERM; the next apply resumes it
	StatusNotStarted  Status = "not_started" // the run stopped before this stage could start
)

// ok reports whether downstream stages may run after a stage with this status.
func (s Status) ok() bool { return s == StatusComplete || s == StatusNoop || s == StatusRead }

// Exit codes (SPEC): the process exit status for each way a command can end.
const (
	ExitOK      = 0
	ExitError   = 1
	ExitChanges = 2 // plan -detailed-exitcode: changes pending
	ExitRefused = 3
	ExitLocked  = 4
)

// ExitCoder is an error that says which exit status the process ends with (go-task style).
// Every error the engine returns for an outcome implements it; the CLI maps it once.
type ExitCoder interface {
	error
	Code() int
}

// CodeOf is the exit status for err: 0 for nil, the error's own Code when it has one, else 1.
func CodeOf(err error) int {
	if err == nil {
		return ExitOK
	}
	var c ExitCoder
	if errors.As(err, &c) {
		return c.Code()
	}
	return ExitError
}

// FailedError: at least one stage instance failed (or could not be planned).
type FailedError struct{ Stages []string }

func (e *FailedError) Error() string { return describe("failed", e.Stages) }
func (e *FailedError) Code() int     { return ExitError }

// RefusedError: a check refused the data or the model, and nothing failed.
type RefusedError struct{ Stages []string }

func (e *RefusedError) Error() string { return describe("refused", e.Stages) }
func (e *RefusedError) Code() int     { return ExitRefused }

// LockedError: some batch instances were left out because another process holds their lock.
type LockedError struct{ Keys []string }

func (e *LockedError) Error() string {
	return fmt.Sprintf("%d instance(s) skipped: locked by another run (%s)", len(e.Keys), preview(e.Keys, 8))
}
func (e *LockedError) Code() int { return ExitLocked }

// InterruptedError: Ctrl-C or SIGTERM stopped the run; remote work goes on and is re-attached.
type InterruptedError struct{}

func (e *InterruptedError) Error() string {
	return "interrupted: what was running is recorded in state; run apply again to resume"
}
func (e *InterruptedError) Code() int { return ExitError }

// ChangesPendingError ends `plan -detailed-exitcode` when apply would change something.
type ChangesPendingError struct{ Changes int }

func (e *ChangesPendingError) Error() string { return fmt.Sprintf("%d change(s) pending", e.Changes) }
func (e *ChangesPendingError) Code() int     { return ExitChanges }

func describe(what string, stages []string) string {
	return fmt.Sprintf("%d stage instance(s) %s: %s", len(stages), what, preview(stages, 8))
}

// Err is the outcome as an error for the process to end with (SPEC's batch exit status): a
// *FailedError if any instance errored, else a *RefusedError if any check refused, else a
// *LockedError if instances were skipped for a live lock, else an *InterruptedError when the
// run was stopped; nil when everything went well.
func (o *Outcome) Err() error {
	byStatus := map[Status][]string{}
	for _, io := range o.Instances {
		for _, so := range io.Stages {
			byStatus[so.Status] = append(byStatus[so.Status], so.Address)
		}
	}
	switch {
	case len(byStatus[StatusFailed]) > 0:
		return &FailedError{Stages: byStatus[StatusFailed]}
	case len(byStatus[StatusRefused]) > 0:
		return &RefusedError{Stages: byStatus[StatusRefused]}
	case len(o.Locked) > 0:
		return &LockedError{Keys: o.LockedKeys()}
	case o.Interrupted || len(byStatus[StatusInterrupted]) > 0:
		return &InterruptedError{}
	}
	return nil
}

// ExitStatus is the exit status Err maps to.
func (o *Outcome) ExitStatus() int { return CodeOf(o.Err()) }

// Err is the plan as an error for `pipeline plan` to end with: a *FailedError when an instance or
// stage could not be planned, else a *RefusedError when a check refused, else a *CostLimitError
// when the estimated cost exceeds max_cost_usd, else, when detailed
// (-detailed-exitcode), a *ChangesPendingError if apply would change something.
func (p *Plan) Err(detailed bool) error {
	var failed, refused []string
	for _, ip := range p.Instances {
		if ip.Err != nil {
			failed = append(failed, "instance "+instanceName(ip))
			continue
		}
		for _, sp := range ip.Stages {
			switch {
			case sp.Err != nil:
				failed = append(failed, sp.Address)
			case sp.Refused != "":
				refused = append(refused, sp.Address)
			}
		}
	}
	switch {
	case len(failed) > 0:
		return &FailedError{Stages: failed}
	case len(refused) > 0:
		return &RefusedError{Stages: refused}
	case p.OverBudget() != nil:
		return p.OverBudget()
	case detailed && p.Changes() > 0:
		return &ChangesPendingError{Changes: p.Changes()}
	}
	return nil
}
