package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"

	rg "github.com/replicate/replicate-go"
)

// MaxUploadBytes is the files API's limit on one upload request: 100 MiB (Replicate documents
// it in replicate-javascript's README; bigger requests get 413 Request Entity Too Large from
// the API's proxy, an HTML page without a JSON detail). The multipart framing counts: a file may
// be a few hundred bytes less (UploadRequestSize).
const MaxUploadBytes = 100 << 20

// UploadTooLargeError refuses an upload over MaxUploadBytes before anything is sent.
type UploadTooLargeError struct {
	Name          string
	Size, Request int64 // the file's bytes and the whole request's
}

func (e *UploadTooLargeError) Error() string {
	return fmt.Sprintf("replicate: %s is %.1f MiB (%d bytes; %d with the multipart framing), over the files API's %d MiB limit: not sent; hint: make it smaller (a training zip: fewer photos or a lower max_side) or host it yourself and pass its public URL",
		e.Name, float64(e.Size)/(1<<20), e.Size, e.Request, MaxUploadBytes>>20)
}

// UploadRequestSize is the exact Content-Length of an upload of size bytes named name.
func UploadRequestSize(name, contentType string, size int64) int64 {
	head, tail, _ := multipartFrame(name, contentType, sizingBoundary)
	return int64(len(head)) + size + int64(len(tail))
}

// CheckUploadSize returns an *UploadTooLargeError when an upload of size bytes would exceed the
// files API's limit (plan can refuse with the same rule apply uses).
func CheckUploadSize(name, contentType string, size int64) error {
	if n := UploadRequestSize(name, contentType, size); n > MaxUploadBytes {
		return &UploadTooLargeError{Name: name, Size: size, Request: n}
	}
	return nil
}

// sizingBoundary has the length of mime/multipart's random boundaries (30 random bytes in hex):
// every upload's framing is as long as the one sized with it.
var sizingBoundary = strings.Repeat("0", 60)

// multipartFrame is the multipart/form-data text before and after the file's bytes: one part,
// field "content", the file name and its Content-Type.
func multipartFrame(name, contentType, boundary string) (head, tail []byte, formType string) {
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if name == "" {
		name = "file"
	}
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	_ = w.SetBoundary(boundary)
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="content"; filename="%s"`, quoteEscaper.Replace(name)))
	h.Set("Content-Type", contentType)
	_, _ = w.CreatePart(h)
	head = append([]byte(nil), b.Bytes()...)
	b.Reset()
	_ = w.Close()
	return head, append([]byte(nil), b.Bytes()...), w.FormDataContentType()
}

var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"", "\r", "", "\n", "")

// UploadFile uploads data as a file (POST /v1/files, multipart field "content"); see
// UploadStream for the rules.
func (c *Client) UploadFile(ctx context.Context, name string, data []byte, contentType string) (*File, error) {
	return c.UploadStream(ctx, name, contentType, int64(len(data)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

// UploadStream uploads size bytes read from open() as a file, never holding them in memory: the
// multipart request is written around the reader with an exact Content-Length. open is called
// again for every attempt (5xx and dropped connections are retried: a duplicate upload costs
// nothing) and must yield the same size bytes each time. Each attempt may take the request
// timeout plus the size at the slowest upload speed allowed for (WithTimeouts); after three
// timeouts it is given up. Over MaxUploadBytes it returns *UploadTooLargeError and sends nothing.
func (c *Client) UploadStream(ctx context.Context, name, contentType string, size int64, open func() (io.ReadCloser, error)) (*File, error) {
	op := "upload file " + name
	if err := CheckUploadSize(name, contentType, size); err != nil {
		return nil, err
	}
	// A random boundary per upload: the parser searches the content for it.
	head, tail, formType := multipartFrame(name, contentType, multipart.NewWriter(nil).Boundary())
	body := func() (io.ReadCloser, error) {
		rc, err := open()
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", name, err)
		}
		return &uploadBody{Reader: io.MultiReader(bytes.NewReader(head), &exactReader{r: rc, left: size, name: name}, bytes.NewReader(tail)), c: rc}, nil
	}
	first, err := body()
	if err != nil {
		return nil, fmt.Errorf("replicate: %s: %w", op, err)
	}
	ctx = asUpload(retrySafe(ctx), size)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.api("/files"), first)
	if err != nil {
		_ = first.Close()
		return nil, fmt.Errorf("replicate: %s: %w", op, err)
	}
	req.ContentLength = int64(len(head)) + size + int64(len(tail))
	req.GetBody = body
	req.Header.Set("Content-Type", formType)
	var f rg.File
	if err := c.send(req, &f, op); err != nil {
		return nil, err
	}
	return fileFrom(&f), nil
}

// uploadBody is one attempt's request body; closing it closes the caller's reader.
type uploadBody struct {
	io.Reader
	c io.Closer
}

func (b *uploadBody) Close() error { return b.c.Close() }

// exactReader yields exactly left bytes of r, or an error saying the content changed size: a
// sized request must never be cut short or overrun.
type exactReader struct {
	r    io.Reader
	left int64
	name string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		var one [1]byte
		if n, _ := e.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%s has more bytes than the size given: it changed while uploading", e.name)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, fmt.Errorf("%s ended %d bytes short of the size given: it changed while uploading", e.name, e.left)
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// send sends a prepared request with the client's auth through the retrying transport and
// decodes a JSON answer into out.
func (c *Client) send(req *http.Request, out any, op string) error {
	if c.sameHost(req.URL) {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "pipeline (replicate-go)")
	resp, err := c.http.Do(req)
	if err != nil {
		return convertErr(op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("replicate: %s: reading answer: %w", op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return decodeAPIError(resp.StatusCode, data, op)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("replicate: %s: decoding answer: %w", op, err)
	}
	return nil
}
