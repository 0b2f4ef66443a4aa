package photo

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzProbe: headers of any content never panic, and a HEIF header never claims a size it did
// not read from an ispe box.
func FuzzProbe(f *testing.F) {
	for _, name := range []string{"portrait.heic", "portrait.avif", "sideways.heic", "p3.heic", "portrait.jpg"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[:min(len(data), 2048)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Probe(bytes.NewReader(data))
		if err == nil && (m.Format == HEIC || m.Format == AVIF) && (m.Width <= 0 || m.Height <= 0) {
			t.Fatalf("%+v without an error", m)
		}
		_, _ = Metadata(data)
	})
}
