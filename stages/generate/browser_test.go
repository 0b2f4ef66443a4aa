package generate

import (
	"bytes"
	"context"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/zclconf/go-cty/cty"
)

// chromiumPath finds a headless Chromium: $PIPELINE_CHROMIUM, else the path printed by the
// project's shared/tools/chromium (found by walking up from the test's directory: ../shared/tools
// relative to the repository root in CI). It returns "" and why when there is none.
func chromiumPath() (string, string) {
	if p := os.Getenv("PIPELINE_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", "PIPELINE_CHROMIUM=" + p + ": " + err.Error()
		}
		return p, ""
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err.Error()
	}
	for {
		tool := filepath.Join(dir, "shared", "tools", "chromium")
		if st, err := os.Stat(tool); err == nil && !st.IsDir() {
			var stderr bytes.Buffer
			cmd := exec.Command(tool)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return "", tool + " failed: " + err.Error() + ": " + strings.TrimSpace(stderr.String())
			}
			p := strings.TrimSpace(string(out))
			if i := strings.LastIndexByte(p, '\n'); i >= 0 {
				p = strings.TrimSpace(p[i+1:])
			}
			if _, err := os.Stat(p); err != nil {
				return "", tool + " printed " + p + ": " + err.Error()
			}
			return p, ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "no browser: set PIPELINE_CHROMIUM or provide shared/tools/chromium above the repository"
		}
		dir = parent
	}
}

// The report opens in a real browser: every image loads, the loss curve is drawn with the gate's
// thresholds at their true height, the training's parameters and reasons, the photos, the
// rejections and the cost are on the page, and it writes nothing to the console (no errors, no
// exceptions).
func TestReportInBrowser(t *testing.T) {
	t.Parallel()
	browser, why := chromiumPath()
	if browser == "" {
		t.Skip("headless Chromium not available: " + why)
	}
	h := newHarness(t, 1)
	version := h.train(natural)
	res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": withRejections(h.ref), "gate": gateWithMax(1.0),
		"params": paramsVal(), "training": trainingVal(version, cty.NumberFloatVal(1.83))}, nil, &recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(h.dir, str(res.Outputs["report"]))
	pageURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(report)}).String()

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser (no timeout on this first call)
		t.Fatalf("starting %s: %v", browser, err)
	}
	tctx, cancelT := context.WithTimeout(ctx, 45*time.Second)
	defer cancelT()

	// Collect console messages from before navigation until a marker the test writes last: the
	// iterator keeps order, so everything the page wrote has been seen when the marker arrives.
	const marker = "report-test-done"
	var mu sync.Mutex
	var messages []string
	done := make(chan struct{})
	lctx, stopListening := context.WithCancel(tctx)
	defer stopListening()
	console := chromedp.Console(lctx)
	go func() {
		defer close(done)
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Text == marker {
				return
			}
			mu.Lock()
			messages = append(messages, m.String())
			mu.Unlock()
		}
	}()

	if err := chromedp.Do(tctx, chromedp.Navigate(pageURL), chromedp.WaitReady("body")); err != nil {
		t.Fatalf("opening %s: %v", pageURL, err)
	}
	// Wait for every image to finish (load or error), then read their natural widths.
	widths, err := chromedp.Run(tctx, chromedp.Evaluate[[]int](`Promise.all([...document.images].map(i =>
		i.complete ? null : new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })
	)).then(() => [...document.images].map(i => i.naturalWidth))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if len(widths) != 6 {
		t.Errorf("%d <img> in the report, want 6 (3 seeds × new and previous)", len(widths))
	}
	for i, w := range widths {
		if w <= 0 {
			t.Errorf("image %d did not load (naturalWidth %d)", i, w)
		}
	}
	curve, err := chromedp.Run(tctx, chromedp.Evaluate[map[string]float64](`(() => {
		const p = document.getElementById('loss-curve');
		if (!p) return {points: 0, length: 0, width: 0};
		const b = p.getBBox();
		return {points: (p.getAttribute('d').match(/[ML]/g) || []).length, length: p.getTotalLength(), width: b.width, height: b.height};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if curve["points"] < 10 || curve["length"] < 100 || curve["width"] < 300 || curve["height"] < 50 {
		t.Errorf("loss curve not drawn: %v", curve)
	}
	verdict, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.getElementById('verdict').textContent`))
	if err != nil || verdict != "natural" {
		t.Errorf("verdict on the page %q (%v)", verdict, err)
	}
	checkThresholds(t, tctx)
	checkTrainingSection(t, tctx, res.Cost.USD)
	if _, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`console.info("`+marker+`"), true`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-tctx.Done():
		t.Fatal("console marker never arrived")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range messages {
		t.Errorf("console: %s", m)
	}
}

// svgLine is a threshold as the browser laid it out.
type svgLine struct {
	Y, Y2, X, W, Loss float64
	Stroke            string
	Found             bool
}

// chart is the loss curve's ends in the browser's geometry and the gate's threshold lines.
type chart struct {
	Y0, YEnd, X0, XEnd, PlotTop, PlotBottom float64
	Min, Max                                svgLine
}

// checkThresholds holds each threshold's drawn height to the curve's own scale: between the
// curve's first point (step 0, loss 0.85) and last (step 1000, loss 0.3), loss maps linearly to y,
// so min_loss 0.2 must lie below the last point by 0.1/0.55 of their distance, max_loss 1.0 above
// the first by 0.15/0.55 — wherever the axis ends are.
func checkThresholds(t *testing.T, ctx context.Context) {
	t.Helper()
	c, err := chromedp.Run(ctx, chromedp.Evaluate[chart](`(() => {
		const p = document.getElementById('loss-curve');
		const a = p.getPointAtLength(0), b = p.getPointAtLength(p.getTotalLength());
		const line = id => {
			const l = document.getElementById(id);
			if (!l) return {Found: false};
			const bb = l.getBBox();
			return {Found: true, Y: +l.getAttribute('y1'), Y2: +l.getAttribute('y2'), X: bb.x, W: bb.width, Loss: +l.dataset.loss, Stroke: getComputedStyle(l).stroke};
		};
		const r = document.querySelector('#loss rect').getBBox();
		return {Y0: a.y, YEnd: b.y, X0: a.x, XEnd: b.x, PlotTop: r.y, PlotBottom: r.y + r.height,
			Min: line('threshold-min_loss'), Max: line('threshold-max_loss')};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	const first, last = 0.85, 0.3 // gateVal's curve
	want := func(loss float64) float64 { return c.YEnd + (loss-last)/(first-last)*(c.Y0-c.YEnd) }
	for name, l := range map[string]struct {
		line svgLine
		loss float64
	}{"min_loss": {c.Min, 0.2}, "max_loss": {c.Max, 1.0}} {
		switch {
		case !l.line.Found:
			t.Errorf("%s: no threshold line", name)
		case l.line.Loss != l.loss || l.line.Y != l.line.Y2:
			t.Errorf("%s: line %+v is not a horizontal line at %g", name, l.line, l.loss)
		case math.Abs(l.line.Y-want(l.loss)) > 0.5:
			t.Errorf("%s %g drawn at y %.1f, want %.1f (curve from y %.1f at %g to %.1f at %g)", name, l.loss, l.line.Y, want(l.loss), c.Y0, first, c.YEnd, last)
		case l.line.Y < c.PlotTop-0.5 || l.line.Y > c.PlotBottom+0.5:
			t.Errorf("%s at y %.1f is outside the plot %.1f–%.1f", name, l.line.Y, c.PlotTop, c.PlotBottom)
		case math.Abs(l.line.X-c.X0) > 0.5 || math.Abs(l.line.X+l.line.W-c.XEnd) > 0.5 || l.line.Stroke == "none":
			t.Errorf("%s does not span the curve's steps %.1f–%.1f: %+v", name, c.X0, c.XEnd, l.line)
		}
	}
	if !(c.Min.Y > c.YEnd && c.Max.Y < c.Y0) {
		t.Errorf("min_loss (y %.1f) must be under the curve's end (y %.1f), max_loss (y %.1f) over its start (y %.1f)", c.Min.Y, c.YEnd, c.Max.Y, c.Y0)
	}
}

type paramRow struct{ Name, Value, Why string }

type trainingSection struct {
	Params                              []paramRow
	Other, Photos, Rejected, Body, Gate string
	Predictions, Training, Total        string
	Visible                             bool
}

// checkTrainingSection reads the parameters, photos and cost as a person sees them.
func checkTrainingSection(t *testing.T, ctx context.Context, predictionsUSD float64) {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[trainingSection](`(() => {
		const text = id => (document.getElementById(id) || {}).textContent || '';
		const rows = [...document.querySelectorAll('#params tr[data-param]')];
		return {
			Params: rows.map(tr => ({Name: tr.dataset.param, Value: tr.querySelector('.value').textContent, Why: tr.cells[2].textContent})),
			Visible: rows.length > 0 && rows.every(tr => tr.getBoundingClientRect().height > 0),
			Other: [...document.querySelectorAll('#params ~ div.muted')].map(d => d.textContent).join('\n'),
			Photos: text('photos'), Rejected: text('rejected'), Gate: text('loss-gate'),
			Predictions: text('cost-predictions'), Training: text('cost-training'), Total: text('cost-total'),
			Body: document.body.innerText,
		};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]paramRow{}
	for _, r := range s.Params {
		rows[r.Name] = r
	}
	if !s.Visible || len(rows) != 5 {
		t.Errorf("parameter rows %+v (visible %v): want the 5 inputs sent", s.Params, s.Visible)
	}
	for name, want := range map[string][2]string{
		"lora_rank":     {"16", "rank 16, the research's default"},
		"steps":         {"1000 (params chose 1200)", "1000–1200 steps"},
		"learning_rate": {"0.0004", "4e-4 for a small set"},
		"trigger_word":  {"TOK", ""},
		"hf_token":      {"(sensitive)", ""},
	} {
		if r := rows[name]; r.Value != want[0] || !strings.Contains(r.Why, want[1]) {
			t.Errorf("parameter %s: %+v, want value %q and a reason with %q", name, r, want[0], want[1])
		}
	}
	if strings.Contains(s.Body, "hf_abc123secret") {
		t.Error("the report shows the training's hf_token")
	}
	if !strings.Contains(s.Other, "num_repeats: built-in: 5–10 repeats; not passed") || !strings.Contains(s.Other, "passes per photo = 1200 steps") {
		t.Errorf("reasons of values not sent: %q", s.Other)
	}
	if !strings.Contains(s.Photos, "4 accepted") || !strings.Contains(s.Photos, "1 rejected") ||
		!strings.Contains(s.Rejected, "photos/05-blurry.jpg") || !strings.Contains(s.Rejected, "blurred: sharpness 12") {
		t.Errorf("photos %q, rejected %q", s.Photos, s.Rejected)
	}
	if !strings.Contains(s.Gate, "passed") {
		t.Errorf("loss gate %q", s.Gate)
	}
	if s.Predictions != usd(predictionsUSD) || s.Training != "$1.83" || s.Total != usd(predictionsUSD+1.83) {
		t.Errorf("cost: predictions %q (want %s), training %q, total %q", s.Predictions, usd(predictionsUSD), s.Training, s.Total)
	}
}
