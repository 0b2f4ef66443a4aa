package train

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFiles(t *testing.T, dir string, files map[string]string) []string {
	t.Helper()
	var paths []string
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func TestZipIsReproducible(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	content := map[string]string{"b.jpg": "bbbb", "a.jpg": "aaaa", "c.png": "cccccc"}
	pa := writeFiles(t, a, content)
	pb := writeFiles(t, b, content)
	// Different timestamps and modes must not matter.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, p := range pb {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Reverse the list order for the second set.
	for i, j := 0, len(pb)-1; i < j; i, j = i+1, j-1 {
		pb[i], pb[j] = pb[j], pb[i]
	}
	fa, err := collectImages("", pa)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := collectImages("", pb)
	if err != nil {
		t.Fatal(err)
	}
	za, sa, err := buildZip(fa)
	if err != nil {
		t.Fatal(err)
	}
	zb, sb, err := buildZip(fb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(za, zb) || sa != sb {
		t.Fatalf("same photos gave different zips: %s vs %s", sa, sb)
	}
	da, _ := digestImages(fa)
	db, _ := digestImages(fb)
	if da != db || !strings.HasPrefix(da, "sha256:") {
		t.Fatalf("digests differ: %s vs %s", da, db)
	}

	zr, err := zip.NewReader(bytes.NewReader(za), int64(len(za)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if !f.Modified.Equal(zipEpoch) && f.Modified.UTC().Format("2006-01-02") != "1980-01-01" {
			t.Errorf("%s: timestamp %v, want the fixed epoch", f.Name, f.Modified)
		}
		if f.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v", f.Name, f.Mode())
		}
		rc, _ := f.Open()
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		if buf.String() != content[f.Name] {
			t.Errorf("%s: content %q", f.Name, buf.String())
		}
	}
	if strings.Join(names, ",") != "a.jpg,b.jpg,c.png" {
		t.Fatalf("entries %v, want sorted names", names)
	}
}

func TestDigestChangesWithContentAndName(t *testing.T) {
	dir := t.TempDir()
	p := writeFiles(t, dir, map[string]string{"a.jpg": "one", "b.jpg": "two"})
	files, _ := collectImages("", p)
	d1, _ := digestImages(files)
	os.WriteFile(filepath.Join(dir, "b.jpg"), []byte("tw0"), 0o600)
	d2, _ := digestImages(files)
	if d1 == d2 {
		t.Fatal("changed content kept the digest")
	}
	os.Rename(filepath.Join(dir, "b.jpg"), filepath.Join(dir, "c.jpg"))
	files2, _ := collectImages("", []string{filepath.Join(dir, "a.jpg"), filepath.Join(dir, "c.jpg")})
	d3, _ := digestImages(files2)
	if d3 == d2 {
		t.Fatal("renamed file kept the digest")
	}
}

func TestCollectImagesErrors(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	pa := writeFiles(t, a, map[string]string{"x.jpg": "1"})
	pb := writeFiles(t, b, map[string]string{"x.jpg": "2"})
	if _, err := collectImages("", append(pa, pb...)); err == nil || !strings.Contains(err.Error(), `"x.jpg"`) {
		t.Fatalf("same base name in two dirs: err = %v", err)
	}
	if _, err := collectImages("", nil); err == nil || !strings.Contains(err.Error(), "images is empty") {
		t.Fatalf("empty list: err = %v", err)
	}
	// Relative paths resolve against the config's directory; the same file twice is one entry.
	files, err := collectImages(a, []string{"x.jpg", "x.jpg"})
	if err != nil || len(files) != 1 || files[0].Path != filepath.Join(a, "x.jpg") {
		t.Fatalf("files %v err %v", files, err)
	}
	missing, _ := collectImages(a, []string{"gone.jpg"})
	if _, err := digestImages(missing); err == nil || !strings.Contains(err.Error(), "gone.jpg") {
		t.Fatalf("missing file: err = %v", err)
	}
}
