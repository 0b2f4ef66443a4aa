package imagecheck

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
)

func TestFaceWarnings(t *testing.T) {
	root := t.TempDir()
	for i := uint64(1); i <= 5; i++ {
		writeJPEG(t, filepath.Join(root, fmt.Sprintf("n%d.jpg", i)), portrait(i+80, imagechecktest.Options{FaceScale: 0.42}), 92)
	}
	writeJPEG(t, filepath.Join(root, "x_noface.jpg"), portrait(90, imagechecktest.Options{NoFace: true}), 92)
	writeJPEG(t, filepath.Join(root, "x_two.jpg"), portrait(91, imagechecktest.Options{Faces: 2, FaceScale: 0.5, Width: 1000, Height: 750}), 92)
	writeJPEG(t, filepath.Join(root, "x_tiny.jpg"), portrait(92, imagechecktest.Options{FaceScale: 0.16}), 92)
	writeJPEG(t, filepath.Join(root, "x_waxy.jpg"), portrait(93, imagechecktest.Options{FaceScale: 0.42, Texture: -1}), 92)
	cfg := testConfig(root)
	cfg.Dir = "faces"
	cfg.MinSharpness = 0 // a background without a face is smooth; blur is not what this test is about
	rep := mustCheck(t, cfg)
	if len(rep.Accepted) != 9 {
		t.Fatalf("face findings must not reject photos: rejected %v", rep.Rejected)
	}
	want := map[string]string{
		"faces/x_noface.jpg": "no face found",
		"faces/x_two.jpg":    "2 faces found: whose model is this?",
		"faces/x_tiny.jpg":   "too small to learn from",
		"faces/x_waxy.jpg":   "possibly beauty-filtered or heavily smoothed",
	}
	for path, part := range want {
		if !hasWarning(rep, path+":", part) {
			t.Errorf("%s: no warning %q; warnings: %q", path, part, rep.Warnings)
		}
	}
	for _, w := range rep.Warnings {
		if strings.HasPrefix(w, "faces/n") {
			t.Errorf("ordinary portrait warned: %q", w)
		}
	}
	// Stats carry the figures; -1 where nothing was scored.
	stats := Outputs(rep)["stats"].AsValueMap()
	n1 := stats["faces/n1.jpg"].AsValueMap()
	if f, _ := n1["faces"].AsBigFloat().Float64(); f != 1 {
		t.Errorf("n1 faces %v", n1["faces"])
	}
	if tex, _ := n1["texture"].AsBigFloat().Float64(); tex <= 0 {
		t.Errorf("n1 texture %v", n1["texture"])
	}
	none := stats["faces/x_noface.jpg"].AsValueMap()
	for _, k := range []string{"face_width", "texture", "face_sharpness"} {
		if v, _ := none[k].AsBigFloat().Float64(); v != -1 {
			t.Errorf("no-face %s = %v, want -1", k, v)
		}
	}
	if rep.MedianTexture <= 0 {
		t.Error("no median texture")
	}
}
