package train

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// Resources names the destination, from the stage or the replicate block, so the engine can
// tell which subjects share it; an unknown one names nothing.
func TestResourcesNameTheDestination(t *testing.T) {
	h := newHarness(t)
	req := h.request(input(goodInput...), nil, &recorder{})
	if got := (Kind{}).Resources(req); len(got) != 1 || got[0] != replicate.ModelResource("acme/ana-lora") {
		t.Fatalf("resources %v", got)
	}
	withSettings(req, map[string]cty.Value{"destination": cty.UnknownVal(cty.String)})
	if got := (Kind{}).Resources(req); len(got) != 0 {
		t.Fatalf("unknown destination: %v", got)
	}
}

// 1,000 subjects of two processes race to make sure one missing model exists: it is created
// once, with at most one create request per process (its stages share one look-up-or-create),
// the loser of the race between the processes reading the model back after its 409.
func TestSharedDestinationIsCreatedOnceWhenAThousandRace(t *testing.T) {
	h := newHarness(t)
	var clients []*replicate.Client
	for i := 0; i < 2; i++ {
		c, err := replicate.New(h.srv.URL(), h.srv.Token(), replicate.WithRetry(6, time.Millisecond), replicate.WithSleep(h.sleep.sleep))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	start := make(chan struct{})
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, _, err := ensureModel(context.Background(), clients[i%2], "acme", "all-lora", "gpu-t4", func() {}); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := h.srv.Count("created model"); n != 1 {
		t.Fatalf("model created %d times", n)
	}
	if n := h.srv.Count("POST /v1/models"); n > 2 {
		t.Errorf("%d create requests for 1,000 subjects of 2 processes, want at most one each", n)
	}
}

// On a destination several subjects share, every other version is another subject's:
// previous_version is this subject's own previous one (its ledger), and plan says apps must pin
// each subject's version.
func TestSharedDestinationPreviousVersionIsTheSubjectsOwn(t *testing.T) {
	h := newHarness(t)
	h.srv.AddModel("acme", "all-lora", 2)
	ids := h.srv.VersionIDs("acme", "all-lora") // newest first: [1] is ana's, [0] ben's
	rec := &recorder{}
	own := "acme/all-lora:" + ids[1]
	if err := rec.UpdateShared(replicate.LedgerName, func(json.RawMessage) (json.RawMessage, error) {
		l := &replicate.Ledger{}
		l.Produced(own, "t-ana-1", 3, "sha256:x", time.Now())
		return jsonOf(l), nil
	}); err != nil {
		t.Fatal(err)
	}
	shared := map[string]int{replicate.ModelResource("acme/all-lora"): 3}
	plan := func() *pipeline.Request {
		req := h.request(input(goodInput...), nil, rec)
		withSettings(req, map[string]cty.Value{"destination": cty.StringVal("acme/all-lora")})
		req.Shared, req.State = shared, pipeline.MemState{Memory: &rec.MemShared}
		return req
	}
	res, err := Kind{}.Plan(context.Background(), plan())
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(res.Notes, "\n")
	for _, want := range []string{"destination acme/all-lora is shared by 3 subjects", "this subject's own previous version (" + own + ")",
		"apps must pin each subject's version (`pipeline output -json version`)"} {
		if !strings.Contains(notes, want) {
			t.Errorf("plan notes lack %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "becomes previous_version") {
		t.Errorf("plan names the model's latest (another subject's) as previous_version:\n%s", notes)
	}
	out, err := h.apply(plan())
	if err != nil {
		t.Fatal(err)
	}
	if got := str(out.Outputs["previous_version"]); got != own {
		t.Fatalf("previous_version %s, want the subject's own %s (not ben's %s)", got, own, ids[0])
	}
}

// While the training runs on Replicate the stage holds no -parallelism slot: it calls Wait
// before it follows the training and gives the wait back (done) only once it ended.
func TestFollowingWaitsWithoutASlot(t *testing.T) {
	h := newHarness(t)
	h.lockstep()
	rec := &recorder{}
	if _, err := h.apply(h.request(input(goodInput...), nil, rec)); err != nil {
		t.Fatal(err)
	}
	ev := strings.Join(rec.events, "\n")
	wait, done := strings.Index(ev, "wait\n"), strings.Index(ev, "\ndone")
	first, last := strings.Index(ev, " processing"), strings.LastIndex(ev, " succeeded")
	if strings.Count(ev, "wait") != 1 || wait < 0 || done < 0 || !(wait < first && first < last && last < done) {
		t.Fatalf("events out of order (want wait, the training's progress, done):\n%s", ev)
	}
	for _, e := range rec.events {
		if e == "wait" {
			break
		}
		if strings.HasPrefix(e, "training ") {
			t.Fatalf("progress of the running training before Wait:\n%s", ev)
		}
	}
}

func jsonOf(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
