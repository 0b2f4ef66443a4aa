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
	"unicode"

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
		c := *d // its words may quote users' data, as an event's do (cleanEvent)
		c.Summary, c.Detail = textLines(c.Summary), textLines(c.Detail)
		d = &c
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
	e = cleanEvent(e)
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Key != "" {
		h.keys[e.Key] = true
	}
	switch e.Type {
	case pipeline.EventPlannedChange:
		// Held until the summary: only then is it known whether the batch is large enough to be
		// summarised per stage, and which symbols the legend names.
		h.plans = append(h.plans, e)
	case pipeline.EventStageOutputs:
		// Read-only results are shown with their planned change (notes); apply shows completion.
	case pipeline.EventChangeSummary:
		if e.Operation == "plan" {
			h.planBody()
		}
		h.summary(e)
	case pipeline.EventStageStart:
		m := actionMark(e.Action)
		h.printf("%s %s%s %s\n", h.mark(m), sim(e), e.Address, m.doing)
	case pipeline.EventStageProgress:
		h.progress(e)
	case pipeline.EventStageComplete:
		h.completed(e)
	case pipeline.EventStageFailed:
		h.failed(e)
	case pipeline.EventStageSkipped:
		if h.summarizing() && e.Operation == "plan" {
			return
		}
		h.printf("%s %s skipped: %s\n", h.mark(markSkip), e.Address, e.Message)
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
			h.printf("\n") // set apart from the plan or apply above it
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

// completed prints a finished stage: a read with the read symbol, any other with ✓, its short
// outputs and what it cost.
func (h *Human) completed(e pipeline.Event) {
	sym, word := h.c(cGreen, "✓"), "complete"
	if e.ReadOnly {
		sym, word = h.mark(markRead), "read"
	}
	line := fmt.Sprintf("%s %s%s %s%s", sym, sim(e), e.Address, word, brief(e.Outputs))
	if e.Cost != nil {
		line += fmt.Sprintf(" (cost %s)", pipeline.FormatUSD(e.Cost.USD))
	}
	h.printf("%s\n", line)
	for _, w := range foldWarnings(e.Warnings, e.Items, h.opt.Details) {
		h.printf("    %s %s\n", h.c(cYellow, "warning:"), indent(w, "      "))
	}
	h.deleted(e)
}

func (h *Human) failed(e pipeline.Event) {
	if e.Operation == "plan" {
		// Already shown with the planned change; CI still gets its annotation.
		if h.opt.CI {
			fmt.Fprintf(h.w, "::error title=%s cannot be planned::%s\n", escapeProp(e.Address), escapeData(e.Message))
		}
		return
	}
	m, label := markError, "failed"
	switch {
	case e.Refused:
		m, label = markRefused, "refused"
	case e.Interrupted:
		m, label = markInterrupted, "interrupted"
	}
	line := fmt.Sprintf("%s %s%s %s: %s", h.mark(m), sim(e), e.Address, label, e.Message)
	if e.Cost != nil {
		line += fmt.Sprintf(" (cost so far %s)", pipeline.FormatUSD(e.Cost.USD))
	}
	h.printf("%s\n", line)
	h.deleted(e)
	if h.opt.CI && !e.Interrupted {
		fmt.Fprintf(h.w, "::error title=%s %s::%s\n", escapeProp(e.Address), label, escapeData(sim(e)+e.Message))
	}
}

// deleted lists what a stage deleted remotely.
func (h *Human) deleted(e pipeline.Event) {
	for _, d := range e.Deletes {
		h.printf("    %s %sdeleted %s\n", h.mark(markDelete), sim(e), d)
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

// progressText is one clean line: the percentage, then the kind's message, which already says
// the step and the loss; counts and metrics only when there is no message (-json has them all).
func progressText(p *pipeline.Progress) string {
	var parts []string
	if p.Total > 0 {
		parts = append(parts, fmt.Sprintf("%d%%", p.Current*100/p.Total))
	}
	if p.Message != "" {
		return strings.Join(append(parts, p.Message), "  ")
	}
	if p.Total > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d", p.Current, p.Total))
	} else if p.Current > 0 {
		parts = append(parts, strconv.FormatInt(p.Current, 10))
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

// outputs prints the root outputs in HCL, as `pipeline output` does.
func (h *Human) outputs(e pipeline.Event) {
	h.printf("\n%sOutputs:\n\n", sim(e))
	for _, k := range sortedAnyKeys(e.Outputs) {
		h.printf("%s = %s\n", k, FormatValue(e.Outputs[k]))
	}
}

// brief shows a stage's short scalar outputs on its completion line (digests are left to -json).
func brief(o map[string]any) string {
	var parts []string
	for _, k := range sortedAnyKeys(o) {
		switch v := o[k].(type) {
		case string:
			if v != "" && len(v) <= 80 && !strings.HasPrefix(v, "sha256:") {
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

// cleanEvent makes an event's text safe to print: its words may carry what users' data holds (a
// photo named "a\n::error::…", a subject key with an escape sequence), and a terminal or a CI
// runner must see them as text, never as a new line, a colour or a workflow command. One-line
// fields get every control character escaped; the message, which may span lines, keeps its
// newlines but no line of it can start a workflow command.
func cleanEvent(e pipeline.Event) pipeline.Event {
	e.Address = oneLine(e.Address)
	for _, list := range []*[]string{&e.Reasons, &e.Notes, &e.Details, &e.Deletes, &e.Warnings, &e.Unknown} {
		*list = oneLines(*list)
	}
	if e.Type == pipeline.EventStageWarning {
		e.Message = oneLine(e.Message) // a warning is one line, like the warnings of a result
	} else {
		e.Message = textLines(e.Message)
	}
	if e.Progress != nil {
		p := *e.Progress
		p.Message = oneLine(p.Message)
		e.Progress = &p
	}
	return e
}

func oneLines(list []string) []string {
	var out []string
	for i, s := range list {
		if c := oneLine(s); c != s {
			if out == nil {
				out = append([]string(nil), list...)
			}
			out[i] = c
		}
	}
	if out == nil {
		return list
	}
	return out
}

// oneLine escapes every control character (newlines included) as Go would quote it.
func oneLine(s string) string {
	if !hasControl(s, false) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) && r != '\t' {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SafeText is text that quotes users' data made safe to print (see cleanEvent), for messages
// printed outside the views, such as a command's final error.
func SafeText(s string) string { return textLines(s) }

// textLines escapes control characters but newlines, and a line that would read as a workflow
// command ("::…") gets a backslash in front.
func textLines(s string) string {
	if !hasControl(s, true) && !strings.Contains(s, "::") {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		l = oneLine(l)
		if strings.HasPrefix(strings.TrimLeft(l, " \t"), "::") {
			l = "\\" + l
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}

func hasControl(s string, newlinesOK bool) bool {
	for _, r := range s {
		if unicode.IsControl(r) && r != '\t' && (r != '\n' || !newlinesOK) {
			return true
		}
	}
	return false
}
