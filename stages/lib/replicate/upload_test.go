package replicate_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// UploadStream sends the reader's bytes with an exact Content-Length: the server stores them
// byte for byte (checksum and download), and a retried attempt opens the content again.
func TestUploadStreamIsByteExactAndSized(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	data := make([]byte, 5<<20+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var opens atomic.Int32
	open := func() (io.ReadCloser, error) {
		opens.Add(1)
		return io.NopCloser(&oddReads{r: bytes.NewReader(data)}), nil
	}
	srv.Fail("POST", "/v1/files", 503, 1)
	name := `ana "batch".zip`
	f, err := c.UploadStream(context.Background(), name, "application/zip", int64(len(data)), open)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if f.Checksums["sha256"] != hex.EncodeToString(sum[:]) || f.Size != int64(len(data)) || f.Name != name || f.ContentType != "application/zip" {
		t.Fatalf("stored file %+v, want %d bytes with sha256 %x", f, len(data), sum)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("content opened %d times, want 2 (the 503 attempt and the retry)", n)
	}
	got, err := c.Download(context.Background(), f.URL)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes (%v), want the %d uploaded", len(got), err, len(data))
	}
	want := replicate.UploadRequestSize(name, "application/zip", int64(len(data)))
	for i, n := range srv.UploadContentLengths() {
		if n != want {
			t.Errorf("upload request %d had Content-Length %d, want %d (a sized body)", i, n, want)
		}
	}
}

// oddReads returns 1 to 997 bytes per call: the framing must not depend on read sizes.
type oddReads struct {
	r io.Reader
	n int
}

func (o *oddReads) Read(p []byte) (int, error) {
	o.n = o.n*31%997 + 1
	return o.r.Read(p[:min(len(p), o.n)])
}

// Over the files API's 100 MiB (framing included) nothing is sent or even opened, and the error
// says what to do; exactly at the limit is fine.
func TestUploadOverTheLimitIsRefusedBeforeSending(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	name, ct := "images.zip", "application/zip"
	frame := replicate.UploadRequestSize(name, ct, 0)
	if err := replicate.CheckUploadSize(name, ct, replicate.MaxUploadBytes-frame); err != nil {
		t.Errorf("a request of exactly 100 MiB: %v", err)
	}
	open := func() (io.ReadCloser, error) {
		t.Error("the content was opened for an upload over the limit")
		return nil, errors.New("unreachable")
	}
	_, err := c.UploadStream(context.Background(), name, ct, replicate.MaxUploadBytes-frame+1, open)
	var tooBig *replicate.UploadTooLargeError
	if !errors.As(err, &tooBig) || !strings.Contains(err.Error(), "100 MiB") || !strings.Contains(err.Error(), "hint:") {
		t.Fatalf("err = %v, want an UploadTooLargeError with a hint", err)
	}
	if n := srv.Count("POST /v1/files"); n != 0 {
		t.Errorf("%d upload requests sent, want none", n)
	}
	if msg := (&replicate.APIError{Status: http.StatusRequestEntityTooLarge}).Error(); !strings.Contains(msg, "100 MiB") {
		t.Errorf("a 413 from the API reads %q, want the limit named", msg)
	}
}

// Content that is not the size it was said to be fails the upload instead of sending a cut or
// overlong body.
func TestUploadStreamContentOfAnotherSize(t *testing.T) {
	srv := newServer(t)
	c, _ := newClient(t, srv)
	for _, tc := range []struct {
		size int64
		want string
	}{{11, "short"}, {9, "more bytes"}} {
		open := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("0123456789")), nil }
		_, err := c.UploadStream(context.Background(), "x.zip", "application/zip", tc.size, open)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("size %d for 10 bytes: %v, want %q", tc.size, err, tc.want)
		}
	}
	if n := srv.Count("uploaded file"); n != 0 {
		t.Errorf("%d files stored from content of the wrong size", n)
	}
}
