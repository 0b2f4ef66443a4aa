package replicatetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Token is the bearer token required (default "r8_test").
	Token string
	// WorldFile, when set, is loaded at start and saved (atomically) after every mutation; uploaded
	// file bytes go to a directory beside it (WORLDFILE.blobs/).
	WorldFile string
	// Auto: trainings and predictions advance with wall time (simulator). false: they advance one
	// step per GET of that object (deterministic tests).
	Auto bool
	// PageSize of list endpoints (default 3, to force pagination in tests; the API's is 100).
	PageSize int
	// Clock is the server's time (created_at, Auto mode's progress, rate limits); nil: wall
	// time. Share a *Clock with the client to run a batch in virtual time.
	Clock interface{ Now() time.Time }
	// TrainingTime is how long every training takes in Auto mode, from created to succeeded
	// (a tenth of it starting); 0 keeps the default of about 2.1 s, < 0 ends each at once.
	TrainingTime time.Duration
	// PredictionTime likewise for predictions (0: 0.6 s; < 0: at once).
	PredictionTime time.Duration
	// RateLimits, when set, enforces Replicate's request rate limits (see Limits); off by
	// default so tests that do not measure load are not throttled.
	RateLimits *Limits
}

// Server is a Replicate API test server on 127.0.0.1.
type Server struct {
	opts  Options
	srv   *http.Server
	ln    net.Listener
	base  string
	start time.Time

	mu      sync.Mutex
	w       *world
	counts  map[string]int
	faults  []*fault
	images  map[string][]byte // output key → encoded image
	photos  photoCache
	saveErr error
	now     func() time.Time
	// echoDefaults: created trainings and predictions show the schema's defaults for inputs the
	// request left out, as cog models echo them.
	echoDefaults bool
	// schemas overrides the openapi_schema shown for a version id (raw JSON; "null" allowed).
	schemas map[string]json.RawMessage
	// deleteDelay: a version delete takes effect only after this many further list calls.
	deleteDelay int
	// listLag: trainings and predictions created from now on are missing from this many list
	// calls of their collection before they show (ListLag).
	listLag int
	// reserved model names ("owner/name"): create answers 409 while GET answers 404, as for the
	// name of a deleted model.
	reserved map[string]bool
	stalls   []*stall
	// load and stats: rate accounting and limits (limits.go); uploads: the Content-Length of
	// every file upload request (-1: not sized).
	load    load
	stats   Stats
	uploads []int64
}

// stall holds matching requests for a while before they are processed.
type stall struct {
	method, prefix string
	d              time.Duration
	times          int
}

// Stall makes the next `times` matching requests wait d after their body arrived before they are
// processed (a slow link or an overloaded API). A client that gives up meanwhile leaves nothing
// behind: the request is not processed.
func (s *Server) Stall(method, pathPrefix string, d time.Duration, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stalls = append(s.stalls, &stall{method: method, prefix: pathPrefix, d: d, times: times})
}

type fault struct {
	method, prefix string
	status         int
	retryAfter     int
	times          int
	after          bool // process the request, then answer status (the object exists)
	drop           bool // process the request, then drop the connection without an answer
	bodyWait       bool // 429: the wait only in the JSON body's retry_after, no Retry-After header
	detail         any  // when set, the error answer's detail (any JSON value, e.g. a list)
}

// NewServer starts a server like httptest.NewServer; it panics when it cannot listen or load
// opts.WorldFile (use Start to get the error).
func NewServer(opts Options) *Server {
	s, err := Start(opts)
	if err != nil {
		panic(fmt.Sprintf("replicatetest: %v", err))
	}
	return s
}

// Start starts a server and returns an error when it cannot listen or load opts.WorldFile.
func Start(opts Options) (*Server, error) {
	if opts.Token == "" {
		opts.Token = "r8_test"
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 3
	}
	s := &Server{opts: opts, counts: map[string]int{}, images: map[string][]byte{}, now: time.Now}
	if opts.Clock != nil {
		s.now = opts.Clock.Now
	}
	s.start = s.now()
	if opts.WorldFile != "" {
		w, err := loadWorld(opts.WorldFile)
		if err != nil {
			return nil, err
		}
		s.w = w
	}
	if s.w == nil {
		s.w = newWorld(s.now())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on 127.0.0.1: %w", err)
	}
	s.ln = ln
	s.base = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the server's base URL (use it as REPLICATE_BASE_URL).
func (s *Server) URL() string { return s.base }

// Token is the bearer token the server accepts.
func (s *Server) Token() string { return s.opts.Token }

// Close stops the server (the world file, if any, is already saved). Requests under way get a
// moment to finish; connections a client opened and never used do not hold it up.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	_ = s.srv.Close()
}

// Count returns how many requests a key saw. Keys: every route as "METHOD /pattern" (e.g.
// "GET /v1/trainings/{id}", "POST /v1/models/{owner}/{name}/versions/{id}/trainings"), the
// aliases "POST /v1/trainings" (create training), "GET version" and "DELETE version", the
// outcomes "created training", "created prediction", "created model", "uploaded file",
// "deleted version", "canceled training", and the answers "401", "413", "429", "5xx".
func (s *Server) Count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// Fail makes the next `times` requests matching method ("" = any) and path prefix answer status
// (e.g. 500, 503) without being processed.
func (s *Server) Fail(method, pathPrefix string, status int, times int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, status: status, times: times})
}

// FailAfter makes the next `times` matching requests be processed (a training is created) and
// then answer status anyway: the "5xx but it exists" case a client must reconcile.
func (s *Server) FailAfter(method, pathPrefix string, status int, times int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, status: status, times: times, after: true})
}

// Drop makes the next `times` matching requests be processed and then drops the connection
// without an answer.
func (s *Server) Drop(method, pathPrefix string, times int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, times: times, drop: true})
}

// RateLimit makes the next `times` matching requests answer 429 with Retry-After: retryAfter
// (seconds).
func (s *Server) RateLimit(method, pathPrefix string, retryAfter int, times int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, status: http.StatusTooManyRequests, retryAfter: retryAfter, times: times})
}

// FailWithDetail makes the next `times` matching requests answer status with detail as the JSON
// error's "detail", which may be any JSON value: the API sometimes answers a validation error list
// ([{"loc": [...], "msg": "..."}]) or an object instead of a string.
func (s *Server) FailWithDetail(method, pathPrefix string, status int, detail any, times int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, status: status, times: times, detail: detail})
}

// RateLimitInBody makes the next `times` matching requests answer 429 without a Retry-After
// header, the wait only in the JSON body: {"detail": "Request was throttled. Expected available in
// N seconds.", "status": 429, "retry_after": N}.
func (s *Server) RateLimitInBody(method, pathPrefix string, retryAfter int, times int) {
	s.addFault(&fault{method: method, prefix: pathPrefix, status: http.StatusTooManyRequests, retryAfter: retryAfter, times: times, bodyWait: true})
}

// EchoDefaults makes trainings and predictions created from now on show their input with the
// schema's defaults filled in for keys the request left out (as the API shows what the model ran
// with), so a client that compares inputs must ignore keys it did not send.
func (s *Server) EchoDefaults(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.echoDefaults = on
}

// withDefaults returns input plus the defaults of props it lacks (when echoDefaults is on).
func (s *Server) withDefaults(input map[string]any, props []prop) map[string]any {
	if !s.echoDefaults {
		return input
	}
	out := make(map[string]any, len(input)+len(props))
	for _, p := range props {
		if p.def != nil {
			out[p.name] = p.def
		}
	}
	for k, v := range input {
		out[k] = v
	}
	// JSON numbers: ints in the prop table must look like decoded request values.
	b, err := json.Marshal(out)
	if err == nil {
		var norm map[string]any
		if json.Unmarshal(b, &norm) == nil {
			return norm
		}
	}
	return out
}

// SetVersionSchema makes version id show schema as its openapi_schema (raw JSON: "null" for a
// version without one, LegacyTrainerSchema() for a trainer that declares its inputs as Input).
func (s *Server) SetVersionSchema(id string, schema json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.schemas == nil {
		s.schemas = map[string]json.RawMessage{}
	}
	s.schemas[id] = append(json.RawMessage(nil), schema...)
}

// LegacyTrainerSchema is the trainer's schema as older cog versions emitted it: the training
// inputs under components.schemas.Input, no TrainingInput.
func LegacyTrainerSchema() json.RawMessage {
	doc := openAPISchema(false)
	legacy := openAPISchema(true)
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	schemas["Input"] = legacy["components"].(map[string]any)["schemas"].(map[string]any)["TrainingInput"]
	for k, v := range legacy["components"].(map[string]any)["schemas"].(map[string]any) {
		if _, ok := schemas[k]; !ok && k != "TrainingInput" && k != "TrainingOutput" {
			schemas[k] = v
		}
	}
	b, _ := json.Marshal(doc)
	return b
}

// DeleteDelay makes version deletes accepted from now on asynchronous, as on the real API ("202,
// empty body; it might take a few minutes"): the version stays listed (and is the model's
// latest_version if it was) for n more list calls of its model's versions, then disappears.
// Predictions on a version being deleted are refused (422). n <= 0 deletes at once.
func (s *Server) DeleteDelay(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteDelay = n
}

// ListLag makes trainings and predictions created from now on missing from the next n list calls
// of their collection (GET /v1/trainings, GET /v1/predictions), while their own GET finds them at
// once: a list that lags behind creates, or a create that takes effect after its answer was lost.
// A client that looks once after an unclear create and then creates again pays twice. n <= 0
// lists them at once.
func (s *Server) ListLag(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listLag = n
}

func (s *Server) addFault(f *fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// AddModel creates a private model (if missing) with `versions` more versions, created one hour
// apart and older than anything created later. Their ids are VersionIDs(owner, name).
func (s *Server) AddModel(owner, name string, versions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := owner + "/" + name
	m := s.w.Models[key]
	now := s.now()
	if m == nil {
		m = &modelRec{Owner: owner, Name: name, Visibility: "private", Hardware: "gpu-t4", CreatedAt: now.Add(-time.Duration(versions+1) * time.Hour)}
		s.w.Models[key] = m
	}
	for i := 0; i < versions; i++ {
		at := now.Add(-time.Duration(versions-i) * time.Hour)
		if n := len(m.Versions); n > 0 && !at.After(m.Versions[n-1].CreatedAt) {
			at = m.Versions[n-1].CreatedAt.Add(time.Second)
		}
		m.Versions = append(m.Versions, &versionRec{ID: s.w.newVersionID(), CreatedAt: at})
	}
	s.saveLocked()
}

// VersionIDs lists a model's version ids, newest first (nil when the model does not exist).
func (s *Server) VersionIDs(owner, name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickLocked()
	m := s.w.Models[owner+"/"+name]
	if m == nil {
		return nil
	}
	out := make([]string, 0, len(m.Versions))
	for i := len(m.Versions) - 1; i >= 0; i-- {
		out = append(out, m.Versions[i].ID)
	}
	return out
}

// ForbidDelete makes the API refuse to delete version id with detail (as it does when others have
// run predictions on it or a deployment uses it).
func (s *Server) ForbidDelete(versionID, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.Forbid[versionID] = detail
	s.saveLocked()
}

// TrainingStatus returns a training's status as the server holds it ("" if unknown), without
// advancing it.
func (s *Server) TrainingStatus(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.w.training(id); t != nil {
		return t.Status
	}
	return ""
}

// RemoveTraining makes a training disappear (GET answers 404), as when it was deleted or belongs
// to an account the token no longer reaches. It reports whether it existed.
func (s *Server) RemoveTraining(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range s.w.Trainings {
		if t.ID == id {
			s.w.Trainings = append(s.w.Trainings[:i:i], s.w.Trainings[i+1:]...)
			s.saveLocked()
			return true
		}
	}
	return false
}

// ReserveModelName makes owner/name behave like the name of a deleted model: GET answers 404, and
// creating it answers 409 (Replicate does not let a deleted model's name be used again).
func (s *Server) ReserveModelName(owner, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserved == nil {
		s.reserved = map[string]bool{}
	}
	s.reserved[owner+"/"+name] = true
}

// SaveError reports the last failure to save the world file (nil when all saves worked).
func (s *Server) SaveError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveErr
}

// ---- routing ----

type handler func(w http.ResponseWriter, r *http.Request) // called with s.mu held

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h handler, aliases ...string) {
		mux.Handle(pattern, s.wrap(pattern, h, aliases, true))
	}
	route("POST /v1/files", s.createFile)
	route("GET /v1/files", s.listFiles)
	route("GET /v1/files/{id}", s.getFile)
	route("GET /v1/files/{id}/download", s.downloadFile)
	route("DELETE /v1/files/{id}", s.deleteFile)
	route("GET /v1/models", s.listModels)
	route("POST /v1/models", s.createModel)
	route("GET /v1/models/{owner}/{name}", s.getModel)
	route("GET /v1/models/{owner}/{name}/versions", s.listVersions)
	route("GET /v1/models/{owner}/{name}/versions/{id}", s.getVersion, "GET version")
	route("DELETE /v1/models/{owner}/{name}/versions/{id}", s.deleteVersion, "DELETE version")
	route("POST /v1/models/{owner}/{name}/versions/{id}/trainings", s.createTraining, "POST /v1/trainings")
	route("GET /v1/trainings", s.listTrainings)
	route("GET /v1/trainings/{id}", s.getTraining)
	route("POST /v1/trainings/{id}/cancel", s.cancelTraining)
	route("POST /v1/predictions", s.createPrediction)
	route("GET /v1/predictions", s.listPredictions)
	route("GET /v1/predictions/{id}", s.getPrediction)
	route("POST /v1/predictions/{id}/cancel", s.cancelPrediction)
	// Delivery URLs (outputs, weights) need no token, like replicate.delivery.
	mux.Handle("GET /delivery/{kind}/{id}/{file}", s.wrap("GET /delivery", s.delivery, nil, false))
	mux.Handle("/", s.wrap("unknown", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "Not found", "No route for "+r.Method+" "+r.URL.Path)
	}, nil, false))
	return jsonErrors{mux}
}

// jsonErrors answers the mux's own 405 (a known path, another method) as a JSON API error.
type jsonErrors struct{ mux *http.ServeMux }

func (j jsonErrors) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := j.mux.Handler(r); pattern == "/" {
		// Only the catch-all matched: an unknown path (404 below) or a known one with another method.
		probe := r.Clone(r.Context())
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe.Method = m
			if _, p := j.mux.Handler(probe); p != "" && p != "/" {
				w.Header().Set("Allow", m)
				apiError(w, http.StatusMethodNotAllowed, "Method not allowed", r.Method+" is not allowed on "+r.URL.Path)
				return
			}
		}
	}
	j.mux.ServeHTTP(w, r)
}

func (s *Server) wrap(name string, h handler, aliases []string, auth bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived := s.now() // the rate limits count from here, not from when the lock was free
		if r.ContentLength > MaxRequestBytes {
			s.tooLarge(w, r)
			return
		}
		// Read the body before taking the lock, and answer from a recorder after releasing it, so
		// a slow client never holds up the others.
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
		if err != nil {
			apiError(w, http.StatusBadRequest, "Invalid request", "reading the request body: "+err.Error())
			return
		}
		if len(body) > MaxRequestBytes {
			s.tooLarge(w, r)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.mu.Lock()
		var wait time.Duration
		for _, st := range s.stalls {
			if st.times > 0 && (st.method == "" || st.method == r.Method) && strings.HasPrefix(r.URL.Path, st.prefix) {
				st.times--
				wait = st.d
				break
			}
		}
		if wait > 0 {
			s.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-r.Context().Done():
				t.Stop()
				return // the client gave up: nothing is processed
			case <-t.C:
			}
			s.mu.Lock()
		}
		s.counts[name]++
		for _, a := range aliases {
			s.counts[a]++
		}
		var f *fault
		for _, x := range s.faults {
			if x.times > 0 && (x.method == "" || x.method == r.Method) && strings.HasPrefix(r.URL.Path, x.prefix) {
				x.times--
				f = x
				break
			}
		}
		if f != nil && !f.after && !f.drop {
			s.countStatus(f.status)
			s.mu.Unlock()
			if f.detail != nil {
				writeJSON(w, f.status, map[string]any{"title": http.StatusText(f.status), "detail": f.detail, "status": f.status})
				return
			}
			if f.bodyWait {
				writeJSON(w, f.status, map[string]any{"title": "Request was throttled.", "status": f.status, "retry_after": f.retryAfter,
					"detail": "Request was throttled. Expected available in " + strconv.Itoa(f.retryAfter) + " seconds."})
				return
			}
			if f.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter))
			}
			if f.status == http.StatusTooManyRequests {
				apiError(w, f.status, "Too Many Requests", "Request was throttled. Expected available in "+strconv.Itoa(f.retryAfter)+" seconds.")
			} else {
				apiError(w, f.status, http.StatusText(f.status), "The server had an error while processing your request (simulated).")
			}
			return
		}
		if auth && r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
			s.counts["401"]++
			s.mu.Unlock()
			w.Header().Set("WWW-Authenticate", "Bearer")
			apiError(w, http.StatusUnauthorized, "Unauthenticated", "You did not pass a valid authentication token")
			return
		}
		if auth {
			s.arrive(r, arrived)
			if f == nil && s.throttle(w, r, arrived) {
				s.mu.Unlock()
				return
			}
		}
		if name == "POST /v1/files" {
			s.uploads = append(s.uploads, r.ContentLength)
		}
		s.tickLocked()
		rec := httptest.NewRecorder()
		h(rec, r)
		switch {
		case f == nil:
			s.countStatus(rec.Code)
		case f.drop:
			s.counts["dropped"]++
		default:
			s.countStatus(f.status)
		}
		s.mu.Unlock()
		switch {
		case f == nil:
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		case f.drop:
			// Processed, but the client never hears back.
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler) // closes the connection without an answer
		default:
			apiError(w, f.status, http.StatusText(f.status), "The server had an error while processing your request (simulated).")
		}
	})
}

// MaxRequestBytes is the most a request body may have: the files API's 100 MiB. Over it the
// API's proxy answers 413 Request Entity Too Large with an HTML page (no JSON detail), before
// the request reaches the API.
const MaxRequestBytes = 100 << 20

// tooLarge answers 413 as the API's proxy does. The rest of the body is read first (up to 1 GiB)
// so the client hears the answer instead of a reset connection.
func (s *Server) tooLarge(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<30))
	s.mu.Lock()
	s.counts["413"]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = io.WriteString(w, "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")
}

// UploadContentLengths lists the Content-Length of every file upload request so far, oldest
// first (-1 for a body sent without one).
func (s *Server) UploadContentLengths() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.uploads...)
}

func (s *Server) countStatus(status int) {
	switch {
	case status == http.StatusTooManyRequests:
		s.counts["429"]++
	case status >= 500:
		s.counts["5xx"]++
	}
}

func apiError(w http.ResponseWriter, status int, title, detail string) {
	writeJSON(w, status, map[string]any{"title": title, "detail": detail, "status": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<20))
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

func tsPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ts(*t)
}

// ---- pagination ----

// listed returns the records a list call shows (oldest first): those whose list lag (ListLag) has
// run out. Each call counts down the lag of the others.
func listed[T any](all []*T, lag func(*T) *int) []*T {
	out := make([]*T, 0, len(all))
	for _, r := range all {
		if n := lag(r); *n > 0 {
			*n--
			continue
		}
		out = append(out, r)
	}
	return out
}

// page returns items [from cursor on] and the absolute `next` URL. Lists are newest first; the
// cursor names the last item shown, so items created meanwhile do not shift later pages.
func (s *Server) page(r *http.Request, n int, idOf func(i int) string) (start, end int, next any) {
	start = 0
	if c := r.URL.Query().Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		if err == nil {
			last := string(raw)
			for i := 0; i < n; i++ {
				if idOf(i) == last {
					start = i + 1
					break
				}
			}
		}
	}
	end = min(n, start+s.opts.PageSize)
	if end < n && end > start {
		next = s.base + r.URL.Path + "?cursor=" + base64.RawURLEncoding.EncodeToString([]byte(idOf(end-1)))
	}
	return start, end, next
}

// ---- files ----

func (s *Server) fileJSON(f *fileRec) map[string]any {
	return map[string]any{
		"id": f.ID, "name": f.Name, "content_type": f.ContentType, "size": f.Size,
		"etag":       f.SHA256[:32],
		"checksums":  map[string]string{"sha256": f.SHA256},
		"metadata":   map[string]any{},
		"created_at": ts(f.CreatedAt), "expires_at": ts(f.CreatedAt.Add(24 * time.Hour)),
		"urls": map[string]string{"get": s.base + "/v1/files/" + f.ID + "/download"},
	}
}

func (s *Server) createFile(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid request", "expected multipart/form-data with a \"content\" file field: "+err.Error())
		return
	}
	defer r.MultipartForm.RemoveAll()
	fh := r.MultipartForm.File["content"]
	if len(fh) == 0 {
		apiError(w, http.StatusBadRequest, "Invalid request", "missing multipart field \"content\"")
		return
	}
	part, err := fh[0].Open()
	if err != nil {
		apiError(w, http.StatusBadRequest, "Invalid request", err.Error())
		return
	}
	data, err := io.ReadAll(part)
	part.Close()
	if err != nil {
		apiError(w, http.StatusBadRequest, "Invalid request", err.Error())
		return
	}
	sum := sha256.Sum256(data)
	ct := fh[0].Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	f := &fileRec{ID: s.w.newID(), Name: fh[0].Filename, ContentType: ct, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), CreatedAt: s.now()}
	s.w.Files[f.ID] = f
	s.w.data[f.ID] = data
	if err := s.saveBlob(f.ID, data); err != nil {
		apiError(w, http.StatusInternalServerError, "Internal server error", "the simulator could not store the file: "+err.Error())
		return
	}
	if !s.saveOr500(w) {
		return
	}
	s.counts["uploaded file"]++
	writeJSON(w, http.StatusCreated, s.fileJSON(f))
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	ids := make([]*fileRec, 0, len(s.w.Files))
	for _, f := range s.w.Files {
		ids = append(ids, f)
	}
	sortNewest(ids, func(f *fileRec) (time.Time, string) { return f.CreatedAt, f.ID })
	start, end, next := s.page(r, len(ids), func(i int) string { return ids[i].ID })
	results := []any{}
	for _, f := range ids[start:end] {
		results = append(results, s.fileJSON(f))
	}
	writeJSON(w, http.StatusOK, map[string]any{"next": next, "previous": nil, "results": results})
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	f := s.w.Files[r.PathValue("id")]
	if f == nil {
		apiError(w, http.StatusNotFound, "Not found", "File not found")
		return
	}
	writeJSON(w, http.StatusOK, s.fileJSON(f))
}

func (s *Server) downloadFile(w http.ResponseWriter, r *http.Request) {
	f := s.w.Files[r.PathValue("id")]
	data, ok := s.w.data[r.PathValue("id")]
	if f == nil || !ok {
		apiError(w, http.StatusNotFound, "Not found", "File not found")
		return
	}
	w.Header().Set("Content-Type", f.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.w.Files[id] == nil {
		apiError(w, http.StatusNotFound, "Not found", "File not found")
		return
	}
	delete(s.w.Files, id)
	delete(s.w.data, id)
	s.removeBlob(id)
	if !s.saveOr500(w) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- models and versions ----

func (s *Server) versionJSON(m *modelRec, v *versionRec, schema bool) map[string]any {
	out := map[string]any{"id": v.ID, "created_at": ts(v.CreatedAt), "cog_version": "0.9.13"}
	if schema {
		if raw, ok := s.schemas[v.ID]; ok {
			out["openapi_schema"] = raw
		} else {
			out["openapi_schema"] = openAPISchema(m.Trainer)
		}
	}
	return out
}

func (s *Server) modelJSON(m *modelRec) map[string]any {
	out := map[string]any{
		"url": "https://replicate.com/" + m.Owner + "/" + m.Name, "owner": m.Owner, "name": m.Name,
		"description": m.Description, "visibility": m.Visibility, "github_url": nil, "paper_url": nil,
		"license_url": nil, "run_count": 0, "cover_image_url": nil, "default_example": nil, "latest_version": nil,
	}
	if n := len(m.Versions); n > 0 {
		out["latest_version"] = s.versionJSON(m, m.Versions[n-1], true)
	}
	return out
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	ms := make([]*modelRec, 0, len(s.w.Models))
	for _, m := range s.w.Models {
		ms = append(ms, m)
	}
	sortNewest(ms, func(m *modelRec) (time.Time, string) { return m.CreatedAt, m.Owner + "/" + m.Name })
	start, end, next := s.page(r, len(ms), func(i int) string { return ms[i].Owner + "/" + ms[i].Name })
	results := []any{}
	for _, m := range ms[start:end] {
		results = append(results, s.modelJSON(m))
	}
	writeJSON(w, http.StatusOK, map[string]any{"next": next, "previous": nil, "results": results})
}

func validName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (s *Server) createModel(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Owner       string  `json:"owner"`
		Name        string  `json:"name"`
		Visibility  string  `json:"visibility"`
		Hardware    string  `json:"hardware"`
		Description *string `json:"description"`
	}
	if err := decodeBody(r, &body); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid request", "request body is not valid JSON: "+err.Error())
		return
	}
	var errs []string
	if !validName(body.Owner) {
		errs = append(errs, "- owner: must be an existing user or organization name")
	}
	if !validName(body.Name) {
		errs = append(errs, "- name: may contain only lowercase letters, numbers, dashes, underscores and periods")
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		errs = append(errs, `- visibility: must be one of "public", "private"`)
	}
	if body.Hardware == "" {
		errs = append(errs, "- hardware: this field is required (e.g. gpu-t4, cpu)")
	}
	if len(errs) > 0 {
		apiError(w, http.StatusUnprocessableEntity, "Invalid request", strings.Join(errs, "\n"))
		return
	}
	if strings.SplitN(TrainerModel, "/", 2)[0] == body.Owner {
		apiError(w, http.StatusForbidden, "Forbidden", "You do not have permission to create models for "+body.Owner)
		return
	}
	key := body.Owner + "/" + body.Name
	if s.w.Models[key] != nil || s.reserved[key] {
		apiError(w, http.StatusConflict, "Conflict", "A model with that name and owner already exists.")
		return
	}
	m := &modelRec{Owner: body.Owner, Name: body.Name, Visibility: body.Visibility, Hardware: body.Hardware, CreatedAt: s.now()}
	if body.Description != nil {
		m.Description = *body.Description
	}
	s.w.Models[key] = m
	if !s.saveOr500(w) {
		return
	}
	s.counts["created model"]++
	writeJSON(w, http.StatusCreated, s.modelJSON(m))
}

func (s *Server) model(w http.ResponseWriter, r *http.Request) *modelRec {
	m := s.w.Models[r.PathValue("owner")+"/"+r.PathValue("name")]
	if m == nil {
		apiError(w, http.StatusNotFound, "Not found", "Model not found: "+r.PathValue("owner")+"/"+r.PathValue("name"))
	}
	return m
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	if m := s.model(w, r); m != nil {
		writeJSON(w, http.StatusOK, s.modelJSON(m))
	}
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) {
	m := s.model(w, r)
	if m == nil {
		return
	}
	n := len(m.Versions)
	at := func(i int) *versionRec { return m.Versions[n-1-i] } // newest first
	start, end, next := s.page(r, n, func(i int) string { return at(i).ID })
	results := []any{}
	for i := start; i < end; i++ {
		results = append(results, s.versionJSON(m, at(i), true))
	}
	// Asynchronous deletes: each list call brings a pending one closer to gone.
	kept := m.Versions[:0:0]
	for _, v := range m.Versions {
		if v.Deleting {
			v.ListsLeft--
			if v.ListsLeft <= 0 {
				continue
			}
		}
		kept = append(kept, v)
	}
	if len(kept) != len(m.Versions) {
		m.Versions = kept
		s.saveLocked()
	}
	writeJSON(w, http.StatusOK, map[string]any{"next": next, "previous": nil, "results": results})
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) (*modelRec, int) {
	m := s.model(w, r)
	if m == nil {
		return nil, -1
	}
	for i, v := range m.Versions {
		if v.ID == r.PathValue("id") {
			return m, i
		}
	}
	apiError(w, http.StatusNotFound, "Not found", "Version not found: "+r.PathValue("id"))
	return nil, -1
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) {
	if m, i := s.version(w, r); m != nil {
		writeJSON(w, http.StatusOK, s.versionJSON(m, m.Versions[i], true))
	}
}

func (s *Server) deleteVersion(w http.ResponseWriter, r *http.Request) {
	m, i := s.version(w, r)
	if m == nil {
		return
	}
	v := m.Versions[i]
	if d, ok := s.w.Forbid[v.ID]; ok {
		apiError(w, http.StatusConflict, "Cannot delete version", d)
		return
	}
	for _, t := range s.w.Trainings {
		if t.Version == v.ID {
			apiError(w, http.StatusConflict, "Cannot delete version", "This version is the base of a training and cannot be deleted.")
			return
		}
	}
	if m.Trainer {
		apiError(w, http.StatusForbidden, "Forbidden", "You can only delete versions of models you own.")
		return
	}
	if v.Deleting {
		w.WriteHeader(http.StatusAccepted) // already accepted: nothing more to do
		return
	}
	if s.deleteDelay > 0 {
		v.Deleting, v.ListsLeft = true, s.deleteDelay
	} else {
		m.Versions = append(m.Versions[:i:i], m.Versions[i+1:]...)
	}
	if !s.saveOr500(w) {
		return
	}
	s.counts["deleted version"]++
	w.WriteHeader(http.StatusAccepted)
}

// ---- trainings ----

func (s *Server) trainingJSON(t *trainingRec, logs bool) map[string]any {
	out := map[string]any{
		"id": t.ID, "model": t.Model, "version": t.Version, "input": t.Input, "status": t.Status,
		"error": nil, "output": nil, "source": "api",
		"created_at": ts(t.CreatedAt), "started_at": tsPtr(t.StartedAt), "completed_at": tsPtr(t.CompletedAt),
		"urls": map[string]string{"get": s.base + "/v1/trainings/" + t.ID, "cancel": s.base + "/v1/trainings/" + t.ID + "/cancel"},
	}
	if t.Error != "" {
		out["error"] = t.Error
	}
	if t.Status == "succeeded" {
		out["output"] = map[string]any{"version": t.OutputVersion, "weights": s.base + "/delivery/trainings/" + t.ID + "/trained_model.tar"}
	}
	if t.CompletedAt != nil && t.StartedAt != nil {
		out["metrics"] = map[string]any{"predict_time": t.CompletedAt.Sub(*t.StartedAt).Seconds()}
	}
	if logs {
		out["logs"] = trainingLogs(t)
	}
	return out
}

func (s *Server) createTraining(w http.ResponseWriter, r *http.Request) {
	m, i := s.version(w, r)
	if m == nil {
		return
	}
	if !m.Trainer {
		apiError(w, http.StatusBadRequest, "Invalid request", "This model version does not support training.")
		return
	}
	var body struct {
		Destination string         `json:"destination"`
		Input       map[string]any `json:"input"`
		Webhook     string         `json:"webhook"`
	}
	if err := decodeBody(r, &body); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid request", "request body is not valid JSON: "+err.Error())
		return
	}
	if body.Destination == "" {
		apiError(w, http.StatusUnprocessableEntity, "Invalid request", "- destination: This field is required.")
		return
	}
	if s.w.Models[body.Destination] == nil {
		apiError(w, http.StatusNotFound, "Invalid destination", "The specified training destination does not exist: "+body.Destination)
		return
	}
	if body.Input == nil {
		body.Input = map[string]any{}
	}
	if errs := validate(body.Input, trainerInputs, true); len(errs) > 0 {
		apiError(w, http.StatusUnprocessableEntity, "Input validation failed", "- "+strings.Join(errs, "\n- ")+"\n")
		return
	}
	t := &trainingRec{ID: s.w.newID(), Model: m.Owner + "/" + m.Name, Version: m.Versions[i].ID, Destination: body.Destination,
		Input: redactSecrets(s.withDefaults(body.Input, trainerInputs), trainerInputs), Status: "starting", CreatedAt: s.now()}
	t.ListsLeft = s.listLag
	s.w.Trainings = append(s.w.Trainings, t)
	if !s.saveOr500(w) {
		return
	}
	s.counts["created training"]++
	s.stats.PeakTrainingsInFlight = max(s.stats.PeakTrainingsInFlight, s.inFlightLocked())
	writeJSON(w, http.StatusCreated, s.trainingJSON(t, true))
}

func (s *Server) listTrainings(w http.ResponseWriter, r *http.Request) {
	shown := listed(s.w.Trainings, func(t *trainingRec) *int { return &t.ListsLeft })
	n := len(shown)
	at := func(i int) *trainingRec { return shown[n-1-i] }
	start, end, next := s.page(r, n, func(i int) string { return at(i).ID })
	results := []any{}
	for i := start; i < end; i++ {
		results = append(results, s.trainingJSON(at(i), false)) // the list has no logs
	}
	writeJSON(w, http.StatusOK, map[string]any{"next": next, "previous": nil, "results": results})
}

func (s *Server) getTraining(w http.ResponseWriter, r *http.Request) {
	t := s.w.training(r.PathValue("id"))
	if t == nil {
		apiError(w, http.StatusNotFound, "Not found", "Training not found")
		return
	}
	if !s.opts.Auto && !terminal(t.Status) {
		t.Polls++
		s.advanceTraining(t)
		s.saveLocked()
	}
	writeJSON(w, http.StatusOK, s.trainingJSON(t, true))
}

func (s *Server) cancelTraining(w http.ResponseWriter, r *http.Request) {
	t := s.w.training(r.PathValue("id"))
	if t == nil {
		apiError(w, http.StatusNotFound, "Not found", "Training not found")
		return
	}
	if !terminal(t.Status) {
		now := s.now()
		t.Status = "canceled"
		t.CompletedAt = &now
		if t.StartedAt == nil {
			t.StartedAt = &now
		}
		s.counts["canceled training"]++
		if !s.saveOr500(w) {
			return
		}
	}
	writeJSON(w, http.StatusOK, s.trainingJSON(t, true))
}

func terminal(status string) bool {
	return status == "succeeded" || status == "failed" || status == "canceled" || status == "aborted"
}

// Abort ends a training or prediction with status "aborted", as the API does for one terminated
// before it started running (e.g. a deadline passed): no output, no version. It reports whether
// an unfinished training or prediction had that id.
func (s *Server) Abort(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if t := s.w.training(id); t != nil && !terminal(t.Status) {
		t.Status, t.CompletedAt = "aborted", &now
		s.saveLocked()
		return true
	}
	if p := s.w.prediction(id); p != nil && !terminal(p.Status) {
		p.Status, p.CompletedAt = "aborted", &now
		s.saveLocked()
		return true
	}
	return false
}

// trainingFrac is how far a training has come (0..1) and whether it is still starting.
func (s *Server) trainingFrac(t *trainingRec) (frac float64, starting bool) {
	if !s.opts.Auto {
		// GET 1: processing at step 0; GETs 2–6: 20%..100%; GET 7: done.
		if t.Polls == 0 {
			return 0, true
		}
		return float64(t.Polls-1) / 5, false
	}
	e := s.now().Sub(t.CreatedAt)
	startup, run := s.trainingPhases(t)
	if run <= 0 {
		return 1.2, false // TrainingTime < 0: done at the first look
	}
	if e < startup {
		return 0, true
	}
	return float64(e-startup) / float64(run) * 1.2, false // 1.0..1.2 is the final save
}

// trainingPhases are an Auto mode training's starting time and run time; it is done after
// startup + run/1.2 (run 0: at once).
func (s *Server) trainingPhases(t *trainingRec) (startup, run time.Duration) {
	startup, run = 300*time.Millisecond, 2200*time.Millisecond
	switch T := s.opts.TrainingTime; {
	case T < 0:
		return 0, 0
	case T > 0:
		startup = T / 10
		run = time.Duration(float64(T-startup) * 1.2)
	}
	if strings.EqualFold(str(t.Input["trigger_word"]), "SLOW") {
		run *= 5
	}
	return startup, run
}

// trainingEnd is when an Auto mode training finishes (its completed_at even when nobody looked
// then, so predict_time is its length, not the polling's).
func (s *Server) trainingEnd(t *trainingRec) time.Time {
	startup, run := s.trainingPhases(t)
	return t.CreatedAt.Add(startup + time.Duration(float64(run)/1.2))
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// advanceTraining moves a non-terminal training to where its polls or its age put it.
func (s *Server) advanceTraining(t *trainingRec) {
	if terminal(t.Status) {
		return
	}
	frac, starting := s.trainingFrac(t)
	if starting {
		return
	}
	now := s.now()
	if t.StartedAt == nil {
		st := now
		if s.opts.Auto {
			startup, _ := s.trainingPhases(t)
			st = t.CreatedAt.Add(startup)
		}
		t.StartedAt = &st
	}
	t.Status = "processing"
	total := trainingSteps(t.Input)
	fail := func(msg string) {
		t.Status = "failed"
		t.Error = msg
		t.CompletedAt = &now
	}
	url := str(t.Input["input_images"])
	if url == "" && t.Input["skip_training_and_use_pretrained_hf_lora_url"] == nil {
		fail("ValueError: input_images must be provided")
		return
	}
	if url != "" {
		if id := s.fileIDFromURL(url); id == "" || s.w.Files[id] == nil {
			fail("Could not download input_images from " + url + ": 404 Not Found")
			return
		}
	}
	if strings.EqualFold(str(t.Input["trigger_word"]), "FAIL") && frac >= 0.4 {
		t.Step = int(0.4 * float64(total))
		fail("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (simulated failure: trigger_word FAIL)")
		return
	}
	t.Step = min(total, int(frac*float64(total)))
	if frac < 1.0 || (!s.opts.Auto && t.Polls < 7) {
		return
	}
	// Done: the new version appears in the destination model.
	m := s.w.Models[t.Destination]
	if m == nil {
		fail("The destination model " + t.Destination + " no longer exists")
		return
	}
	end := now
	if e := s.trainingEnd(t); s.opts.Auto && e.Before(now) {
		end = e
	}
	v := &versionRec{ID: s.w.newVersionID(), CreatedAt: end, TrainingID: t.ID}
	m.Versions = append(m.Versions, v)
	t.Step = total
	t.Status = "succeeded"
	t.OutputVersion = t.Destination + ":" + v.ID
	t.CompletedAt = &end
}

// fileIDFromURL returns the file id of one of this server's file URLs ("" otherwise).
func (s *Server) fileIDFromURL(u string) string {
	prefix := s.base + "/v1/files/"
	if !strings.HasPrefix(u, prefix) {
		// A world loaded from a file may hold URLs of an earlier port.
		i := strings.Index(u, "/v1/files/")
		if i < 0 || !strings.HasPrefix(u, "http://127.0.0.1:") {
			return ""
		}
		prefix = u[:i] + "/v1/files/"
	}
	rest := strings.TrimPrefix(u, prefix)
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// ---- predictions ----

// dataRetention is how long the API keeps an API prediction's input, output and logs after it
// finished.
const dataRetention = time.Hour

// dataRemovedLocked reports whether p's data is gone: removed by RemovePredictionData or older than
// dataRetention.
func (s *Server) dataRemovedLocked(p *predictionRec) bool {
	return p.DataRemoved || (p.CompletedAt != nil && s.now().Sub(*p.CompletedAt) > dataRetention)
}

// RemovePredictionData removes a finished prediction's input, output and logs as the API does an
// hour after it finished: GET shows "data_removed": true with input {}, output null and no logs,
// and its delivery URLs answer 404.
func (s *Server) RemovePredictionData(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.w.prediction(id); p != nil {
		p.DataRemoved = true
		s.saveLocked()
	}
}

// PredictionIDs lists the predictions' ids, oldest first.
func (s *Server) PredictionIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.w.Predictions))
	for _, p := range s.w.Predictions {
		out = append(out, p.ID)
	}
	return out
}

func (s *Server) predictionJSON(p *predictionRec) map[string]any {
	if s.dataRemovedLocked(p) && terminal(p.Status) {
		return map[string]any{
			"id": p.ID, "model": p.Model, "version": p.Version, "input": map[string]any{}, "status": p.Status,
			"error": nil, "output": nil, "source": "api", "logs": "", "data_removed": true,
			"created_at": ts(p.CreatedAt), "started_at": tsPtr(p.StartedAt), "completed_at": tsPtr(p.CompletedAt),
			"urls": map[string]string{"get": s.base + "/v1/predictions/" + p.ID, "cancel": s.base + "/v1/predictions/" + p.ID + "/cancel"},
		}
	}
	out := map[string]any{
		"id": p.ID, "model": p.Model, "version": p.Version, "input": p.Input, "status": p.Status,
		"error": nil, "output": nil, "source": "api", "logs": "", "data_removed": false,
		"created_at": ts(p.CreatedAt), "started_at": tsPtr(p.StartedAt), "completed_at": tsPtr(p.CompletedAt),
		"urls": map[string]string{"get": s.base + "/v1/predictions/" + p.ID, "cancel": s.base + "/v1/predictions/" + p.ID + "/cancel"},
	}
	if p.Error != "" {
		out["error"] = p.Error
	}
	steps := int(num(p.Input, "num_inference_steps", 28))
	if p.Status != "starting" {
		seed := int64(num(p.Input, "seed", 0))
		out["logs"] = fmt.Sprintf("Using seed: %d\nLoaded LoRAs in 0.41s\n100%%|██████████| %d/%d [00:03<00:00,  8.12it/s]\n", seed, steps, steps)
	}
	if p.Status == "succeeded" {
		n := int(num(p.Input, "num_outputs", 1))
		ext := "jpg"
		if str(p.Input["output_format"]) == "png" {
			ext = "png"
		}
		urls := make([]string, n)
		for i := range urls {
			urls[i] = fmt.Sprintf("%s/delivery/predictions/%s/out-%d.%s", s.base, p.ID, i, ext)
		}
		out["output"] = urls
		if p.StartedAt != nil && p.CompletedAt != nil {
			out["metrics"] = map[string]any{"predict_time": p.CompletedAt.Sub(*p.StartedAt).Seconds()}
		}
	}
	return out
}

func (s *Server) createPrediction(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Version string         `json:"version"`
		Input   map[string]any `json:"input"`
	}
	if err := decodeBody(r, &body); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid request", "request body is not valid JSON: "+err.Error())
		return
	}
	m, v := s.w.findVersion(body.Version)
	if m == nil || v.Deleting {
		apiError(w, http.StatusUnprocessableEntity, "Invalid version or not permitted", "The specified version does not exist (or perhaps you don't have permission to use it?)")
		return
	}
	if body.Input == nil {
		body.Input = map[string]any{}
	}
	if errs := validate(body.Input, loraInputs, false); len(errs) > 0 {
		apiError(w, http.StatusUnprocessableEntity, "Input validation failed", "- "+strings.Join(errs, "\n- ")+"\n")
		return
	}
	if _, ok := body.Input["prompt"].(string); !ok {
		apiError(w, http.StatusUnprocessableEntity, "Input validation failed", "- input: prompt is required\n")
		return
	}
	p := &predictionRec{ID: s.w.newID(), Model: m.Owner + "/" + m.Name, Version: v.ID, Input: s.withDefaults(body.Input, loraInputs), Status: "starting", CreatedAt: s.now()}
	p.ListsLeft = s.listLag
	s.w.Predictions = append(s.w.Predictions, p)
	if !s.saveOr500(w) {
		return
	}
	s.counts["created prediction"]++
	writeJSON(w, http.StatusCreated, s.predictionJSON(p))
}

func (s *Server) listPredictions(w http.ResponseWriter, r *http.Request) {
	shown := listed(s.w.Predictions, func(p *predictionRec) *int { return &p.ListsLeft })
	n := len(shown)
	at := func(i int) *predictionRec { return shown[n-1-i] }
	start, end, next := s.page(r, n, func(i int) string { return at(i).ID })
	results := []any{}
	for i := start; i < end; i++ {
		results = append(results, s.predictionJSON(at(i)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"next": next, "previous": nil, "results": results})
}

func (s *Server) getPrediction(w http.ResponseWriter, r *http.Request) {
	p := s.w.prediction(r.PathValue("id"))
	if p == nil {
		apiError(w, http.StatusNotFound, "Not found", "Prediction not found")
		return
	}
	if !s.opts.Auto && !terminal(p.Status) {
		p.Polls++
		s.advancePrediction(p)
		s.saveLocked()
	}
	writeJSON(w, http.StatusOK, s.predictionJSON(p))
}

func (s *Server) cancelPrediction(w http.ResponseWriter, r *http.Request) {
	p := s.w.prediction(r.PathValue("id"))
	if p == nil {
		apiError(w, http.StatusNotFound, "Not found", "Prediction not found")
		return
	}
	if !terminal(p.Status) {
		now := s.now()
		p.Status = "canceled"
		p.CompletedAt = &now
		if !s.saveOr500(w) {
			return
		}
	}
	writeJSON(w, http.StatusOK, s.predictionJSON(p))
}

// advancePrediction: deterministic — GET 1 processing, GET 2 done; auto — done after 0.6 s.
func (s *Server) advancePrediction(p *predictionRec) {
	if terminal(p.Status) {
		return
	}
	now := s.now()
	var processing, done bool
	if s.opts.Auto {
		e := now.Sub(p.CreatedAt)
		start, length := 100*time.Millisecond, 600*time.Millisecond
		if P := s.opts.PredictionTime; P != 0 {
			start, length = max(P, 0)/6, max(P, 0)
		}
		processing, done = e >= start, e >= length
	} else {
		processing, done = p.Polls >= 1, p.Polls >= 2
	}
	if !processing {
		return
	}
	if p.StartedAt == nil {
		st := now
		p.StartedAt = &st
	}
	p.Status = "processing"
	if !done {
		return
	}
	p.CompletedAt = &now
	if strings.Contains(str(p.Input["prompt"]), "FAIL") {
		p.Status = "failed"
		p.Error = "NSFW content detected. Try running it again, or try a different prompt. (simulated failure: prompt contains FAIL)"
		return
	}
	p.Status = "succeeded"
}

// tickLocked advances everything in Auto mode (so a version appears when its training ends, even
// if nobody polls it) and saves when anything changed.
func (s *Server) tickLocked() {
	if !s.opts.Auto {
		return
	}
	changed := false
	for _, t := range s.w.Trainings {
		if !terminal(t.Status) {
			before := t.Status + strconv.Itoa(t.Step)
			s.advanceTraining(t)
			changed = changed || before != t.Status+strconv.Itoa(t.Step)
		}
	}
	for _, p := range s.w.Predictions {
		if !terminal(p.Status) {
			before := p.Status
			s.advancePrediction(p)
			changed = changed || before != p.Status
		}
	}
	if changed {
		s.saveLocked()
	}
}

// ---- delivery: outputs and weights ----

func (s *Server) delivery(w http.ResponseWriter, r *http.Request) {
	kind, id, file := r.PathValue("kind"), r.PathValue("id"), r.PathValue("file")
	switch kind {
	case "trainings":
		t := s.w.training(id)
		if t == nil || t.Status != "succeeded" || file != "trained_model.tar" {
			apiError(w, http.StatusNotFound, "Not found", "No such file")
			return
		}
		w.Header().Set("Content-Type", "application/x-tar")
		_, _ = w.Write(weightsTar(t))
		return
	case "predictions":
		p := s.w.prediction(id)
		var idx int
		var ext string
		if p == nil || p.Status != "succeeded" || s.dataRemovedLocked(p) {
			apiError(w, http.StatusNotFound, "Not found", "No such file")
			return
		}
		if _, err := fmt.Sscanf(file, "out-%d.%s", &idx, &ext); err != nil || idx < 0 || idx >= int(num(p.Input, "num_outputs", 1)) {
			apiError(w, http.StatusNotFound, "Not found", "No such file")
			return
		}
		data, ct, err := s.outputImage(p, idx)
		if err != nil {
			apiError(w, http.StatusInternalServerError, "Internal server error", "rendering the simulated image: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = w.Write(data)
		return
	}
	apiError(w, http.StatusNotFound, "Not found", "No such file")
}

// ---- persistence ----

func blobDir(worldFile string) string { return worldFile + ".blobs" }

func loadWorld(path string) (*world, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading simulator world %s: %w", path, err)
	}
	var w world
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("simulator world %s is not valid JSON (%v); hint: delete it to start a fresh simulated world", path, err)
	}
	w.fix()
	if w.Models[TrainerModel] == nil {
		fresh := newWorld(time.Now())
		w.Models[TrainerModel] = fresh.Models[TrainerModel]
	}
	for id := range w.Files {
		b, err := os.ReadFile(filepath.Join(blobDir(path), id))
		if err != nil {
			continue // a missing blob: the file's bytes are gone (like an expired upload)
		}
		w.data[id] = b
	}
	return &w, nil
}

func (s *Server) saveBlob(id string, data []byte) error {
	if s.opts.WorldFile == "" {
		return nil
	}
	dir := blobDir(s.opts.WorldFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicWrite(filepath.Join(dir, id), data)
}

func (s *Server) removeBlob(id string) {
	if s.opts.WorldFile != "" {
		_ = os.Remove(filepath.Join(blobDir(s.opts.WorldFile), id))
	}
}

// saveLocked writes the world file (when configured); a failure is kept for SaveError.
func (s *Server) saveLocked() {
	if s.opts.WorldFile == "" {
		return
	}
	data, err := json.MarshalIndent(s.w, "", " ")
	if err == nil {
		if dir := filepath.Dir(s.opts.WorldFile); dir != "" {
			err = os.MkdirAll(dir, 0o755)
		}
	}
	if err == nil {
		err = atomicWrite(s.opts.WorldFile, data)
	}
	if err != nil {
		s.saveErr = fmt.Errorf("saving simulator world %s: %w", s.opts.WorldFile, err)
	}
}

func (s *Server) saveOr500(w http.ResponseWriter) bool {
	before := s.saveErr
	s.saveLocked()
	if s.saveErr != nil && s.saveErr != before {
		apiError(w, http.StatusInternalServerError, "Internal server error", s.saveErr.Error())
		return false
	}
	return true
}

// atomicWrite writes a temp file beside path, syncs it and renames it over path.
func atomicWrite(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// Simulate starts the offline simulator for `pipeline apply -simulate`: Auto mode, a generated
// token, the world kept in worldFile (created on first use) so a second apply finds its
// trainings and versions again.
func Simulate(worldFile string) (*Server, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return Start(Options{Token: "r8_sim_" + hex.EncodeToString(b[:]), WorldFile: worldFile, Auto: true, PageSize: 50})
}

// sortNewest sorts by creation time, newest first (ties by key, descending).
func sortNewest[T any](xs []T, key func(T) (time.Time, string)) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0; j-- {
			ti, ki := key(xs[j])
			tj, kj := key(xs[j-1])
			if ti.After(tj) || (ti.Equal(tj) && ki > kj) {
				xs[j], xs[j-1] = xs[j-1], xs[j]
				continue
			}
			break
		}
	}
}
