package replicatetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/pipeline-dev/pipeline/stages/lib/skin"
)

// TestSimulatedSkinIsWhatTheGuardMeasures renders the public-domain portraits the skin package
// tests with (stages/lib/skin/testdata) the way predictions do and scores them with skin.Measure, the
// figure the generate stage judges: natural versions keep their texture, an overfit version and
// guidance 5 fall under the 0.65 ratio as plastic (not blur: edges stay).
func TestSimulatedSkinIsWhatTheGuardMeasures(t *testing.T) {
	for _, name := range []string{"astronaut.jpg", "grace_hopper.jpg"} {
		src, err := imaging.Open(filepath.Join("..", "..", "skin", "testdata", name))
		if err != nil {
			if os.IsNotExist(err) {
				t.Fatalf("%s: the skin package's test portraits moved: %v", name, err)
			}
			t.Fatal(err)
		}
		src = render(src, 1, 0) // filled to OutputSize² once; render clones it below
		ref := skin.Measure(src)
		if !ref.Scored {
			t.Fatalf("%s: reference not scored: %s", name, ref.Reason)
		}
		for _, c := range []struct {
			name         string
			input        map[string]any
			guidance     float64
			minTx, maxTx float64
		}{
			{"natural at 3.5", map[string]any{"lora_rank": 16.0, "steps": 1000.0}, 3.5, 0.95, 1.05},
			{"natural at 5", map[string]any{}, 5, 0, 0.65},
			{"rank 32 at 3.5", map[string]any{"lora_rank": 32.0}, 3.5, 0, 0.65},
		} {
			m := skin.Measure(render(src, 1, Smoothing(c.input, c.guidance, 1)))
			if !m.Scored {
				t.Errorf("%s %s: not scored: %s", name, c.name, m.Reason)
				continue
			}
			tx, sh := m.Texture/ref.Texture, m.Sharpness/ref.Sharpness
			t.Logf("%s %-20s texture ratio %.2f, sharpness ratio %.2f", name, c.name, tx, sh)
			if tx < c.minTx || tx > c.maxTx {
				t.Errorf("%s %s: texture ratio %.2f, want %.2f..%.2f", name, c.name, tx, c.minTx, c.maxTx)
			}
			if sh < skin.BlurSharpnessRatio+0.05 {
				t.Errorf("%s %s: sharpness ratio %.2f: smoothing must not look like blur", name, c.name, sh)
			}
		}
	}
}
