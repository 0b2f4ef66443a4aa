package photo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDiskCacheEvictsOldestBeyondItsBound(t *testing.T) {
	c, err := OpenDiskCache(t.TempDir(), 3000)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c.clock = func() time.Time { now = now.Add(time.Second); return now }
	for _, k := range []string{"a", "b", "c"} {
		if err := c.Put(k, bytes.Repeat([]byte(k), 1000)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := c.Get("a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	if err := c.Put("d", bytes.Repeat([]byte("d"), 1000)); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok, _ := c.Get(k); ok != want {
			t.Errorf("%s cached %v, want %v", k, ok, want)
		}
	}
	if c.Bytes() > 3000 {
		t.Errorf("holds %d bytes, bound 3000", c.Bytes())
	}
	// A second process (a fresh index of the same directory) sees the same files and bound.
	fresh := &DiskCache{dir: c.dir, max: 3000, files: map[string]*cached{}, clock: time.Now}
	if fresh.Bytes() != 3000 {
		t.Errorf("fresh index: %d bytes", fresh.Bytes())
	}
	if c2, _ := OpenDiskCache(c.dir, 10); c2 != c {
		t.Error("two caches of one directory in one process do not share their index")
	}
}

func TestDiskCacheNeverHalfWrites(t *testing.T) {
	dir := t.TempDir()
	c, _ := OpenDiskCache(dir, 1<<20)
	if _, _, err := c.Ingest(strings.NewReader(strings.Repeat("x", 5000)), 4096); err == nil {
		t.Fatal("an object over the limit was cached")
	}
	if _, _, err := c.Ingest(&failingReader{}, 1<<20); err == nil {
		t.Fatal("a failed read was cached")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	key, n, err := c.Ingest(strings.NewReader("hello"), 1<<20)
	if err != nil || n != 5 || key != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("ingest: %s %d %v", key, n, err)
	}
	if err := c.Put("../escape", nil); err == nil {
		t.Error("a key with a path was accepted")
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 0 {
		return 0, errors.New("connection reset")
	}
	f.n++
	return copy(p, "partial"), nil
}

// memFigures is a FigureStore in memory, standing for the shared pipeline.Cache.
type memFigures struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (f *memFigures) Get(_ context.Context, k string) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.m[k]
	return v, ok, nil
}

func (f *memFigures) Put(_ context.Context, k string, v []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]byte{}
	}
	f.m[k] = v
	return nil
}

// TestPreparerSharesSizesNotPhotos: a runner that prepared a photo leaves its size in the shared
// figures and its copy on its own disk; another runner plans the zip's size without decoding.
func TestPreparerSharesSizesNotPhotos(t *testing.T) {
	figs := &memFigures{}
	data := readTestdata(t, "portrait.jpg")
	orig := func(context.Context) ([]byte, error) { return data, nil }
	c1, _ := OpenDiskCache(t.TempDir(), DefaultCopiesBytes)
	a := &Preparer{Copies: c1, Sizes: figs}
	n, err := a.Size(context.Background(), "cafe", orig)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range figs.m {
		if len(v) > 64 || !strings.HasPrefix(k, "photo/prepared/cafe-2048-v") {
			t.Errorf("shared figure %s = %d bytes: a photo in the shared store?", k, len(v))
		}
	}
	c2, _ := OpenDiskCache(t.TempDir(), DefaultCopiesBytes)
	b := &Preparer{Copies: c2, Sizes: figs}
	before := Decodes()
	if m, err := b.Size(context.Background(), "cafe", orig); err != nil || m != n || Decodes() != before {
		t.Errorf("second runner: size %d (want %d), decoded %d", m, n, Decodes()-before)
	}
	// The copy itself is made (and kept locally) when the zip is written; a different max side is
	// another copy.
	e, err := b.Entry(context.Background(), "a.jpg", "cafe", orig)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Bytes(context.Background())
	if err != nil || int64(len(got)) != n {
		t.Fatalf("bytes %d, size %d, %v", len(got), n, err)
	}
	if c2.Bytes() != n {
		t.Errorf("local copies hold %d bytes", c2.Bytes())
	}
	small := &Preparer{MaxSide: 100, Copies: c2, Sizes: figs}
	if m, _ := small.Size(context.Background(), "cafe", orig); m >= n {
		t.Errorf("a 100 px copy is %d bytes, the 2048 px one %d", m, n)
	}
}
