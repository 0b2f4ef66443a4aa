package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/engine"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
)

// writeStepSummary appends a Markdown table of the run to $GITHUB_STEP_SUMMARY (GitHub Actions):
// one row per subject with its outcome, photos, chosen rank and steps, loss, version and report.
func writeStepSummary(l *loaded, out *engine.Outcome) {
	path := os.Getenv("GITHUB_STEP_SUMMARY")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warning: cannot write GITHUB_STEP_SUMMARY: %v\n", err)
		return
	}
	defer f.Close()
	fmt.Fprint(f, l.engine.Redact(stepSummary(l.files, l.env.Simulated, l.mod.Stages(), out)))
}

// column is one column of the job summary: a stage's output, as its kind declares it.
type column struct {
	pipeline.SummaryColumn
	kind, name string
}

// summaryColumns gathers the columns the stages' kinds declare, ordered by their Order (ties
// keep stage order), and the word each kind uses for a completed stage ("trained").
func summaryColumns(stages []*lang.Stage) (cols []column, done map[string]string) {
	done = map[string]string{}
	for _, st := range stages {
		if st.Schema == nil {
			continue
		}
		for _, c := range st.Schema.Summary {
			cols = append(cols, column{SummaryColumn: c, kind: st.Kind, name: st.Name})
		}
		if st.Schema.Done != "" {
			done[st.Kind] = st.Schema.Done
		}
	}
	sort.SliceStable(cols, func(i, j int) bool { return cols[i].Order < cols[j].Order })
	return cols, done
}

func stepSummary(files []string, simulated bool, stages []*lang.Stage, out *engine.Outcome) string {
	cols, done := summaryColumns(stages)
	var b strings.Builder
	title := "pipeline apply " + strings.Join(files, " ")
	if simulated {
		title += " (simulated: offline Replicate simulator)"
	}
	fmt.Fprintf(&b, "### %s\n\n", mdEscape(title))
	head, rule := "| subject | outcome |", "|---|---|"
	for _, c := range cols {
		head += " " + mdEscape(c.Title) + " |"
		rule += "---|"
	}
	head, rule = head+" cost |", rule+"---|"
	b.WriteString(head + "\n" + rule + "\n")
	for _, io := range out.Instances {
		subject := io.Key
		if !io.Batch {
			subject = "(pipeline)"
		}
		fmt.Fprintf(&b, "| %s | %s |", mdEscape(subject), mdEscape(rowOutcome(io, done)))
		for _, c := range cols {
			fmt.Fprintf(&b, " %s |", mdEscape(cell(io, c)))
		}
		fmt.Fprintf(&b, " %s |\n", costCell(io))
	}
	for _, k := range out.LockedKeys() {
		fmt.Fprintf(&b, "| %s | locked elsewhere: %s |%s\n", mdEscape(k), mdEscape(firstLineOf(out.Locked[k].Error())), strings.Repeat(" |", len(cols)+1))
	}
	c := out.Counts()
	fmt.Fprintf(&b, "\n%d stage runs complete, %d up to date, %d refused, %d failed, %d skipped.", c["complete"], c["noop"], c["refused"], c["failed"], c["skipped"])
	if usd := out.CostUSD(); usd > 0 {
		fmt.Fprintf(&b, " Cost %s (from the jobs' run time).", pipeline.FormatUSD(usd))
	}
	b.WriteString("\n\n")
	return b.String()
}

// costCell is what a subject's paid jobs cost in this apply: empty when none reported a cost.
func costCell(io *engine.InstanceOutcome) string {
	for _, so := range io.Stages {
		if so.Cost != nil {
			return pipeline.FormatUSD(io.CostUSD())
		}
	}
	return ""
}

// rowOutcome says in a few words how a subject's run ended: its first problem, else what the
// stages that completed did ("trained"), else that it is up to date.
func rowOutcome(io *engine.InstanceOutcome, done map[string]string) string {
	outcome := "up to date"
	for _, so := range io.Stages {
		switch so.Status {
		case engine.StatusRefused:
			return so.Address + " refused: " + so.Message
		case engine.StatusFailed:
			return so.Address + " failed: " + firstLineOf(so.Message)
		case engine.StatusInterrupted, engine.StatusNotStarted:
			return "interrupted: resumes on the next run"
		case engine.StatusComplete:
			if w := done[so.Kind]; w != "" {
				outcome = w
			}
		}
	}
	for _, so := range io.Stages {
		if so.Status == engine.StatusSkipped {
			return "skipped: " + so.Message
		}
	}
	return outcome
}

// cell is one column's value for a subject: the stage's output at the column's path.
func cell(io *engine.InstanceOutcome, c column) string {
	for _, so := range io.Stages {
		if so.Kind != c.kind || so.Name != c.name {
			continue
		}
		v := so.Outputs
		path := strings.Split(c.Path, ".")
		for _, step := range path[:len(path)-1] {
			v = attr(v, step)
		}
		if s := numAttr(v, path[len(path)-1]); s != "" {
			return s
		}
		return strAttr(v, path[len(path)-1])
	}
	return ""
}

func attr(v cty.Value, name string) cty.Value {
	if v == cty.NilVal || !v.IsKnown() || v.IsNull() {
		return cty.NilVal
	}
	t := v.Type()
	switch {
	case t.IsObjectType() && t.HasAttribute(name):
		return v.GetAttr(name)
	case t.IsMapType():
		k := cty.StringVal(name)
		if v.HasIndex(k).True() {
			return v.Index(k)
		}
	}
	return cty.NilVal
}

func numAttr(v cty.Value, name string) string {
	a := attr(v, name)
	if a == cty.NilVal || !a.IsKnown() || a.IsNull() {
		return ""
	}
	if a.Type() == cty.Number {
		f, _ := a.AsBigFloat().Float64()
		return fmt.Sprintf("%.4g", f)
	}
	if a.Type() == cty.String {
		return a.AsString()
	}
	return ""
}

func strAttr(v cty.Value, name string) string {
	a := attr(v, name)
	if a == cty.NilVal || !a.IsKnown() || a.IsNull() || a.Type() != cty.String {
		return ""
	}
	return a.AsString()
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
