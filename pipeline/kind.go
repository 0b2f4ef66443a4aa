// Package pipeline is the vocabulary shared by the engine and the stage kinds: the Kind interface a
// stage kind implements, the Request it receives and the Result it returns.
//
// A stage kind is one package under stages/ that implements Kind and is registered once in
// cmd/pipeline:
//
//	type Kind struct{}
//	func (Kind) Name() string { return "image_check" }
//	func (Kind) Schema() *pipeline.Schema { return schema }
//	func (Kind) Plan(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) { ... }
//	func (Kind) Apply(ctx context.Context, req *pipeline.Request) (*pipeline.Result, error) { ... }
//
// The engine parses and evaluates the HCL, so a kind never sees HCL: it gets typed cty values with
// defaults filled in, and returns outputs of the types its Schema declares. A kind never prints and
// never touches the state file; it persists what it must remember (remote ids, intents) through the
// Recorder, which the engine writes to state before the call returns.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Kind is a stage kind: `stage "KIND" "NAME" { ... }`.
type Kind interface {
	// Name is the first label of the stage block, e.g. "image_check".
	Name() string
	// Schema declares attributes, nested blocks and outputs. It must return the same value every call.
	Schema() *Schema
	// Plan says what Apply would do, without side effects. For a ReadOnly kind the engine does not call
	// Plan: it calls Apply during plan as well. Inputs may contain unknown values (cty.UnknownVal).
	// Outputs left out of Result.Outputs are unknown ("known after apply").
	Plan(ctx context.Context, req *Request) (*Result, error)
	// Apply does the work. Inputs are wholly known. ctx is cancelled on Ctrl-C: a kind then records what
	// it knows through req.Recorder and returns ctx.Err() without cancelling paid remote work.
	Apply(ctx context.Context, req *Request) (*Result, error)
}

// Schema describes a stage kind's configuration and outputs.
type Schema struct {
	Attributes map[string]*Attribute
	Blocks     map[string]*BlockSchema
	// Outputs maps each output name to its type. The whole stage (KIND.NAME) is an object of these.
	Outputs map[string]cty.Type
	// Transient names outputs of a ReadOnly kind that are never written to state: figures it
	// computes again on every plan from its cache (image_check's per-photo stats), which would
	// make state grow with the photos. Other stages still see them while the run lasts.
	Transient []string
	// ReadOnly kinds (image checks, parameter selection) run for real during plan and never count as
	// changes for -detailed-exitcode.
	ReadOnly bool
	// Remote kinds talk to Replicate: they need a token (or -simulate), and under -simulate every line
	// that shows their results is labelled as simulated.
	Remote bool
	// Settings names the top-level settings blocks this kind reads (e.g. "replicate"); their evaluated
	// attributes arrive in Request.Settings and are part of the input digest.
	Settings []string
	// SettingsAttributes declares, per settings block, the attributes this kind reads there (with
	// their types). validate rejects an attribute no registered kind declares, so a typo such as
	// `trainr` in the replicate block is caught before anything runs.
	SettingsAttributes map[string]map[string]*Attribute
	// Summary declares the columns this kind adds to the CI job summary (one row per subject), in
	// order, each read from the stage's outputs.
	Summary []SummaryColumn
	// Done is the word the job summary's outcome column uses when a stage of this kind ran to
	// completion in the apply ("trained"); "" when its completion is not news.
	Done string
}

// SummaryColumn is one column of the job summary: Title, read from output Path (attribute names
// joined by dots: "values.lora_rank").
type SummaryColumn struct {
	Title, Path string
	// Order places the column among all kinds' columns (ascending; ties keep stage order).
	Order int
}

// Attribute is one attribute of a stage block or nested block.
type Attribute struct {
	// Type is the type the value is converted to; cty.DynamicPseudoType accepts any value as is.
	Type     cty.Type
	Required bool
	// Default is used when the attribute is absent; cty.NilVal means null.
	Default cty.Value
	// Sensitive values are redacted in output, plan files and state (names containing token, key or
	// secret are treated as sensitive too).
	Sensitive   bool
	Description string
	// Constraints on a known value, checked by validate, by plan (at the expression's source
	// range) and by Decode, from this declaration only: OneOf lists the allowed values of a
	// string; Min and Max bound a number (ExclusiveMin: the value must be above Min); Whole asks
	// for a whole number; Duration marks a string that must parse as a positive Go duration
	// ("30s"), at least MinDuration; Check is any other rule, given the value and the whole
	// inputs object (whose other attributes may be unknown): its error is the detail shown.
	OneOf        []string
	Min, Max     *float64
	ExclusiveMin bool
	Whole        bool
	Duration     bool
	MinDuration  time.Duration
	Check        func(v, inputs cty.Value) error
	// NoDigest keeps the attribute out of the input digest: changing it never re-runs a stage
	// (money settings: prices, max_cost_usd, the hardware a job runs on; stages handed to a
	// report only).
	NoDigest bool
	// DigestBy, for an attribute naming a whole stage (StageKind), digests only that output of it
	// (image_check's content "digest"), not every figure: a release that computes the figures
	// differently never re-runs this stage.
	DigestBy string
	// StageKind, when set, means the attribute names a whole stage of that kind (`training =
	// train.lora`); validate rejects anything else.
	StageKind string
}

// Bound is a helper for Attribute.Min and Attribute.Max.
func Bound(v float64) *float64 { return &v }

// BlockSchema describes a nested block type such as `rule "NAME" { ... }`.
type BlockSchema struct {
	// Labels names the block's labels, e.g. []string{"name"}.
	Labels []string
	// Attributes of the block; nil means any attribute is accepted (each of dynamic type).
	Attributes map[string]*Attribute
	// Many allows the block to appear more than once.
	Many bool
	// NoDigest keeps these blocks out of the input digest: adding or changing one never re-runs
	// a finished stage (a limit that guards future runs changes nothing already paid for).
	NoDigest bool
}

// Block is one evaluated nested block, in file order.
type Block struct {
	Type   string
	Labels []string
	Attrs  map[string]cty.Value
	Range  hcl.Range
}

// Request is what a stage kind receives for one stage instance.
type Request struct {
	// Address is "KIND.NAME" or `KIND.NAME["key"]` in a batch.
	Address string
	Kind    string
	Name    string
	// Key is the batch key ("" outside a batch).
	Key string
	// Inputs is an object with every schema attribute (defaults filled in, converted to the declared
	// types). During Plan it may contain unknown values.
	Inputs cty.Value
	// Blocks are the nested blocks in file order.
	Blocks []Block
	// Settings holds the evaluated top-level settings blocks named in Schema.Settings.
	Settings map[string]cty.Value
	// BaseDir is the directory of the config file that declares the stage; relative paths resolve here.
	BaseDir string
	// DeclRange is where the stage block is declared, for messages.
	DeclRange hcl.Range
	// AttrRanges are where the attributes written in the block are (their expressions).
	AttrRanges map[string]hcl.Range
	// Schema is the kind's schema: Decode checks the inputs against it.
	Schema *Schema
	// Prior is what state recorded for this instance last time, nil if it never ran.
	Prior *Prior
	// State reads the records of the other stages of the same batch instance, as they are in state.
	State StateView
	// Consultants are the stages that depend on this one and asked to be consulted while it runs
	// (their kind implements Consultant): a loss_gate with cancel_early judges the running loss of
	// the training it names. The producing kind never needs to know the consultant's kind.
	Consultants []Consultation
	// Upstream lists the stages this one depends on, directly or through others, that this run
	// will run or re-run (their outputs are unknown during plan), with the effects their plan
	// announced. A prune stage learns from it that a version will be added before it runs, so its
	// plan can list exactly what apply deletes.
	Upstream []Upstream
	// Reads are the outputs of the read-only stages (checks, parameter selection) this one
	// depends on directly, by stage address ("params.tuned"), as this run evaluated them. A kind
	// reads there only what another kind publishes for the purpose (train: a params stage's
	// `limits`), never records, and never needs to know the other kind's name.
	Reads map[string]cty.Value
	// Shared lists the resources (see ResourceUser) that more than one batch instance of the
	// whole config names, with how many do: "replicate model acme/all-users" → 1000. A resource
	// missing from it is this instance's own. Read only.
	Shared map[string]int
	// Recorder persists private data and reports progress. In plan it is a no-op recorder.
	Recorder Recorder
	// Env is the process environment the command runs in.
	Env *Env
	// Planning is true while the engine is planning (also for a ReadOnly kind's Apply during plan).
	Planning bool
	// Unchanged is true, during plan, when state recorded this instance as complete with the same
	// inputs as far as the engine can tell (the kind's own Digest parts aside) and nothing upstream
	// runs: unless its own parts changed it is up to date, so Plan need not read anything remote.
	Unchanged bool
}

// Input returns one input attribute (cty.NilVal if the schema has no such attribute).
func (r *Request) Input(name string) cty.Value {
	if r.Inputs == cty.NilVal || r.Inputs.IsNull() || !r.Inputs.IsKnown() {
		return cty.NilVal
	}
	if !r.Inputs.Type().IsObjectType() || !r.Inputs.Type().HasAttribute(name) {
		return cty.NilVal
	}
	return r.Inputs.GetAttr(name)
}

// Prior is the state recorded for a stage instance by an earlier run.
type Prior struct {
	Status Status
	// InputDigest is the digest of the inputs the recorded run used.
	InputDigest string
	// SameInputs is true when that digest equals the current one: an in-flight record can be resumed.
	SameInputs bool
	// Outputs are the recorded outputs (cty.NilVal when the run did not finish).
	Outputs cty.Value
	// Data is the kind's private data, as last saved through Recorder.Save.
	Data json.RawMessage
}

// Decode unmarshals the prior private data into v; it reports false when there is none.
func (p *Prior) Decode(v any) (bool, error) {
	if p == nil || len(p.Data) == 0 || string(p.Data) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(p.Data, v); err != nil {
		return false, fmt.Errorf("decoding recorded data: %w", err)
	}
	return true, nil
}

// Status is the recorded status of a stage instance.
type Status string

const (
	// StatusRunning: Apply started and may have remote work in flight (see Prior.Data).
	StatusRunning Status = "running"
	// StatusComplete: Apply returned outputs.
	StatusComplete Status = "complete"
	// StatusRefused: a check refused the data or model (exit 3).
	StatusRefused Status = "refused"
	// StatusFailed: Apply returned an error.
	StatusFailed Status = "failed"
	// StatusInterrupted: Ctrl-C/SIGTERM stopped the wait; remote work may continue and is re-attached.
	StatusInterrupted Status = "interrupted"
)

// StateView reads what state recorded for the same batch instance.
type StateView interface {
	// Records returns the recorded stages of the given kind in this instance ("" = all kinds).
	Records(kind string) []StageRecord
	// Shared returns the instance's shared record called name (nil when there is none): facts
	// that belong to the subject rather than to one stage (the model versions made for it), which
	// stages of any kind keep through Recorder.UpdateShared. The package that names the record
	// owns its format and gives typed accessors; no kind parses another kind's records.
	Shared(name string) json.RawMessage
}

// RecordList is a StateView over a fixed list of records (and no shared records): what a kind's
// tests hand it in place of the engine's view of state.
type RecordList []StageRecord

// Shared implements StateView: a RecordList holds no shared records.
func (RecordList) Shared(string) json.RawMessage { return nil }

// Records returns the records of the given kind ("" = all), in list order.
func (l RecordList) Records(kind string) []StageRecord {
	var out []StageRecord
	for _, r := range l {
		if kind == "" || r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// StageRecord is a read-only view of another stage's record.
type StageRecord struct {
	Kind, Name string
	Status     Status
	Outputs    cty.Value
	Data       json.RawMessage
}

// Consultation is a dependent stage that watches this one while it runs.
type Consultation struct {
	// Address names the consulting stage ("loss_gate.fit").
	Address string
	// Note says for plan what it watches for ("cancels the training once its smoothed loss
	// falls under min_loss 0.2").
	Note string
	// Consult judges what the running stage observed so far — an object whose shape the running
	// kind documents (train: {step, total, losses}) — and returns a reason to stop now, or "".
	Consult func(observed cty.Value) (stop string, err error)
}

// Consultant is implemented by a kind whose stages are consulted, while it runs, by the stage they
// depend on. The engine asks it for every dependent stage of a running one.
type Consultant interface {
	// Consultation says whether a stage with these inputs wants to be consulted by upstream stage
	// (the attribute value naming it may be unknown: it is that stage's own output). nil: no.
	Consultation(inputs cty.Value, upstream string) *Consultation
}

// ResourceUser is implemented by a kind whose stages work on remote resources other batch
// instances may share (a destination model): the engine collects them for the whole batch
// before it plans and tells every stage which are shared (Request.Shared).
type ResourceUser interface {
	// Resources names the resources of one instance, from inputs that may be partly unknown
	// (an unknown one is left out), e.g. "replicate model acme/shared-lora".
	Resources(req *Request) []string
}

// Upstream is an upstream stage that will run in this apply.
type Upstream struct {
	Kind, Name string
	Action     Action
	// Effects are what its plan said it does that downstream stages may need to know (Result.Effects).
	Effects []string
}

// Recorder is how a kind reports progress and persists what it must remember.
type Recorder interface {
	// Save replaces the kind's private data for this instance and writes state durably before it
	// returns. Call it before waiting on remote work (an intent before a create call, the id after).
	Save(data any) error
	// Progress reports progress of a long stage; it never blocks on I/O.
	Progress(p Progress)
	// Warn reports a warning about this stage instance.
	Warn(msg string)
	// Wait says the stage is only waiting on paid remote work from now on (a training or a batch of
	// predictions running on Replicate): the engine hands its -parallelism slot to local work and
	// counts the stage against -max-in-flight instead, blocking until a place is free. done ends
	// the wait when the stage needs local work again (downloads, scoring, writing files): it takes
	// a -parallelism slot back, blocking until one is free. err is ctx's when it ends first.
	Wait(ctx context.Context) (done func(), err error)
	// UpdateShared replaces the instance's shared record called name with what update returns
	// for its current value (nil when there is none), atomically with respect to other stages of
	// the instance, and writes state durably before it returns.
	UpdateShared(name string, update func(old json.RawMessage) (json.RawMessage, error)) error
}

// Progress is one progress report.
type Progress struct {
	Current, Total int64
	Message        string
	Metrics        map[string]float64
}

// Result is what Plan and Apply return.
type Result struct {
	// Outputs by name. Missing ones are unknown during plan and null after apply.
	Outputs map[string]cty.Value
	// Warnings about the data or the plan, shown under the stage.
	Warnings []string
	// Refused, when not empty, means a check refused the data or the model: the instance is marked
	// refused, downstream stages are skipped and the run exits 3. Outputs are still recorded.
	Refused string
	// Notes are lines plan shows under the stage (what it would do, chosen values and why).
	// Plan shows them for a stage that will run and for a read whose result is new or changed;
	// an up-to-date stage takes one line (-details shows them all).
	Notes []string
	// Details are the long form of Notes, each about one output (a chosen value and why): plan
	// shows one when its output differs from the recorded run's, every one with -details. A
	// read-only kind returns them from Apply.
	Details []Detail
	// Reattach names the paid remote jobs recorded by their id (a training id) that apply follows
	// again instead of creating (Plan, for an interrupted run with the same inputs): the action is
	// then "reattach". An intent recorded without an id is not one: apply looks it up first.
	Reattach []string
	// Items counts what the stage judged one by one (the photos it considered): a warning that hits
	// several of them is printed once, "14 of 16 photos: no face found: …" (-json keeps each).
	Items *Items
	// Deletes lists remote objects the stage would delete (plan) or deleted (apply): action "delete".
	Deletes []string
	// Digest adds named components to the input digest (e.g. the content of the images). A component
	// that changes makes the stage re-run with the reason "NAME changed". Only Plan's value is used.
	Digest map[string]string
	// Cost is money the stage spends on Replicate: Plan's estimate of the paid work it would start
	// (nil: none; a job it re-attaches was started by an earlier run), Apply's actual cost of the
	// jobs it followed. The engine counts an estimate only for a stage that will run. Money never
	// enters a digest.
	Cost *Cost
	// CostLimit, when set, is the most the paid work this process would start may cost according
	// to plan's estimates (the replicate block's max_cost_usd): the engine refuses the plan above it.
	CostLimit *float64
	// Effects are what the stage will do that downstream stages may need to know, as strings the
	// package that defines them documents (e.g. a library's "adds a version to model X"): the
	// engine hands them to downstream stages in Request.Upstream. Only Plan's value is used.
	Effects []string
}

// Detail is one line of Result.Details. About is the output it explains, as attribute names
// joined by dots ("values.lora_rank"); "" for none (then it shows only with -details).
type Detail struct {
	About, Text string
}

// Items is how many things of one kind a stage judged: {16, "photos"}.
type Items struct {
	Count int
	Noun  string
}

// Cost is an amount in US dollars and how it was reached.
type Cost struct {
	USD float64
	// Estimate marks plan's figures (from earlier jobs' timings or documented defaults); false is a
	// job's actual cost from its metrics.predict_time.
	Estimate bool
	// Basis says how: "1000 steps × 1.30 s/step + 90 s on gpu-h100 at $0.001525/s".
	Basis string
}

// Env is the environment a command runs in, handed to every stage.
type Env struct {
	// Getenv reads an environment variable (REPLICATE_API_TOKEN, REPLICATE_BASE_URL).
	Getenv func(string) string
	// CacheDir is a local directory beside the state for caches that must stay on this machine
	// (prepared photo copies); created on demand.
	CacheDir string
	// Cache holds figures shared by every runner of a batch (with remote state it is in the same
	// store); nil means none: compute again.
	Cache Cache
	// Simulated is true under -simulate.
	Simulated bool
	// NoRefresh is -refresh=false: Plan reads nothing remote (it plans from state and caches);
	// Apply still reconciles with the API before it creates anything.
	NoRefresh bool
	// Shards is how many processes share the Replicate account's request budget at once (the N of
	// -shard I/N: a batch's shards run side by side); 0 or 1 means this process alone.
	Shards int
	// Values carries process-wide services that stage packages share (keyed by their own types).
	Values map[any]any
	// Redact replaces every secret value the run knows (sensitive variables, secret-named inputs)
	// with "(sensitive)". A kind calls it on text it writes itself (a report, a file); the engine
	// already scrubs everything the kind hands back. nil means nothing to redact.
	Redact func(string) string
}

// RedactText applies env.Redact when there is one.
func (env *Env) RedactText(s string) string {
	if env == nil || env.Redact == nil {
		return s
	}
	return env.Redact(s)
}

// RefusedError can be returned by a kind instead of Result.Refused.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// IsRefused reports whether err is (or wraps) a RefusedError.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// MemShared keeps shared records in memory: what a kind's tests hand it (as part of their
// recorder and state view) in place of the engine's state. Safe for concurrent use.
type MemShared struct {
	mu sync.Mutex
	m  map[string]json.RawMessage
}

// Shared implements StateView.Shared.
func (s *MemShared) Shared(name string) json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(json.RawMessage(nil), s.m[name]...)
}

// UpdateShared implements Recorder.UpdateShared.
func (s *MemShared) UpdateShared(name string, update func(old json.RawMessage) (json.RawMessage, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := update(append(json.RawMessage(nil), s.m[name]...))
	if err != nil {
		return err
	}
	if s.m == nil {
		s.m = map[string]json.RawMessage{}
	}
	s.m[name] = next
	return nil
}

// MemState is a StateView over fixed records and in-memory shared records, for kinds' tests.
type MemState struct {
	List   RecordList
	Memory *MemShared
}

// Records implements StateView.
func (s MemState) Records(kind string) []StageRecord { return s.List.Records(kind) }

// Shared implements StateView.
func (s MemState) Shared(name string) json.RawMessage {
	if s.Memory == nil {
		return nil
	}
	return s.Memory.Shared(name)
}

// NoLimits is a Recorder's Wait with no -parallelism or -max-in-flight to respect: what a kind's
// tests embed in their recorder.
type NoLimits struct{}

// Wait implements Recorder.Wait: it never blocks.
func (NoLimits) Wait(ctx context.Context) (func(), error) { return func() {}, ctx.Err() }
