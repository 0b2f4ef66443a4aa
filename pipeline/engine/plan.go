package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/pipeline/lang"
	"github.com/pipeline-dev/pipeline/pipeline/state"
)

// Plan is what apply would do, per batch instance.
type Plan struct {
	Batch     bool
	Instances []*InstancePlan

	stageCount int // stages in the module: what an instance that cannot be planned reports
}

// InstancePlan is the plan of one batch instance (the only one outside a batch).
type InstancePlan struct {
	Key    string
	Batch  bool
	Value  cty.Value
	Serial uint64
	Stages []*StagePlan
	// Err is set when the instance could not be planned at all (state unreadable, bad locals).
	Err error

	byAddr map[string]*StagePlan
	mu     sync.Mutex // guards state below during apply
	// sharedMu serialises updates of the instance's shared records (recorder.UpdateShared).
	sharedMu sync.Mutex
	state    *state.Instance
	scope    *lang.Scope
	view     *stateView
}

// StagePlan is the plan of one stage instance.
type StagePlan struct {
	Stage    *lang.Stage
	Address  string
	Action   pipeline.Action
	ReadOnly bool
	Reasons  []string
	Notes    []string
	// Details are the kind's Result.Details: shown when their output changed (shownDetails).
	Details  []pipeline.Detail
	Deletes  []string
	Warnings []string
	// Items is the kind's Result.Items (folding its warnings).
	Items *pipeline.Items
	// Unchanged marks a read whose result matches the recorded one.
	Unchanged bool
	// Reattach names the recorded jobs apply follows again (action reattach).
	Reattach []string
	// Cost is the kind's estimate of the paid work it would start; CostLimit its max_cost_usd.
	Cost      *pipeline.Cost
	CostLimit *float64
	// Effects are what the stage's plan said it does (pipeline.Result.Effects).
	Effects []string
	// Refused is set when a read-only stage refused the data during plan.
	Refused string
	// Err is set when the stage instance failed to plan.
	Err error

	Inputs    cty.Value
	Blocks    []pipeline.Block
	Settings  map[string]cty.Value
	Sensitive []cty.Path
	Parts     map[string]string
	Display   map[string]json.RawMessage
	// Digest is the input digest, "" when inputs are not wholly known yet.
	Digest  string
	Outputs cty.Value

	prior     *state.Record
	ranInPlan bool
}

// Changes counts stage instances apply would run, re-attach or delete with (read-only stages
// never count).
func (p *Plan) Changes() int {
	n := 0
	for _, ip := range p.Instances {
		for _, sp := range ip.Stages {
			if !sp.ReadOnly && sp.Err == nil && sp.Action.Changes() {
				n++
			}
		}
	}
	return n
}

// Refused reports whether any stage refused during plan.
func (p *Plan) Refused() bool {
	for _, ip := range p.Instances {
		for _, sp := range ip.Stages {
			if sp.Refused != "" {
				return true
			}
		}
	}
	return false
}

// Errored reports whether any instance or stage failed to plan.
func (p *Plan) Errored() bool {
	for _, ip := range p.Instances {
		if ip.Err != nil {
			return true
		}
		for _, sp := range ip.Stages {
			if sp.Err != nil {
				return true
			}
		}
	}
	return false
}

// Counts tallies the plan's actions for the summary with the planned_change words: one count
// per action (every action present, so a script needs no defaults), plus how many of those
// instances refused and how many cannot be planned (their action is skip).
func (p *Plan) Counts() map[string]int {
	c := map[string]int{"refused": 0, "cannot_be_planned": 0}
	for _, a := range pipeline.Actions {
		c[string(a)] = 0
	}
	for _, ip := range p.Instances {
		if ip.Err != nil {
			// Every stage of the instance is reported as one that cannot be planned.
			c[string(pipeline.ActionSkip)] += p.stageCount
			c["cannot_be_planned"] += p.stageCount
			continue
		}
		for _, sp := range ip.Stages {
			switch {
			case sp.Err != nil:
				c[string(pipeline.ActionSkip)]++
				c["cannot_be_planned"]++
				continue
			case sp.Refused != "":
				c["refused"]++
			}
			c[string(sp.Action)]++
		}
	}
	return c
}

// Plan evaluates every selected instance without side effects and emits planned_change events.
func (e *Engine) Plan(ctx context.Context) (*Plan, error) {
	specs, err := e.instances()
	if err != nil {
		return nil, err
	}
	e.collectVarSecrets()
	e.resources = e.collectResources()
	if e.Env != nil && e.Env.Redact == nil {
		e.Env.Redact = e.secrets.redact
	}
	plan := &Plan{Batch: e.Module.HasBatch(), Instances: make([]*InstancePlan, len(specs)), stageCount: len(e.Module.Stages())}
	sem := make(chan struct{}, e.planConcurrency())
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, sp instanceSpec) {
			defer wg.Done()
			defer func() { <-sem }()
			plan.Instances[i] = e.planInstance(ctx, sp)
		}(i, sp)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("plan %w: %v", Interrupted, err)
	}
	for _, ip := range plan.Instances {
		e.emitInstancePlan(ip)
	}
	money := plan.Money()
	e.emit(pipeline.Event{Type: pipeline.EventChangeSummary, Operation: "plan", Counts: plan.Counts(),
		Cost: &pipeline.Cost{USD: money.EstimateUSD, Estimate: true}, CostLimit: money.LimitUSD})
	if err := plan.OverBudget(); err != nil {
		e.emit(pipeline.Event{Type: pipeline.EventDiagnostic, Diagnostic: err.Diagnostic()})
	}
	return plan, nil
}

func (e *Engine) emitInstancePlan(ip *InstancePlan) {
	if ip.Err != nil {
		// The instance could not be planned at all: each of its stages is reported as skipped
		// with the reason, under its own address.
		for _, st := range e.Module.Stages() {
			addr := Address(st.Addr, ip.Key, ip.Batch)
			e.emit(pipeline.Event{Type: pipeline.EventPlannedChange, Address: addr, Kind: st.Kind, Key: ip.Key,
				ReadOnly: st.Schema.ReadOnly, Remote: st.Schema.Remote, Action: pipeline.ActionSkip, Message: ip.Err.Error()})
			e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: addr, Kind: st.Kind, Key: ip.Key, Message: ip.Err.Error(), Operation: "plan"})
		}
		return
	}
	for _, sp := range ip.Stages {
		if sp.Err != nil {
			sp.Action = pipeline.ActionSkip // it cannot run; the message says why
		}
		shown, hidden := splitDetails(sp)
		ev := pipeline.Event{
			Type: pipeline.EventPlannedChange, Address: sp.Address, Kind: sp.Stage.Kind, Key: ip.Key,
			ReadOnly: sp.ReadOnly, Remote: sp.Stage.Schema.Remote, Simulated: e.Env != nil && e.Env.Simulated && sp.Stage.Schema.Remote,
			Action: sp.Action, Reasons: sp.Reasons, Notes: append(append([]string(nil), sp.Notes...), shown...), Details: hidden,
			Deletes: sp.Deletes, Warnings: sp.Warnings, Items: sp.Items, Unchanged: sp.Unchanged, Quiet: quiet(ip, sp),
			Unknown: unknownInputs(sp),
		}
		if sp.Err == nil && sp.Action.Changes() {
			ev.Cost = sp.Cost // an up-to-date stage spends nothing, whatever it would cost
		}
		if sp.Err != nil {
			ev.Message = sp.Err.Error()
		}
		if sp.Refused != "" {
			ev.Message = sp.Refused
			ev.Refused = true
		}
		e.emit(ev)
		if sp.ranInPlan && sp.Err == nil && sp.Outputs != cty.NilVal {
			e.emit(pipeline.Event{
				Type: pipeline.EventStageOutputs, Address: sp.Address, Kind: sp.Stage.Kind, Key: ip.Key, ReadOnly: true,
				Outputs: plainMap(sp.Outputs, nil), Warnings: sp.Warnings, Refused: sp.Refused != "", Message: sp.Refused,
			})
		}
		if sp.Err != nil {
			e.emit(pipeline.Event{Type: pipeline.EventStageFailed, Address: sp.Address, Kind: sp.Stage.Kind, Key: ip.Key, Message: sp.Err.Error(), Operation: "plan"})
		}
	}
}

// quiet reports whether nothing happens for a planned change: an up-to-date stage, or a read
// that was recorded before and that no stage this plan runs depends on (its result may have
// changed, but nothing is done about it).
func quiet(ip *InstancePlan, sp *StagePlan) bool {
	switch {
	case sp.Err != nil || sp.Refused != "":
		return false
	case sp.Action == pipeline.ActionNoop:
		return true
	case sp.Action == pipeline.ActionRead:
		return sp.prior != nil && !feedsChange(ip, sp.Stage, map[string]bool{})
	}
	return false
}

// feedsChange reports whether a stage that depends on st, directly or not, will change.
func feedsChange(ip *InstancePlan, st *lang.Stage, seen map[string]bool) bool {
	for _, d := range st.Dependents {
		if seen[d] {
			continue
		}
		seen[d] = true
		dp := ip.byAddr[d]
		if dp == nil {
			continue
		}
		if dp.Action.Changes() || feedsChange(ip, dp.Stage, seen) {
			return true
		}
	}
	return false
}

// splitDetails sorts a stage's details: those whose output differs from the recorded run's
// are shown with its notes, the others only on request (-details). With no recorded run
// nothing changed: the stage's notes say what it chose.
func splitDetails(sp *StagePlan) (shown, hidden []string) {
	old := cty.NilVal
	if sp.prior != nil {
		if o, ok := restoreOutputs(sp.Stage.Schema.Outputs, sp.prior.Outputs); ok {
			old = o
		}
	}
	for _, d := range sp.Details {
		if d.About != "" && old != cty.NilVal && outputChanged(old, sp.Outputs, d.About) {
			shown = append(shown, d.Text)
		} else {
			hidden = append(hidden, d.Text)
		}
	}
	return shown, hidden
}

// outputChanged compares two output objects at a dotted path of attribute (or map key) names.
// A value not known yet has not changed: plan cannot tell.
func outputChanged(old, cur cty.Value, path string) bool {
	a, b := old, cur
	for _, name := range strings.Split(path, ".") {
		a, b = step(a, name), step(b, name)
	}
	if b != cty.NilVal && !b.IsWhollyKnown() {
		return false
	}
	ja, _ := json.Marshal(plainOrNil(a))
	jb, _ := json.Marshal(plainOrNil(b))
	return !bytes.Equal(ja, jb)
}

// step descends into an object attribute or a map element; cty.NilVal when there is none.
func step(v cty.Value, name string) cty.Value {
	if v == cty.NilVal || v.IsNull() || !v.IsKnown() {
		return cty.NilVal
	}
	switch t := v.Type(); {
	case t.IsObjectType() && t.HasAttribute(name):
		return v.GetAttr(name)
	case t.IsMapType() && v.HasIndex(cty.StringVal(name)).True():
		return v.Index(cty.StringVal(name))
	}
	return cty.NilVal
}

func plainOrNil(v cty.Value) any {
	if v == cty.NilVal {
		return nil
	}
	return Plain(v, nil)
}

// unknownInputs names the top-level inputs of a stage that will run but are not known yet.
func unknownInputs(sp *StagePlan) []string {
	if !sp.Action.Changes() || sp.Inputs == cty.NilVal || !sp.Inputs.Type().IsObjectType() {
		return nil
	}
	var out []string
	for _, name := range sortedKeys(sp.Inputs.Type().AttributeTypes()) {
		if !sp.Inputs.GetAttr(name).IsWhollyKnown() {
			out = append(out, name)
		}
	}
	return out
}

// plainMap renders an output object as a map for events.
func plainMap(v cty.Value, sensitive []cty.Path) map[string]any {
	if m, ok := Plain(v, sensitive).(map[string]any); ok {
		return m
	}
	return nil
}

func (e *Engine) planInstance(ctx context.Context, spec instanceSpec) *InstancePlan {
	ip := &InstancePlan{Key: spec.key, Batch: spec.batch, Value: spec.value, byAddr: map[string]*StagePlan{}}
	prior, err := e.Store.Get(ctx, spec.key)
	if err != nil {
		ip.Err = fmt.Errorf("reading state: %w", err)
		return ip
	}
	if prior == nil {
		prior = &state.Instance{Key: spec.key, Records: map[string]*state.Record{}}
	}
	if prior.Records == nil {
		prior.Records = map[string]*state.Record{}
	}
	ip.state = prior
	ip.Serial = prior.Serial
	ip.view = &stateView{mu: &ip.mu, inst: prior, schemas: e.outputTypes}
	scope, diags := e.Module.NewScope(lang.Instance{Key: spec.key, Batch: spec.batch, Value: spec.value, Vars: e.Vars})
	if diags.HasErrors() {
		ip.Err = &DiagError{Diags: diags}
		return ip
	}
	ip.scope = scope
	for _, st := range e.Module.Stages() {
		if ctx.Err() != nil {
			return ip
		}
		sp := e.planStage(ctx, ip, st)
		ip.Stages = append(ip.Stages, sp)
		ip.byAddr[st.Addr] = sp
		scope.SetStage(st.Addr, sp.Outputs)
	}
	return ip
}

func (e *Engine) outputTypes(kind string) map[string]cty.Type {
	for _, st := range e.Module.Stages() {
		if st.Kind == kind {
			return st.Schema.Outputs
		}
	}
	return nil
}

func (e *Engine) replaced(addr, stageAddr string) bool {
	for _, r := range e.Replace {
		if r == addr || r == stageAddr {
			return true
		}
	}
	return false
}

// upstreamBlocked returns a reason when a dependency failed, refused or was skipped.
func upstreamBlocked(ip *InstancePlan, st *lang.Stage) string {
	for _, d := range st.Deps {
		dp := ip.byAddr[d]
		if dp == nil {
			continue
		}
		switch {
		case dp.Err != nil:
			return "upstream " + d + " failed"
		case dp.Refused != "":
			return "upstream " + d + " refused: " + dp.Refused
		case dp.Action == pipeline.ActionSkip:
			return "upstream " + d + " is skipped"
		}
	}
	return ""
}

// evalStage evaluates a stage's inputs, blocks and settings in the instance scope.
func (e *Engine) evalStage(ip *InstancePlan, sp *StagePlan) error {
	st := sp.Stage
	inputs, blocks, sens, diags := ip.scope.EvalStage(st)
	if diags.HasErrors() {
		return &DiagError{Diags: diags}
	}
	settings := make(map[string]cty.Value, len(st.Schema.Settings))
	for _, name := range st.Schema.Settings {
		v, diags := ip.scope.EvalSettings(name)
		if diags.HasErrors() {
			return &DiagError{Diags: diags}
		}
		settings[name] = v
	}
	sens = sensitiveByName(inputs, nil, sens)
	for _, p := range sens {
		if len(p) > 0 {
			if _, ok := p[0].(cty.GetAttrStep); ok {
				e.secrets.add(valueAt(inputs, p))
			}
		}
	}
	sp.Inputs, sp.Blocks, sp.Settings, sp.Sensitive = inputs, blocks, settings, sens
	sp.Parts, sp.Display = digestParts(inputs, blocks, settings, sens)
	for name, decl := range st.Schema.Attributes {
		if decl != nil && decl.StageKind != "" {
			delete(sp.Display, name) // a whole stage's outputs: its digest says enough ("reference changed")
		}
	}
	digestBy(ip, sp)
	dropNewDefaults(sp)
	dropNoDigest(sp)
	for k, v := range sp.Display {
		// Display values go to state and into later reasons: no secret in them, whatever path it took.
		sp.Display[k] = e.secrets.redactJSON(v)
	}
	if st.Schema.Remote && e.Env != nil && e.Env.Simulated {
		// Simulated results must never pass for real ones (nor the other way round): the
		// simulator is part of a remote stage's inputs.
		sp.Parts[simulatedPart] = hashString("simulated")
	}
	return nil
}

// dropNewDefaults leaves out of the digest every input that holds its schema default and that
// the recorded run did not digest: an attribute a release adds (or one a user writes out with
// its default value) never re-runs a finished stage. An input the recorded run digested stays
// in, so its digest still matches.
func dropNewDefaults(sp *StagePlan) {
	for name, decl := range sp.Stage.Schema.Attributes {
		part, ok := sp.Parts[name]
		if !ok || decl == nil {
			continue
		}
		if sp.prior != nil {
			if _, had := sp.prior.DigestParts[name]; had {
				continue
			}
		}
		def := decl.Default
		if def == cty.NilVal {
			def = cty.NullVal(decl.Type) // no default: unset is null
		}
		if d, known := digestOf(def); known && d == part {
			delete(sp.Parts, name)
			delete(sp.Display, name)
		}
	}
}

// digestBy digests a whole-stage input by the one output its schema names (DigestBy). A run
// recorded before digested the whole object: its part stands while the stage it names still
// says the same in that output (its own record's), so an upgrade re-runs nothing.
func digestBy(ip *InstancePlan, sp *StagePlan) {
	for name, decl := range sp.Stage.Schema.Attributes {
		if decl == nil || decl.DigestBy == "" {
			continue
		}
		v := sp.Inputs.GetAttr(name)
		if !v.IsKnown() || v.IsNull() || !v.Type().IsObjectType() || !v.Type().HasAttribute(decl.DigestBy) {
			continue
		}
		by := v.GetAttr(decl.DigestBy)
		d, ok := digestOf(by)
		if !ok {
			continue
		}
		sp.Parts[name] = d
		if sp.prior == nil {
			continue
		}
		old, had := sp.prior.DigestParts[name]
		if had && old != d && sameRecordedOutput(ip, sp.Stage, decl.StageKind, decl.DigestBy, by) {
			sp.Parts[name] = old
		}
	}
}

// sameRecordedOutput reports whether the one dependency of kind that st has recorded output
// `output` equal to v.
func sameRecordedOutput(ip *InstancePlan, st *lang.Stage, kind, output string, v cty.Value) bool {
	ip.mu.Lock() // apply writes records meanwhile
	defer ip.mu.Unlock()
	var dep *state.Record
	for _, d := range st.Deps {
		if r := ip.state.Records[d]; r != nil && r.Kind == kind {
			if dep != nil {
				return false // two candidates: cannot tell which
			}
			dep = r
		}
	}
	if dep == nil {
		return false
	}
	rec, err := unmarshalValue(dep.Outputs)
	if err != nil || rec == cty.NilVal || !rec.Type().IsObjectType() || !rec.Type().HasAttribute(output) {
		return false
	}
	return rec.GetAttr(output).RawEquals(v)
}

// dropNoDigest leaves out the inputs and settings the schema keeps out of digests (money). A run
// recorded before such a setting was kept out digested it: its recorded part stands, so the
// digest matches whatever the setting says now.
func dropNoDigest(sp *StagePlan) {
	drop := func(name string) {
		if sp.prior != nil {
			if old, had := sp.prior.DigestParts[name]; had {
				sp.Parts[name] = old
				sp.Display[name] = sp.prior.Inputs[name]
				return
			}
		}
		delete(sp.Parts, name)
		delete(sp.Display, name)
	}
	for name, decl := range sp.Stage.Schema.Attributes {
		if decl != nil && decl.NoDigest {
			drop(name)
		}
	}
	for set, attrs := range sp.Stage.Schema.SettingsAttributes {
		for name, decl := range attrs {
			if decl != nil && decl.NoDigest {
				drop(set + "." + name)
			}
		}
	}
	noDigestBlock := func(name string) bool {
		typ, _, _ := strings.Cut(strings.SplitN(name, "[", 2)[0], ".")
		bs := sp.Stage.Schema.Blocks[typ]
		return bs != nil && bs.NoDigest
	}
	for name := range sp.Parts {
		if noDigestBlock(name) {
			drop(name)
		}
	}
	if sp.prior != nil {
		for name := range sp.prior.DigestParts {
			if _, now := sp.Parts[name]; !now && noDigestBlock(name) {
				drop(name) // removed since: the recorded part stands, as for a changed one
			}
		}
	}
}

// simulatedPart is the digest component present only for remote stages run under -simulate.
const simulatedPart = "+simulated"

func (e *Engine) planStage(ctx context.Context, ip *InstancePlan, st *lang.Stage) *StagePlan {
	sp := &StagePlan{Stage: st, Address: Address(st.Addr, ip.Key, ip.Batch), ReadOnly: st.Schema.ReadOnly}
	sp.prior = ip.state.Records[st.Addr]
	if why := upstreamBlocked(ip, st); why != "" {
		sp.Action = pipeline.ActionSkip
		sp.Reasons = []string{why}
		sp.Outputs = unknownOutputs(st.Schema.Outputs)
		return sp
	}
	if err := e.evalStage(ip, sp); err != nil {
		sp.Err = err
		sp.Outputs = unknownOutputs(st.Schema.Outputs)
		return sp
	}
	if st.Schema.ReadOnly && sp.Inputs.IsWhollyKnown() {
		e.planReadOnly(ctx, ip, sp)
		return sp
	}
	e.planRemote(ctx, ip, sp)
	return sp
}

// planReadOnly runs a read-only stage for real during plan.
func (e *Engine) planReadOnly(ctx context.Context, ip *InstancePlan, sp *StagePlan) {
	st := sp.Stage
	res, err := call(ctx, st.Impl.Apply, e.request(ip, sp, true, nopRecorder{}))
	sp.ranInPlan = true
	if err != nil {
		sp.Err = err // events carry the address
		sp.Outputs = unknownOutputs(st.Schema.Outputs)
		return
	}
	sp.Notes, sp.Details, sp.Warnings, sp.Refused, sp.Items = res.Notes, res.Details, res.Warnings, res.Refused, res.Items
	sp.CostLimit = res.CostLimit
	out, err := outputObject(st.Schema.Outputs, res.Outputs, false)
	if err != nil {
		sp.Err = err // events carry the address
		sp.Outputs = unknownOutputs(st.Schema.Outputs)
		return
	}
	sp.Outputs = out
	for k, v := range res.Digest {
		sp.Parts["+"+k] = v
	}
	sp.Digest = combineDigest(sp.Parts)
	// Every read-only stage is a read; whether its result changed decides what plan shows and
	// whether apply records it anew.
	sp.Action = pipeline.ActionRead
	switch {
	case sp.prior == nil:
	case sp.prior.Status == pipeline.StatusComplete && sp.prior.InputDigest == sp.Digest && sameOutputs(sp.prior.Outputs, recordable(st.Schema, out), st.Schema):
		sp.Unchanged = true
	default:
		if sp.prior.InputDigest != sp.Digest {
			sp.Reasons = changeReasons(sp.prior, sp.Parts, sp.Display)
		}
		sp.Reasons = append(sp.Reasons, outputChanges(st.Schema.Outputs, sp.prior.Outputs, out)...)
		if len(sp.Reasons) == 0 {
			sp.Reasons = []string{"last run " + string(sp.prior.Status)}
		}
	}
}

// planRemote asks a stage kind what it would do.
func (e *Engine) planRemote(ctx context.Context, ip *InstancePlan, sp *StagePlan) {
	st := sp.Stage
	res, known, err := e.planKind(ctx, ip, sp)
	if err == nil && known && unfinished(sp.prior) && sp.prior.InputDigest == sp.Digest {
		// Only now, with the parts the kind adds to the digest, is it known that the inputs are
		// the unfinished run's: plan again so the kind sees Prior.SameInputs and can say what it
		// re-attaches.
		res, known, err = e.planKind(ctx, ip, sp)
	}
	if err != nil {
		sp.Err = err // events carry the address
		sp.Outputs = unknownOutputs(st.Schema.Outputs)
		return
	}
	upstream := upstreamChanging(ip, st)
	prior := sp.prior
	switch {
	case e.replaced(sp.Address, st.Addr):
		sp.Action = pipeline.ActionRerun
		sp.Reasons = []string{"replacement requested with -replace"}
	case prior == nil:
		sp.Action = pipeline.ActionRun
	case unfinished(prior) && known && prior.InputDigest == sp.Digest:
		sp.Action, sp.Reasons = resumeAction(prior.Status, sp.Reattach)
	case upstream != "":
		sp.Action = pipeline.ActionRerun
		sp.Reasons = []string{"upstream " + upstream}
	case !known:
		sp.Action = pipeline.ActionRerun
		sp.Reasons = unknownReasons(sp.Parts)
	case prior.InputDigest != sp.Digest:
		sp.Action = pipeline.ActionRerun
		sp.Reasons = changeReasons(prior, sp.Parts, sp.Display)
		if prior.Status == pipeline.StatusRunning || prior.Status == pipeline.StatusInterrupted {
			// Money: the earlier run may still be working (and billing) remotely.
			sp.Warnings = append(sp.Warnings, "the last run was "+string(prior.Status)+" with other inputs: its remote work is abandoned, "+
				"not cancelled, and may still finish and be billed (cancel it on replicate.com if it should not)")
		}
	case prior.Status == pipeline.StatusFailed:
		sp.Action = pipeline.ActionRerun
		sp.Reasons = []string{"the last run failed: " + firstLine(prior.Error)}
	case prior.Status == pipeline.StatusRefused:
		// Same inputs, same verdict: re-running would spend nothing new and refuse again.
		sp.Action = pipeline.ActionNoop
		sp.Refused = "refused in an earlier run with the same inputs: " + firstLine(prior.Error)
	case prior.Status == pipeline.StatusComplete:
		sp.Action = pipeline.ActionNoop
	default:
		sp.Action = pipeline.ActionRerun
		sp.Reasons = []string{"last run " + string(prior.Status)}
	}
	if sp.Action == pipeline.ActionNoop {
		if o, ok := restoreOutputs(st.Schema.Outputs, prior.Outputs); ok {
			sp.Outputs = o
		} else {
			sp.Action = pipeline.ActionRerun
			sp.Reasons = []string{"recorded outputs are missing"}
		}
	}
	if len(sp.Deletes) > 0 && sp.Action != pipeline.ActionSkip && sp.Action != pipeline.ActionReattach {
		sp.Action = pipeline.ActionDelete
	}
	if sp.Outputs == cty.NilVal {
		out, err := outputObject(st.Schema.Outputs, res.Outputs, true)
		if err != nil {
			out = unknownOutputs(st.Schema.Outputs)
		}
		sp.Outputs = out
	}
}

// planKind asks the kind what it would do and takes in its result; known reports whether the
// input digest (sp.Digest) is known.
func (e *Engine) planKind(ctx context.Context, ip *InstancePlan, sp *StagePlan) (*pipeline.Result, bool, error) {
	res, err := call(ctx, sp.Stage.Impl.Plan, e.request(ip, sp, true, nopRecorder{}))
	if err != nil {
		return nil, false, err
	}
	sp.Notes, sp.Warnings, sp.Deletes, sp.Refused, sp.Effects = res.Notes, res.Warnings, res.Deletes, res.Refused, res.Effects
	sp.Details, sp.Items, sp.Reattach, sp.Cost, sp.CostLimit = res.Details, res.Items, res.Reattach, res.Cost, res.CostLimit
	known := sp.Inputs.IsWhollyKnown()
	for k, v := range res.Digest {
		if v == "" {
			known = false
			continue
		}
		sp.Parts["+"+k] = v
	}
	for _, v := range sp.Parts {
		if v == "" {
			known = false
		}
	}
	if known {
		sp.Digest = combineDigest(sp.Parts)
	}
	return res, known, nil
}

// unfinished reports whether a record is of a run that may have remote work in flight.
func unfinished(r *state.Record) bool {
	return r != nil && (r.Status == pipeline.StatusRunning || r.Status == pipeline.StatusInterrupted)
}

// resumeAction is the action of an unfinished run with the same inputs: a job recorded by its id
// is re-attached; without one apply reconciles (looks the job up) before it creates anything.
func resumeAction(status pipeline.Status, jobs []string) (pipeline.Action, []string) {
	if len(jobs) > 0 {
		return pipeline.ActionReattach, []string{"the last run was " + string(status) + ": apply follows " + strings.Join(jobs, ", ") +
			" again (recorded by its id) and starts nothing new"}
	}
	return pipeline.ActionRun, []string{"the last run was " + string(status) + " before it recorded a job id: apply looks for the job first and starts one only if there is none"}
}

// upstreamChanging says which non-read-only dependency will run and how ("train.lora re-runs"),
// "" if none.
func upstreamChanging(ip *InstancePlan, st *lang.Stage) string {
	for _, d := range st.Deps {
		dp := ip.byAddr[d]
		if dp == nil || dp.ReadOnly || !dp.Action.Changes() {
			continue
		}
		return d + " " + verbs[dp.Action]
	}
	return ""
}

// verbs say what an upstream stage does in a downstream stage's reason.
var verbs = map[pipeline.Action]string{
	pipeline.ActionRun: "runs", pipeline.ActionRerun: "re-runs", pipeline.ActionReattach: "re-attaches", pipeline.ActionDelete: "deletes",
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// call runs a kind's Plan or Apply; a *pipeline.RefusedError becomes Result.Refused, so callers
// handle one shape of refusal.
func call(ctx context.Context, fn func(context.Context, *pipeline.Request) (*pipeline.Result, error), req *pipeline.Request) (*pipeline.Result, error) {
	res, err := fn(ctx, req)
	if res == nil {
		res = &pipeline.Result{}
	}
	if err != nil && pipeline.IsRefused(err) {
		res.Refused, err = err.Error(), nil
	}
	return res, err
}

// request builds the Request a kind receives.
func (e *Engine) request(ip *InstancePlan, sp *StagePlan, planning bool, rec pipeline.Recorder) *pipeline.Request {
	st := sp.Stage
	req := &pipeline.Request{
		Address:    sp.Address,
		Kind:       st.Kind,
		Name:       st.Name,
		Key:        ip.Key,
		Inputs:     sp.Inputs,
		Blocks:     sp.Blocks,
		Settings:   sp.Settings,
		BaseDir:    st.Config.BaseDir,
		DeclRange:  st.Config.DeclRange,
		AttrRanges: st.AttrRanges,
		Schema:     st.Schema,
		State:      ip.view,
		Recorder:   rec,
		Env:        e.Env,
		Planning:   planning,
	}
	req.Upstream = upstreamRuns(ip, st)
	req.Reads = readOnlyDeps(ip, st)
	if p := sp.prior; p != nil {
		prior := &pipeline.Prior{Status: p.Status, InputDigest: p.InputDigest, Data: p.Data}
		prior.SameInputs = sp.Digest != "" && p.InputDigest == sp.Digest
		if o, ok := restoreOutputs(st.Schema.Outputs, p.Outputs); ok {
			prior.Outputs = o
		}
		req.Prior = prior
	}
	req.Consultants = e.consultants(ip, st)
	req.Shared = e.shared()
	req.Unchanged = planning && e.unchanged(ip, sp)
	return req
}

// unchanged: state says the stage finished with these inputs (the engine's parts of the digest;
// the kind's own, such as the photos' content, it checks itself) and nothing upstream of it runs.
func (e *Engine) unchanged(ip *InstancePlan, sp *StagePlan) bool {
	p := sp.prior
	if p == nil || p.Status != pipeline.StatusComplete || e.replaced(sp.Address, sp.Stage.Addr) || upstreamChanging(ip, sp.Stage) != "" {
		return false
	}
	for name, d := range sp.Parts {
		if strings.HasPrefix(name, "+") && name != simulatedPart {
			continue
		}
		if d == "" || p.DigestParts[name] != d {
			return false
		}
	}
	for name := range p.DigestParts {
		if _, ok := sp.Parts[name]; !ok && (!strings.HasPrefix(name, "+") || name == simulatedPart) {
			return false
		}
	}
	return true
}

// consultants asks the kinds of st's dependent stages whether they watch it while it runs.
func (e *Engine) consultants(ip *InstancePlan, st *lang.Stage) []pipeline.Consultation {
	var out []pipeline.Consultation
	for _, d := range st.Dependents {
		dst := e.Module.Stage(d)
		if dst == nil {
			continue
		}
		ck, ok := dst.Impl.(pipeline.Consultant)
		if !ok {
			continue
		}
		in, _, _, diags := ip.scope.EvalStage(dst)
		if diags.HasErrors() {
			continue // the dependent reports its own errors when it plans
		}
		if c := ck.Consultation(in, st.Addr); c != nil {
			c.Address = Address(dst.Addr, ip.Key, ip.Batch)
			out = append(out, *c)
		}
	}
	return out
}

// readOnlyDeps are the outputs of the read-only stages st depends on directly (Request.Reads):
// fixed once plan evaluated them.
func readOnlyDeps(ip *InstancePlan, st *lang.Stage) map[string]cty.Value {
	var out map[string]cty.Value
	for _, d := range st.Deps {
		dp := ip.byAddr[d]
		if dp == nil || !dp.ReadOnly || dp.Outputs == cty.NilVal {
			continue
		}
		if out == nil {
			out = map[string]cty.Value{}
		}
		out[d] = dp.Outputs
	}
	return out
}

// upstreamRuns lists the non-read-only stages st depends on (transitively) that will run.
func upstreamRuns(ip *InstancePlan, st *lang.Stage) []pipeline.Upstream {
	var out []pipeline.Upstream
	seen := map[string]bool{}
	var walk func(s *lang.Stage)
	walk = func(s *lang.Stage) {
		for _, d := range s.Deps {
			if seen[d] {
				continue
			}
			seen[d] = true
			dp := ip.byAddr[d]
			if dp == nil {
				continue
			}
			if !dp.ReadOnly && dp.Action.Changes() {
				out = append(out, pipeline.Upstream{Kind: dp.Stage.Kind, Name: dp.Stage.Name, Action: dp.Action, Effects: dp.Effects})
			}
			walk(dp.Stage)
		}
	}
	walk(st)
	return out
}

type nopRecorder struct{}

func (nopRecorder) Save(any) error             { return nil }
func (nopRecorder) Progress(pipeline.Progress) {}
func (nopRecorder) Warn(string)                {}

// Wait never blocks in plan: nothing paid runs.
func (nopRecorder) Wait(ctx context.Context) (func(), error) { return func() {}, ctx.Err() }

// UpdateShared does nothing: plan never changes state.
func (nopRecorder) UpdateShared(string, func(json.RawMessage) (json.RawMessage, error)) error {
	return nil
}

// digestParts splits a stage's inputs into named components, each with its digest ("" when not
// wholly known) and a display value for "old → new" reasons.
func digestParts(inputs cty.Value, blocks []pipeline.Block, settings map[string]cty.Value, sens []cty.Path) (map[string]string, map[string]json.RawMessage) {
	parts := map[string]string{}
	display := map[string]json.RawMessage{}
	add := func(name string, v cty.Value, path cty.Path) {
		d, ok := digestOf(v)
		if !ok {
			parts[name] = ""
			return
		}
		parts[name] = d
		display[name] = displayJSON(plain(v, path, sens))
	}
	if inputs != cty.NilVal && inputs.Type().IsObjectType() && inputs.IsKnown() && !inputs.IsNull() {
		for name := range inputs.Type().AttributeTypes() {
			add(name, inputs.GetAttr(name), cty.GetAttrPath(name))
		}
	}
	for i, b := range blocks {
		name := b.Type
		if len(b.Labels) > 0 {
			name += "." + strings.Join(b.Labels, ".")
		} else {
			name += fmt.Sprintf("[%d]", i)
		}
		add(name, cty.ObjectVal(b.Attrs), cty.Path{})
	}
	for sname, v := range settings {
		if v == cty.NilVal || !v.IsKnown() || v.IsNull() || !v.Type().IsObjectType() {
			continue
		}
		for name := range v.Type().AttributeTypes() {
			add(sname+"."+name, v.GetAttr(name), cty.Path{})
		}
	}
	return parts, display
}

// displayJSON keeps display values small: a list longer than 256 bytes is stored as its length,
// a map longer than 1 KB keeps only its short entries.
func displayJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	if l, ok := v.([]any); ok && len(b) > 256 {
		b, _ = json.Marshal(map[string]int{"$len": len(l)})
		return b
	}
	if len(b) <= 1024 {
		return b
	}
	if m, ok := v.(map[string]any); ok {
		small := make(map[string]any, len(m))
		for k, x := range m {
			if xb, _ := json.Marshal(x); len(xb) <= 256 {
				small[k] = x
			}
		}
		b, _ = json.Marshal(small)
		return b
	}
	return nil
}

func unknownReasons(parts map[string]string) []string {
	var out []string
	for _, name := range sortedKeys(parts) {
		if parts[name] == "" {
			out = append(out, strings.TrimPrefix(name, "+")+": "+Unknown)
		}
	}
	return out
}

// changeReasons explains which input components changed since the recorded run.
func changeReasons(prior *state.Record, parts map[string]string, display map[string]json.RawMessage) []string {
	names := map[string]bool{}
	for n := range parts {
		names[n] = true
	}
	for n := range prior.DigestParts {
		names[n] = true
	}
	var out []string
	for _, name := range sortedKeys(names) {
		old, had := prior.DigestParts[name]
		cur, has := parts[name]
		label := strings.TrimPrefix(name, "+")
		switch {
		case had && has && old == cur:
			continue
		case name == simulatedPart && had:
			out = append(out, "the recorded run was simulated (-simulate); this run is real")
		case name == simulatedPart:
			out = append(out, "this run is simulated (-simulate); the recorded run was real")
		case !had:
			out = append(out, label+": added")
		case !has:
			out = append(out, label+": removed")
		case cur == "":
			out = append(out, label+": "+Unknown)
		default:
			out = append(out, describeChange(label, prior.Inputs[name], display[name])...)
		}
	}
	if len(out) == 0 && prior.InputDigest != "" {
		out = append(out, "inputs changed")
	}
	return out
}

// describeChange renders "name: old → new", descending one level into objects.
func describeChange(name string, oldRaw, newRaw json.RawMessage) []string {
	var oldV, newV any
	if len(oldRaw) == 0 || len(newRaw) == 0 || json.Unmarshal(oldRaw, &oldV) != nil || json.Unmarshal(newRaw, &newV) != nil {
		return []string{name + " changed"}
	}
	// Long lists are recorded as {"$len": N}: compare their lengths.
	if ol, ok := listLen(oldV); ok {
		if nl, ok := listLen(newV); ok && ol != nl {
			return []string{fmt.Sprintf("%s: %d items → %d items", name, ol, nl)}
		} else if ok {
			return []string{name + " changed"}
		}
	}
	om, ok1 := oldV.(map[string]any)
	nm, ok2 := newV.(map[string]any)
	if ok1 && ok2 {
		keys := map[string]bool{}
		for k := range om {
			keys[k] = true
		}
		for k := range nm {
			keys[k] = true
		}
		var out []string
		for _, k := range sortedKeys(keys) {
			ov, oh := om[k]
			nv, nh := nm[k]
			switch {
			case !oh:
				out = append(out, fmt.Sprintf("%s.%s: added (%s)", name, k, short(nv)))
			case !nh:
				out = append(out, fmt.Sprintf("%s.%s: removed (was %s)", name, k, short(ov)))
			case short(ov) != short(nv):
				out = append(out, fmt.Sprintf("%s.%s: %s → %s", name, k, short(ov), short(nv)))
			}
		}
		if len(out) == 0 {
			out = []string{name + " changed"}
		}
		return out
	}
	return []string{fmt.Sprintf("%s: %s → %s", name, short(oldV), short(newV))}
}

// listLen is the length of a list display value, or of a long one recorded as {"$len": N}.
func listLen(v any) (int, bool) {
	switch t := v.(type) {
	case []any:
		return len(t), true
	case map[string]any:
		if n, ok := t["$len"].(float64); ok && len(t) == 1 {
			return int(n), true
		}
	}
	return 0, false
}

func short(v any) string {
	b, _ := json.Marshal(v)
	s := string(b)
	if len(s) > 60 {
		s = s[:57] + "…"
	}
	return s
}

// outputChanges explains how a read-only stage's results changed.
func outputChanges(types map[string]cty.Type, oldRaw json.RawMessage, cur cty.Value) []string {
	old, ok := restoreOutputs(types, oldRaw)
	if !ok {
		return nil
	}
	var out []string
	for _, name := range sortedKeys(types) {
		ob, _ := json.Marshal(Plain(old.GetAttr(name), nil))
		nb, _ := json.Marshal(Plain(cur.GetAttr(name), nil))
		if bytes.Equal(ob, nb) {
			continue
		}
		out = append(out, describeChange("result "+name, displayJSON(Plain(old.GetAttr(name), nil)), displayJSON(Plain(cur.GetAttr(name), nil)))...)
	}
	return out
}

// sameOutputs reports whether a read-only stage's recorded outputs are what it computed now (an
// older release may have recorded the Transient ones too: they are not compared).
func sameOutputs(raw json.RawMessage, cur cty.Value, schema *pipeline.Schema) bool {
	b, err := marshalValue(cur)
	if err != nil {
		return false
	}
	if bytes.Equal(bytes.TrimSpace(raw), bytes.TrimSpace(b)) {
		return true
	}
	old, err := unmarshalValue(raw)
	if err != nil || len(schema.Transient) == 0 {
		return false
	}
	ob, err := marshalValue(recordable(schema, old))
	return err == nil && bytes.Equal(ob, b)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
