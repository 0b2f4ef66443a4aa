package caption

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate/replicatetest"
)

var errKilled = errors.New("killed before the write")

// recorder keeps saved data like state and dies at a chosen moment: Save number FailOn is lost
// (the process died before the write), and after Save number CancelAfter the run is stopped.
type recorder struct {
	pipeline.MemShared
	pipeline.NoLimits
	mu          sync.Mutex
	data        json.RawMessage
	saves       int
	FailOn      int
	CancelAfter int
	cancel      context.CancelFunc
}

func (r *recorder) Save(v any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.saves++
	if r.saves == r.FailOn {
		return errKilled
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.data = b
	if r.saves == r.CancelAfter {
		r.cancel()
	}
	return nil
}
func (*recorder) Progress(pipeline.Progress) {}
func (*recorder) Warn(string)                {}

// A kind written only with the house's helpers pays once whatever moment the process dies at:
// before the intent is written, after it, after the create (the id lost), after the id.
func TestKilledAtEveryStepThePredictionIsPaidOnce(t *testing.T) {
	for _, c := range []struct {
		name    string
		kill    func(r *recorder)
		created int // predictions right after the kill
	}{
		{"before the intent is recorded", func(r *recorder) { r.FailOn = 1 }, 0},
		{"after the intent is recorded", func(r *recorder) { r.CancelAfter = 1 }, 0},
		{"after create, before the id is recorded", func(r *recorder) { r.FailOn = 2 }, 1},
		{"after the id is recorded", func(r *recorder) { r.CancelAfter = 2 }, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := replicatetest.NewServer(replicatetest.Options{Auto: true})
			t.Cleanup(srv.Close)
			srv.AddModel("acme", "ana-lora", 1)
			version := "acme/ana-lora:" + srv.VersionIDs("acme", "ana-lora")[0]
			cl, err := replicate.New(srv.URL(), srv.Token(), replicate.WithRetry(3, time.Millisecond), replicate.WithCreateRetry(3, time.Millisecond), replicate.WithCreateConfirm(20*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			env := &pipeline.Env{Getenv: func(string) string { return "" }}
			replicate.Install(env, cl)
			req := func(rec *recorder, prior *pipeline.Prior) *pipeline.Request {
				return &pipeline.Request{Address: "caption.cover", Kind: "caption", Name: "cover", Env: env, Recorder: rec, Prior: prior,
					Inputs: cty.ObjectVal(map[string]cty.Value{"version": cty.StringVal(version), "prompt": cty.StringVal("a photo of TOK")})}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := &recorder{cancel: cancel}
			c.kill(first)
			if _, err := (Kind{}).Apply(ctx, req(first, nil)); err == nil {
				t.Fatal("the killed apply returned no error")
			}
			if n := srv.Count("created prediction"); n != c.created {
				t.Fatalf("%d predictions right after the kill, want %d", n, c.created)
			}
			resumed := &recorder{}
			res, err := (Kind{}).Apply(context.Background(), req(resumed, &pipeline.Prior{Status: pipeline.StatusRunning, SameInputs: true, Data: first.data}))
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if n := srv.Count("created prediction"); n != 1 {
				t.Fatalf("%d predictions in all, want exactly 1", n)
			}
			if res.Outputs["output"].AsString() == "" || res.Outputs["prediction_id"].AsString() == "" {
				t.Fatalf("outputs %v", res.Outputs)
			}
		})
	}
}
