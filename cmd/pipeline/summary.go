package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline/engine"
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
	fmt.Fprint(f, l.engine.Redact(stepSummary(l.files, l.env.Simulated, out)))
}

func stepSummary(files []string, simulated bool, out *engine.Outcome) string {
	var b strings.Builder
	title := "pipeline apply " + strings.Join(files, " ")
	if simulated {
		title += " (simulated: offline Replicate simulator)"
	}
	fmt.Fprintf(&b, "### %s\n\n", mdEscape(title))
	b.WriteString("| subject | outcome | photos | rank | steps | final loss | version | report |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, io := range out.Instances {
		subject := io.Key
		if !io.Batch {
			subject = "(pipeline)"
		}
		row := summaryRow(io)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", mdEscape(subject), mdEscape(row.outcome), row.photos, row.rank, row.steps, row.loss, mdEscape(row.version), mdEscape(row.report))
	}
	for _, k := range out.LockedKeys() {
		fmt.Fprintf(&b, "| %s | locked elsewhere: %s | | | | | | |\n", mdEscape(k), mdEscape(firstLineOf(out.Locked[k].Error())))
	}
	c := out.Counts()
	fmt.Fprintf(&b, "\n%d stage runs done, %d up to date, %d refused, %d failed, %d skipped.\n\n", c["complete"], c["noop"], c["refused"], c["failed"], c["skipped"])
	return b.String()
}

type row struct{ outcome, photos, rank, steps, loss, version, report string }

func summaryRow(io *engine.InstanceOutcome) row {
	r := row{outcome: "up to date"}
	trained := false
	var problems []string
	for _, so := range io.Stages {
		o := so.Outputs
		switch so.Kind {
		case "image_check":
			r.photos = numAttr(o, "count")
		case "params":
			if v := attr(o, "values"); v != cty.NilVal && v.IsKnown() && !v.IsNull() && v.CanIterateElements() {
				r.rank = numAttr(v, "lora_rank")
				r.steps = numAttr(v, "steps")
			}
		case "train":
			r.version = strAttr(o, "version")
			if so.Status == "complete" {
				trained = true
			}
		case "loss_gate":
			r.loss = numAttr(o, "final_loss")
		case "generate":
			r.report = strAttr(o, "report")
		}
		switch so.Status {
		case "refused":
			if so.Kind == "loss_gate" {
				problems = append(problems, "rejected by the gate (loss "+r.loss+"): "+so.Message)
			} else {
				problems = append(problems, so.Address+" refused: "+so.Message)
			}
		case "failed":
			problems = append(problems, so.Address+" failed: "+firstLineOf(so.Message))
		case "interrupted", "not_started":
			problems = append(problems, "interrupted: resumes on the next run")
		}
	}
	switch {
	case len(problems) > 0:
		r.outcome = problems[0]
	case trained:
		r.outcome = "trained"
	}
	if len(problems) == 0 {
		for _, so := range io.Stages {
			if so.Status == "skipped" {
				r.outcome = "skipped: " + so.Message
				break
			}
		}
	}
	return r
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
