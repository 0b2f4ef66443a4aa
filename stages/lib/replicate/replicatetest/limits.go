package replicatetest

import (
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Limits are request rate limits the server enforces like Replicate does
// (https://replicate.com/docs/topics/predictions/rate-limits): creating predictions at most
// CreatesPerMinute, every other API request at most OtherPerMinute, each over a sliding Window
// of (virtual) time. Over a limit the server answers 429 with Retry-After (seconds until the
// window has room) and {"detail": "Request was throttled. Your rate limit resets in ~Ns."}; a
// throttled request is not processed and does not count against the window.
type Limits struct {
	CreatesPerMinute int           // default 600
	OtherPerMinute   int           // default 3,000
	Window           time.Duration // default one minute
}

func (l Limits) withDefaults() Limits {
	if l.CreatesPerMinute <= 0 {
		l.CreatesPerMinute = 600
	}
	if l.OtherPerMinute <= 0 {
		l.OtherPerMinute = 3000
	}
	if l.Window <= 0 {
		l.Window = time.Minute
	}
	return l
}

// Stats is the server's own accounting of load, in the server's (virtual) time.
type Stats struct {
	// Requests counts API requests that passed authentication (429s included).
	Requests int
	// PeakPerMinute is the most API requests that arrived within one minute, every kind
	// together; PeakCreatesPerMinute counts prediction creates, PeakOtherPerMinute the rest.
	PeakPerMinute, PeakCreatesPerMinute, PeakOtherPerMinute int
	// Throttled counts 429 answers of the rate limits (Options.RateLimits).
	Throttled int
	// PeakTrainingsInFlight is the most trainings created and not yet finished at once.
	PeakTrainingsInFlight int
}

// Stats returns the server's accounting so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.PeakPerMinute = s.load.all.peak(time.Minute)
	st.PeakCreatesPerMinute = s.load.creates.peak(time.Minute)
	st.PeakOtherPerMinute = s.load.other.peak(time.Minute)
	return st
}

// window is a log of request times in order. Times are taken when a request arrives, before it
// waits for the server's lock, so requests queued behind a slow one do not look bunched.
type window struct{ at []time.Time }

// insert adds t in order (requests that raced for the lock may come slightly out of order).
func (w *window) insert(t time.Time) {
	i := len(w.at)
	for i > 0 && w.at[i-1].After(t) {
		i--
	}
	w.at = append(w.at, time.Time{})
	copy(w.at[i+1:], w.at[i:])
	w.at[i] = t
}

// since is the index of the first time after t.
func (w *window) since(t time.Time) int {
	return sort.Search(len(w.at), func(i int) bool { return w.at[i].After(t) })
}

// peak is the most times within any span.
func (w *window) peak(span time.Duration) int {
	best, j := 0, 0
	for i, t := range w.at {
		for !w.at[j].After(t.Add(-span)) {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// load is the server's rate accounting: every arrival per kind (for the peaks) and, when limits
// are on, the requests each limit admitted.
type load struct {
	all, creates, other      window
	admitCreates, admitOther window
}

// isCreate tells a prediction create (POST /v1/predictions, or model/deployment scoped).
func isCreate(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/predictions")
}

// arrive records an API request that arrived at t.
func (s *Server) arrive(r *http.Request, t time.Time) {
	s.stats.Requests++
	s.load.all.insert(t)
	if isCreate(r) {
		s.load.creates.insert(t)
	} else {
		s.load.other.insert(t)
	}
}

// throttle applies the rate limits to a request that arrived at t: it answers 429 and returns
// true when r is over its limit.
func (s *Server) throttle(w http.ResponseWriter, r *http.Request, t time.Time) bool {
	if s.opts.RateLimits == nil {
		return false
	}
	l := s.opts.RateLimits.withDefaults()
	win, limit := &s.load.admitOther, l.OtherPerMinute
	if isCreate(r) {
		win, limit = &s.load.admitCreates, l.CreatesPerMinute
	}
	from := win.since(t.Add(-l.Window))
	if n := win.since(t) - from; n < limit {
		win.insert(t)
		if from > 4*limit { // keep the log short
			win.at = append([]time.Time(nil), win.at[from:]...)
		}
		return false
	}
	// Room again when the oldest admitted request in the window leaves it.
	wait := max(1, int(math.Ceil(win.at[from].Add(l.Window).Sub(t).Seconds())))
	s.stats.Throttled++
	s.counts["429"]++
	w.Header().Set("Retry-After", strconv.Itoa(wait))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"detail": "Request was throttled. Your rate limit resets in ~" + strconv.Itoa(wait) + "s.",
	})
	return true
}

// inFlightLocked counts trainings not finished yet (after tickLocked, as of now).
func (s *Server) inFlightLocked() int {
	n := 0
	for _, t := range s.w.Trainings {
		if !terminal(t.Status) {
			n++
		}
	}
	return n
}
