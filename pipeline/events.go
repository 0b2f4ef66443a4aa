package pipeline

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// EventType names an event the engine emits; it is the `type` field of a -json line.
type EventType string

const (
	EventDiagnostic    EventType = "diagnostic"
	EventPlannedChange EventType = "planned_change"
	EventStageOutputs  EventType = "stage_outputs"
	EventStageStart    EventType = "stage_start"
	EventStageProgress EventType = "stage_progress"
	EventStageComplete EventType = "stage_complete"
	EventStageFailed   EventType = "stage_failed"
	EventStageSkipped  EventType = "stage_skipped"
	EventStageWarning  EventType = "stage_warning"
	EventChangeSummary EventType = "change_summary"
	EventOutputs       EventType = "outputs"
	EventLog           EventType = "log"
)

// Action is a planned action for a stage instance: the `action` of a planned_change event.
type Action string

const (
	ActionRun    Action = "run"
	ActionRerun  Action = "rerun"
	ActionNoop   Action = "noop"
	ActionDelete Action = "delete"
	ActionSkip   Action = "skip"
	// ActionRead is every read-only stage evaluated in plan (Terraform's word for data sources),
	// whether or not its result changed; it is never a change.
	ActionRead Action = "read"
	// ActionReattach is an interrupted paid job recorded by its id: apply follows it again and
	// never creates it again. It counts as a change.
	ActionReattach Action = "reattach"
)

// Actions lists every action in the order plans report them.
var Actions = []Action{ActionRun, ActionRerun, ActionReattach, ActionDelete, ActionNoop, ActionRead, ActionSkip}

// Changes reports whether apply does something for a stage with this action (what
// -detailed-exitcode counts, and what a downstream stage learns from Request.Upstream).
func (a Action) Changes() bool {
	switch a {
	case ActionRun, ActionRerun, ActionReattach, ActionDelete:
		return true
	}
	return false
}

// Event is one thing that happened during a command. Views render it for people or as JSON.
type Event struct {
	Type EventType
	Time time.Time

	// Address of the stage instance (stage events).
	Address string
	Kind    string
	Key     string
	// ReadOnly and Remote copy the kind's schema flags.
	ReadOnly bool
	Remote   bool
	// Simulated: the result comes from the offline simulator.
	Simulated bool

	Action  Action
	Reasons []string
	Notes   []string
	// Details are lines shown only on request (-details): every parameter's reason, say.
	Details []string
	Deletes []string
	// Warnings of the stage instance (stage_outputs, stage_complete, planned_change).
	Warnings []string
	// Unknown names the inputs not known until apply (planned_change): shown "(known after apply)".
	Unknown []string
	// Outputs as plain JSON-able values (redacted); unknown values are the string "(known after apply)".
	Outputs map[string]any
	// Items counts what the stage judged one by one (16 photos), for folding its warnings.
	Items *Items
	// Unchanged marks a read whose result matches the recorded one (planned_change).
	Unchanged bool
	// Quiet marks a planned change nothing happens for: an up-to-date stage, or a read nothing
	// that will run depends on. People see it in one line.
	Quiet bool

	// Cost is a stage's money (planned_change: the estimate; stage_complete: the actual cost)
	// or, in change_summary, the total of the plan or the apply.
	Cost *Cost
	// CostLimit is the smallest max_cost_usd the plan's stages returned (change_summary of plan).
	CostLimit *float64

	Progress *Progress

	// Failure / skip / refusal message.
	Message string
	// Refused marks a stage_failed caused by a check (exit 3).
	Refused bool
	// Interrupted marks a stage_failed that Ctrl-C/SIGTERM stopped: not a failure, the next
	// apply resumes it.
	Interrupted bool

	// Diagnostic events.
	Diagnostic *hcl.Diagnostic

	// Summary counts (change_summary). Plan: one per action word (run, rerun, reattach, delete,
	// noop, read, skip) plus "refused" and "cannot_be_planned" (instances among those flagged so).
	// Apply: one per status (complete, noop, read, failed, refused, skipped, interrupted,
	// not_started) and "locked".
	Counts    map[string]int
	Operation string // "plan" or "apply"
}

// Sink receives events. Implementations must be safe for concurrent use.
type Sink interface {
	Emit(e Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// FormatUSD formats dollars for people: cents from ten cents up, finer below ($0.037), "$0" for
// none. -json carries the exact figure.
func FormatUSD(usd float64) string {
	switch {
	case usd == 0:
		return "$0"
	case usd >= 0.1:
		return fmt.Sprintf("$%.2f", usd)
	case usd >= 0.01:
		return fmt.Sprintf("$%.3f", usd)
	}
	return fmt.Sprintf("$%.4f", usd)
}
