// Package engine plans and applies a loaded pipeline: it expands the batch, evaluates every stage
// instance in DAG order, diffs it against state to decide what would run and why, and walks the DAG
// with bounded parallelism, recording every transition in state so a later run resumes.
//
//	eng := &engine.Engine{Module: mod, Vars: vars, Store: store, Sink: view, Env: env}
//	plan, err := eng.Plan(ctx)
//	if err == nil && plan.Changes() > 0 {
//		outcome, err = eng.Apply(ctx, plan)
//	}
//
// The engine knows nothing of Replicate or images: stage kinds do the work behind pipeline.Kind.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// Engine holds what plan and apply need. Fill the fields, then call Plan and Apply.
type Engine struct {
	Module *lang.Module
	// Vars are the resolved variable values (lang.Module.Variables).
	Vars  map[string]cty.Value
	Store state.Store
	Sink  pipeline.Sink
	Env   *pipeline.Env
	// Parallelism bounds the stage instances doing local work at once (default 4).
	Parallelism int
	// MaxInFlight bounds the stages only waiting on paid remote work (Recorder.Wait) at once
	// (default 100). They hold no Parallelism slot.
	MaxInFlight int
	// Only restricts a batch to these keys.
	Only []string
	// Shard runs only the keys of shard Index of Count (1-based); zero value = all.
	Shard Shard
	// Replace forces these stage instance addresses to re-run.
	Replace []string
	// LockTimeout is how long apply waits for a lock.
	LockTimeout time.Duration

	now    func() time.Time
	locked map[string]error // keys whose lock another process holds (Acquire)

	secrets   secrets
	resources resourceCounts // what the batch's instances share (collected by Plan)

	dirtyMu sync.Mutex
	dirty   map[*InstancePlan]bool // instances with records not yet written (flushDirty)
}

// Shard is a deterministic hash partition of batch keys.
type Shard struct{ Index, Count int }

// ParseShard parses "I/N" (1 ≤ I ≤ N).
func ParseShard(s string) (Shard, error) {
	i, n, ok := strings.Cut(s, "/")
	if !ok {
		return Shard{}, fmt.Errorf("invalid -shard %q: want I/N, e.g. 2/4", s)
	}
	idx, err1 := strconv.Atoi(strings.TrimSpace(i))
	cnt, err2 := strconv.Atoi(strings.TrimSpace(n))
	if err1 != nil || err2 != nil || cnt < 1 || idx < 1 || idx > cnt {
		return Shard{}, fmt.Errorf("invalid -shard %q: want I/N with 1 ≤ I ≤ N, e.g. 2/4", s)
	}
	return Shard{Index: idx, Count: cnt}, nil
}

// Has reports whether key belongs to the shard.
func (s Shard) Has(key string) bool {
	if s.Count <= 1 {
		return true
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32()%uint32(s.Count)) == s.Index-1
}

func (e *Engine) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

func (e *Engine) emit(ev pipeline.Event) {
	if e.Sink == nil {
		return
	}
	e.secrets.redactEvent(&ev)
	if ev.Time.IsZero() {
		ev.Time = e.clock()
	}
	e.Sink.Emit(ev)
}

// planConcurrency is how many instances plan at once: plan's work is reading (state, the API
// within the client's budget) and cached image checks, bounded on their own, so -parallelism —
// which bounds apply's local work — does not hold a 1,000-subject plan back.
func (e *Engine) planConcurrency() int { return max(e.parallelism(), 32) }

func (e *Engine) maxInFlight() int {
	if e.MaxInFlight < 1 {
		return 100
	}
	return e.MaxInFlight
}

func (e *Engine) parallelism() int {
	if e.Parallelism < 1 {
		return 4
	}
	return e.Parallelism
}

// Address renders a stage instance address: KIND.NAME or KIND.NAME["key"].
func Address(stageAddr string, key string, batch bool) string {
	if !batch {
		return stageAddr
	}
	return stageAddr + "[" + strconv.Quote(key) + "]"
}

// instanceSpec is one expanded batch instance before planning.
type instanceSpec struct {
	key   string
	batch bool
	value cty.Value
}

// DiagError wraps diagnostics as an error so callers can render them with source snippets.
type DiagError = pipeline.DiagError

// Keys lists the batch keys this run selects (after -only and -shard); [""] outside a batch.
func (e *Engine) Keys() ([]string, error) {
	specs, err := e.instances()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.key
	}
	return out, nil
}

// instances expands the batch and applies -only and -shard.
func (e *Engine) instances() ([]instanceSpec, error) {
	if !e.Module.HasBatch() {
		if len(e.Only) > 0 {
			return nil, errors.New("-only needs a batch block: this configuration has no batch")
		}
		if e.Shard.Count > 1 {
			return nil, errors.New("-shard needs a batch block: this configuration has no batch, so every shard would run the same pipeline")
		}
		if err := e.checkReplace(nil, nil, false); err != nil {
			return nil, err
		}
		return []instanceSpec{{key: "", batch: false, value: cty.NilVal}}, nil
	}
	keys, values, diags := e.Module.BatchKeys(e.Vars)
	if diags.HasErrors() {
		return nil, &DiagError{Diags: diags}
	}
	known := make(map[string]bool, len(keys))
	for _, k := range keys {
		known[k] = true
	}
	only := make(map[string]bool, len(e.Only))
	for _, k := range e.Only {
		if !known[k] {
			return nil, fmt.Errorf("-only %q: no such batch key (keys: %s)", k, preview(keys, 8))
		}
		only[k] = true
	}
	var out []instanceSpec
	selected := map[string]bool{}
	for _, k := range keys {
		if len(only) > 0 && !only[k] {
			continue
		}
		if !e.Shard.Has(k) {
			continue
		}
		selected[k] = true
		if _, ok := e.locked[k]; ok {
			continue
		}
		out = append(out, instanceSpec{key: k, batch: true, value: values[k]})
	}
	if err := e.checkReplace(known, selected, true); err != nil {
		return nil, err
	}
	return out, nil
}

// checkReplace refuses a -replace address that names no stage instance: a typo in CI must not
// quietly re-run nothing.
func (e *Engine) checkReplace(keys, selected map[string]bool, batch bool) error {
	for _, r := range e.Replace {
		stage, key, hasKey := r, "", false
		if i := strings.Index(r, "["); i >= 0 && strings.HasSuffix(r, "]") {
			k, err := strconv.Unquote(r[i+1 : len(r)-1])
			if err != nil {
				return fmt.Errorf("-replace %q: the key must be quoted, e.g. train.lora[\"ana\"]", r)
			}
			stage, key, hasKey = r[:i], k, true
		}
		if e.Module.Stage(stage) == nil {
			var names []string
			for _, st := range e.Module.Stages() {
				names = append(names, st.Addr)
			}
			hint := ""
			if s := pipeline.Suggest(stage, names); s != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", s)
			}
			return fmt.Errorf("-replace %q: no stage %s in the configuration%s", r, stage, hint)
		}
		switch {
		case hasKey && !batch:
			return fmt.Errorf("-replace %q: this configuration has no batch; use %s", r, stage)
		case hasKey && !keys[key]:
			return fmt.Errorf("-replace %q: no batch key %q", r, key)
		case hasKey && !selected[key]:
			return fmt.Errorf("-replace %q: key %q is not selected by -only/-shard in this run", r, key)
		}
	}
	return nil
}

func preview(keys []string, n int) string {
	if len(keys) <= n {
		return strings.Join(keys, ", ")
	}
	return strings.Join(keys[:n], ", ") + fmt.Sprintf(", … (%d in all)", len(keys))
}

// stateView implements pipeline.StateView over an instance's records.
type stateView struct {
	mu      *sync.Mutex
	inst    *state.Instance
	schemas func(kind string) map[string]cty.Type
}

func (v *stateView) Records(kind string) []pipeline.StageRecord {
	v.mu.Lock()
	defer v.mu.Unlock()
	addrs := make([]string, 0, len(v.inst.Records))
	for a := range v.inst.Records {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	var out []pipeline.StageRecord
	for _, a := range addrs {
		r := v.inst.Records[a]
		if kind != "" && r.Kind != kind {
			continue
		}
		sr := pipeline.StageRecord{Kind: r.Kind, Name: r.Name, Status: r.Status, Data: r.Data}
		if types := v.schemas(r.Kind); types != nil {
			if o, ok := restoreOutputs(types, r.Outputs); ok {
				sr.Outputs = o
			}
		} else if o, err := unmarshalValue(r.Outputs); err == nil {
			sr.Outputs = o
		}
		out = append(out, sr)
	}
	return out
}

// Shared implements pipeline.StateView.
func (v *stateView) Shared(name string) json.RawMessage {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append(json.RawMessage(nil), v.inst.Shared[name]...)
}

// Interrupted is returned (wrapped) when a run stopped because its context was cancelled.
var Interrupted = errors.New("interrupted")

// Acquire takes the state lock of every selected instance before an apply plans. When every key
// is held by the same lock (a local state file, or one other run holding all keys), the
// *state.LockedError is returned. Otherwise keys held elsewhere are left out of this run and
// reported as locked, while the others go on (SPEC: batch exit status 4).
func (e *Engine) Acquire(ctx context.Context, operation string) (release func(), err error) {
	specs, err := e.instances()
	if err != nil {
		return nil, err
	}
	info := state.NewLockInfo(operation)
	var (
		mu     sync.Mutex
		held   []state.Lock
		locked = map[string]error{}
		first  error
	)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, sp := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func(key string) {
			defer wg.Done()
			defer func() { <-sem }()
			l, err := e.Store.Lock(ctx, key, info, e.LockTimeout)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				held = append(held, l)
				if note := state.LockNote(l); note != "" {
					e.emit(pipeline.Event{Type: pipeline.EventLog, Key: key, Message: note})
				}
			case errors.As(err, new(*state.LockedError)):
				locked[key] = err
			default:
				if first == nil {
					first = err
				}
			}
		}(sp.key)
	}
	wg.Wait()
	release = func() {
		for _, l := range held {
			_ = l.Unlock()
		}
	}
	if first != nil {
		release()
		return nil, first
	}
	if len(locked) > 0 && len(held) == 0 {
		var le *state.LockedError
		same := true
		for _, err := range locked {
			var x *state.LockedError
			errors.As(err, &x)
			if le == nil {
				le = x
			} else if x.Info.ID != le.Info.ID {
				same = false
			}
		}
		if same {
			release()
			return nil, le
		}
	}
	e.locked = locked
	for _, k := range sortedKeys(locked) {
		for _, st := range e.Module.Stages() {
			e.emit(pipeline.Event{Type: pipeline.EventStageSkipped, Address: Address(st.Addr, k, true), Kind: st.Kind, Key: k,
				Message: "locked elsewhere, skipped: " + locked[k].Error()})
		}
	}
	return release, nil
}
