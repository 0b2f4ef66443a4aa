package photosource

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/lib/photosource/s3test"
)

// figures is a FigureStore in memory: the shared pipeline.Cache of a batch's runners.
type figures struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (f *figures) Get(_ context.Context, k string) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.m[k]
	return v, ok, nil
}

func (f *figures) Put(_ context.Context, k string, v []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]byte{}
	}
	f.m[k] = v
	return nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readAll(t *testing.T, d *Dir, o Object) ([]byte, string) {
	t.Helper()
	f, sum, err := d.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b, sum
}

func TestS3PrefixListsFetchesOnceAndNamesByURL(t *testing.T) {
	s3 := s3test.Start(t, "photos")
	a, b := []byte("photo a"), []byte("photo b, longer")
	s3.Put(t, "users/ana/a.jpg", a)
	s3.Put(t, "users/ana/b.HEIC", b)
	s3.Put(t, "users/ana/old/c.jpg", []byte("in a sub-prefix: not listed"))
	s3.Put(t, "users/anabel/d.jpg", []byte("another user's"))
	figs := &figures{}
	url := "s3://photos/users/ana/" + s3.Query
	d, err := Open(context.Background(), url, Options{CacheDir: t.TempDir(), Figures: figs})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	objs, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Name != "a.jpg" || objs[1].Name != "b.HEIC" || objs[0].Size != int64(len(a)) {
		t.Fatalf("listed %+v", objs)
	}
	if want := "s3://photos/users/ana/a.jpg" + s3.Query; objs[0].Ref != want {
		t.Errorf("ref %s, want %s", objs[0].Ref, want)
	}
	got, sum := readAll(t, d, objs[0])
	if !bytes.Equal(got, a) || sum != sha(a) {
		t.Fatalf("read %q %s", got, sum)
	}
	if dg, err := d.Digest(context.Background(), objs[0]); err != nil || dg != sha(a) || s3.Gets() != 1 {
		t.Errorf("digest of a fetched object: %s %v, %d GETs", dg, err, s3.Gets())
	}
	readAll(t, d, objs[0])
	if n := s3.Gets(); n != 1 {
		t.Errorf("an unchanged object was read %d times", n)
	}

	// Another runner (its own local cache, the same shared figures) knows the digests without a
	// download, and fetches the bytes only when it needs them.
	other, err := Open(context.Background(), url, Options{CacheDir: t.TempDir(), Figures: figs})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	objs2, _ := other.List(context.Background())
	if dg, err := other.Digest(context.Background(), objs2[0]); err != nil || dg != sha(a) || s3.Gets() != 1 {
		t.Errorf("second runner: %s %v, %d GETs", dg, err, s3.Gets())
	}
	for k, v := range figs.m {
		if !strings.HasPrefix(k, "photosource/") || len(v) != 64 {
			t.Errorf("shared figure %s = %q: only digests belong there", k, v)
		}
	}

	// A replaced object is a new version: read again, new digest.
	s3.Put(t, "users/ana/a.jpg", []byte("photo a, edited"))
	objs, _ = d.List(context.Background())
	if _, sum := readAll(t, d, objs[0]); sum != sha([]byte("photo a, edited")) {
		t.Errorf("edited object: digest %s", sum)
	}
}

func TestS3ErrorsNameTheURL(t *testing.T) {
	s3 := s3test.Start(t, "photos")
	s3.Put(t, "users/ana/a.jpg", []byte("a"))
	s3.Put(t, "users/ana/secret.jpg", []byte("s"))
	s3.Deny("users/ana/secret.jpg")
	ctx := context.Background()
	open := func(u string) *Dir {
		d, err := Open(ctx, u+s3.Query, Options{CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	if _, err := open("s3://nosuchbucket/users/ana/").List(ctx); err == nil || !strings.Contains(err.Error(), "s3://nosuchbucket/users/ana/") || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket: %v", err)
	}
	if _, err := open("s3://photos/users/bob/").List(ctx); err == nil || !strings.Contains(err.Error(), "s3://photos/users/bob/") || !strings.Contains(err.Error(), "no objects") {
		t.Errorf("empty prefix: %v", err)
	}
	d := open("s3://photos/users/ana/")
	objs, err := d.List(ctx)
	if err != nil || len(objs) != 2 {
		t.Fatal(objs, err)
	}
	_, _, err = d.Open(ctx, objs[1])
	if err == nil || !strings.Contains(err.Error(), "s3://photos/users/ana/secret.jpg") || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("denied read: %v", err)
	}
	// Nothing half-cached: the cache holds the readable object only.
	readAll(t, d, objs[0])
	ents, _ := os.ReadDir(d.local.Dir())
	if len(ents) != 1 || ents[0].Name() != sha([]byte("a")) {
		t.Errorf("cache holds %v", ents)
	}
}

func TestFileURLAndLocalDir(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a.jpg"), []byte("aaa"), 0o644)
	os.Mkdir(filepath.Join(root, "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "sub", "b.jpg"), []byte("bbb"), 0o644)
	ctx := context.Background()
	u := "file://" + filepath.ToSlash(root) + "/"
	d, err := Open(ctx, u, Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	objs, err := d.List(ctx)
	if err != nil || len(objs) != 1 || objs[0].Ref != u+"a.jpg" {
		t.Fatalf("file URL: %+v %v", objs, err)
	}
	if b, sum := readAll(t, d, objs[0]); string(b) != "aaa" || sum != sha([]byte("aaa")) {
		t.Errorf("file URL read %q", b)
	}
	if _, err := Open(ctx, "file://"+filepath.ToSlash(root)+"/missing/", Options{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file URL dir: %v", err)
	}

	// A plain path: relative to BaseDir, reported as written, digests remembered by file version.
	cache := t.TempDir()
	missing, err := Open(ctx, "photos", Options{BaseDir: filepath.Dir(root), CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := missing.List(ctx); err == nil || !strings.Contains(err.Error(), `dir "photos"`) {
		t.Errorf("missing local dir: %v", err)
	}
	l, err := Open(ctx, filepath.Base(root), Options{BaseDir: filepath.Dir(root), CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	objs, err = l.List(ctx)
	// The subdirectory is listed, with why it is no photo, for a check to reject by name.
	if err != nil || len(objs) != 2 || objs[0].Ref != filepath.Base(root)+"/a.jpg" || objs[0].Problem != "" || objs[1].Problem == "" {
		t.Fatalf("local: %+v %v", objs, err)
	}
	if _, ok := l.Known(ctx, objs[0]); ok {
		t.Fatal("digest known before reading")
	}
	readAll(t, l, objs[0])
	if dg, ok := l.Known(ctx, objs[0]); !ok || dg != sha([]byte("aaa")) {
		t.Errorf("digest not remembered: %s", dg)
	}
	if !IsURL("s3://b/p/") || !IsURL("file:///x") || IsURL("data/ana") || IsURL("C:/photos") || IsURL("./a://b") {
		t.Error("IsURL")
	}
}

func TestReadRefReadsWhatImageCheckNamed(t *testing.T) {
	s3 := s3test.Start(t, "photos")
	s3.Put(t, "users/ana/a.jpg", []byte("photo a"))
	opts := Options{CacheDir: t.TempDir(), Figures: &figures{}}
	d, err := Open(context.Background(), "s3://photos/users/ana/"+s3.Query, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	objs, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, d, objs[0])
	gets := s3.Gets()
	data, sum, err := ReadRef(context.Background(), objs[0].Ref, opts)
	if err != nil || string(data) != "photo a" || sum != sha(data) || s3.Gets() != gets {
		t.Errorf("bucket ref: %q %s %v, %d more reads", data, sum, err, s3.Gets()-gets)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "data", "ana"), 0o755)
	os.WriteFile(filepath.Join(root, "data", "ana", "b.jpg"), []byte("photo b"), 0o644)
	if data, _, err := ReadRef(context.Background(), "data/ana/b.jpg", Options{BaseDir: root, CacheDir: t.TempDir()}); err != nil || string(data) != "photo b" {
		t.Errorf("local ref: %q %v", data, err)
	}
	if _, _, err := ReadRef(context.Background(), "s3://photos/users/ana/gone.jpg"+s3.Query, opts); err == nil || !strings.Contains(err.Error(), "gone.jpg") {
		t.Errorf("a missing object: %v", err)
	}
}
