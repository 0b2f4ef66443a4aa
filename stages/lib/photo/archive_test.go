package photo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

func TestArchivePlansExactlyWhatItWrites(t *testing.T) {
	var originals []Original
	for _, f := range []string{"portrait.jpg", "portrait.heic", "sideways.avif"} {
		data := readTestdata(t, f)
		sum := sha256.Sum256(data)
		originals = append(originals, Original{Name: f, SHA: hex.EncodeToString(sum[:]), Size: int64(len(data)),
			Read: func(context.Context) ([]byte, error) { return data, nil }})
	}
	copies, _ := OpenDiskCache(t.TempDir(), DefaultCopiesBytes)
	a, err := (&Preparer{Copies: copies}).Archive(context.Background(), originals)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^uploads 3 photos, \d+\.\d MB after preparing \(originals 0\.\d MB\)$`).MatchString(a.Summary()) {
		t.Errorf("summary %q", a.Summary())
	}
	var buf bytes.Buffer
	if err := a.WriteTo(context.Background(), &buf); err != nil || int64(buf.Len()) != a.Size || a.OverLimit() != "" {
		t.Fatalf("wrote %d bytes of a planned %d (%v); over limit %q", buf.Len(), a.Size, err, a.OverLimit())
	}
	big := &Archive{Entries: make([]ZipEntry, 19), Size: 110e6, MaxSide: 2048}
	if r := big.OverLimit(); !strings.Contains(r, "110 MB") || !strings.Contains(r, "100 MiB") || !strings.Contains(r, "lower max_side") {
		t.Errorf("over the limit: %q", r)
	}
}
