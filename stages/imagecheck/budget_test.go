package imagecheck

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"testing"

	"golang.org/x/sync/semaphore"
)

// Decodes hold at most the byte budget together: photos each over half of it are decoded one at
// a time, whatever the number of decode slots, so a set of large PNGs costs one large decode's
// memory, not two (a 50 MP 16-bit PNG is 400 MB decoded).
func TestLargeDecodesTakeTurnsWithinTheByteBudget(t *testing.T) {
	root := t.TempDir()
	var weight int64
	for i := 0; i < 4; i++ {
		img := image.NewRGBA64(image.Rect(0, 0, 600, 400))
		for y := 0; y < 400; y++ {
			for x := 0; x < 600; x++ {
				img.SetRGBA64(x, y, color.RGBA64{uint16(x * 100), uint16(y * 150), uint16(i * 9000), 0xffff})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, fmt.Sprintf("big%d.png", i)), buf.Bytes())
		weight = max(weight, 600*400*8+int64(buf.Len()))
	}
	limit := weight + weight/2 // room for one, never two
	oldSem, oldLimit := decodeBytes, decodeLimit
	decodeBytes, decodeLimit = semaphore.NewWeighted(limit), limit
	t.Cleanup(func() { decodeBytes, decodeLimit = oldSem, oldLimit })
	peakHeld.Store(0)
	before := Decodes()

	cfg := testConfig(root)
	cfg.MinCount = 1
	mustCheck(t, cfg)
	if n := Decodes() - before; n != 4 {
		t.Fatalf("%d decodes, want 4", n)
	}
	if p := peakHeld.Load(); p > weight || p == 0 {
		t.Errorf("decodes held %d bytes at once, want one photo's at most (%d): two large decodes overlapped", p, weight)
	}
}
