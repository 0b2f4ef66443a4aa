package replicatetest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// A scaled clock runs Speed times faster than wall time; Advance moves it on and wakes sleepers.
func TestScaledClock(t *testing.T) {
	c := NewClock(t0, 1000)
	start := time.Now()
	if err := c.Sleep(context.Background(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if wall, virt := time.Since(start), c.Since(t0); wall > time.Second || virt < 2*time.Second {
		t.Errorf("2 s of virtual sleep took %v of wall time, clock moved %v", wall, virt)
	}
	still := NewClock(t0, 0)
	done := make(chan error)
	go func() { done <- still.Sleep(context.Background(), time.Hour) }()
	still.BlockUntil(1)
	still.Advance(30 * time.Minute)
	select {
	case <-done:
		t.Fatal("woke after half the sleep")
	default:
	}
	still.Advance(30 * time.Minute)
	if err := <-done; err != nil || !still.Now().Equal(t0.Add(time.Hour)) {
		t.Fatalf("after the hour: %v at %v", err, still.Now())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := still.Sleep(ctx, time.Hour); err != context.Canceled {
		t.Errorf("cancelled sleep: %v", err)
	}
}

// A stepped clock stands still while a member runs and moves to the earliest wake-up once every
// member sleeps; sleepers wake in order of their deadlines.
func TestSteppedClock(t *testing.T) {
	c := NewSteppedClock(t0)
	var mu sync.Mutex
	var order []time.Duration
	var wg sync.WaitGroup
	c.Join() // the test itself, until every sleeper is asleep
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second} {
		wg.Add(1)
		c.Join()
		go func() {
			defer wg.Done()
			defer c.Leave()
			_ = c.Sleep(context.Background(), d)
			mu.Lock()
			order = append(order, c.Since(t0))
			mu.Unlock()
		}()
	}
	c.BlockUntil(3) // everyone else is asleep; the clock must not have moved while the test is awake
	if !c.Now().Equal(t0) {
		t.Fatalf("the clock moved to %v while a member was awake", c.Now())
	}
	c.Leave()
	wg.Wait()
	if len(order) != 3 || order[0] != time.Second || order[1] != 2*time.Second || order[2] != 3*time.Second {
		t.Errorf("woke at %v, want 1s, 2s, 3s", order)
	}
	if d := <-c.After(time.Minute); !d.Equal(t0.Add(3*time.Second + time.Minute)) {
		t.Errorf("After with no member awake: %v", d)
	}
}

// With RateLimits the server admits 600 prediction creates and 3,000 other requests per sliding
// minute and answers the next with 429, Retry-After and Replicate's detail; the window frees up
// as its oldest requests leave it.
func TestRateLimitsLikeReplicates(t *testing.T) {
	clk := NewClock(t0, 0)
	s := NewServer(Options{Clock: clk, RateLimits: &Limits{OtherPerMinute: 5, CreatesPerMinute: 2}})
	defer s.Close()
	s.AddModel("acme", "m", 1)
	v := s.VersionIDs("acme", "m")[0]
	get := func() (int, http.Header, []byte) { return call(t, s, "GET", "/v1/models/acme/m", s.Token(), nil) }
	create := func() int {
		code, _, _ := call(t, s, "POST", "/v1/predictions", s.Token(), map[string]any{"version": v, "input": map[string]any{"prompt": "x"}})
		return code
	}
	for i := 0; i < 5; i++ {
		if code, _, _ := get(); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
		clk.Advance(10 * time.Second)
	}
	code, h, body := get()
	if code != 429 || h.Get("Retry-After") != "10" || !strings.Contains(string(body), "Request was throttled. Your rate limit resets in ~10s.") {
		t.Fatalf("6th request in a minute: %d, Retry-After %q, %s", code, h.Get("Retry-After"), body)
	}
	if create() != 201 || create() != 201 || create() != 429 {
		t.Error("creates have their own limit of 2")
	}
	clk.Advance(10 * time.Second) // the first request leaves the window
	if code, _, _ := get(); code != 200 {
		t.Errorf("after Retry-After: %d", code)
	}
	st := s.Stats()
	if st.Throttled != 2 || st.PeakOtherPerMinute != 6 || st.PeakCreatesPerMinute != 3 || st.Requests != 10 {
		t.Errorf("stats %+v", st)
	}
	// Off by default.
	plain := NewServer(Options{})
	defer plain.Close()
	for i := 0; i < 50; i++ {
		if code, _, _ := call(t, plain, "GET", "/v1/models/ostris/flux-dev-lora-trainer", plain.Token(), nil); code != 200 {
			t.Fatalf("without RateLimits: %d", code)
		}
	}
}

// TrainingTime fixes every training's length in the server's time; predict_time is what ran
// (the length less its start), however late anyone looked; the peak in flight is counted.
func TestTrainingTimeAndPeakInFlight(t *testing.T) {
	clk := NewClock(t0, 0)
	s := NewServer(Options{Clock: clk, Auto: true, TrainingTime: 10 * time.Minute})
	defer s.Close()
	s.AddModel("acme", "m", 0)
	f := upload(t, s)
	var ids []string
	for i := 0; i < 3; i++ {
		_, _, body := call(t, s, "POST", "/v1/models/ostris/flux-dev-lora-trainer/versions/"+TrainerVersion+"/trainings", s.Token(),
			map[string]any{"destination": "acme/m", "input": map[string]any{"input_images": f, "trigger_word": "T" + strconv.Itoa(i)}})
		ids = append(ids, jsonField(t, body, "id"))
		clk.Advance(time.Minute)
	}
	status := func(id string) string {
		_, _, body := call(t, s, "GET", "/v1/trainings/"+id, s.Token(), nil)
		return jsonField(t, body, "status")
	}
	clk.Advance(6*time.Minute + 59*time.Second) // 9:59 after the first
	if st := status(ids[0]); st != "processing" {
		t.Fatalf("at 9:59: %s", st)
	}
	clk.Advance(time.Hour)
	_, _, body := call(t, s, "GET", "/v1/trainings/"+ids[0], s.Token(), nil)
	if !strings.Contains(string(body), `"predict_time":540`) || jsonField(t, body, "status") != "succeeded" {
		t.Errorf("finished training: %s", body)
	}
	if n := s.Stats().PeakTrainingsInFlight; n != 3 {
		t.Errorf("peak in flight %d, want 3", n)
	}
}

// Over the files API's 100 MiB the server answers as the API's proxy does: 413 with an HTML page
// (no JSON detail), nothing stored.
func TestUploadOver100MiBIs413(t *testing.T) {
	s := NewServer(Options{})
	defer s.Close()
	req, _ := http.NewRequest("POST", s.URL()+"/v1/files", io.LimitReader(zeros{}, MaxRequestBytes+1))
	req.ContentLength = MaxRequestBytes + 1
	req.Header.Set("Authorization", "Bearer "+s.Token())
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "413 Request Entity Too Large") {
		t.Errorf("%d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if s.Count("uploaded file") != 0 || s.Count("413") != 1 {
		t.Errorf("uploaded %d, 413s %d", s.Count("uploaded file"), s.Count("413"))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func upload(t *testing.T, s *Server) string {
	t.Helper()
	c := &http.Client{}
	body := "--b\r\nContent-Disposition: form-data; name=\"content\"; filename=\"a.zip\"\r\nContent-Type: application/zip\r\n\r\nzip\r\n--b--\r\n"
	req, _ := http.NewRequest("POST", s.URL()+"/v1/files", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Token())
	req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var f struct{ URLs map[string]string }
	if err := jsonUnmarshal(data, &f); err != nil || f.URLs["get"] == "" {
		t.Fatalf("upload: %s", data)
	}
	return f.URLs["get"]
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// jsonField reads a top-level string field of a JSON answer.
func jsonField(t *testing.T, body []byte, key string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	s, _ := m[key].(string)
	return s
}
