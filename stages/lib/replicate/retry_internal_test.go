package replicate

import (
	"net/http"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
)

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"7":   7 * time.Second,
		"1.5": 1500 * time.Millisecond,
		now.Add(9 * time.Second).Format(http.TimeFormat): 9 * time.Second,
		"2026-01-01T12:00:04Z":                           4 * time.Second,
		"2026-01-01T12:00:04.5+00:00":                    4500 * time.Millisecond,
		"2025-12-31T00:00:00Z":                           0,
		"99999":                                          5 * time.Minute,
	} {
		got, ok := parseRetryAfter(v, now)
		if !ok || got != want {
			t.Errorf("Retry-After %q = %v, %v; want %v", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "soon", "NaN"} {
		if _, ok := parseRetryAfter(v, now); ok {
			t.Errorf("Retry-After %q accepted", v)
		}
	}
	for body, want := range map[string]time.Duration{
		`{"detail":"Request was throttled.","retry_after":3}`: 3 * time.Second,
		`{"retry_after":"2026-01-01T12:00:02Z"}`:              2 * time.Second,
	} {
		if got, ok := bodyRetryAfter([]byte(body), now); !ok || got != want {
			t.Errorf("body %s = %v, %v; want %v", body, got, ok, want)
		}
	}
	if _, ok := bodyRetryAfter([]byte(`{"detail":"x"}`), now); ok {
		t.Error("a body without retry_after gave a wait")
	}
}

// The shards of a batch run side by side on one account: each process paces to its part of the
// account's limits, so four shards together stay where one process would.
func TestShardsShareTheAccountsBudget(t *testing.T) {
	for _, tc := range []struct {
		shards          int
		creates, others float64
	}{
		{0, 540, 2400},
		{1, 540, 2400},
		{4, 135, 600},
	} {
		env := &pipeline.Env{Shards: tc.shards, Getenv: func(k string) string {
			if k == "REPLICATE_API_TOKEN" {
				return "r8_test"
			}
			return ""
		}}
		c, err := FromEnv(env)
		if err != nil {
			t.Fatal(err)
		}
		if c.limits.CreatesPerMinute != tc.creates || c.limits.OtherPerMinute != tc.others {
			t.Errorf("%d shards: budget %+v, want %v creates and %v others per minute", tc.shards, c.limits, tc.creates, tc.others)
		}
	}
}
