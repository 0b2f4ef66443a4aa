package view

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// mark is how people see one outcome: the same symbol and word in plan and apply, and in the
// legend (SPEC: + run, ~ re-run, <= read, ↻ re-attach, = up to date, - delete, / skipped,
// ! refused, x cannot be planned).
type mark struct {
	sym, color string
	word       string // the legend's word
	verb       string // plan: "train.lora will run"
	doing      string // apply, when the stage starts: "train.lora running"
}

var (
	markRun         = mark{sym: "+", color: cGreen, word: "run", verb: "will run", doing: "running"}
	markRerun       = mark{sym: "~", color: cYellow, word: "re-run", verb: "will re-run", doing: "re-running"}
	markRead        = mark{sym: "<=", color: cBlue, word: "read", verb: "read", doing: "reading"}
	markReattach    = mark{sym: "↻", color: cCyan, word: "re-attach", verb: "will re-attach", doing: "re-attaching"}
	markNoop        = mark{sym: "=", color: cDim, word: "up to date", verb: "up to date"}
	markDelete      = mark{sym: "-", color: cRed, word: "delete", verb: "will delete", doing: "deleting"}
	markSkip        = mark{sym: "/", color: cDim, word: "skipped", verb: "skipped"}
	markRefused     = mark{sym: "!", color: cRed, word: "refused", verb: "refused"}
	markError       = mark{sym: "x", color: cRed, word: "cannot be planned", verb: "cannot be planned"}
	markInterrupted = mark{sym: "‖", color: cYellow, word: "interrupted", verb: "interrupted"}
)

// legendOrder is the order the legend names the symbols in.
var legendOrder = []mark{markRun, markRerun, markRead, markReattach, markNoop, markDelete, markSkip, markRefused, markError}

func actionMark(a pipeline.Action) mark {
	switch a {
	case pipeline.ActionRun:
		return markRun
	case pipeline.ActionRerun:
		return markRerun
	case pipeline.ActionRead:
		return markRead
	case pipeline.ActionReattach:
		return markReattach
	case pipeline.ActionNoop:
		return markNoop
	case pipeline.ActionDelete:
		return markDelete
	case pipeline.ActionSkip:
		return markSkip
	}
	return mark{sym: "?", word: string(a), verb: string(a), doing: string(a)}
}

// planMark is the mark of a planned change: a refusal or an error wins over the action.
func planMark(e pipeline.Event) mark {
	switch {
	case e.Refused:
		return markRefused
	case e.Message != "":
		return markError
	}
	return actionMark(e.Action)
}

func (h *Human) mark(m mark) string { return h.c(m.color, m.sym) }

// verb is a planned change's word, "read (unchanged)" for a read whose result did not change.
func verb(e pipeline.Event) string {
	m := planMark(e)
	if m == markRead && e.Unchanged {
		return "read (unchanged)"
	}
	return m.verb
}

// planBody prints the held planned changes: a legend of the symbols they use, then one block per
// stage instance (or per stage, for a large batch).
func (h *Human) planBody() {
	defer func() { h.plans = nil }()
	if len(h.plans) == 0 {
		return
	}
	h.legend()
	if h.summarizing() {
		h.stageSummaries()
		return
	}
	for _, p := range h.plans {
		h.plannedChange(p)
	}
}

// legend names the symbols this plan uses, in one line.
func (h *Human) legend() {
	used := map[mark]bool{}
	for _, p := range h.plans {
		used[planMark(p)] = true
	}
	if len(used) == 1 && (used[markNoop] || used[markRead]) || len(used) == 2 && used[markNoop] && used[markRead] {
		return // nothing to do: "No changes." says it all
	}
	var parts []string
	for _, m := range legendOrder {
		if used[m] {
			parts = append(parts, h.mark(m)+" "+m.word)
		}
	}
	h.printf("Symbols: %s\n\n", strings.Join(parts, ", "))
}

// quiet reports whether a planned change takes one line: nothing happens for it (an up-to-date
// stage, a read nothing that runs depends on) and -details does not ask for more.
func (h *Human) quiet(e pipeline.Event) bool {
	return e.Quiet && !h.opt.Details && e.Message == ""
}

func (h *Human) plannedChange(e pipeline.Event) {
	line := fmt.Sprintf("  %s %s%s %s", h.mark(planMark(e)), sim(e), h.c(cBold, e.Address), verb(e))
	if h.quiet(e) && len(e.Reasons) > 0 {
		// A read whose result changed while nothing depends on the change: say what, in the line.
		line += ": " + inline(e.Reasons, 2)
	}
	h.printf("%s\n", line)
	if e.Message != "" {
		h.printf("      %s\n", indent(e.Message, "      "))
	}
	if !h.quiet(e) {
		for _, r := range e.Reasons {
			h.printf("      %s\n", r)
		}
		for _, u := range e.Unknown {
			h.printf("      %s = %s\n", u, h.c(cDim, "(known after apply)"))
		}
		for _, n := range e.Notes {
			h.printf("      %s%s\n", sim(e), n)
		}
		if h.opt.Details {
			for _, d := range e.Details {
				h.printf("      %s%s\n", sim(e), d)
			}
		}
		for _, d := range e.Deletes {
			h.printf("      %s %s%s\n", h.mark(markDelete), sim(e), d)
		}
		if c := e.Cost; c != nil {
			h.printf("      %sestimated cost %s%s\n", sim(e), pipeline.FormatUSD(c.USD), basis(c))
		}
	}
	// Warnings show whatever the action: they are about the data, not the plan.
	for _, w := range foldWarnings(e.Warnings, e.Items, h.opt.Details) {
		h.printf("      %s %s\n", h.c(cYellow, "warning:"), indent(w, "        "))
	}
}

// inline joins the first n lines with "; ", saying how many more there are.
func inline(lines []string, n int) string {
	if len(lines) <= n {
		return strings.Join(lines, "; ")
	}
	return strings.Join(lines[:n], "; ") + fmt.Sprintf("; … (%d more with -details)", len(lines)-n)
}

func basis(c *pipeline.Cost) string {
	if c.Basis == "" {
		return " (an estimate)"
	}
	return " (an estimate: " + c.Basis + ")"
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
		a.counts[planMark(e).verb]++
		if e.Refused || e.Message != "" {
			a.trouble = append(a.trouble, e)
		}
	}
	h.printf("%d instances; per stage (pass -details for every instance):\n", len(h.keys))
	for _, s := range order {
		a := byStage[s]
		var parts []string
		for _, v := range sortedCounts(a.counts) {
			parts = append(parts, fmt.Sprintf("%d %s", a.counts[v], v))
		}
		h.printf("  %s: %s\n", h.c(cBold, s), strings.Join(parts, ", "))
		for i, e := range a.trouble {
			if i == 10 {
				h.printf("      … and %d more\n", len(a.trouble)-10)
				break
			}
			h.printf("      %s %s: %s\n", h.mark(planMark(e)), e.Address, firstLine(e.Message))
		}
	}
}

// summary ends a plan or an apply with its counts, in the words of the symbols, and its money.
func (h *Human) summary(e pipeline.Event) {
	c := e.Counts
	if e.Operation == "plan" {
		parts := []string{
			fmt.Sprintf("%d to run", c["run"]),
			fmt.Sprintf("%d to re-run", c["rerun"]),
		}
		if c["reattach"] > 0 {
			parts = append(parts, fmt.Sprintf("%d to re-attach", c["reattach"]))
		}
		parts = append(parts, fmt.Sprintf("%d to delete", c["delete"]), fmt.Sprintf("%d up to date", c["noop"]))
		parts = appendCount(parts, c, "read", "read")
		parts = appendCount(parts, c, "skip", "skipped")
		parts = appendCount(parts, c, "refused", "refused")
		parts = appendCount(parts, c, "cannot_be_planned", "cannot be planned")
		line := strings.Join(parts, ", ") + "."
		if e.Cost != nil && e.Cost.USD > 0 {
			line += " Estimated cost " + pipeline.FormatUSD(e.Cost.USD)
			if e.CostLimit != nil {
				line += fmt.Sprintf(" (max_cost_usd %s)", pipeline.FormatUSD(*e.CostLimit))
			}
			line += ": an estimate."
		}
		h.printf("\n%s %s\n", h.c(cBold, "Plan:"), line)
		if c["run"]+c["rerun"]+c["reattach"]+c["delete"]+c["refused"]+c["cannot_be_planned"] == 0 {
			h.printf("No changes.\n")
		}
		return
	}
	parts := []string{fmt.Sprintf("%d complete", c["complete"]), fmt.Sprintf("%d up to date", c["noop"])}
	parts = appendCount(parts, c, "read", "read")
	for _, k := range []string{"refused", "failed", "skipped", "interrupted", "not_started"} {
		parts = appendCount(parts, c, k, strings.ReplaceAll(k, "_", " "))
	}
	parts = appendCount(parts, c, "locked", "instances locked elsewhere")
	line := strings.Join(parts, ", ") + "."
	if e.Cost != nil && e.Cost.USD > 0 {
		line += " Cost " + pipeline.FormatUSD(e.Cost.USD) + " (from the jobs' run time)."
	}
	h.printf("\n%s %s\n", h.c(cBold, "Apply finished:"), line)
}

// appendCount adds "N label" when the count is not zero.
func appendCount(parts []string, c map[string]int, key, label string) []string {
	if c[key] == 0 {
		return parts
	}
	return append(parts, fmt.Sprintf("%d %s", c[key], label))
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

// foldAt is how many warnings with the same text about different files fold into one.
const foldAt = 3

// foldWarnings prints a warning that hits many files once, with the count and the files
// ("14 of 16 photos: no face found: …"); all lists every file. Warnings start with the path
// they are about ("data/ana/a.jpg: no face found: …"), so the text after it is what repeats.
func foldWarnings(ws []string, items *pipeline.Items, all bool) []string {
	type group struct {
		text  string
		files []string
		raw   []string
	}
	var order []*group
	byText := map[string]*group{}
	for _, w := range ws {
		file, text, ok := strings.Cut(w, ": ")
		if !ok {
			order = append(order, &group{raw: []string{w}})
			continue
		}
		g := byText[text]
		if g == nil {
			g = &group{text: text}
			byText[text] = g
			order = append(order, g)
		}
		g.files = append(g.files, file)
		g.raw = append(g.raw, w)
	}
	var out []string
	for _, g := range order {
		if len(g.files) < foldAt {
			out = append(out, g.raw...)
			continue
		}
		out = append(out, folded(g.text, g.files, items, all))
	}
	return out
}

// folded is one folded warning: "N of M photos: TEXT" and, on the next line, the files.
func folded(text string, files []string, items *pipeline.Items, all bool) string {
	count := fmt.Sprintf("%d files", len(files))
	if items != nil && items.Count >= len(files) {
		count = fmt.Sprintf("%d of %d %s", len(files), items.Count, items.Noun)
	}
	dir := commonDir(files)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = strings.TrimPrefix(f, dir)
	}
	const shown = 8
	list := names
	more := ""
	if !all && len(names) > shown {
		list = names[:shown]
		more = fmt.Sprintf(", … and %d more (-details lists them)", len(names)-shown)
	}
	where := ""
	if dir != "" {
		where = "in " + dir + ": "
	}
	return count + ": " + text + "\n" + where + strings.Join(list, ", ") + more
}

// commonDir is the directory (with its trailing slash) every file is under, "" if none.
func commonDir(files []string) string {
	dir := path.Dir(files[0]) + "/"
	for _, f := range files[1:] {
		for dir != "" && !strings.HasPrefix(f, dir) {
			parent := path.Dir(strings.TrimSuffix(dir, "/"))
			if parent == "." || parent == "/" || parent+"/" == dir {
				return ""
			}
			dir = parent + "/"
		}
	}
	if dir == "./" {
		return ""
	}
	return dir
}
