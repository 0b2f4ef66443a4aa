package generate

import (
	"bytes"
	"context"
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

// The report opens in a real browser: every image loads, the loss curve is drawn, and the page
// writes nothing to the console (no errors, no exceptions).
func TestReportInBrowser(t *testing.T) {
	t.Parallel()
	browser, why := chromiumPath()
	if browser == "" {
		t.Skip("headless Chromium not available: " + why)
	}
	h := newHarness(t, 1)
	version := h.train(natural)
	res, err := h.apply(h.request(map[string]cty.Value{"version": cty.StringVal(version), "prompts": strList("a photo of TOK"),
		"seeds": numList(1, 2, 3), "reference": h.ref}, nil, &recorder{}))
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
