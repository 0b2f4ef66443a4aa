package imagecheck

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/photosource/s3test"
	"github.com/zclconf/go-cty/cty"
)

// TestBucketDir checks a subject's photos in an S3 prefix (gofakes3 on loopback) through the
// kind: outputs name the objects by URL, a HEIC among them is read like a JPEG, and a second
// runner (its own local cache, the shared figures) answers from the figures without reading a
// single object or decoding a single photo.
func TestBucketDir(t *testing.T) {
	s3 := s3test.Start(t, "photos")
	for i := uint64(1); i <= 3; i++ {
		s3.Put(t, "users/ana/p"+string(rune('0'+i))+".jpg", jpegBytes(t, portrait(i+30, imagechecktest.Options{}), 90))
	}
	s3.Put(t, "users/ana/q.heic", photoTestdata(t, "portrait.heic"))
	s3.Put(t, "users/ana/r.tif", append([]byte("II*\x00\x08\x00\x00\x00"), make([]byte, 64)...))
	dir := "s3://photos/users/ana/" + s3.Query
	shared := pipeline.DirCache(t.TempDir())
	run := func() (*pipeline.Result, error) {
		req := &pipeline.Request{
			Address: `image_check.photos["ana"]`, BaseDir: t.TempDir(), Planning: true,
			Inputs: inputs(t, map[string]cty.Value{"dir": cty.StringVal(dir), "min_side": cty.NumberIntVal(480), "min_count": cty.NumberIntVal(3)}),
			Env:    &pipeline.Env{CacheDir: t.TempDir(), Cache: shared, Getenv: func(string) string { return "" }},
		}
		return Kind{}.Apply(context.Background(), req)
	}
	res, err := run()
	if err != nil {
		t.Fatal(err)
	}
	url := func(name string) string { return "s3://photos/users/ana/" + name + s3.Query }
	var acc []string
	for _, v := range res.Outputs["accepted"].AsValueSlice() {
		acc = append(acc, v.AsString())
	}
	if strings.Join(acc, " ") != strings.Join([]string{url("p1.jpg"), url("p2.jpg"), url("p3.jpg"), url("q.heic")}, " ") {
		t.Errorf("accepted %v", acc)
	}
	if r := res.Outputs["rejected"].AsValueMap()[url("r.tif")]; r.IsNull() || r.AsString() != "TIFF is not supported: export as JPEG" {
		t.Errorf("rejected %v", res.Outputs["rejected"])
	}
	gets, decodes := s3.Gets(), Decodes()
	again, err := run()
	if err != nil {
		t.Fatal(err)
	}
	if s3.Gets() != gets || Decodes() != decodes || again.Outputs["digest"].AsString() != res.Outputs["digest"].AsString() {
		t.Errorf("second runner: %d object reads, %d decodes", s3.Gets()-gets, Decodes()-decodes)
	}

	// A denied read fails the check, naming the object; a missing bucket names the URL.
	s3.Put(t, "users/ana/s.jpg", jpegBytes(t, portrait(40, imagechecktest.Options{}), 90))
	s3.Deny("users/ana/s.jpg")
	if _, err := run(); err == nil || !strings.Contains(err.Error(), url("s.jpg")) || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("denied read: %v", err)
	}
	dir = "s3://nosuch/users/ana/" + s3.Query
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "s3://nosuch/users/ana/") {
		t.Errorf("missing bucket: %v", err)
	}
}

func TestFileURLDir(t *testing.T) {
	root := t.TempDir()
	for i := uint64(1); i <= 3; i++ {
		writeJPEG(t, filepath.Join(root, "p"+string(rune('0'+i))+".jpg"), portrait(i+50, imagechecktest.Options{}), 90)
	}
	cfg := testConfig("file://" + filepath.ToSlash(root) + "/")
	cfg.Root = ""
	rep := mustCheck(t, cfg)
	if len(rep.Accepted) != 3 || rep.Accepted[0] != "file://"+filepath.ToSlash(root)+"/p1.jpg" {
		t.Errorf("accepted %v, rejected %v", rep.Accepted, rep.Rejected)
	}
}
