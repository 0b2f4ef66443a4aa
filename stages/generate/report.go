package generate

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// The report is one self-contained HTML file beside the images (no scripts, no external resources):
// the loss curve as inline SVG, the grid with relative <img> paths, each image's texture figure and
// verdict, and the training photos' median.
var reportTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<link rel="icon" href="data:,">
<style>
body { font: 15px/1.45 system-ui, sans-serif; color: #222; margin: 24px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #666; } code { font-size: 13px; }
.sim { background: #f3e5f5; border: 2px solid #6a1b9a; color: #4a148c; padding: 8px 12px; font-weight: 600; margin: 12px 0; }
.verdict { display: inline-block; padding: 1px 8px; border-radius: 4px; color: #fff; font-weight: 600; }
.verdict.natural { background: #1b7f3a; } .verdict.plastic { background: #c62828; } .verdict.blur { background: #d97706; } .verdict.unscored { background: #888; }
.gate { border-left: 4px solid #c62828; padding: 4px 10px; margin: 10px 0; }
.warn { border-left: 4px solid #d97706; padding: 4px 10px; margin: 6px 0; }
table.summary td { padding: 2px 14px 2px 0; vertical-align: top; }
table.grid { border-collapse: collapse; } table.grid th { text-align: left; padding: 6px; }
table.grid td { padding: 6px; vertical-align: top; }
figure { margin: 0; } figure img { width: 256px; height: auto; display: block; border: 3px solid #888; }
figure.natural img { border-color: #1b7f3a; } figure.plastic img { border-color: #c62828; } figure.blur img { border-color: #d97706; }
figcaption { font-size: 13px; margin-top: 4px; max-width: 262px; }
.missing { width: 256px; height: 256px; background: #e4e4e4; display: flex; align-items: center; justify-content: center; color: #666; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
svg text.threshold { fill: #c62828; }
table.params th, table.rejected th { text-align: left; padding: 2px 14px 2px 0; }
table.params td, table.rejected td { padding: 2px 14px 2px 0; vertical-align: top; }
.override { color: #c62828; font-weight: 600; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<div class="muted">version <code>{{.Version}}</code>{{if .Previous}} compared with the previous version <code>{{.Previous}}</code>{{end}}</div>
{{if .Simulated}}<div class="sim" id="simulation">SIMULATION: these images come from the offline Replicate simulator (-simulate), not from a real model. Nothing here says anything about a real LoRA.</div>{{end}}

<h2>Verdict</h2>
<table class="summary">
<tr><td>new version</td><td><span class="verdict {{.New.Class}}" id="verdict">{{.New.Verdict}}</span> {{.New.Ratio}}</td></tr>
{{if .Previous}}<tr><td>previous version</td><td><span class="verdict {{.Prev.Class}}">{{.Prev.Verdict}}</span> {{.Prev.Ratio}}</td></tr>{{end}}
<tr><td>training photos</td><td>{{.Reference}}</td></tr>
<tr><td>why</td><td>{{.New.Reason}}</td></tr>
</table>
{{if .PreviousNote}}<p class="muted">{{.PreviousNote}}</p>{{end}}
{{if .Gate}}<div class="gate">Gate: {{.Gate}}</div>{{end}}
{{range .Warnings}}<div class="warn">{{.}}</div>{{end}}
<p class="muted">The texture index is the fine detail of the cheeks (band-pass of the face scaled to 256 px, divided by
brightness). It differs a lot between people, so only the ratio to the same person's training photos counts:
below {{.MinRatio}}× the photos' median reads as smoothed, plastic skin; when the edges are soft too, as blur.
It is a heuristic: lighting, make-up and angle move it.</p>

<h2>Training</h2>
{{if .Training.Params}}<p class="muted">Parameters: {{.Training.Source}}.</p>
<table class="params" id="params">
<tr><th>parameter</th><th>value</th><th>why</th></tr>
{{range .Training.Params}}<tr data-param="{{.Name}}"><td><code>{{.Name}}</code></td><td class="value">{{.Value}}{{if .Chosen}} <span class="override">(params chose {{.Chosen}})</span>{{end}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>
{{range .Training.Other}}<div class="muted">{{.}}</div>
{{end}}{{else}}<p class="muted" id="no-params">No training parameters: set params = params.NAME or training = train.NAME in this generate stage to list them here.</p>
{{end}}
<p id="photos">{{.Photos}}</p>
{{if .Rejected}}<table class="rejected" id="rejected">
<tr><th>rejected photo</th><th>why</th></tr>
{{range .Rejected}}<tr><td><code>{{.Path}}</code></td><td>{{.Reason}}</td></tr>
{{end}}</table>{{end}}

<h2>Training loss</h2>
{{if .Loss.Points}}
<svg id="loss" width="{{.Loss.W}}" height="{{.Loss.H}}" viewBox="0 0 {{.Loss.W}} {{.Loss.H}}" role="img" aria-label="training loss by step">
<rect x="{{.Loss.Left}}" y="{{.Loss.Top}}" width="{{.Loss.PlotW}}" height="{{.Loss.PlotH}}" fill="#fafafa" stroke="#ccc"/>
<path id="loss-curve" d="{{.Loss.Path}}" fill="none" stroke="#1565c0" stroke-width="1.6"/>
{{range .Loss.Thresholds}}<line class="threshold" id="threshold-{{.Name}}" data-loss="{{.Value}}" x1="{{$.Loss.Left}}" x2="{{$.Loss.Right}}" y1="{{.Y}}" y2="{{.Y}}" stroke="#c62828" stroke-width="1.2" stroke-dasharray="6 4"/>
<text class="threshold" x="{{$.Loss.Right}}" y="{{.Y}}" dx="-4" dy="-4" text-anchor="end">{{.Label}}</text>
{{end}}
<text x="{{.Loss.Left}}" y="{{.Loss.Bottom}}" dy="16">step {{.Loss.MinStep}}</text>
<text x="{{.Loss.Right}}" y="{{.Loss.Bottom}}" dy="16" text-anchor="end">step {{.Loss.MaxStep}}</text>
<text x="{{.Loss.Left}}" y="{{.Loss.Top}}" dx="-4" dy="4" text-anchor="end">{{.Loss.MaxLoss}}</text>
<text x="{{.Loss.Left}}" y="{{.Loss.Bottom}}" dx="-4" text-anchor="end">{{.Loss.MinLoss}}</text>
</svg>
<p class="muted">{{.Loss.Points}} logged steps; last loss {{.Loss.Final}}.{{range .Loss.Thresholds}} Dashed red: {{.Label}}.{{end}}</p>
{{else}}
<p class="muted" id="no-loss">No loss series: set gate = loss_gate.NAME in this generate stage to draw the training's loss curve and the gate's threshold.</p>
{{end}}
{{if .LossGate}}<p id="loss-gate">Loss gate: {{.LossGate}}</p>{{end}}

<h2>Cost</h2>
<table class="summary" id="cost">
<tr><td>test predictions, this run</td><td id="cost-predictions">{{.Cost.Predictions}}</td><td class="muted">{{.Cost.PredictionsBasis}}</td></tr>
<tr><td>training</td><td id="cost-training">{{.Cost.Training}}</td><td class="muted">{{.Cost.TrainingNote}}</td></tr>
{{if .Cost.Total}}<tr><td><strong>total</strong></td><td id="cost-total"><strong>{{.Cost.Total}}</strong></td><td></td></tr>{{end}}
</table>

<h2>Test images</h2>
<p class="muted">guidance_scale {{.Guidance}}, {{.Steps}} steps, lora_scale {{.LoraScale}}, PNG output; the same prompt and seed on each version. Contact sheet: <a href="{{.Sheet}}">{{.Sheet}}</a>.</p>
<table class="grid">
<tr><th></th>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><td><strong>prompt {{.Prompt}}, seed {{.Seed}}</strong><br><span class="muted">{{.Text}}</span></td>
{{range .Cells}}<td>{{if .Src}}<figure class="{{.Class}}"><img src="{{.Src}}" alt="{{.Alt}}" width="256"><figcaption>{{.Figure}}<br><span class="verdict {{.Class}}">{{.Verdict}}</span> {{.Reason}}</figcaption></figure>{{else}}<div class="missing">no image</div>{{end}}</td>
{{end}}</tr>
{{end}}</table>
</body>
</html>
`))

type judgementView struct {
	Verdict, Class, Ratio, Reason string
}

func viewJudgement(j skin.Judgement) judgementView {
	v := judgementView{Verdict: j.Verdict, Class: j.Verdict, Reason: j.Reason}
	if j.Ratio > 0 {
		v.Ratio = fmt.Sprintf("texture %.2f× the photos' median", j.Ratio)
	}
	return v
}

type lossView struct {
	Points                   int
	W, H                     int
	Left, Top, Right, Bottom float64
	PlotW, PlotH             float64
	Path                     string
	MinStep, MaxStep         int
	MinLoss, MaxLoss, Final  string
	Thresholds               []thresholdView
}

// thresholdView is one of the gate's bounds drawn across the chart at height Y.
type thresholdView struct {
	Name, Label, Value string
	Y                  string
}

type costView struct {
	Predictions, PredictionsBasis, Training, TrainingNote, Total string
}

type rejectedView struct{ Path, Reason string }

type cellView struct {
	Src, Alt, Figure, Verdict, Class, Reason string
}

type rowView struct {
	Prompt int
	Seed   int64
	Text   string
	Cells  []cellView
}

type reportView struct {
	Title, Version, Previous, PreviousNote, Reference, Gate, Sheet string
	Simulated                                                      bool
	New, Prev                                                      judgementView
	Warnings                                                       []string
	MinRatio, Guidance, LoraScale                                  string
	Steps                                                          int64
	Loss                                                           lossView
	LossGate, Photos                                               string
	Training                                                       trainingInfo
	Rejected                                                       []rejectedView
	Cost                                                           costView
	Columns                                                        []string
	Rows                                                           []rowView
}

// lossCurve lays out the loss series and the gate's thresholds in one vertical scale, so that a
// threshold outside the curve's range is still drawn at its true height.
func lossCurve(pts []lossPoint, g gateInfo) lossView {
	v := lossView{W: 640, H: 220, Left: 48, Top: 12, Right: 628, Bottom: 190}
	v.PlotW, v.PlotH = v.Right-v.Left, v.Bottom-v.Top
	if len(pts) == 0 {
		return v
	}
	v.Points = len(pts)
	minS, maxS := pts[0].Step, pts[len(pts)-1].Step
	minL, maxL := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		minL, maxL = math.Min(minL, p.Loss), math.Max(maxL, p.Loss)
	}
	for _, t := range g.thresholds() {
		minL, maxL = math.Min(minL, t.value), math.Max(maxL, t.value)
	}
	spanS, spanL := float64(maxS-minS), maxL-minL
	if spanS == 0 {
		spanS = 1
	}
	if spanL == 0 {
		spanL = 1
	}
	y := func(loss float64) float64 { return v.Bottom - (loss-minL)/spanL*v.PlotH }
	var b strings.Builder
	for i, p := range pts {
		x := v.Left + float64(p.Step-minS)/spanS*v.PlotW
		if len(pts) == 1 {
			x = v.Left + v.PlotW/2
		}
		cmd := "L"
		if i == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&b, "%s%.1f,%.1f ", cmd, x, y(p.Loss))
	}
	if len(pts) == 1 { // a single point still shows as a short tick
		fmt.Fprintf(&b, "l4,0")
	}
	v.Path = strings.TrimSpace(b.String())
	v.MinStep, v.MaxStep = minS, maxS
	v.MinLoss, v.MaxLoss = fmt.Sprintf("%.3f", minL), fmt.Sprintf("%.3f", maxL)
	v.Final = fmt.Sprintf("%.3f", pts[len(pts)-1].Loss)
	for _, t := range g.thresholds() {
		v.Thresholds = append(v.Thresholds, thresholdView{Name: t.name, Label: t.label, Value: fmt.Sprintf("%g", t.value), Y: fmt.Sprintf("%.1f", y(t.value))})
	}
	return v
}

type threshold struct {
	name, label string
	value       float64
}

// thresholds are the gate's bounds on the smoothed loss.
func (g gateInfo) thresholds() []threshold {
	var out []threshold
	if g.minLoss != nil {
		out = append(out, threshold{"min_loss", fmt.Sprintf("min_loss %g: below it the model is overfit", *g.minLoss), *g.minLoss})
	}
	if g.maxLoss != nil {
		out = append(out, threshold{"max_loss", fmt.Sprintf("max_loss %g: above it the model has not learned the subject", *g.maxLoss), *g.maxLoss})
	}
	return out
}

// verdict words the loss gate's result ("" when no gate was handed).
func (g gateInfo) verdict() string {
	switch {
	case !g.handed || g.passed == nil:
		return ""
	case *g.passed:
		return "passed: " + g.reason
	}
	return "refused: " + g.reason
}

// photosLine says how many photos trained the version and how many the check rejected.
func (o *outcome) photosLine() string {
	switch {
	case o.Ref.missing:
		return "Photos: no image check handed (set reference = image_check.NAME)."
	case !o.Ref.known || o.Ref.invalid != "":
		return "Photos: " + o.refReason() + "."
	}
	n := o.Ref.count
	if n < 0 {
		n = o.Ref.photos
	}
	return fmt.Sprintf("Photos: %d accepted (%d with a face large enough to score the skin), %d rejected.", n, len(o.Ref.texture), len(o.Ref.rejected))
}

// rejectedRows lists the rejected photos in path order.
func (o *outcome) rejectedRows() []rejectedView {
	out := make([]rejectedView, 0, len(o.Ref.rejected))
	for p, why := range o.Ref.rejected {
		out = append(out, rejectedView{p, why})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// costLines shows this run's cost of predictions and the training's, when handed.
func (o *outcome) costLines() costView {
	c := costView{Predictions: "not known", PredictionsBasis: "no price for the prediction hardware (replicate { prices })"}
	if o.Cost != nil {
		c.Predictions, c.PredictionsBasis = usd(o.Cost.USD), "actual: "+o.Cost.Basis
	}
	switch t := o.Training; {
	case t.HasCost:
		c.Training, c.TrainingNote = usd(t.CostUSD), "as the train stage reported it (cost_usd)"
	case t.Handed:
		c.Training, c.TrainingNote = "not known", "the train stage reports no cost_usd"
	default:
		c.Training, c.TrainingNote = "not known", "set training = train.NAME in this generate stage to show it"
	}
	if o.Cost != nil && o.Training.HasCost {
		c.Total = usd(o.Cost.USD + o.Training.CostUSD)
	}
	return c
}

func renderReport(o *outcome) ([]byte, error) {
	v := reportView{
		Title:        "Skin texture check: " + o.Address,
		Version:      o.Version,
		Previous:     o.Previous,
		PreviousNote: o.PreviousNote,
		Gate:         o.Gate,
		Sheet:        "contact_sheet.png",
		Simulated:    o.Simulated,
		New:          viewJudgement(o.New),
		Prev:         viewJudgement(o.Prev),
		Warnings:     o.Warnings,
		MinRatio:     fmt.Sprintf("%.2f", o.MinRatio),
		Guidance:     fmt.Sprintf("%g", o.Guidance),
		LoraScale:    fmt.Sprintf("%g", o.LoraScale),
		Steps:        o.Steps,
		Loss:         lossCurve(o.Losses, o.LossGate),
		LossGate:     o.LossGate.verdict(),
		Photos:       o.photosLine(),
		Training:     o.Training,
		Rejected:     o.rejectedRows(),
		Cost:         o.costLines(),
	}
	switch {
	case o.RefTexture > 0:
		v.Reference = fmt.Sprintf("median texture %.2f over %d scored of %d accepted photos", o.RefTexture, len(o.Ref.texture), o.Ref.photos)
	default:
		v.Reference = "not scored: " + o.refReason()
	}
	for _, side := range o.sides() {
		ref := o.Version
		if side == sidePrevious {
			ref = o.Previous
		}
		v.Columns = append(v.Columns, side+" ("+shortRef(ref)+")")
	}
	for _, r := range o.rows() {
		rv := rowView{Prompt: r.prompt + 1, Seed: r.seed}
		if r.prompt < len(o.Prompts) {
			rv.Text = o.Prompts[r.prompt]
		}
		for _, side := range o.sides() {
			s := o.image(side, r)
			if s == nil {
				rv.Cells = append(rv.Cells, cellView{})
				continue
			}
			c := cellView{
				Src:     filepath.Base(s.run.File),
				Alt:     fmt.Sprintf("%s version, prompt %d, seed %d", side, r.prompt+1, r.seed),
				Figure:  strings.Replace(figureLabel(s), "x)", "×)", 1),
				Verdict: s.j.Verdict,
				Class:   s.j.Verdict,
			}
			if s.j.Verdict == skin.Unscored {
				c.Reason = s.j.Reason
			}
			rv.Cells = append(rv.Cells, c)
		}
		v.Rows = append(v.Rows, rv)
	}
	var buf bytes.Buffer
	if err := reportTmpl.Execute(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeReport(path string, o *outcome) error {
	b, err := renderReport(o)
	if err != nil {
		return err
	}
	return writeAtomic(path, b)
}
