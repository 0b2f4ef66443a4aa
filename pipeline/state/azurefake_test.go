package state

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// azureFake is a small Azure Blob service written for these tests (no Go Azure emulator exists,
// and Azurite needs Node): one container, block blobs written with Put Blob or staged with Put Block and
// committed with Put Block List, Get/Head/Delete and List. It enforces If-Match and If-None-Match on commit and on
// delete atomically under one mutex, answering like the service (412 ConditionNotMet, 409
// BlobAlreadyExists). It proves that the azblob conditions reach the wire; it does not prove that
// Azure itself behaves so (Azure documents these conditions for Put Block List and Delete Blob).
type azureFake struct {
	mu      sync.Mutex
	blobs   map[string]azBlob
	staged  map[string][]byte // blob + "\x00" + block id
	seq     int
	account string
}

type azBlob struct {
	data []byte
	etag string
	mod  time.Time
}

func azureBackend(t *testing.T) backend {
	t.Helper()
	f := &azureFake{blobs: map[string]azBlob{}, staged: map[string][]byte{}, account: "devstoreaccount1"}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("AZURE_STORAGE_ACCOUNT", f.account)
	t.Setenv("AZURE_STORAGE_KEY", base64.StdEncoding.EncodeToString([]byte("test-only-key")))
	host := strings.TrimPrefix(srv.URL, "http://")
	q := "?protocol=http&localemu=true&domain=" + host
	return backend{name: "azure", url: "azblob://state/ci" + q, procs: true,
		at: func(p string) string { return "azblob://state/" + p + q }}
}

func (f *azureFake) fail(w http.ResponseWriter, status int, code string) {
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, code)
}

// conditionsMet checks If-Match / If-None-Match against the blob (exists tells whether it does).
func conditionsMet(r *http.Request, b azBlob, exists bool) (int, string) {
	if m := r.Header.Get("If-Match"); m != "" {
		if !exists {
			return http.StatusNotFound, "BlobNotFound"
		}
		if m != "*" && m != b.etag {
			return http.StatusPreconditionFailed, "ConditionNotMet"
		}
	}
	if m := r.Header.Get("If-None-Match"); m != "" && exists && (m == "*" || m == b.etag) {
		return http.StatusConflict, "BlobAlreadyExists"
	}
	return 0, ""
}

func (f *azureFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Path: /<account>/<container>[/<blob>]
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/"+f.account+"/")
	container, rawName, _ := strings.Cut(p, "/")
	name, err := url.PathUnescape(rawName)
	if container != "state" || err != nil {
		f.fail(w, http.StatusNotFound, "ContainerNotFound")
		return
	}
	q := r.URL.Query()
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("x-ms-request-id", fmt.Sprint(f.seq))
	switch {
	case r.Method == http.MethodGet && q.Get("comp") == "list":
		f.list(w, q.Get("prefix"), q.Get("delimiter"))
	case r.Method == http.MethodPut && q.Get("comp") == "block":
		body, _ := io.ReadAll(r.Body)
		f.staged[name+"\x00"+q.Get("blockid")] = body
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodPut && (q.Get("comp") == "blocklist" || q.Get("comp") == ""):
		// Put Block List (staged blocks) or Put Blob (the body), committed only if the
		// conditions hold.
		body, _ := io.ReadAll(r.Body)
		cur, exists := f.blobs[name]
		if status, code := conditionsMet(r, cur, exists); status != 0 {
			f.fail(w, status, code)
			return
		}
		data := body
		if q.Get("comp") == "blocklist" {
			var list struct {
				IDs []string `xml:",any"`
			}
			if err := xml.Unmarshal(body, &list); err != nil {
				f.fail(w, http.StatusBadRequest, "InvalidXmlDocument")
				return
			}
			data = nil
			for _, id := range list.IDs {
				blk, ok := f.staged[name+"\x00"+id]
				if !ok {
					f.fail(w, http.StatusBadRequest, "InvalidBlockList")
					return
				}
				data = append(data, blk...)
				delete(f.staged, name+"\x00"+id)
			}
		}
		f.seq++
		b := azBlob{data: data, etag: fmt.Sprintf("\"0x8D%012X\"", f.seq), mod: time.Now().UTC()}
		f.blobs[name] = b
		w.Header().Set("ETag", b.etag)
		w.Header().Set("Last-Modified", b.mod.Format(http.TimeFormat))
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		b, ok := f.blobs[name]
		if !ok {
			f.fail(w, http.StatusNotFound, "BlobNotFound")
			return
		}
		h := w.Header()
		h.Set("ETag", b.etag)
		h.Set("Last-Modified", b.mod.Format(http.TimeFormat))
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", fmt.Sprint(len(b.data)))
		h.Set("x-ms-blob-type", "BlockBlob")
		h.Set("x-ms-creation-time", b.mod.Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(b.data)
		}
	case r.Method == http.MethodDelete:
		b, ok := f.blobs[name]
		if !ok {
			f.fail(w, http.StatusNotFound, "BlobNotFound")
			return
		}
		if status, code := conditionsMet(r, b, true); status != 0 {
			f.fail(w, status, code)
			return
		}
		delete(f.blobs, name)
		w.WriteHeader(http.StatusAccepted)
	default:
		f.fail(w, http.StatusBadRequest, "UnsupportedHttpVerb")
	}
}

func (f *azureFake) list(w http.ResponseWriter, prefix, delim string) {
	names := make([]string, 0, len(f.blobs))
	for n := range f.blobs {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="state">`)
	fmt.Fprintf(&b, "<Prefix>%s</Prefix><Blobs>", xmlEscape(prefix))
	seen := map[string]bool{}
	for _, n := range names {
		if delim != "" {
			if i := strings.Index(n[len(prefix):], delim); i >= 0 {
				dir := n[:len(prefix)+i+len(delim)]
				if !seen[dir] {
					seen[dir] = true
					fmt.Fprintf(&b, "<BlobPrefix><Name>%s</Name></BlobPrefix>", xmlEscape(dir))
				}
				continue
			}
		}
		bl := f.blobs[n]
		fmt.Fprintf(&b, "<Blob><Name>%s</Name><Properties><Last-Modified>%s</Last-Modified><Etag>%s</Etag><Content-Length>%d</Content-Length><Content-Type>application/json</Content-Type><BlobType>BlockBlob</BlobType></Properties></Blob>",
			xmlEscape(n), bl.mod.Format(http.TimeFormat), xmlEscape(bl.etag), len(bl.data))
	}
	b.WriteString("</Blobs><NextMarker/></EnumerationResults>")
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, b.String())
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
