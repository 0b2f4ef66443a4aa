package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	rg "github.com/replicate/replicate-go"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// DefaultBaseURL is the Replicate API endpoint used when REPLICATE_BASE_URL is unset.
const DefaultBaseURL = "https://api.replicate.com"

// Client talks to the Replicate API for the remote stage kinds. It is safe for concurrent use; all
// stages of one command share one Client (see FromEnv) so a 429 pause applies to all of them.
type Client struct {
	baseURL *url.URL // scheme://host[/prefix], without /v1
	token   string
	rc      *rg.Client   // replicate-go, used wherever its methods are right
	http    *http.Client // the same retrying transport replicate-go uses

	maxRetries int
	backoff    time.Duration
	// timeout bounds one attempt of an ordinary request (answer read included); an upload gets
	// timeout plus its size at uploadRate bytes per second, so a large zip on a slow link is not
	// cut off at a fixed time.
	timeout    time.Duration
	uploadRate int64
	sleep      func(ctx context.Context, d time.Duration) error
	now        func() time.Time
	// createAttempts, createBackoff and createConfirm are CreateOnce's retry policy
	// (WithCreateRetry, WithCreateConfirm).
	createAttempts int
	createBackoff  time.Duration
	createConfirm  time.Duration
	// join and leave count the client's own goroutines (the watcher's) with a discrete-event
	// clock (WithTime, discrete); no-ops otherwise.
	join, leave func()
	discrete    bool

	// limits and pacer: the request budget every stage of the process shares (pacer.go).
	limits RateLimits
	pacer  *pacer
	// watcher follows trainings for many callers (watch.go); schemas memoizes trainer schemas
	// and cache keeps them across processes (schema.go).
	watcher *watcher
	schemas schemaMemo
	cache   pipeline.Cache
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client whose transport carries the requests (default: a client
// with a clone of http.DefaultTransport, whose dial and TLS handshake have their own timeouts,
// keeping 64 idle connections to the API). Retries, the request budget and the per-attempt
// timeouts (WithTimeouts) wrap its transport; keep its Timeout 0, or it also cuts off large
// uploads.
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) {
		if h != nil {
			c.http = h
		}
	}
}

// WithRetry sets how many times a request is retried (429 always; 5xx and dropped connections
// only where a retry cannot create a second object) and the base of the jittered exponential
// backoff. Defaults: 6 retries, 1s base.
func WithRetry(max int, base time.Duration) Option {
	return func(c *Client) {
		if max >= 0 {
			c.maxRetries = max
		}
		if base > 0 {
			c.backoff = base
		}
	}
}

// WithTimeouts sets how long one attempt of a request may take (default 2 minutes, the answer
// read included) and the slowest upload speed allowed for, in bytes per second (default 64 KB/s):
// an upload of n bytes may take request + n/uploadRate. An upload that timed out three times is
// not tried again.
func WithTimeouts(request time.Duration, uploadRate int64) Option {
	return func(c *Client) {
		if request > 0 {
			c.timeout = request
		}
		if uploadRate > 0 {
			c.uploadRate = uploadRate
		}
	}
}

// WithSleep replaces how the client waits: between retries, for the request budget and a
// Retry-After pause, and between the watcher's looks at trainings. Tests and benchmarks pass a
// fake, or the Sleep of a virtual clock shared with the test server (replicatetest.Clock).
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(c *Client) {
		if sleep != nil {
			c.sleep = sleep
		}
	}
}

// WithClock replaces the clock the client uses for Retry-After pauses, the request budget and
// the watcher's schedule (pair it with WithSleep of the same clock).
func WithClock(now func() time.Time) Option {
	return func(c *Client) {
		if now != nil {
			c.now = now
		}
	}
}

// Time is a clock the client can run on instead of the wall clock, shared with a test server
// (replicatetest.Clock). When it also has Join() and Leave(), the client counts its own
// background goroutines (the watcher's loop and reads) with them, so a discrete-event clock
// moves on only once those are asleep too.
type Time interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

// WithTime runs the client on t: WithClock(t.Now), WithSleep(t.Sleep), and Join/Leave if t has
// them.
func WithTime(t Time) Option {
	return func(c *Client) {
		c.now, c.sleep = t.Now, t.Sleep
		if m, ok := t.(interface {
			Join()
			Leave()
		}); ok {
			c.join, c.leave, c.discrete = m.Join, m.Leave, true
		}
	}
}

// New returns a client for baseURL (e.g. "https://api.replicate.com"; a trailing "/v1" is
// accepted) authenticating with token.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	if strings.TrimSpace(token) == "" {
		return nil, &MissingTokenError{}
	}
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("replicate: base URL %q is not an absolute http(s) URL; hint: REPLICATE_BASE_URL looks like https://api.replicate.com", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/v1")
	c := &Client{
		baseURL:    u,
		token:      token,
		http:       &http.Client{},
		maxRetries: 6,
		timeout:    2 * time.Minute,
		uploadRate: 64 << 10,
		backoff:    time.Second,
		sleep:      Sleep,
		now:        time.Now,
		limits:     DefaultRateLimits,
		join:       func() {},
		leave:      func() {},

		createAttempts: 3,
		createBackoff:  2 * time.Second,
		createConfirm:  2 * time.Minute,
	}
	for _, o := range opts {
		o(c)
	}
	c.pacer = newPacer(c.limits)
	c.watcher = &watcher{c: c}
	// Wrap the caller's transport with ours; keep the caller's client untouched.
	base := c.http.Transport
	if base == nil {
		base = defaultTransport()
	}
	hc := *c.http
	hc.Transport = &retryTransport{c: c, base: base}
	c.http = &hc
	// replicate-go retries itself with time.Sleep and cannot rewind POST bodies: turn its retries
	// off (0 retries, zero backoff) and let retryTransport do them.
	rc, err := rg.NewClient(
		rg.WithToken(token),
		rg.WithBaseURL(c.api("")),
		rg.WithHTTPClient(c.http),
		rg.WithRetryPolicy(0, zeroBackoff{}),
		rg.WithUserAgent("pipeline (replicate-go)"),
	)
	if err != nil {
		return nil, fmt.Errorf("replicate: creating client: %w", err)
	}
	c.rc = rc
	return c, nil
}

// Sleep waits d on the client's clock (WithTime, WithSleep; the wall clock by default), or less
// when ctx ends: stages that poll wait with it, so a test or benchmark on a virtual clock
// measures their waits in the same time as the server's.
func (c *Client) Sleep(ctx context.Context, d time.Duration) error { return c.sleep(ctx, d) }

// BaseURL returns the API endpoint without "/v1".
func (c *Client) BaseURL() string { return c.baseURL.String() }

// api returns the absolute URL of an API path such as "/trainings".
func (c *Client) api(path string) string {
	return c.baseURL.String() + "/v1" + path
}

type clientKey struct{}

var envMu sync.Mutex

// FromEnv returns the client shared by all stages of one command, created on first use from
// REPLICATE_API_TOKEN and REPLICATE_BASE_URL (with env.Cache for trainer schemas) and cached in
// env.Values: one request budget (env.Shards processes sharing the account's), one watcher and one
// schema memo per process.
func FromEnv(env *pipeline.Env) (*Client, error) {
	if env == nil {
		return nil, &MissingTokenError{}
	}
	envMu.Lock()
	defer envMu.Unlock()
	if c, ok := env.Values[clientKey{}].(*Client); ok {
		return c, nil
	}
	getenv := env.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	token := strings.TrimSpace(getenv("REPLICATE_API_TOKEN"))
	if token == "" {
		return nil, &MissingTokenError{Simulated: env.Simulated}
	}
	// The client keeps trainer schemas in env.Cache (shared by every runner of a batch); not
	// the simulator's, whose port changes every run: its entries would only pile up.
	opts := []Option{WithRateLimits(DefaultRateLimits.Share(env.Shards))}
	if !env.Simulated {
		opts = append(opts, WithCache(env.Cache))
	}
	c, err := New(getenv("REPLICATE_BASE_URL"), token, opts...)
	if err != nil {
		return nil, err
	}
	if env.Values == nil {
		env.Values = map[any]any{}
	}
	env.Values[clientKey{}] = c
	return c, nil
}

// Install makes c the client FromEnv returns for env (the CLI installs the simulator's client
// under -simulate; tests install one bound to their test server).
func Install(env *pipeline.Env, c *Client) {
	envMu.Lock()
	defer envMu.Unlock()
	if env.Values == nil {
		env.Values = map[any]any{}
	}
	env.Values[clientKey{}] = c
}

// HasToken reports whether FromEnv can build a client (a token is set or a client is installed).
func HasToken(env *pipeline.Env) bool {
	if env == nil {
		return false
	}
	envMu.Lock()
	_, ok := env.Values[clientKey{}].(*Client)
	envMu.Unlock()
	if ok {
		return true
	}
	return env.Getenv != nil && strings.TrimSpace(env.Getenv("REPLICATE_API_TOKEN")) != ""
}

// MissingTokenError means no API token is available.
type MissingTokenError struct{ Simulated bool }

func (e *MissingTokenError) Error() string {
	return "replicate: REPLICATE_API_TOKEN is not set; hint: set REPLICATE_API_TOKEN (https://replicate.com/account/api-tokens) or use -simulate to run against the offline simulator"
}

// APIError is an error answer of the API ({title, detail, status}). Its message never contains
// the token.
type APIError struct {
	Status int
	Title  string
	Detail string
	// Op says what the client was doing, e.g. "get training abc123".
	Op string
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("replicate: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	b.WriteString(strconv.Itoa(e.Status))
	title := e.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	if title != "" {
		b.WriteString(" " + title)
	}
	if e.Detail != "" && e.Detail != title {
		b.WriteString(": " + e.Detail)
	}
	switch {
	case e.Status == http.StatusUnauthorized:
		b.WriteString("; hint: the API token was rejected: check REPLICATE_API_TOKEN (or use -simulate)")
	case e.Status == http.StatusForbidden:
		b.WriteString("; hint: the token's account may not own this model")
	case e.Status == http.StatusRequestEntityTooLarge:
		b.WriteString(fmt.Sprintf("; hint: the files API takes at most %d MiB per upload: send less, or host the file yourself and pass its URL", MaxUploadBytes>>20))
	case e.Status == http.StatusTooManyRequests:
		b.WriteString("; hint: rate limited even after retries honouring Retry-After; try again later or lower -parallelism")
	case e.Status >= 500:
		b.WriteString("; hint: Replicate had a server error; run apply again later (it resumes)")
	}
	return b.String()
}

// IsNotFound reports whether err is (or wraps) a 404 answer.
func IsNotFound(err error) bool {
	var a *APIError
	return errors.As(err, &a) && a.Status == http.StatusNotFound
}

// IsRateLimited reports whether err is (or wraps) a 429 answer that outlasted the client's
// retries. Nothing was processed: a poll that got it has not failed, it only comes later.
func IsRateLimited(err error) bool {
	var a *APIError
	return errors.As(err, &a) && a.Status == http.StatusTooManyRequests
}

// IsUnauthorized reports whether err is (or wraps) a 401 answer.
func IsUnauthorized(err error) bool {
	var a *APIError
	return errors.As(err, &a) && a.Status == http.StatusUnauthorized
}

// MaybeCreatedError is returned by CreateTraining and CreatePrediction when the request may have
// reached the API although no answer says so (a 5xx, a dropped connection, a timeout). The object
// may exist: never create again blindly; reconcile with FindTraining / FindPrediction first.
type MaybeCreatedError struct {
	// What is "training" or "prediction".
	What string
	Err  error
}

func (e *MaybeCreatedError) Error() string {
	return fmt.Sprintf("replicate: creating a %s got no clear answer (%v): it may have been created; hint: run again, the %s is looked up before any new one is created", e.What, e.Err, e.What)
}

func (e *MaybeCreatedError) Unwrap() error { return e.Err }

// IsMaybeCreated reports whether err is (or wraps) a MaybeCreatedError.
func IsMaybeCreated(err error) bool {
	var m *MaybeCreatedError
	return errors.As(err, &m)
}

// convertErr turns replicate-go's and transport errors into ours, naming the operation.
func convertErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ours *APIError
	if errors.As(err, &ours) {
		return err
	}
	var theirs *rg.APIError
	if errors.As(err, &theirs) {
		detail := theirs.Detail
		if strings.HasPrefix(detail, "Unknown error:") { // body was not JSON
			detail = ""
		}
		return &APIError{Status: theirs.Status, Title: theirs.Title, Detail: detail, Op: op}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("replicate: %s: %w", op, err)
	}
	return fmt.Errorf("replicate: %s: %w; hint: check the network and REPLICATE_BASE_URL", op, stripURLError(err))
}

// stripURLError drops replicate-go's "failed to make request:" layers but keeps the cause.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue
	}
	return err
}

// ---- retries ----

type zeroBackoff struct{}

func (zeroBackoff) NextDelay(int) time.Duration { return 0 }

type ctxKey int

const (
	retrySafeKey ctxKey = 1
	uploadKey    ctxKey = 2
)

// maxUploadTimeouts is how many times an upload may time out before it is given up: a link too
// slow for the allowance will not get faster by sending the same bytes again and again.
const maxUploadTimeouts = 3

// asUpload marks a request as an upload of size bytes: its attempts get a time allowance that
// grows with the size, and it is tried at most maxUploadTimeouts times after timeouts.
func asUpload(ctx context.Context, size int64) context.Context {
	return context.WithValue(ctx, uploadKey, size)
}

// attemptTimeout is one attempt's deadline passing (not the caller's context).
type attemptTimeout struct {
	what  string
	after time.Duration
	n     int
}

func (e *attemptTimeout) Error() string {
	msg := fmt.Sprintf("%s timed out after %v", e.what, e.after)
	if e.n > 1 {
		msg += fmt.Sprintf(" (%d attempts)", e.n)
	}
	return msg
}
func (e *attemptTimeout) Timeout() bool   { return true }
func (e *attemptTimeout) Temporary() bool { return true }

// attemptTimeoutFor is the allowance for one attempt of a request.
func (c *Client) attemptTimeoutFor(ctx context.Context) time.Duration {
	d := c.timeout
	if size, ok := ctx.Value(uploadKey).(int64); ok && c.uploadRate > 0 {
		d += time.Duration(float64(size) / float64(c.uploadRate) * float64(time.Second))
	}
	return d
}

// cancelBody releases an attempt's context when the answer has been read and closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// retrySafe marks a non-GET request whose repetition cannot create a second paid object (a file
// upload, a cancel, a version delete): 5xx and dropped connections are retried for it too.
func retrySafe(ctx context.Context) context.Context {
	return context.WithValue(ctx, retrySafeKey, true)
}

// Sleep waits d, or less when ctx is done (then it returns ctx.Err()). The stages wait between
// polls and retries with it.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// backoffDelay is exponential with jitter: base·2^attempt, capped at 30s, in [d/2, d).
func (c *Client) backoffDelay(attempt int) time.Duration {
	d := c.backoff << min(attempt, 10)
	if d > 30*time.Second || d <= 0 {
		d = 30 * time.Second
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// pause records a 429's Retry-After: every request of this client waits until then, and the
// budget runs slower for a while after it (pacer.throttle).
func (c *Client) pause(d time.Duration) {
	c.pacer.throttle(c.now(), d)
}

// waitPause sleeps until a recorded Retry-After has passed.
func (c *Client) waitPause(ctx context.Context) error {
	d := c.pacer.pausedFor(c.now())
	if d <= 0 {
		return nil
	}
	return c.sleep(ctx, d)
}

// retryAfter parses Retry-After (seconds, an HTTP date or an RFC 3339 time), capped at 5 minutes.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	return parseRetryAfter(h.Get("Retry-After"), now)
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if s, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(s) && !math.IsInf(s, 0) {
		d = time.Duration(min(s, 3600) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	if d < 0 {
		d = 0
	}
	if d > 5*time.Minute {
		d = 5 * time.Minute
	}
	return d, true
}

// textDetail rewrites an error answer whose `detail` is not a string (a validation error list
// such as [{"loc": ["body","input","steps"], "msg": "..."}], or an object) into one whose detail
// is readable text: replicate-go would otherwise drop the whole answer for "Unknown error".
func textDetail(resp *http.Response) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	rest := resp.Body
	restore := func() {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), rest), rest}
	}
	var doc map[string]json.RawMessage
	if len(head) >= maxErrorBody || json.Unmarshal(head, &doc) != nil {
		restore()
		return
	}
	raw, ok := doc["detail"]
	var str string
	if !ok || json.Unmarshal(raw, &str) == nil {
		restore()
		return
	}
	b, _ := json.Marshal(detailText(raw))
	doc["detail"] = b
	out, err := json.Marshal(doc)
	if err != nil {
		restore()
		return
	}
	_ = rest.Close()
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
}

// detailText renders a non-string `detail` as text: validation entries as "loc: msg" joined with
// "; ", strings joined likewise, anything else as compact JSON.
func detailText(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	one := func(x any) string {
		switch e := x.(type) {
		case string:
			return e
		case map[string]any:
			msg, _ := e["msg"].(string)
			if msg == "" {
				msg, _ = e["message"].(string)
			}
			if msg == "" {
				msg, _ = e["detail"].(string)
			}
			if msg == "" {
				break
			}
			if loc, ok := e["loc"].([]any); ok && len(loc) > 0 {
				parts := make([]string, 0, len(loc))
				for _, l := range loc {
					parts = append(parts, fmt.Sprint(l))
				}
				return strings.Join(parts, ".") + ": " + msg
			}
			return msg
		}
		b, _ := json.Marshal(x)
		return string(b)
	}
	if list, ok := v.([]any); ok {
		parts := make([]string, 0, len(list))
		for _, x := range list {
			parts = append(parts, one(x))
		}
		return strings.Join(parts, "; ")
	}
	return one(v)
}

// maxErrorBody bounds how much of an error answer is read to look inside it.
const maxErrorBody = 64 << 10

// peekBody reads the start of an answer (at most maxErrorBody bytes) and puts it back, so the
// caller can still read the whole body.
func peekBody(resp *http.Response) []byte {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return head
}

// bodyRetryAfter reads the wait from a 429 answer's JSON body ({"retry_after": 7} or a string in
// any Retry-After form, else the detail's "resets in ~30s" / "available in 7 seconds"): the API
// may say it there and not in the header.
func bodyRetryAfter(body []byte, now time.Time) (time.Duration, bool) {
	var b struct {
		RetryAfter json.RawMessage `json:"retry_after"`
		Detail     any             `json:"detail"`
	}
	if json.Unmarshal(body, &b) != nil {
		return 0, false
	}
	if len(b.RetryAfter) == 0 {
		detail, _ := b.Detail.(string)
		if m := detailWaitRe.FindStringSubmatch(detail); m != nil {
			return parseRetryAfter(m[1], now)
		}
		return 0, false
	}
	var v any
	if json.Unmarshal(b.RetryAfter, &v) != nil {
		return 0, false
	}
	switch x := v.(type) {
	case float64:
		return parseRetryAfter(strconv.FormatFloat(x, 'f', -1, 64), now)
	case string:
		return parseRetryAfter(x, now)
	}
	return 0, false
}

// detailWaitRe finds the wait in a throttling detail: "Your rate limit resets in ~30s." or
// "Expected available in 7 seconds."
var detailWaitRe = regexp.MustCompile(`(?i)\bin\s+~?(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)\b`)

// defaultTransport is http.DefaultTransport keeping more idle connections to the API: a batch
// has hundreds of callers, and the default two per host would dial again for nearly every request.
func defaultTransport() http.RoundTripper {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

type retryTransport struct {
	c    *Client
	base http.RoundTripper
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	safe := req.Method == http.MethodGet || req.Method == http.MethodHead || ctx.Value(retrySafeKey) != nil
	_, upload := ctx.Value(uploadKey).(int64)
	c := t.c
	k := c.kindOf(req)
	timeouts := 0
	for attempt := 0; ; attempt++ {
		if err := c.pace(ctx, k); err != nil {
			if attempt == 0 && req.Body != nil {
				_ = req.Body.Close() // a RoundTripper closes the body, sent or not
			}
			return nil, err
		}
		r := req
		if attempt > 0 {
			r = req.Clone(ctx)
			if req.Body != nil && req.Body != http.NoBody {
				if req.GetBody == nil {
					return nil, fmt.Errorf("cannot resend %s %s: body not rewindable", req.Method, req.URL.Path)
				}
				b, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r.Body = b
			}
		}
		// One attempt's deadline (the caller's context still ends it sooner): no whole-client
		// timeout, which would cut off a large upload at a fixed time.
		limit := c.attemptTimeoutFor(ctx)
		actx, cancel := context.WithTimeout(ctx, limit)
		c.pacer.count(k, req.Method, req.URL.Path)
		resp, err := t.base.RoundTrip(r.WithContext(actx))
		if err != nil {
			timedOut := ctx.Err() == nil && actx.Err() != nil
			cancel()
			if timedOut {
				timeouts++
				err = &attemptTimeout{what: req.Method + " " + req.URL.Path, after: limit, n: timeouts}
				if upload && timeouts >= maxUploadTimeouts {
					return nil, err
				}
			}
			if ctx.Err() != nil || !safe || attempt >= c.maxRetries || !transient(err) {
				return nil, err
			}
			if err := c.sleep(ctx, c.backoffDelay(attempt)); err != nil {
				return nil, err
			}
			continue
		}
		retryable := resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode >= 500 && safe)
		if !retryable || attempt >= c.maxRetries {
			if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
				resp.Header.Del("Retry-After") // replicate-go would time.Sleep on it
			}
			if resp.StatusCode >= 400 {
				textDetail(resp)
			}
			resp.Body = cancelBody{resp.Body, cancel}
			return resp, nil
		}
		d, ok := retryAfter(resp.Header, c.now())
		if !ok && resp.StatusCode == http.StatusTooManyRequests {
			d, ok = bodyRetryAfter(peekBody(resp), c.now())
		}
		if !ok {
			d = c.backoffDelay(attempt)
		}
		drain(resp)
		cancel()
		if resp.StatusCode == http.StatusTooManyRequests {
			// Not processed, so safe to repeat for every method; the pause holds every request
			// of this client, not only this one.
			c.pause(d)
			continue
		}
		if err := c.sleep(ctx, d); err != nil {
			return nil, err
		}
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}

// transient reports whether a transport error is worth retrying for a safe request.
func transient(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection reset")
}

// ---- raw requests (where replicate-go's methods do not fit) ----

// do sends a request with the client's auth through the retrying transport and decodes a JSON
// answer into out (nil: ignore the body).
func (c *Client) do(ctx context.Context, method, rawURL string, body io.Reader, contentType string, out any, op string) error {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return fmt.Errorf("replicate: %s: %w", op, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.send(req, out, op)
}

func decodeAPIError(status int, data []byte, op string) error {
	var e struct {
		Title  string `json:"title"`
		Detail string `json:"detail"`
		Status int    `json:"status"`
	}
	_ = json.Unmarshal(data, &e)
	return &APIError{Status: status, Title: e.Title, Detail: e.Detail, Op: op}
}

// sameHost reports whether u is on the API host (the only host that may see the token).
func (c *Client) sameHost(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, c.baseURL.Scheme) && strings.EqualFold(u.Host, c.baseURL.Host)
}

// resolve turns a `next` link into an absolute URL on the API host.
func (c *Client) resolve(next string) (string, error) {
	u, err := url.Parse(next)
	if err != nil {
		return "", fmt.Errorf("replicate: bad pagination link %q: %w", next, err)
	}
	// Keep path and query, always on our base URL: a relative link is joined onto it, and an
	// absolute one (api.replicate.com even behind a REPLICATE_BASE_URL proxy) is rebased, so the
	// token only goes where the user pointed it.
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path
	}
	p := u.Path
	if prefix := c.baseURL.Path; prefix != "" && !strings.HasPrefix(p, prefix+"/") {
		p = prefix + p
	}
	out := *c.baseURL
	out.Path = p
	out.RawPath = ""
	out.RawQuery = u.RawQuery
	return out.String(), nil
}
