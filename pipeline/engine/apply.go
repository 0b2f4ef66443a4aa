package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// Outcome is the result of an apply.
type Outcome struct {
	// Instances in plan order, with every stage's final status.
	Instances []*InstanceOutcome
	// Locked lists the batch keys skipped because another process holds their lock.
	Locked map[string]error
	// Interrupted is true when the run stopped early on Ctrl-C / SIGTERM.
	Interrupted bool
}

// InstanceOutcome is what happened to one batch instance.
type InstanceOutcome struct {
	Key     string
	Batch   bool
	Stages  []*StageOutcome
	Outputs map[string]cty.Value
}

// StageOutcome is what happened to one stage instance.
type StageOutcome struct {
	Address string
	Kind    string
	Name    string
	Status  Status
	Message string
	Outputs cty.Value
	// Cost is what the stage's paid jobs cost (from their metrics.predict_time), nil if none.
	Cost *pipeline.Cost
}

// Counts tallies stage outcomes by status ("complete", "noop", "failed", ...; "locked" counts
// the batch keys left out for a lock).
func (o *Outcome) Counts() map[string]int {
	c := map[string]int{}
	for _, io := range o.Instances {
		for _, so := range io.Stages {
			c[string(so.Status)]++
		}
	}
	if len(o.Locked) > 0 {
		c["locked"] = len(o.Locked)
	}
	return c
}

// Apply runs the plan: every instance's DAG is walked with bounded parallelism across all
// instances. A failure skips its downstream stages only; other instances go on. When ctx is
// cancelled no new stage starts, running stages record what they know, and Apply returns.
func (e *Engine) Apply(ctx context.Context, plan *Plan) (*Outcome, error) {
	if err := plan.OverBudget(); err != nil {
		return nil, err // max_cost_usd: nothing may start
	}
	out := &Outcome{Instances: make([]*InstanceOutcome, len(plan.Instances)), Locked: e.locked}
	sem := &slots{local: newPool(e.parallelism()), waiting: make(chan struct{}, e.maxInFlight())}
	var wg sync.WaitGroup
	for i, ip := range plan.Instances {
		io := &InstanceOutcome{Key: ip.Key, Batch: ip.Batch}
		out.Instances[i] = io
		if ip.Err != nil {
			io.Stages = append(io.Stages, &StageOutcome{Address: "batch", Status: StatusFailed, Message: ip.Err.Error()})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.applyInstance(ctx, ip, io, sem)
		}()
	}
	stopFlusher := e.startFlusher(ctx)
	wg.Wait()
	stopFlusher()
	e.flushDirty(ctx)
	out.Interrupted = ctx.Err() != nil
	e.emitRootOutputs(plan, out)
	e.emit(pipeline.Event{Type: pipeline.EventChangeSummary, Operation: "apply", Counts: out.Counts(), Cost: &pipeline.Cost{USD: out.CostUSD()}})
	return out, nil
}

// startFlusher writes dirty instances every second while Apply runs, bounding what a crash loses
// to about a second of cheap local work.
func (e *Engine) startFlusher(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e.flushDirty(ctx)
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (e *Engine) emitRootOutputs(plan *Plan, out *Outcome) {
	all := map[string]any{}
	for _, io := range out.Instances {
		for name, v := range io.Outputs {
			if !plan.Batch {
				all[name] = Plain(v, nil)
				continue
			}
			m, _ := all[name].(map[string]any)
			if m == nil {
				m = map[string]any{}
				all[name] = m
			}
			m[io.Key] = Plain(v, nil)
		}
	}
	if len(all) > 0 {
		e.emit(pipeline.Event{Type: pipeline.EventOutputs, Outputs: all, Simulated: e.Env != nil && e.Env.Simulated})
	}
}

type stageRun struct {
	sp   *StagePlan
	done chan struct{}
	out  *StageOutcome
}

// slots are apply's two budgets: local work (-parallelism) and stages only waiting on paid remote
// work (-max-in-flight). A stage holds one of local while it works and may trade it for one of
// waiting (Recorder.Wait) while its job runs on Replicate; coming back, it goes before stages that
// have not started.
type slots struct {
	local   *pool
	waiting chan struct{}
}

// take acquires a place in ch, or gives up when ctx ends.
func take(ctx context.Context, ch chan struct{}) error {
	select {
	case ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) applyInstance(ctx context.Context, ip *InstancePlan, io *InstanceOutcome, sem *slots) {
	// An instance with a stage that cannot be planned is left out whole (SPEC): running its
	// upstream stages would spend money on a pipeline that cannot finish.
	for _, bad := range ip.Stages {
		if bad.Err == nil {
			continue
		}
		for _, sp := range ip.Stages {
			so := &StageOutcome{Address: sp.Address, Kind: sp.Stage.Kind, Name: sp.Stage.Name, Status: StatusSkipped,
				Message: "left out: " + bad.Address + " cannot be planned"}
			if sp == bad {
				so.Status, so.Message = StatusFailed, sp.Err.Error()
			} else {
				e.emit(pipeline.Event{Type: pipeline.EventStageSkipped, Address: sp.Address, Kind: sp.Stage.Kind, Key: ip.Key, Message: so.Message})
			}
			io.Stages = append(io.Stages, so)
		}
		return
	}
	runs := make(map[string]*stageRun, len(ip.Stages))
	for _, sp := range ip.Stages {
		runs[sp.Stage.Addr] = &stageRun{sp: sp, done: make(chan struct{})}
	}
	var evalMu sync.Mutex // the instance scope is not safe for concurrent use
	var wg sync.WaitGroup
	for _, sp := range ip.Stages {
		r := runs[sp.Stage.Addr]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(r.done)
			for _, d := range sp.Stage.Deps {
				<-runs[d].done
			}
			r.out = e.runStage(ctx, ip, r, runs, sem, &evalMu)
		}()
	}
	wg.Wait()
	for _, sp := range ip.Stages {
		io.Stages = append(io.Stages, runs[sp.Stage.Addr].out)
	}
	if ctx.Err() != nil {
		return
	}
	// Root outputs of this instance, when every stage they need is known.
	evalMu.Lock()
	outs, diags := ip.scope.EvalOutputs()
	evalMu.Unlock()
	if !diags.HasErrors() {
		io.Outputs = map[string]cty.Value{}
		attrs := map[string]cty.Value{}
		for k, v := range outs {
			if v.ContainsMarked() {
				// A sensitive output (declared so, or derived from a sensitive value) is never shown
				// or stored.
				v = cty.StringVal(Redacted)
			}
			if v.IsWhollyKnown() {
				io.Outputs[k] = v
				attrs[k] = v
			}
		}
		if raw, err := marshalValue(cty.ObjectVal(attrs)); err == nil {
			raw = e.secrets.redactJSON(raw)
			ip.mu.Lock()
			ip.state.Outputs = raw
			e.markDirty(ip)
			ip.mu.Unlock()
		}
	}
}

func (e *Engine) runStage(ctx context.Context, ip *InstancePlan, r *stageRun, runs map[string]*stageRun, sem *slots, evalMu *sync.Mutex) *StageOutcome {
	sp := r.sp
	st := sp.Stage
	so := &StageOutcome{Address: sp.Address, Kind: st.Kind, Name: st.Name}
	setOutputs := func(v cty.Value) {
		evalMu.Lock()
		ip.scope.SetStage(st.Addr, v)
		evalMu.Unlock()
	}
	for _, d := range st.Deps {
		dr := runs[d]
		switch ds := dr.out.Status; {
		case ds.ok():
			continue
		case ds == StatusNotStarted || ds == StatusInterrupted:
			so.Status = StatusNotStarted
			return so
		default:
			so.Status = StatusSkipped
			so.Message = "upstream " + d + " " + string(ds)
			e.emit(pipeline.Event{Type: pipeline.EventStageSkipped, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: so.Message})
			return so
		}
	}
	switch {
	case sp.Err != nil:
		so.Status, so.Message = StatusFailed, sp.Err.Error()
		e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: so.Message, Operation: "apply"})
		return so
	case sp.Action == pipeline.ActionSkip:
		so.Status, so.Message = StatusSkipped, firstOr(sp.Reasons, "skipped")
		e.emit(pipeline.Event{Type: pipeline.EventStageSkipped, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: so.Message})
		return so
	case sp.Action == pipeline.ActionNoop && !sp.ReadOnly:
		so.Outputs = sp.Outputs
		setOutputs(sp.Outputs)
		if sp.Refused != "" {
			so.Status, so.Message = StatusRefused, sp.Refused
			e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: so.Message, Refused: true, Operation: "apply"})
			return so
		}
		so.Status = StatusNoop
		return so
	}
	if ctx.Err() != nil {
		so.Status = StatusNotStarted
		return so
	}
	if sem.local.acquire(ctx, false) != nil {
		so.Status = StatusNotStarted
		return so
	}
	held := &slotHold{s: sem, local: true}
	defer held.release()

	if sp.ReadOnly && sp.ranInPlan {
		return e.recordReadOnly(ctx, ip, sp, so, setOutputs)
	}

	// Re-evaluate with the now known upstream outputs.
	evalMu.Lock()
	planParts := sp.Parts
	err := e.evalStage(ip, sp)
	evalMu.Unlock()
	if err != nil {
		return e.fail(ip, sp, so, err)
	}
	needPlan := false
	for k, v := range planParts {
		if len(k) > 0 && k[0] == '+' {
			if v == "" {
				needPlan = true
			}
			sp.Parts[k] = v
		}
	}
	if needPlan || (!sp.ReadOnly && len(planParts) == 0) {
		evalMu.Lock()
		req := e.request(ip, sp, true, nopRecorder{})
		evalMu.Unlock()
		res, err := call(ctx, st.Impl.Plan, req)
		if err != nil {
			return e.fail(ip, sp, so, err)
		}
		for k, v := range res.Digest {
			sp.Parts["+"+k] = v
		}
	}
	sp.Digest = combineDigest(sp.Parts)

	rec := &state.Record{
		Kind: st.Kind, Name: st.Name, Status: pipeline.StatusRunning,
		InputDigest: sp.Digest, DigestParts: sp.Parts, Inputs: sp.Display,
		StartedAt: e.clock().UTC(),
	}
	if sp.prior != nil && sp.prior.InputDigest == sp.Digest {
		// Same inputs: keep what the earlier run recorded (its remote ids) until the kind replaces it.
		rec.Data = sp.prior.Data
	}
	rec.UpdatedAt = rec.StartedAt
	// The start needs no write of its own: nothing remote happened yet, and the kind's first
	// Recorder.Save (before any remote call) writes it durably.
	durable := st.Schema.Remote
	if err := e.putRecord(ctx, ip, st.Addr, rec, false); err != nil {
		return e.fail(ip, sp, so, fmt.Errorf("recording the start in state: %w", err))
	}
	e.emit(pipeline.Event{Type: pipeline.EventStageStart, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Remote: st.Schema.Remote, Simulated: e.simulated(st.Schema.Remote), Action: sp.Action})

	recorder := &recorder{e: e, ip: ip, sp: sp, addr: st.Addr, ctx: ctx, hold: held}
	evalMu.Lock()
	req := e.request(ip, sp, false, recorder)
	evalMu.Unlock()
	res, err := call(ctx, st.Impl.Apply, req)
	so.Cost = costOf(res) // a failed or stopped job may have cost money too
	for _, w := range res.Warnings {
		e.emit(pipeline.Event{Type: pipeline.EventStageWarning, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: w, Simulated: e.simulated(st.Schema.Remote)})
	}
	ip.mu.Lock()
	rec = ip.state.Records[st.Addr]
	rec.Warnings = e.secrets.redactAll(res.Warnings)
	rec.UpdatedAt = e.clock().UTC()
	ip.mu.Unlock()
	if err != nil {
		status := pipeline.StatusFailed
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			status = pipeline.StatusInterrupted
		}
		e.finishRecord(ctx, ip, st.Addr, status, nil, err.Error(), durable)
		if status == pipeline.StatusInterrupted {
			so.Status, so.Message = StatusInterrupted, "recorded in state; the next apply resumes it"
			e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: so.Message, Operation: "apply",
				Interrupted: true, Cost: so.Cost, Remote: st.Schema.Remote, Simulated: e.simulated(st.Schema.Remote)})
			return so
		}
		so.Status, so.Message = StatusFailed, err.Error()
		e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: st.Kind, Key: ip.Key, Message: so.Message, Remote: st.Schema.Remote,
			Simulated: e.simulated(st.Schema.Remote), Operation: "apply", Cost: so.Cost})
		return so
	}
	outputs, oerr := outputObject(st.Schema.Outputs, res.Outputs, false)
	if oerr != nil {
		e.finishRecord(ctx, ip, st.Addr, pipeline.StatusFailed, nil, oerr.Error(), durable)
		return e.fail(ip, sp, so, oerr)
	}
	raw, _ := marshalValue(recordable(st.Schema, outputs))
	so.Outputs = outputs
	setOutputs(outputs)
	ev := pipeline.Event{Address: sp.Address, Kind: st.Kind, Key: ip.Key, Remote: st.Schema.Remote, Simulated: e.simulated(st.Schema.Remote),
		Outputs: plainMap(outputs, sensitiveByName(outputs, nil, nil)), Warnings: res.Warnings, Deletes: res.Deletes, Notes: res.Notes,
		Items: res.Items, Cost: so.Cost}
	if res.Refused != "" {
		e.finishRecord(ctx, ip, st.Addr, pipeline.StatusRefused, raw, res.Refused, durable)
		so.Status, so.Message = StatusRefused, res.Refused
		ev.Type = pipeline.EventStageOutputs
		ev.Refused, ev.Message = true, res.Refused
		e.emit(ev)
		ev.Type = pipeline.EventStageFailed
		ev.Operation = "apply"
		e.emit(ev)
		return so
	}
	e.finishRecord(ctx, ip, st.Addr, pipeline.StatusComplete, raw, "", durable)
	so.Status = StatusComplete
	ev.Type = pipeline.EventStageOutputs
	e.emit(ev)
	ev.Type = pipeline.EventStageComplete
	e.emit(ev)
	return so
}

func (e *Engine) simulated(remote bool) bool { return remote && e.Env != nil && e.Env.Simulated }

// recordReadOnly stores the result a read-only stage produced during plan.
func (e *Engine) recordReadOnly(ctx context.Context, ip *InstancePlan, sp *StagePlan, so *StageOutcome, setOutputs func(cty.Value)) *StageOutcome {
	st := sp.Stage
	raw, _ := marshalValue(recordable(st.Schema, sp.Outputs))
	status := pipeline.StatusComplete
	if sp.Refused != "" {
		status = pipeline.StatusRefused
	}
	now := e.clock().UTC()
	rec := &state.Record{Kind: st.Kind, Name: st.Name, Status: status, InputDigest: sp.Digest, DigestParts: sp.Parts,
		Inputs: sp.Display, Outputs: e.secrets.redactJSON(raw), Error: e.secrets.redact(sp.Refused),
		Warnings: e.secrets.redactAll(sp.Warnings), StartedAt: now, UpdatedAt: now}
	if sp.Unchanged {
		rec.StartedAt = sp.prior.StartedAt
	}
	if err := e.putRecord(ctx, ip, st.Addr, rec, false); err != nil {
		return e.fail(ip, sp, so, fmt.Errorf("recording in state: %w", err))
	}
	so.Outputs = sp.Outputs
	setOutputs(sp.Outputs)
	if sp.Refused != "" {
		so.Status, so.Message = StatusRefused, sp.Refused
		e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: st.Kind, Key: ip.Key, ReadOnly: true, Message: sp.Refused, Refused: true, Operation: "apply"})
		return so
	}
	so.Status = StatusRead // plan's word for every read-only stage, changed or not
	if sp.Unchanged {
		return so
	}
	e.emit(pipeline.Event{Type: pipeline.EventStageComplete, Address: sp.Address, Kind: st.Kind, Key: ip.Key, ReadOnly: true,
		Outputs: plainMap(sp.Outputs, nil), Warnings: sp.Warnings, Items: sp.Items})
	return so
}

func (e *Engine) fail(ip *InstancePlan, sp *StagePlan, so *StageOutcome, err error) *StageOutcome {
	so.Status, so.Message = StatusFailed, err.Error()
	e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: sp.Stage.Kind, Key: ip.Key, Message: so.Message, Operation: "apply"})
	return so
}

// putRecord replaces a record. It is written durably at once when durable is set; otherwise the
// instance is marked dirty and written by the next flush (at the latest when Apply returns).
func (e *Engine) putRecord(ctx context.Context, ip *InstancePlan, addr string, rec *state.Record, durable bool) error {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.state.Records[addr] = rec
	if !durable {
		e.markDirty(ip)
		return nil
	}
	return e.Store.Put(context.WithoutCancel(ctx), ip.Key, ip.state)
}

// markDirty queues an instance for the next flush. Callers hold ip.mu.
func (e *Engine) markDirty(ip *InstancePlan) {
	e.dirtyMu.Lock()
	if e.dirty == nil {
		e.dirty = map[*InstancePlan]bool{}
	}
	e.dirty[ip] = true
	e.dirtyMu.Unlock()
}

// flushDirty writes every dirty instance. Puts run concurrently so a store that group-commits
// (the local file) writes them together.
func (e *Engine) flushDirty(ctx context.Context) {
	e.dirtyMu.Lock()
	batch := e.dirty
	e.dirty = nil
	e.dirtyMu.Unlock()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for ip := range batch {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ip.mu.Lock()
			err := e.Store.Put(context.WithoutCancel(ctx), ip.Key, ip.state)
			ip.mu.Unlock()
			if err != nil {
				e.emit(pipeline.Event{Type: pipeline.EventLog, Key: ip.Key, Message: "saving state failed: " + err.Error()})
			}
		}()
	}
	wg.Wait()
}

// finishRecord sets a record's final status and writes it. Writing uses a context that survives
// Ctrl-C: what a stage learned must reach state even when the run is stopping. Remote stages write
// durably at once (a minute-long training makes the write free, and its outputs are worth it);
// local stages are cheap to redo and are written by the next flush.
func (e *Engine) finishRecord(ctx context.Context, ip *InstancePlan, addr string, status pipeline.Status, outputs json.RawMessage, msg string, durable bool) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	rec := ip.state.Records[addr]
	rec.Status = status
	rec.Outputs = e.secrets.redactJSON(outputs)
	rec.Error = e.secrets.redact(msg)
	rec.UpdatedAt = e.clock().UTC()
	if !durable {
		e.markDirty(ip)
		return
	}
	if err := e.Store.Put(context.WithoutCancel(ctx), ip.Key, ip.state); err != nil {
		e.emit(pipeline.Event{Type: pipeline.EventLog, Address: Address(addr, ip.Key, ip.Batch), Key: ip.Key, Message: "saving state failed: " + err.Error()})
	}
}

// recorder is the pipeline.Recorder handed to a running stage.
type recorder struct {
	e    *Engine
	ip   *InstancePlan
	sp   *StagePlan
	addr string
	ctx  context.Context
	hold *slotHold
}

// slotHold is the place a running stage holds: a local slot, or a waiting one after Wait.
type slotHold struct {
	mu    sync.Mutex
	s     *slots
	local bool // holds a local slot (else a waiting one, or none)
	wait  bool
}

// release gives back whatever the stage holds when it returns.
func (h *slotHold) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.local {
		h.s.local.release()
	}
	if h.wait {
		<-h.s.waiting
	}
	h.local, h.wait = false, false
}

// Wait implements pipeline.Recorder: the local slot goes to other stages while this one waits,
// within -max-in-flight.
func (r *recorder) Wait(ctx context.Context) (func(), error) {
	h := r.hold
	h.mu.Lock()
	if h.wait {
		h.mu.Unlock()
		return func() {}, nil // already waiting
	}
	if h.local {
		h.s.local.release()
		h.local = false
	}
	h.mu.Unlock()
	if err := take(ctx, h.s.waiting); err != nil {
		return func() {}, err
	}
	h.mu.Lock()
	h.wait = true
	h.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { h.backToWork(ctx) }) }, nil
}

// backToWork trades the waiting place for a local slot again (none when ctx ended: the stage is
// stopping and needs no slot to record what it knows).
func (h *slotHold) backToWork(ctx context.Context) {
	h.mu.Lock()
	if h.wait {
		<-h.s.waiting
		h.wait = false
	}
	h.mu.Unlock()
	if h.s.local.acquire(ctx, true) == nil {
		h.mu.Lock()
		h.local = true
		h.mu.Unlock()
	}
}

func (r *recorder) Save(data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("recording stage data: %w", err)
	}
	b = r.e.secrets.redactJSON(scrubSecrets(b))
	r.ip.mu.Lock()
	defer r.ip.mu.Unlock()
	rec := r.ip.state.Records[r.addr]
	rec.Data = b
	rec.UpdatedAt = r.e.clock().UTC()
	return r.e.Store.Put(context.WithoutCancel(r.ctx), r.ip.Key, r.ip.state)
}

// UpdateShared implements pipeline.Recorder. Updates of an instance's shared records are
// serialised by sharedMu; update runs without the state lock, so it may read the instance's
// records (a ledger built from an older state's records does).
func (r *recorder) UpdateShared(name string, update func(old json.RawMessage) (json.RawMessage, error)) error {
	r.ip.sharedMu.Lock()
	defer r.ip.sharedMu.Unlock()
	r.ip.mu.Lock()
	old := append(json.RawMessage(nil), r.ip.state.Shared[name]...)
	r.ip.mu.Unlock()
	next, err := update(old)
	if err != nil {
		return err
	}
	r.ip.mu.Lock()
	defer r.ip.mu.Unlock()
	if r.ip.state.Shared == nil {
		r.ip.state.Shared = map[string]json.RawMessage{}
	}
	if next == nil {
		delete(r.ip.state.Shared, name)
	} else {
		r.ip.state.Shared[name] = r.e.secrets.redactJSON(scrubSecrets(next))
	}
	return r.e.Store.Put(context.WithoutCancel(r.ctx), r.ip.Key, r.ip.state)
}

func (r *recorder) Progress(p pipeline.Progress) {
	pp := p
	r.e.emit(pipeline.Event{Type: pipeline.EventStageProgress, Address: r.sp.Address, Kind: r.sp.Stage.Kind, Key: r.ip.Key,
		Remote: r.sp.Stage.Schema.Remote, Simulated: r.e.simulated(r.sp.Stage.Schema.Remote), Progress: &pp})
}

func (r *recorder) Warn(msg string) {
	r.e.emit(pipeline.Event{Type: pipeline.EventStageWarning, Address: r.sp.Address, Kind: r.sp.Stage.Kind, Key: r.ip.Key, Message: msg,
		Simulated: r.e.simulated(r.sp.Stage.Schema.Remote)})
}

// scrubSecrets redacts string values under keys that name a token or secret, so a stage that
// records its input (with hf_token, wandb_api_key) never writes a secret to state.
func scrubSecrets(b []byte) []byte {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	changed := false
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case map[string]any:
			for k, e := range t {
				if s, ok := e.(string); ok && secretField(k) && s != "" && s != Redacted {
					t[k] = Redacted
					changed = true
					continue
				}
				t[k] = walk(e)
			}
		case []any:
			for i, e := range t {
				t[i] = walk(e)
			}
		}
		return x
	}
	v = walk(v)
	if !changed {
		return b
	}
	out, err := json.Marshal(v)
	if err != nil {
		return b
	}
	return out
}

// secretField: names like hf_token, wandb_api_key, client_secret. Plain "key" (a batch key) is not.
func secretField(k string) bool {
	if k == "key" || k == "keys" {
		return false
	}
	return SensitiveName(k)
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// CostUSD is what the apply's paid jobs cost, from their metrics.predict_time.
func (o *Outcome) CostUSD() float64 {
	total := 0.0
	for _, io := range o.Instances {
		total += io.CostUSD()
	}
	return roundUSD(total)
}

// CostUSD is what one instance's paid jobs cost.
func (io *InstanceOutcome) CostUSD() float64 {
	total := 0.0
	for _, so := range io.Stages {
		if so.Cost != nil {
			total += so.Cost.USD
		}
	}
	return roundUSD(total)
}

// LockedKeys lists the keys skipped for a lock, sorted.
func (o *Outcome) LockedKeys() []string {
	out := make([]string, 0, len(o.Locked))
	for k := range o.Locked {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
