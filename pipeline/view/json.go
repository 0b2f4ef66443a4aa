package view

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// JSON renders events as line-delimited JSON objects, one per line, every field a top-level key.
type JSON struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSON writes events to w.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w} }

// Emit writes one event line.
func (j *JSON) Emit(e pipeline.Event) {
	m := EventObject(e)
	b, err := json.Marshal(m)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"type": "log", "@timestamp": m["@timestamp"], "message": "unencodable event: " + err.Error()})
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.w.Write(append(b, '\n'))
}

// Diagnostics emits one diagnostic event per diagnostic.
func (j *JSON) Diagnostics(diags hcl.Diagnostics) {
	for _, d := range diags {
		j.Emit(pipeline.Event{Type: pipeline.EventDiagnostic, Diagnostic: d})
	}
}

// EventObject is the JSON object of an event.
func EventObject(e pipeline.Event) map[string]any {
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	m := map[string]any{"type": string(e.Type), "@timestamp": t.UTC().Format(time.RFC3339Nano)}
	set := func(k string, v any, ok bool) {
		if ok {
			m[k] = v
		}
	}
	set("address", e.Address, e.Address != "")
	set("kind", e.Kind, e.Kind != "")
	set("key", e.Key, e.Key != "")
	set("read_only", true, e.ReadOnly)
	set("remote", true, e.Remote)
	set("simulated", true, e.Simulated)
	set("action", string(e.Action), e.Action != "")
	if e.Type == pipeline.EventPlannedChange {
		m["reasons"] = nonNil(e.Reasons)
	} else {
		set("reasons", e.Reasons, len(e.Reasons) > 0)
	}
	set("unknown", e.Unknown, len(e.Unknown) > 0)
	set("notes", e.Notes, len(e.Notes) > 0)
	set("details", e.Details, len(e.Details) > 0)
	set("deletes", e.Deletes, len(e.Deletes) > 0)
	set("warnings", e.Warnings, len(e.Warnings) > 0)
	set("outputs", e.Outputs, e.Outputs != nil)
	set("message", e.Message, e.Message != "")
	set("refused", true, e.Refused)
	set("interrupted", true, e.Interrupted)
	if c := e.Cost; c != nil {
		// Money is a number in US dollars: plan's figures are estimates, apply's are actual.
		if c.Estimate {
			m["estimated_cost_usd"] = c.USD
		} else {
			m["cost_usd"] = c.USD
		}
		set("cost_basis", c.Basis, c.Basis != "")
	}
	if e.CostLimit != nil {
		m["max_cost_usd"] = *e.CostLimit
	}
	set("operation", e.Operation, e.Operation != "")
	if p := e.Progress; p != nil {
		m["current"] = p.Current
		m["total"] = p.Total
		set("message", p.Message, p.Message != "")
		set("metrics", p.Metrics, len(p.Metrics) > 0)
	}
	if e.Counts != nil {
		m["changes"] = changes(e)
		for k, v := range e.Counts {
			if _, taken := m[k]; !taken {
				m[k] = v
			}
		}
	}
	if d := e.Diagnostic; d != nil {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		m["severity"] = sev
		m["summary"] = d.Summary
		set("detail", d.Detail, d.Detail != "")
		if d.Subject != nil {
			m["range"] = rangeObject(*d.Subject)
		}
	}
	return m
}

// changes is a change_summary's "changes" object: for a plan, one count per action word (they add
// up to the planned_change events); for an apply, one per status.
func changes(e pipeline.Event) map[string]int {
	if e.Operation != "plan" {
		return e.Counts
	}
	out := make(map[string]int, len(pipeline.Actions))
	for _, a := range pipeline.Actions {
		out[string(a)] = e.Counts[string(a)]
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func rangeObject(r hcl.Range) map[string]any {
	pos := func(p hcl.Pos) map[string]int {
		return map[string]int{"line": p.Line, "column": p.Column, "byte": p.Byte}
	}
	return map[string]any{"filename": r.Filename, "start": pos(r.Start), "end": pos(r.End)}
}
