package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Test stage kinds standing in for real ones: a read-only "check" and a "work" kind that records
// a remote id before "waiting", like train does.

type checkKind struct {
	runs atomic.Int64
}

func (*checkKind) Name() string { return "check" }
func (*checkKind) Schema() *pipeline.Schema {
	return &pipeline.Schema{
		ReadOnly: true,
		Attributes: map[string]*pipeline.Attribute{
			"items":     {Type: cty.List(cty.String), Required: true},
			"min_count": {Type: cty.Number, Default: cty.NumberIntVal(1)},
		},
		Outputs: map[string]cty.Type{"count": cty.Number, "accepted": cty.List(cty.String)},
	}
}
func (k *checkKind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	return nil, errors.New("a read-only kind's Plan must not be called")
}
func (k *checkKind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	k.runs.Add(1)
	items := req.Input("items")
	n := items.LengthInt()
	min, _ := req.Input("min_count").AsBigFloat().Int64()
	res := &pipeline.Result{
		Outputs: map[string]cty.Value{"count": cty.NumberIntVal(int64(n)), "accepted": items},
		Notes:   []string{fmt.Sprintf("%d accepted", n)},
		Details: []pipeline.Detail{
			{About: "count", Text: fmt.Sprintf("count = %d: every item counts", n)},
			{Text: "checked by the test rules"},
		},
	}
	if int64(n) < min {
		res.Refused = fmt.Sprintf("only %d items (min_count %d)", n, min)
	}
	return res, nil
}

// workKind is a remote-like kind. Hooks let tests interrupt it at each step.
type workKind struct {
	mu      sync.Mutex
	creates map[string]int // remote "jobs" created, by address
	applies atomic.Int64
	// fail makes Apply of these addresses fail.
	fail map[string]bool
	// warn makes Apply of these addresses warn (Recorder.Warn) with the message.
	warn map[string]string
	// onStep is called at "start", "saved-intent", "created", "saved-id", "done"; returning an
	// error from it simulates a crash at that point.
	onStep func(addr, step string) error
	// remote, when set, is a directory standing in for the remote service: jobs are files there,
	// so a job created by a process that then crashed can be found again (reconcile).
	remote string
	// upstream records Request.Upstream as Plan saw it, by address; reads Request.Reads.
	upstream map[string][]pipeline.Upstream
	reads    map[string]map[string]cty.Value
	// planFail makes Plan of these addresses fail (a stage that cannot be planned).
	planFail map[string]bool
}

func newWork() *workKind {
	return &workKind{creates: map[string]int{}, fail: map[string]bool{}, warn: map[string]string{}, upstream: map[string][]pipeline.Upstream{}, reads: map[string]map[string]cty.Value{}, planFail: map[string]bool{}}
}

func (*workKind) Name() string { return "work" }
func (*workKind) Schema() *pipeline.Schema {
	return &pipeline.Schema{
		Remote: true,
		Attributes: map[string]*pipeline.Attribute{
			"input":     {Type: cty.DynamicPseudoType},
			"api_token": {Type: cty.String},
			"refuse":    {Type: cty.Bool, Default: cty.False},
			// Money, kept out of the digest as the replicate block's settings are: price is what
			// plan estimates a job at (apply reports 90% of it as the actual cost).
			"price":        {Type: cty.Number, NoDigest: true},
			"max_cost_usd": {Type: cty.Number, NoDigest: true},
		},
		Outputs: map[string]cty.Type{"result": cty.String, "job": cty.String},
	}
}

func (k *workKind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	k.mu.Lock()
	k.upstream[req.Address] = req.Upstream
	k.reads[req.Address] = req.Reads
	bad := k.planFail[req.Address]
	k.mu.Unlock()
	if bad {
		return nil, errors.New("cannot plan: bad setting")
	}
	res := &pipeline.Result{Notes: []string{"would start a job"}}
	var d workData
	if _, err := req.Prior.Decode(&d); err == nil && d.Job != "" && req.Prior.SameInputs && req.Prior.Status != pipeline.StatusComplete {
		res.Reattach = []string{"job " + d.Job}
	}
	if p, ok := number(req.Input("price")); ok && res.Reattach == nil {
		// A re-attached job was started (and paid for) by the earlier run: nothing new to estimate.
		res.Cost = &pipeline.Cost{USD: p, Estimate: true, Basis: fmt.Sprintf("1 job at $%g", p)}
	}
	if m, ok := number(req.Input("max_cost_usd")); ok {
		res.CostLimit = &m
	}
	return res, nil
}

// number reads a known, non-null number input.
func number(v cty.Value) (float64, bool) {
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() {
		return 0, false
	}
	f, _ := v.AsBigFloat().Float64()
	return f, true
}

type workData struct {
	Intent   bool   `json:"intent"`
	Job      string `json:"job,omitempty"`
	APIToken string `json:"api_token,omitempty"`
}

func (k *workKind) step(addr, s string) error {
	if k.onStep == nil {
		return nil
	}
	return k.onStep(addr, s)
}

func (k *workKind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) {
	k.applies.Add(1)
	if err := k.step(req.Address, "start"); err != nil {
		return nil, err
	}
	if k.fail[req.Address] {
		return nil, errors.New("remote job failed: boom")
	}
	var d workData
	if _, err := req.Prior.Decode(&d); err != nil {
		return nil, err
	}
	if req.Prior == nil || !req.Prior.SameInputs {
		d = workData{}
	}
	if d.Job == "" && d.Intent {
		// Died between create and recording the id last time: find the job instead of paying twice.
		d.Job = k.find(req.Address)
	}
	if d.Job == "" {
		tok := ""
		if v := req.Input("api_token"); v != cty.NilVal && !v.IsNull() {
			tok = v.AsString()
		}
		if err := req.Recorder.Save(workData{Intent: true, APIToken: tok}); err != nil {
			return nil, err
		}
		if err := k.step(req.Address, "saved-intent"); err != nil {
			return nil, err
		}
		d.Job = k.create(req.Address)
		if err := k.step(req.Address, "created"); err != nil {
			return nil, err
		}
		d.Intent = false
		if err := req.Recorder.Save(d); err != nil {
			return nil, err
		}
		if err := k.step(req.Address, "saved-id"); err != nil {
			return nil, err
		}
	}
	if msg := k.warn[req.Address]; msg != "" {
		req.Recorder.Warn(msg)
	}
	req.Recorder.Progress(pipeline.Progress{Current: 1, Total: 1, Message: "done", Metrics: map[string]float64{"loss": 0.5}})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := k.step(req.Address, "done"); err != nil {
		return nil, err
	}
	res := &pipeline.Result{Outputs: map[string]cty.Value{
		"result": cty.StringVal("ok:" + req.Input("input").GoString()),
		"job":    cty.StringVal(d.Job),
	}}
	if req.Input("refuse").True() {
		res.Refused = "refused by test"
	}
	if p, ok := number(req.Input("price")); ok {
		res.Cost = &pipeline.Cost{USD: p * 0.9, Basis: "run time × price"}
	}
	return res, nil
}

func (k *workKind) create(addr string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.creates[addr]++
	job := fmt.Sprintf("job-%s-%d", addr, k.creates[addr])
	if k.remote != "" {
		n := len(k.remoteJobs(addr)) + 1
		job = fmt.Sprintf("job-%s-%d", addr, n)
		// A remote create is atomic: write aside, then rename into place.
		final := filepath.Join(k.remote, fileName(addr)+"."+strconv.Itoa(n))
		if err := os.WriteFile(final+".tmp", []byte(job), 0o644); err != nil {
			panic(err)
		}
		if err := os.Rename(final+".tmp", final); err != nil {
			panic(err)
		}
	}
	return job
}

func fileName(addr string) string {
	return strings.NewReplacer("[", "_", "]", "_", `"`, "", "/", "_").Replace(addr)
}

func (k *workKind) remoteJobs(addr string) []string {
	m, _ := filepath.Glob(filepath.Join(k.remote, fileName(addr)+".[0-9]*"))
	var out []string
	for _, f := range m {
		if !strings.HasSuffix(f, ".tmp") {
			out = append(out, f)
		}
	}
	return out
}

func (k *workKind) find(addr string) string {
	if k.remote == "" {
		return ""
	}
	jobs := k.remoteJobs(addr)
	if len(jobs) == 0 {
		return ""
	}
	b, _ := os.ReadFile(jobs[len(jobs)-1])
	return string(b)
}

func (k *workKind) created(addr string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.remote != "" {
		return len(k.remoteJobs(addr))
	}
	return k.creates[addr]
}

func (k *workKind) totalCreated() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.remote != "" {
		m, _ := filepath.Glob(filepath.Join(k.remote, "*"))
		n := 0
		for _, f := range m {
			if !strings.HasSuffix(f, ".tmp") {
				n++
			}
		}
		return n
	}
	n := 0
	for _, c := range k.creates {
		n += c
	}
	return n
}
