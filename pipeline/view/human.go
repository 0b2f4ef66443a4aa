// Package view renders engine events for people (Human) and for machines (JSON), one interface
// for every command.
//
//	v := view.NewHuman(os.Stdout, view.Options{Color: isTTY && os.Getenv("NO_COLOR") == ""})
//	eng.Sink = v
//	plan, _ := eng.Plan(ctx) // prints "+ train.lora will run" lines and a summary
package view

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Options shape human output.
type Options struct {
	// Color enables ANSI colours (only on a terminal, never under NO_COLOR or -no-color).
	Color bool
	// Redraw allows progress lines redrawn in place (a terminal, not CI).
	Redraw bool
	// CI adds GitHub Actions annotations (::error, ::warning) for failures.
	CI bool
	// Details prints every instance of a large batch instead of per-stage summaries.
	Details bool
	// SummarizeOver: batches with more instances than this are summarised per stage (default 20).
	SummarizeOver int
	// Width for diagnostics (default 100).
	Width uint
}

// Human renders events as text.
type Human struct {
	mu    sync.Mutex
	w     io.Writer
	opt   Options
	files map[string]*hcl.File

	keys      map[string]bool
	plans     []pipeline.Event
	lastProg  map[string]time.Time
	lastPct   map[string]int64
	redrawing bool
}

// NewHuman writes to w.
func NewHuman(w io.Writer, opt Options) *Human {
	if opt.SummarizeOver == 0 {
		opt.SummarizeOver = 20
	}
	if opt.Width == 0 {
		opt.Width = 100
	}
	return &Human{w: w, opt: opt, keys: map[string]bool{}, lastProg: map[string]time.Time{}, lastPct: map[string]int64{}}
}

// SetFiles gives the config sources so diagnostics show snippets.
func (h *Human) SetFiles(files map[string]*hcl.File) {
	h.mu.Lock()
	h.files = files
	h.mu.Unlock()
}

const (
	cReset  = "\x1b[0m"
	cBold   = "\x1b[1m"
	cRed    = "\x1b[31m"
	cGreen  = "\x1b[32m"
	cYellow = "\x1b[33m"
	cBlue   = "\x1b[34m"
	cCyan   = "\x1b[36m"
	cDim    = "\x1b[2m"
)

func (h *Human) c(code, s string) string {
	if !h.opt.Color {
		return s
	}
	return code + s + cReset
}

func (h *Human) printf(format string, args ...any) {
	if h.redrawing {
		fmt.Fprint(h.w, "\r\x1b[K")
		h.redrawing = false
	}
	fmt.Fprintf(h.w, format, args...)
}

// Diagnostics prints diagnostics with file:line:col and a source snippet.
func (h *Human) Diagnostics(diags hcl.Diagnostics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.redrawing {
		fmt.Fprint(h.w, "\r\x1b[K")
		h.redrawing = false
	}
	// hcl's writer gives the snippet; a file:line:col line under each summary lets editors and
	// terminals jump to the spot.
	for _, d := range diags {
		var buf bytes.Buffer
		wr := hcl.NewDiagnosticTextWriter(&buf, h.files, h.opt.Width, h.opt.Color)
		_ = wr.WriteDiagnostic(d)
		text := buf.String()
		if d.Subject != nil {
			loc := fmt.Sprintf("  at %s:%d:%d\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
			if i := strings.IndexByte(text, '\n'); i >= 0 {
				text = text[:i+1] + loc + text[i+1:]
			}
		}
		fmt.Fprint(h.w, text)
	}
	if h.opt.CI {
		for _, d := range diags {
			h.annotate(d)
		}
	}
}

func (h *Human) annotate(d *hcl.Diagnostic) {
	level := "error"
	if d.Severity == hcl.DiagWarning {
		level = "warning"
	}
	props := ""
	if d.Subject != nil {
		props = fmt.Sprintf(" file=%s,line=%d,col=%d", escapeProp(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column)
	}
	msg := d.Summary
	if d.Detail != "" {
		msg += ": " + d.Detail
	}
	fmt.Fprintf(h.w, "::%s%s::%s\n", level, props, escapeData(msg))
}

// Emit renders one event.
func (h *Human) Emit(e pipeline.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Key != "" {
		h.keys[e.Key] = true
	}
	switch e.Type {
	case pipeline.EventPlannedChange:
		// Held until the summary: only then is it known whether the batch is large enough to be
		// summarised per stage.
		h.plans = append(h.plans, e)
	case pipeline.EventStageOutputs:
		// Read-only results are shown with their planned change (notes); apply shows completion.
	case pipeline.EventChangeSummary:
		if e.Operation == "plan" {
			if h.summarizing() {
				h.stageSummaries()
			} else {
				for _, p := range h.plans {
					h.plannedChange(p)
				}
			}
			h.plans = nil
		}
		h.summary(e)
	case pipeline.EventStageStart:
		h.printf("%s %s%s\n", h.c(cCyan, "▶"), sim(e), e.Address)
	case pipeline.EventStageProgress:
		h.progress(e)
	case pipeline.EventStageComplete:
		h.printf("%s %s%s complete%s\n", h.c(cGreen, "✓"), sim(e), e.Address, brief(e.Outputs))
		h.deleted(e)
	case pipeline.EventStageFailed:
		h.failed(e)
	case pipeline.EventStageSkipped:
		if h.summarizing() && e.Operation == "plan" {
			return
		}
		h.printf("%s %s skipped: %s\n", h.c(cDim, "-"), e.Address, e.Message)
	case pipeline.EventStageWarning:
		h.printf("%s %s%s: %s\n", h.c(cYellow, "warning:"), sim(e), e.Address, e.Message)
		if h.opt.CI {
			fmt.Fprintf(h.w, "::warning title=%s::%s\n", escapeProp(e.Address), escapeData(e.Message))
		}
	case pipeline.EventOutputs:
		h.outputs(e)
	case pipeline.EventLog:
		h.printf("%s\n", e.Message)
	case pipeline.EventDiagnostic:
		if e.Diagnostic != nil {
			h.mu.Unlock()
			h.Diagnostics(hcl.Diagnostics{e.Diagnostic})
			h.mu.Lock()
		}
	}
}

func (h *Human) summarizing() bool {
	return !h.opt.Details && len(h.keys) > h.opt.SummarizeOver
}

func sim(e pipeline.Event) string {
	if e.Simulated {
		return "[simulated] "
	}
	return ""
}

func (h *Human) symbol(e pipeline.Event) (string, string) {
	switch {
	case e.Refused:
		return h.c(cRed, "!"), "refused"
	case e.Message != "":
		return h.c(cRed, "x"), "cannot be planned"
	}
	if e.ReadOnly && e.Action != pipeline.ActionSkip {
		switch e.Action {
		case pipeline.ActionNoop:
			return h.c(cBlue, "<="), "read (unchanged)"
		default:
			return h.c(cBlue, "<="), "read"
		}
	}
	switch e.Action {
	case pipeline.ActionRun:
		return h.c(cGreen, "+"), "will run"
	case pipeline.ActionRerun:
		return h.c(cYellow, "~"), "will re-run"
	case pipeline.ActionNoop:
		return h.c(cDim, "="), "up to date"
	case pipeline.ActionDelete:
		return h.c(cRed, "-"), "will delete"
	case pipeline.ActionSkip:
		return h.c(cDim, "/"), "skipped"
	}
	return "?", string(e.Action)
}

func (h *Human) plannedChange(e pipeline.Event) {
	sym, verb := h.symbol(e)
	h.printf("  %s %s%s %s\n", sym, sim(e), h.c(cBold, e.Address), verb)
	if e.Message != "" {
		h.printf("      %s\n", indent(e.Message, "      "))
	}
	for _, r := range e.Reasons {
		h.printf("      %s\n", r)
	}
	for _, u := range e.Unknown {
		h.printf("      %s = %s\n", u, h.c(cDim, "(known after apply)"))
	}
	for _, n := range e.Notes {
		h.printf("      %s%s\n", sim(e), n)
	}
	for _, d := range e.Deletes {
		h.printf("      %s %s%s\n", h.c(cRed, "-"), sim(e), d)
	}
	for _, w := range e.Warnings {
		h.printf("      %s %s\n", h.c(cYellow, "warning:"), w)
	}
}

// stageSummaries prints one line per stage with counts per action, plus every refused or failed
// instance by name: a 500-subject plan stays readable.
func (h *Human) stageSummaries() {
	type agg struct {
		counts  map[string]int
		trouble []pipeline.Event
	}
	byStage := map[string]*agg{}
	var order []string
	for _, e := range h.plans {
		stage := e.Address
		if i := strings.Index(stage, "["); i >= 0 {
			stage = stage[:i]
		}
		a := byStage[stage]
		if a == nil {
			a = &agg{counts: map[string]int{}}
			byStage[stage] = a
			order = append(order, stage)
		}
		_, verb := h.symbol(e)
		a.counts[verb]++
		if e.Refused || e.Message != "" {
			a.trouble = append(a.trouble, e)
		}
	}
	h.printf("%d instances; per stage (pass -details for every instance):\n", len(h.keys))
	for _, s := range order {
		a := byStage[s]
		var parts []string
		for _, verb := range sortedCounts(a.counts) {
			parts = append(parts, fmt.Sprintf("%d %s", a.counts[verb], verb))
		}
		h.printf("  %s: %s\n", h.c(cBold, s), strings.Join(parts, ", "))
		for i, e := range a.trouble {
			if i == 10 {
				h.printf("      … and %d more\n", len(a.trouble)-10)
				break
			}
			h.printf("      %s %s: %s\n", h.c(cRed, "!"), e.Address, firstLine(e.Message))
		}
	}
}

func sortedCounts(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if m[out[i]] != m[out[j]] {
			return m[out[i]] > m[out[j]]
		}
		return out[i] < out[j]
	})
	return out
}

func (h *Human) summary(e pipeline.Event) {
	c := e.Counts
	if e.Operation == "plan" {
		parts := []string{
			fmt.Sprintf("%d to run", c["run"]),
			fmt.Sprintf("%d to re-run", c["rerun"]),
			fmt.Sprintf("%d to delete", c["delete"]),
			fmt.Sprintf("%d up to date", c["noop"]),
		}
		if c["read"] > 0 {
			parts = append(parts, fmt.Sprintf("%d checks read", c["read"]))
		}
		if c["skip"] > 0 {
			parts = append(parts, fmt.Sprintf("%d skipped", c["skip"]))
		}
		if c["refused"] > 0 {
			parts = append(parts, h.c(cRed, fmt.Sprintf("%d refused", c["refused"])))
		}
		if c["error"] > 0 {
			parts = append(parts, h.c(cRed, fmt.Sprintf("%d errors", c["error"])))
		}
		h.printf("\n%s %s.\n", h.c(cBold, "Plan:"), strings.Join(parts, ", "))
		return
	}
	parts := []string{fmt.Sprintf("%d done", c["complete"]), fmt.Sprintf("%d up to date", c["noop"])}
	if c["read"] > 0 {
		parts = append(parts, fmt.Sprintf("%d checks read", c["read"]))
	}
	for _, k := range []string{"refused", "failed", "skipped", "interrupted", "not_started", "locked"} {
		if c[k] > 0 {
			label := strings.ReplaceAll(k, "_", " ")
			if k == "locked" {
				label = "instances locked elsewhere"
			}
			parts = append(parts, fmt.Sprintf("%d %s", c[k], label))
		}
	}
	h.printf("\n%s %s.\n", h.c(cBold, "Apply finished:"), strings.Join(parts, ", "))
}

func (h *Human) failed(e pipeline.Event) {
	if e.Operation == "plan" {
		// Already shown with the planned change; CI still gets its annotation.
		if h.opt.CI {
			fmt.Fprintf(h.w, "::error title=%s cannot be planned::%s\n", escapeProp(e.Address), escapeData(e.Message))
		}
		return
	}
	label := "failed"
	sym := h.c(cRed, "✗")
	if e.Refused {
		label = "refused"
		sym = h.c(cRed, "!")
	}
	h.printf("%s %s%s %s: %s\n", sym, sim(e), e.Address, label, e.Message)
	h.deleted(e)
	if h.opt.CI {
		fmt.Fprintf(h.w, "::error title=%s %s::%s\n", escapeProp(e.Address), label, escapeData(sim(e)+e.Message))
	}
}

// deleted lists what a stage deleted remotely.
func (h *Human) deleted(e pipeline.Event) {
	for _, d := range e.Deletes {
		h.printf("    %s %sdeleted %s\n", h.c(cRed, "-"), sim(e), d)
	}
}

// progress prints progress: redrawn in place on a terminal, else at most every 10% or 30 s.
func (h *Human) progress(e pipeline.Event) {
	p := e.Progress
	if p == nil {
		return
	}
	line := sim(e) + e.Address + ": " + progressText(p)
	if h.opt.Redraw {
		fmt.Fprint(h.w, "\r\x1b[K"+line)
		h.redrawing = true
		return
	}
	pct := int64(-1)
	if p.Total > 0 {
		pct = p.Current * 10 / p.Total
	}
	now := time.Now()
	if last, ok := h.lastProg[e.Address]; ok && now.Sub(last) < 30*time.Second && pct == h.lastPct[e.Address] {
		return
	}
	h.lastProg[e.Address] = now
	h.lastPct[e.Address] = pct
	h.printf("  %s\n", line)
}

func progressText(p *pipeline.Progress) string {
	var parts []string
	if p.Total > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d (%d%%)", p.Current, p.Total, p.Current*100/p.Total))
	} else if p.Current > 0 {
		parts = append(parts, strconv.FormatInt(p.Current, 10))
	}
	if p.Message != "" {
		parts = append(parts, p.Message)
	}
	for _, k := range sortedMetricKeys(p.Metrics) {
		parts = append(parts, fmt.Sprintf("%s %.4g", k, p.Metrics[k]))
	}
	return strings.Join(parts, "  ")
}

func sortedMetricKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (h *Human) outputs(e pipeline.Event) {
	h.printf("\n%sOutputs:\n", sim(e))
	for _, k := range sortedAnyKeys(e.Outputs) {
		h.printf("  %s%s = %s\n", sim(e), k, render(e.Outputs[k]))
	}
}

// brief shows a stage's short scalar outputs on its completion line.
func brief(o map[string]any) string {
	var parts []string
	for _, k := range sortedAnyKeys(o) {
		switch v := o[k].(type) {
		case string:
			if v != "" && len(v) <= 80 {
				parts = append(parts, k+"="+v)
			}
		case bool:
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		case json.Number:
			if f, err := v.Float64(); err == nil {
				parts = append(parts, k+"="+strconv.FormatFloat(f, 'g', 4, 64))
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	if len(parts) > 6 {
		parts = parts[:6]
	}
	return ": " + strings.Join(parts, " ")
}

func sortedAnyKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func render(v any) string {
	switch t := v.(type) {
	case string:
		return strconv.Quote(t)
	case map[string]any:
		var parts []string
		for _, k := range sortedAnyKeys(t) {
			parts = append(parts, strconv.Quote(k)+" = "+render(t[k]))
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	case []any:
		var parts []string
		for _, e := range t {
			parts = append(parts, render(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

func indent(s, pad string) string { return strings.ReplaceAll(s, "\n", "\n"+pad) }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// GitHub Actions workflow-command escaping.
func escapeData(s string) string {
	s = strings.ReplaceAll(s, "%", "%25")
	s = strings.ReplaceAll(s, "\r", "%0D")
	return strings.ReplaceAll(s, "\n", "%0A")
}

func escapeProp(s string) string {
	s = escapeData(s)
	s = strings.ReplaceAll(s, ":", "%3A")
	return strings.ReplaceAll(s, ",", "%2C")
}
