package train

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// writePhotos writes test photos (name → seed) and returns their paths.
func writePhotos(t *testing.T, dir string, seeds map[string]int) []string {
	t.Helper()
	var paths []string
	for name, seed := range seeds {
		p := filepath.Join(dir, name)
		writePhoto(t, p, seed)
		paths = append(paths, p)
	}
	return paths
}

// zipOf plans and writes the zip of the photos at paths, as apply streams it.
func zipOf(t *testing.T, env *pipeline.Env, paths []string) (data []byte, digest string, a *photo.Archive) {
	t.Helper()
	files, err := collectImages("", paths)
	if err != nil {
		t.Fatal(err)
	}
	set := newPhotoSet(env)
	defer set.Close()
	originals, err := set.originals(context.Background(), files)
	if err != nil {
		t.Fatal(err)
	}
	if digest, err = digestImages(originals); err != nil {
		t.Fatal(err)
	}
	if a, err = planArchive(context.Background(), env, photo.DefaultMaxSide, originals); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.WriteTo(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != a.Size {
		t.Fatalf("wrote %d bytes, planned %d", buf.Len(), a.Size)
	}
	return buf.Bytes(), digest, a
}

// The zip holds prepared copies, the same bytes whatever the files' timestamps, modes, list
// order or cache, named NAME.jpg (a-2.jpg on a clash), with no metadata left.
func TestZipOfPreparedCopiesIsReproducibleAndPrivate(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	seeds := map[string]int{"b.jpg": 1, "a.jpg": 2, "a.png": 3}
	pa := writePhotos(t, a, seeds)
	pb := writePhotos(t, b, seeds)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, p := range pb {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, j := 0, len(pb)-1; i < j; i, j = i+1, j-1 {
		pb[i], pb[j] = pb[j], pb[i]
	}
	za, da, _ := zipOf(t, &pipeline.Env{CacheDir: t.TempDir()}, pa)
	zb, db, _ := zipOf(t, &pipeline.Env{CacheDir: t.TempDir()}, pb)
	if !bytes.Equal(za, zb) {
		t.Fatal("same photos gave different zips")
	}
	if da != db || !strings.HasPrefix(da, "sha256:") {
		t.Fatalf("digests differ: %s vs %s", da, db)
	}
	// Made again from the cached copies: the same bytes.
	env := &pipeline.Env{CacheDir: t.TempDir()}
	first, _, _ := zipOf(t, env, pa)
	again, _, _ := zipOf(t, env, pa)
	if !bytes.Equal(first, again) || !bytes.Equal(first, za) {
		t.Fatal("the cached copies gave other bytes")
	}

	zr, err := zip.NewReader(bytes.NewReader(za), int64(len(za)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Modified.UTC().Format("2006-01-02") != "1980-01-01" || f.Mode().Perm() != 0o644 || f.Method != zip.Store {
			t.Errorf("%s: timestamp %v, mode %v, method %d", f.Name, f.Modified, f.Mode(), f.Method)
		}
		rc, _ := f.Open()
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		if _, err := jpeg.Decode(bytes.NewReader(buf.Bytes())); err != nil {
			t.Errorf("%s is not a JPEG: %v", f.Name, err)
		}
		if bytes.Contains(buf.Bytes(), []byte("Exif")) || bytes.Contains(buf.Bytes(), []byte(testSerial)) {
			t.Errorf("%s keeps EXIF metadata (GPS, camera serial)", f.Name)
		}
	}
	if strings.Join(names, ",") != "a-2.jpg,a.jpg,b.jpg" {
		t.Fatalf("entries %v, want a-2.jpg (from a.png), a.jpg, b.jpg", names)
	}
	if !bytes.Contains(mustRead(t, pa[0]), []byte(testSerial)) {
		t.Fatal("the test photos carry no serial: the check above proves nothing")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The digest is the originals' names and content, computed as the release before prepared
// copies did (sha256 over name, size and content hash in name order): an upgrade re-runs nothing.
func TestDigestIsTheOriginalsAsBefore(t *testing.T) {
	dir := t.TempDir()
	p := writePhotos(t, dir, map[string]int{"a.jpg": 1, "b.jpg": 2})
	env := &pipeline.Env{CacheDir: t.TempDir()}
	_, d1, _ := zipOf(t, env, p)
	if want := legacyDigest(t, p); d1 != want {
		t.Fatalf("digest %s, the previous release's %s", d1, want)
	}
	writePhoto(t, filepath.Join(dir, "b.jpg"), 3)
	_, d2, _ := zipOf(t, env, p)
	if d1 == d2 {
		t.Fatal("changed content kept the digest")
	}
	if err := os.Rename(filepath.Join(dir, "b.jpg"), filepath.Join(dir, "c.jpg")); err != nil {
		t.Fatal(err)
	}
	_, d3, _ := zipOf(t, env, []string{filepath.Join(dir, "a.jpg"), filepath.Join(dir, "c.jpg")})
	if d3 == d2 {
		t.Fatal("renamed file kept the digest")
	}
}

func TestCollectImagesErrors(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	pa := writePhotos(t, a, map[string]int{"x.jpg": 1})
	pb := writePhotos(t, b, map[string]int{"x.jpg": 2})
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
	// A bucket object is named by its URL; its base name drops the URL's parameters.
	files, err = collectImages(a, []string{"s3://photos/users/ana/IMG_1.HEIC?region=eu-west-1"})
	if err != nil || files[0].Name != "IMG_1.HEIC" || files[0].Path != "s3://photos/users/ana/IMG_1.HEIC?region=eu-west-1" {
		t.Fatalf("bucket ref: %+v %v", files, err)
	}
	missing, _ := collectImages(a, []string{"gone.jpg"})
	set := newPhotoSet(&pipeline.Env{CacheDir: t.TempDir()})
	defer set.Close()
	if _, err := set.originals(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "gone.jpg") {
		t.Fatalf("missing file: err = %v", err)
	}
}

// legacyDigest is the digest as the release before prepared copies computed it, from the files.
func legacyDigest(t *testing.T, paths []string) string {
	t.Helper()
	sorted := append([]string(nil), paths...)
	sort.Slice(sorted, func(i, j int) bool { return filepath.Base(sorted[i]) < filepath.Base(sorted[j]) })
	h := sha256.New()
	for _, p := range sorted {
		data := mustRead(t, p)
		c := sha256.Sum256(data)
		name := filepath.Base(p)
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(data))
		h.Write(c[:])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// bigCopies is a figure store that says every prepared copy is 40 MB, as a set of 12 MP phone
// photos at a high max_side would be: plan reads sizes from the figures, so nothing is prepared.
type bigCopies struct{}

func (bigCopies) Get(_ context.Context, key string) ([]byte, bool, error) {
	if strings.HasPrefix(key, "photo/prepared/") {
		return []byte(`{"bytes":40000000}`), true, nil
	}
	return nil, false, nil
}
func (bigCopies) Put(context.Context, string, []byte) error { return nil }

// A zip over the files API's 100 MiB after preparing is refused at plan, saying what to do,
// with nothing sent; apply refuses it the same way.
func TestZipOverTheUploadLimitIsRefusedAtPlan(t *testing.T) {
	h := newHarness(t)
	h.env.Cache = bigCopies{}
	res := planNoSpend(t, h, h.request(input(goodInput...), nil, &recorder{}))
	for _, want := range []string{"120 MB after preparing 3 photos at max_side 2048", "100 MiB", "lower max_side or remove photos", "nothing was uploaded or spent"} {
		if !strings.Contains(res.Refused, want) {
			t.Errorf("refusal lacks %q: %q", want, res.Refused)
		}
	}
	if res.Cost != nil {
		t.Errorf("a refused plan estimates %+v", res.Cost)
	}
	_, err := h.apply(h.request(input(goodInput...), nil, &recorder{}))
	if !pipeline.IsRefused(err) || !strings.Contains(err.Error(), "lower max_side") || h.srv.Count("uploaded file") != 0 || h.srv.Count("created training") != 0 {
		t.Fatalf("apply: %v, uploads %d", err, h.srv.Count("uploaded file"))
	}
}

// The upload is the zip streamed with an exact Content-Length: the bytes the trainer downloads
// are the zip of the prepared copies, and plan's summary says its size. Photos kept in a bucket
// (named by URL, as image_check names them) give the same zip and digest as the same files on
// disk.
func TestUploadIsTheStreamedZipAndBucketPhotosAreTheSame(t *testing.T) {
	h := newHarness(t)
	var urls []cty.Value
	var paths []string
	for _, n := range []string{"photo0.jpg", "photo1.jpg", "photo2.jpg"} {
		urls = append(urls, cty.StringVal("file://"+filepath.Join(h.dir, n)))
		paths = append(paths, filepath.Join(h.dir, n))
	}
	want, digest, a := zipOf(t, &pipeline.Env{CacheDir: t.TempDir()}, paths)

	req := h.request(input(goodInput...), nil, &recorder{})
	setInput(req, "images", cty.ListVal(urls))
	res := planNoSpend(t, h, req)
	if res.Digest["images"] != digest || !strings.Contains(strings.Join(res.Notes, "\n"), a.Summary()) {
		t.Fatalf("plan of bucket photos: digest %s (want %s), notes %q", res.Digest["images"], digest, res.Notes)
	}
	rec := &recorder{}
	req = h.request(input(goodInput...), nil, rec)
	setInput(req, "images", cty.ListVal(urls))
	out, err := h.apply(req)
	if err != nil {
		t.Fatal(err)
	}
	if str(out.Outputs["images_digest"]) != digest {
		t.Fatalf("images_digest %s, want %s", str(out.Outputs["images_digest"]), digest)
	}
	u := rec.record().Upload
	c, _ := replicate.FromEnv(h.env)
	got, err := c.Download(context.Background(), u.URL)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || u.ZipBytes != int64(len(want)) || u.Prepared != photo.PrepareVersion || u.MaxSide != photo.DefaultMaxSide {
		t.Fatalf("uploaded %d bytes (recorded %+v), want the %d-byte zip of the prepared copies", len(got), u, len(want))
	}
	name := "ana-lora-images.zip"
	if cl := h.srv.UploadContentLengths(); len(cl) != 1 || cl[0] != replicate.UploadRequestSize(name, "application/zip", int64(len(want))) {
		t.Fatalf("Content-Length %v, want the exact multipart size of %d bytes", cl, len(want))
	}
}

// An upload an earlier release made holds the originals, not prepared copies: it is never
// reused, whatever its digest says.
func TestUploadOfOriginalsIsNotReused(t *testing.T) {
	h := newHarness(t)
	rec := &recorder{}
	if _, err := h.apply(h.request(input(goodInput...), nil, rec)); err != nil {
		t.Fatal(err)
	}
	old := rec.record()
	old.Upload.Prepared, old.Upload.MaxSide = 0, 0 // as the previous release recorded it
	data, _ := json.Marshal(old)
	if _, err := h.apply(h.request(input(goodInput...), &pipeline.Prior{Status: pipeline.StatusComplete, SameInputs: true, Data: data}, &recorder{})); err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Count("uploaded file"); n != 2 {
		t.Fatalf("%d uploads: the originals' upload was reused", n)
	}
}

// A photo given straight to train (no image_check before it) whose header claims 60000×60000
// pixels is refused at plan by name before anything is decoded: train has no max_pixels of its
// own, and decoding it would take 14 GB.
func TestAHeaderBombGivenToTrainIsRefusedByName(t *testing.T) {
	h := newHarness(t)
	bomb := jpegPhoto(7, 96, 64)
	sof := bytes.Index(bomb, []byte{0xFF, 0xC0})
	if sof < 0 {
		t.Fatal("no SOF0")
	}
	bomb[sof+5], bomb[sof+6], bomb[sof+7], bomb[sof+8] = 0xEA, 0x60, 0xEA, 0x60
	path := filepath.Join(h.dir, "photo1.jpg")
	if err := os.WriteFile(path, bomb, 0o600); err != nil {
		t.Fatal(err)
	}
	before := photo.Decodes()
	_, err := Kind{}.Plan(context.Background(), h.request(input(goodInput...), nil, &recorder{}))
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "60000×60000") {
		t.Fatalf("plan: %v, want a refusal naming %s and its size", err, path)
	}
	if n := photo.Decodes() - before; n > 2 {
		t.Fatalf("%d decodes for 2 photos and a bomb: the bomb was decoded", n)
	}
}

// A photo whose name is stored in NFD (as macOS writes "José") reaches train in NFC, since HCL
// and cty normalise every string: the stored file is still found, and the zip names it as asked.
func TestAPhotoNamedInAnotherUnicodeFormIsFound(t *testing.T) {
	h := newHarness(t)
	nfd := "Jose\u0301.jpg"
	writePhoto(t, filepath.Join(h.dir, nfd), 5)
	req := h.request(input(goodInput...), nil, &recorder{})
	setInput(req, "images", cty.ListVal([]cty.Value{cty.StringVal(filepath.Join(h.dir, "photo0.jpg")), cty.StringVal(filepath.Join(h.dir, nfd))}))
	if got := req.Input("images").Index(cty.NumberIntVal(1)).AsString(); got == filepath.Join(h.dir, nfd) {
		t.Fatal("cty kept the NFD name: this test no longer shows the case")
	}
	res := planNoSpend(t, h, req)
	if !strings.Contains(strings.Join(res.Notes, "\n"), "uploads 2 photos") {
		t.Fatalf("plan of a photo named in NFD: %q", res.Notes)
	}
}
