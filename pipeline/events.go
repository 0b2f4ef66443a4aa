package pipeline

import (
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

// Action is a planned action for a stage instance.
type Action string

const (
	ActionRun    Action = "run"
	ActionRerun  Action = "rerun"
	ActionNoop   Action = "noop"
	ActionDelete Action = "delete"
	ActionSkip   Action = "skip"
)

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
	Deletes []string
	// Warnings of the stage instance (stage_outputs, stage_complete, planned_change).
	Warnings []string
	// Unknown names the inputs not known until apply (planned_change): shown "(known after apply)".
	Unknown []string
	// Outputs as plain JSON-able values (redacted); unknown values are the string "(known after apply)".
	Outputs map[string]any

	Progress *Progress

	// Failure / skip / refusal message.
	Message string
	// Refused marks a stage_failed caused by a check (exit 3).
	Refused bool

	// Diagnostic events.
	Diagnostic *hcl.Diagnostic

	// Summary counts (change_summary): "run", "rerun", "noop", "delete", "skip", "read",
	// "complete", "failed", "refused", "skipped", "locked".
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
