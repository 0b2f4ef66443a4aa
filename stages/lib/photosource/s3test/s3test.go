// Package s3test runs an S3 emulator (gofakes3, in memory, on loopback) for tests of code that
// reads photos from a bucket: it counts object reads and can deny some, as a bucket policy would.
package s3test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Server is one emulator with a bucket.
type Server struct {
	// Query is what an s3:// URL needs to reach it: "s3://BUCKET/prefix/" + Query.
	Query  string
	Bucket string
	mem    *s3mem.Backend
	gets   atomic.Int64
	denied sync.Map
}

// Start starts an emulator with the bucket and points the AWS SDK at static test credentials,
// so it never looks beyond loopback. It stops with the test.
func Start(t testing.TB, bucket string) *Server {
	t.Helper()
	s := &Server{mem: s3mem.New(), Bucket: bucket}
	if err := s.mem.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	h := gofakes3.New(s.mem, gofakes3.WithLogger(gofakes3.DiscardLog())).Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "" && strings.Count(r.URL.Path, "/") > 1 {
			s.gets.Add(1)
			if _, no := s.denied.Load(strings.TrimPrefix(r.URL.Path, "/"+bucket+"/")); no {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required") // gofakes3 sends none
	s.Query = "?region=us-east-1&use_path_style=true&disable_https=true&endpoint=" + srv.URL
	return s
}

// Put stores an object.
func (s *Server) Put(t testing.TB, key string, data []byte) {
	t.Helper()
	if _, err := s.mem.PutObject(s.Bucket, key, map[string]string{}, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
}

// Deny makes reads of the object fail with 403 AccessDenied.
func (s *Server) Deny(key string) { s.denied.Store(key, true) }

// Gets is how many object reads (not listings) the server has answered.
func (s *Server) Gets() int64 { return s.gets.Load() }
