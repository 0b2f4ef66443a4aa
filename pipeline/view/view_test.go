package view

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
)

func human(opt Options, events ...pipeline.Event) string {
	var b bytes.Buffer
	h := NewHuman(&b, opt)
	for _, e := range events {
		h.Emit(e)
	}
	return b.String()
}

func noFace(n int) []string {
	var ws []string
	for i := 1; i <= n; i++ {
		ws = append(ws, fmt.Sprintf("data/ana/p%02d.jpg: no face found: a photo without the subject's face teaches little", i))
	}
	return ws
}

// A warning that hits many photos prints once, with the count and the files; fewer than three
// stay as they are, and other warnings keep their place.
func TestFoldWarnings(t *testing.T) {
	ws := append(noFace(14), "data/ana: diversity 0.12 is low")
	got := foldWarnings(ws, &pipeline.Items{Count: 16, Noun: "photos"}, false)
	if len(got) != 2 {
		t.Fatalf("folded into %d warnings, want 2: %q", len(got), got)
	}
	want := "14 of 16 photos: no face found: a photo without the subject's face teaches little\n" +
		"in data/ana/: p01.jpg, p02.jpg, p03.jpg, p04.jpg, p05.jpg, p06.jpg, p07.jpg, p08.jpg, … and 6 more (-details lists them)"
	if got[0] != want || got[1] != "data/ana: diversity 0.12 is low" {
		t.Errorf("folded:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	if all := foldWarnings(ws, nil, true); !strings.Contains(all[0], "14 files: no face found") || !strings.Contains(all[0], "p14.jpg") {
		t.Errorf("with -details every file is listed: %q", all[0])
	}
	if two := foldWarnings(noFace(2), nil, false); len(two) != 2 || two[0] != noFace(2)[0] {
		t.Errorf("two warnings are not folded: %q", two)
	}
}

// The plan prints a folded warning under its stage; -json (another view) keeps each one.
func TestPlanFoldsWarningsPerSubject(t *testing.T) {
	out := human(Options{},
		pipeline.Event{Type: pipeline.EventPlannedChange, Address: `image_check.photos["ana"]`, Key: "ana", ReadOnly: true, Action: pipeline.ActionRead,
			Warnings: noFace(14), Items: &pipeline.Items{Count: 16, Noun: "photos"}},
		pipeline.Event{Type: pipeline.EventChangeSummary, Operation: "plan", Counts: map[string]int{"read": 1}})
	if n := strings.Count(out, "no face found"); n != 1 {
		t.Errorf("the warning shows %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "warning: 14 of 16 photos: no face found") {
		t.Errorf("no folded warning:\n%s", out)
	}
}

// One clean progress line: the percentage and the kind's message, no repeated figures.
func TestProgressTextSaysThingsOnce(t *testing.T) {
	p := &pipeline.Progress{Current: 47, Total: 1050, Message: "training abc processing, step 47/1050, loss 0.779, ETA 2s",
		Metrics: map[string]float64{"loss": 0.779, "raw_loss": 0.7537, "eta_seconds": 1.81}}
	if got, want := progressText(p), "4%  training abc processing, step 47/1050, loss 0.779, ETA 2s"; got != want {
		t.Errorf("progress = %q, want %q", got, want)
	}
	bare := &pipeline.Progress{Current: 3, Total: 4, Metrics: map[string]float64{"loss": 0.5}}
	if got, want := progressText(bare), "75%  3/4  loss 0.5"; got != want {
		t.Errorf("progress without a message = %q, want %q", got, want)
	}
}

// Apply uses plan's symbols for the same outcome: / skipped (- is delete), ! refused, x failed,
// ‖ interrupted (not a failure), <= for a read.
func TestApplySymbolsMatchThePlans(t *testing.T) {
	out := human(Options{},
		pipeline.Event{Type: pipeline.EventStageStart, Address: "train.lora", Action: pipeline.ActionReattach},
		pipeline.Event{Type: pipeline.EventStageSkipped, Address: `params.tuned["bob"]`, Message: "upstream image_check.photos refused"},
		pipeline.Event{Type: pipeline.EventStageFailed, Address: "loss_gate.fit", Message: "overfit", Refused: true},
		pipeline.Event{Type: pipeline.EventStageFailed, Address: "generate.check", Message: "boom"},
		pipeline.Event{Type: pipeline.EventStageFailed, Address: "train.lora", Message: "recorded in state", Interrupted: true},
		pipeline.Event{Type: pipeline.EventStageComplete, Address: "image_check.photos", ReadOnly: true},
		pipeline.Event{Type: pipeline.EventStageComplete, Address: "train.lora", Cost: &pipeline.Cost{USD: 2.05}},
	)
	for _, want := range []string{"↻ train.lora re-attaching\n", "/ params.tuned[\"bob\"] skipped: upstream", "! loss_gate.fit refused: overfit",
		"x generate.check failed: boom", "‖ train.lora interrupted: recorded in state", "<= image_check.photos read\n", "✓ train.lora complete (cost $2.05)"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "- params") || strings.Contains(out, "interrupted: recorded in state") && strings.Contains(out, "train.lora failed") {
		t.Errorf("apply mixes up the symbols:\n%s", out)
	}
}

// The legend names exactly the symbols the plan uses; a plan of only reads and up-to-date stages
// needs none and ends with "No changes.".
func TestLegendAndNoChanges(t *testing.T) {
	plan := func(evs ...pipeline.Event) string {
		counts := map[string]int{}
		for _, e := range evs {
			counts[string(e.Action)]++
			if e.Refused {
				counts["refused"]++
			}
		}
		return human(Options{}, append(evs, pipeline.Event{Type: pipeline.EventChangeSummary, Operation: "plan", Counts: counts})...)
	}
	out := plan(pipeline.Event{Type: pipeline.EventPlannedChange, Address: "a.b", Action: pipeline.ActionRead, ReadOnly: true, Refused: true, Message: "too few"},
		pipeline.Event{Type: pipeline.EventPlannedChange, Address: "c.d", Action: pipeline.ActionSkip, Message: "cannot plan: bad"},
		pipeline.Event{Type: pipeline.EventPlannedChange, Address: "e.f", Action: pipeline.ActionSkip, Reasons: []string{"upstream a.b refused"}})
	if !strings.HasPrefix(out, "Symbols: / skipped, ! refused, x cannot be planned\n") {
		t.Errorf("legend:\n%s", out)
	}
	if strings.Contains(out, "No changes.") {
		t.Errorf("a plan with a refusal is not 'No changes.':\n%s", out)
	}
	quiet := plan(pipeline.Event{Type: pipeline.EventPlannedChange, Address: "a.b", Action: pipeline.ActionRead, ReadOnly: true, Unchanged: true, Quiet: true, Notes: []string{"17 photos"}},
		pipeline.Event{Type: pipeline.EventPlannedChange, Address: "c.d", Action: pipeline.ActionNoop, Quiet: true, Notes: []string{"would run 3 predictions"}})
	want := "  <= a.b read (unchanged)\n  = c.d up to date\n\nPlan: 0 to run, 0 to re-run, 0 to delete, 1 up to date, 1 read.\nNo changes.\n"
	if quiet != want {
		t.Errorf("no-change plan:\n%s\nwant:\n%s", quiet, want)
	}
}

// Outputs print in HCL, one element per line, as `pipeline output` prints them.
func TestFormatValue(t *testing.T) {
	var v any
	d := json.NewDecoder(strings.NewReader(`{"ana": "acme/ana-lora:1", "n": [1, 2.5], "ok": true, "none": null, "tpl": "${x}", "e": {}}`))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	want := `{
  "ana" = "acme/ana-lora:1"
  "e" = {}
  "n" = [
    1,
    2.5,
  ]
  "none" = null
  "ok" = true
  "tpl" = "$${x}"
}`
	if got := FormatValue(v); got != want {
		t.Errorf("FormatValue:\n%s\nwant:\n%s", got, want)
	}
}

// A photo's name is users' data: a name with a newline and a workflow command, or with a terminal
// escape, prints as text. On a CI runner no line it produced can be read as a command, and the
// only lines that start with "::" are the annotations the view writes itself.
func TestHostileNamesPrintAsTextNeverAsCommandsOrEscapes(t *testing.T) {
	hostile := "data/ana/x\n::error::pwned\r\x1b[2J.jpg"
	out := human(Options{CI: true},
		pipeline.Event{Type: pipeline.EventPlannedChange, Address: "image_check.photos", Action: pipeline.ActionRead,
			Notes: []string{"rejected " + hostile + ": not a photo"}, Warnings: []string{hostile + ": no face found"}},
		pipeline.Event{Type: pipeline.EventStageProgress, Address: "train.lora", Progress: &pipeline.Progress{Message: "uploading " + hostile}},
		pipeline.Event{Type: pipeline.EventStageWarning, Address: "image_check.photos", Message: hostile + ": too dark"},
		pipeline.Event{Type: pipeline.EventStageFailed, Address: "train.lora", Message: "image " + hostile + ": corrupt\ndetail line"},
		pipeline.Event{Type: pipeline.EventChangeSummary, Operation: "plan", Counts: map[string]int{"read": 1}},
	)
	if strings.ContainsAny(out, "\r\x1b") {
		t.Errorf("a carriage return or escape from a name reached the output:\n%q", out)
	}
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimLeft(line, " \t")
		if strings.HasPrefix(l, "::") && !strings.HasPrefix(l, "::warning title=") && !strings.HasPrefix(l, "::error title=") {
			t.Errorf("a name started a workflow command: %q", line)
		}
		if strings.HasPrefix(l, "::") && strings.Contains(l, "\n") {
			t.Errorf("annotation spans lines: %q", line)
		}
	}
	if !strings.Contains(out, `x\n::error::pwned\r\x1b[2J.jpg`) {
		t.Errorf("the name is not shown escaped:\n%s", out)
	}
}
