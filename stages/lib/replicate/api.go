package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"

	rg "github.com/replicate/replicate-go"
)

// ---- files ----

// File is an uploaded file. URL is its `urls.get`, the value to pass as a training input.
type File struct {
	ID, Name, ContentType, URL string
	Size                       int64
	Checksums                  map[string]string
	CreatedAt, ExpiresAt       time.Time
}

func fileFrom(f *rg.File) *File {
	return &File{
		ID: f.ID, Name: f.Name, ContentType: f.ContentType, URL: f.URLs["get"],
		Size: int64(f.Size), Checksums: f.Checksums,
		CreatedAt: parseTime(f.CreatedAt), ExpiresAt: parseTime(f.ExpiresAt),
	}
}

// GetFile reads an uploaded file's metadata (404 once it expired or was deleted).
func (c *Client) GetFile(ctx context.Context, id string) (*File, error) {
	f, err := c.rc.GetFile(ctx, url.PathEscape(id))
	if err != nil {
		return nil, convertErr("get file "+id, err)
	}
	return fileFrom(f), nil
}

// ---- models and versions ----

// Model is a model on Replicate.
type Model struct {
	Owner, Name, Visibility string
	LatestVersion           *Version
}

// Version is a model version.
type Version struct {
	ID        string
	CreatedAt time.Time
}

func modelFrom(m *rg.Model) *Model {
	out := &Model{Owner: m.Owner, Name: m.Name, Visibility: m.Visibility}
	if m.LatestVersion != nil && m.LatestVersion.ID != "" {
		out.LatestVersion = &Version{ID: m.LatestVersion.ID, CreatedAt: parseTime(m.LatestVersion.CreatedAt)}
	}
	return out
}

// GetModel reads a model (an *APIError with IsNotFound when it does not exist).
func (c *Client) GetModel(ctx context.Context, owner, name string) (*Model, error) {
	m, err := c.rc.GetModel(ctx, url.PathEscape(owner), url.PathEscape(name))
	if err != nil {
		return nil, convertErr("get model "+owner+"/"+name, err)
	}
	return modelFrom(m), nil
}

// CreateModel creates a private model on the given hardware (e.g. "gpu-t4"). A model is free and
// its name unique, so a 5xx or a lost answer is retried like a read (a repeat of a create that
// did succeed answers 409), and a 409 is settled by reading the model back.
func (c *Client) CreateModel(ctx context.Context, owner, name, hardware string) (*Model, error) {
	op := "create model " + owner + "/" + name
	m, err := c.rc.CreateModel(retrySafe(ctx), owner, name, rg.CreateModelOptions{Visibility: "private", Hardware: hardware})
	if err == nil {
		return modelFrom(m), nil
	}
	err = convertErr(op, err)
	if a, ok := err.(*APIError); ok && a.Status < 500 && a.Status != http.StatusConflict {
		return nil, err
	}
	// 409 (exists), 5xx or a lost answer: the model may exist now; it is free, so look.
	got, gerr := c.GetModel(ctx, owner, name)
	if gerr == nil {
		return got, nil
	}
	if a, ok := err.(*APIError); ok && a.Status == http.StatusConflict && IsNotFound(gerr) {
		// Replicate keeps the names of deleted models: creating one answers 409 although
		// nothing of that name can be read.
		return nil, fmt.Errorf("%w; hint: the name %s/%s is reserved (a model of that name was deleted and Replicate does not reuse names): use another destination name", err, owner, name)
	}
	return nil, err
}

// ListVersions returns every version of a model, newest first, following `next` links itself.
func (c *Client) ListVersions(ctx context.Context, owner, name string) ([]Version, error) {
	op := "list versions of " + owner + "/" + name
	var out []Version
	err := c.paginate(ctx, c.api("/models/"+url.PathEscape(owner)+"/"+url.PathEscape(name)+"/versions"), op, func(raw json.RawMessage) (bool, error) {
		var v rg.ModelVersion
		if err := json.Unmarshal(raw, &v); err != nil {
			return false, err
		}
		out = append(out, Version{ID: v.ID, CreatedAt: parseTime(v.CreatedAt)})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	sortVersions(out)
	return out, nil
}

func sortVersions(vs []Version) {
	// The API lists newest first already; a stable sort keeps its order for equal times.
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && vs[j].CreatedAt.After(vs[j-1].CreatedAt); j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
}

// DeleteVersion deletes a model version (202, empty body). When the API refuses (the version has
// predictions by others, is the base of a training, or a deployment uses it) the *APIError's
// Detail carries its reason. Retried on 5xx: a repeated delete answers 404 (IsNotFound).
func (c *Client) DeleteVersion(ctx context.Context, owner, name, id string) error {
	op := "delete version " + owner + "/" + name + ":" + id
	return c.do(retrySafe(ctx), http.MethodDelete,
		c.api("/models/"+url.PathEscape(owner)+"/"+url.PathEscape(name)+"/versions/"+url.PathEscape(id)), nil, "", nil, op)
}

// InputSpec describes one input of a trainer (from its OpenAPI schema).
type InputSpec struct {
	Type             string
	Minimum, Maximum *float64
	Enum             []any
	Default          any
	// Format is e.g. "uri" for input_images; Description is the schema's text.
	Format, Description string
	Required            bool
}

// SchemaUnknownError means the trainer version's input schema cannot be read: its openapi_schema
// is null (some versions have none), not an OpenAPI document, or declares neither TrainingInput
// nor Input. Callers skip their local input check with a warning; the API still validates.
type SchemaUnknownError struct {
	Trainer, Reason string
}

func (e *SchemaUnknownError) Error() string {
	return fmt.Sprintf("replicate: the input schema of trainer %s is unknown (%s); the inputs are checked by Replicate when the training is created", e.Trainer, e.Reason)
}

// IsSchemaUnknown reports whether err is (or wraps) a *SchemaUnknownError.
func IsSchemaUnknown(err error) bool {
	var s *SchemaUnknownError
	return errors.As(err, &s)
}

type schemaProp struct {
	Type        string                `json:"type"`
	Format      string                `json:"format"`
	Description string                `json:"description"`
	Minimum     *float64              `json:"minimum"`
	Maximum     *float64              `json:"maximum"`
	Enum        []any                 `json:"enum"`
	Default     any                   `json:"default"`
	Ref         string                `json:"$ref"`
	AllOf       []schemaProp          `json:"allOf"`
	Properties  map[string]schemaProp `json:"properties"`
	Required    []string              `json:"required"`
}

func parseTrainingInput(raw []byte, trainer string) (map[string]InputSpec, error) {
	if t := strings.TrimSpace(string(raw)); t == "" || t == "null" || t == "{}" {
		return nil, &SchemaUnknownError{Trainer: trainer, Reason: "the version has no openapi_schema"}
	}
	var doc struct {
		Components struct {
			Schemas map[string]schemaProp `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, &SchemaUnknownError{Trainer: trainer, Reason: "its openapi_schema is not an OpenAPI document: " + err.Error()}
	}
	ti, ok := doc.Components.Schemas["TrainingInput"]
	if !ok {
		// Trainers built before cog had a separate train() schema declare their inputs as Input.
		ti, ok = doc.Components.Schemas["Input"]
	}
	if !ok || len(ti.Properties) == 0 {
		return nil, &SchemaUnknownError{Trainer: trainer, Reason: "its openapi_schema declares neither components.schemas.TrainingInput nor Input"}
	}
	req := map[string]bool{}
	for _, r := range ti.Required {
		req[r] = true
	}
	out := make(map[string]InputSpec, len(ti.Properties))
	for name, p := range ti.Properties {
		spec := InputSpec{Type: p.Type, Format: p.Format, Description: p.Description, Minimum: p.Minimum,
			Maximum: p.Maximum, Enum: p.Enum, Default: p.Default, Required: req[name]}
		refs := p.AllOf
		if p.Ref != "" {
			refs = append(refs, schemaProp{Ref: p.Ref})
		}
		for _, a := range refs {
			target := a
			if a.Ref != "" {
				target = doc.Components.Schemas[strings.TrimPrefix(a.Ref, "#/components/schemas/")]
			}
			if spec.Type == "" {
				spec.Type = target.Type
			}
			if spec.Enum == nil {
				spec.Enum = target.Enum
			}
			if spec.Minimum == nil {
				spec.Minimum = target.Minimum
			}
			if spec.Maximum == nil {
				spec.Maximum = target.Maximum
			}
		}
		out[name] = spec
	}
	return out, nil
}

// SplitVersion splits "owner/name:version" (or a bare version id) into its parts.
func SplitVersion(ref string) (owner, name, version string, err error) {
	if !strings.Contains(ref, "/") {
		if ref == "" || strings.Contains(ref, ":") {
			return "", "", "", fmt.Errorf("replicate: %q is not a version (\"owner/name:version\" or a version id)", ref)
		}
		return "", "", ref, nil
	}
	id, perr := rg.ParseIdentifier(ref)
	if perr != nil {
		return "", "", "", fmt.Errorf("replicate: %q is not \"owner/name:version\": %w", ref, perr)
	}
	if id.Version != nil {
		version = *id.Version
	}
	return id.Owner, id.Name, version, nil
}

// ---- trainings ----

// Training is a training on Replicate.
type Training struct {
	ID, Status, Logs, Error string // Status: starting|processing|succeeded|failed|canceled|aborted
	Version                 string // trainer version id
	Input                   map[string]any
	Output                  struct{ Version, Weights string } // Version = "owner/name:id"
	CreatedAt               time.Time
	StartedAt, CompletedAt  *time.Time
	// PredictTime is metrics.predict_time: the seconds of run time Replicate bills (0 while it
	// runs or when the API gives none).
	PredictTime float64
}

// Terminal reports whether the training has finished (succeeded, failed, canceled or aborted).
func (t *Training) Terminal() bool { return TerminalStatus(t.Status) }

// TerminalStatus reports whether a training or prediction status is final: succeeded, failed,
// canceled, or aborted (the API's status for one terminated before it started running, e.g. on
// a deadline; replicate-go v0.26.0 does not know it and would wait forever).
func TerminalStatus(s string) bool {
	return s == "succeeded" || s == "canceled" || FailedStatus(s)
}

// FailedStatus reports whether a status means the work failed: failed or aborted.
func FailedStatus(s string) bool { return s == "failed" || s == "aborted" }

// Unsuccessful reports whether a status is final but not succeeded (failed, aborted, canceled).
func Unsuccessful(s string) bool { return TerminalStatus(s) && s != "succeeded" }

func trainingFrom(t *rg.Training) *Training {
	out := &Training{ID: t.ID, Status: string(t.Status), Version: versionID(t.Version), Input: t.Input,
		Error: errString(t.Error), CreatedAt: parseTime(t.CreatedAt),
		StartedAt: parseTimePtr(t.StartedAt), CompletedAt: parseTimePtr(t.CompletedAt)}
	if t.Logs != nil {
		out.Logs = *t.Logs
	}
	out.PredictTime = predictTime(t.Metrics)
	if m, ok := t.Output.(map[string]any); ok {
		out.Output.Version, _ = m["version"].(string)
		out.Output.Weights, _ = m["weights"].(string)
	}
	return out
}

// CreateTraining starts a training of trainer ("owner/name:version") into destination
// ("owner/name", which must exist). A *File value in input is passed as its URL. It is retried
// only on 429; a 5xx or lost answer returns a *MaybeCreatedError (reconcile with FindTraining).
func (c *Client) CreateTraining(ctx context.Context, trainer, destination string, input map[string]any) (*Training, error) {
	owner, name, version, err := SplitVersion(trainer)
	if err != nil {
		return nil, err
	}
	if owner == "" || version == "" {
		return nil, fmt.Errorf("replicate: trainer %q must be \"owner/name:version\"", trainer)
	}
	in := rg.TrainingInput{}
	for k, v := range input {
		switch f := v.(type) {
		case *File:
			in[k] = f.URL
		case *rg.File:
			in[k] = f.URLs["get"]
		default:
			in[k] = v
		}
	}
	t, err := c.rc.CreateTraining(ctx, url.PathEscape(owner), url.PathEscape(name), url.PathEscape(version), destination, in, nil)
	if err != nil {
		return nil, createErr("training", "create training of "+trainer+" into "+destination, err)
	}
	return trainingFrom(t), nil
}

// createErr classifies a failed create: a 4xx answer means nothing was created; anything else
// (5xx, dropped connection, timeout, cancellation mid-request) may hide a created object.
func createErr(what, op string, err error) error {
	err = convertErr(op, err)
	if a, ok := err.(*APIError); ok && a.Status < 500 {
		return err
	}
	return &MaybeCreatedError{What: what, Err: err}
}

// GetTraining reads a training with its logs.
func (c *Client) GetTraining(ctx context.Context, id string) (*Training, error) {
	t, err := c.rc.GetTraining(ctx, url.PathEscape(id))
	if err != nil {
		return nil, convertErr("get training "+id, err)
	}
	return trainingFrom(t), nil
}

// CancelTraining cancels a training (idempotent, so retried on 5xx).
func (c *Client) CancelTraining(ctx context.Context, id string) (*Training, error) {
	t, err := c.rc.CancelTraining(retrySafe(ctx), url.PathEscape(id))
	if err != nil {
		return nil, convertErr("cancel training "+id, err)
	}
	return trainingFrom(t), nil
}

// ClockSkew is how much earlier than `after` a remote created_at may be and still match in
// FindTraining/FindPrediction: `after` is read on this machine's clock and created_at on the
// API's, and a job missed because the clocks differ is a job paid twice. Synchronised clocks
// differ by far less; the input (for a training, the URL of its own uploaded zip) is the real key,
// and the window only bounds how far back the list is read.
const ClockSkew = 10 * time.Minute

// FindTraining lists trainings (newest first, every page until older than `after`) and returns the
// one on trainerVersion (an id or "owner/name:id") whose input holds `input` (every non-secret key
// JSON-equal; keys the API added are ignored) created after `after` (less ClockSkew), read in
// full; nil, nil if none.
func (c *Client) FindTraining(ctx context.Context, trainerVersion string, input map[string]any, after time.Time) (*Training, error) {
	want, err := canonical(input)
	if err != nil {
		return nil, fmt.Errorf("replicate: find training: input: %w", err)
	}
	vid := versionID(trainerVersion)
	cutoff := after.Add(-ClockSkew)
	var found *Training
	err = c.paginate(ctx, c.api("/trainings"), "list trainings", func(raw json.RawMessage) (bool, error) {
		var t rg.Training
		if err := json.Unmarshal(raw, &t); err != nil {
			return false, err
		}
		created := parseTime(t.CreatedAt)
		if !after.IsZero() && !created.IsZero() && created.Before(cutoff) {
			return false, nil // newest first: the rest are older still
		}
		if versionID(t.Version) != vid {
			return true, nil
		}
		if !inputsMatch(t.Input, want) {
			return true, nil
		}
		found = trainingFrom(&t)
		return false, nil
	})
	if err != nil || found == nil {
		return nil, err
	}
	return c.GetTraining(ctx, found.ID)
}

// ---- predictions ----

// Prediction is a prediction on Replicate. Output lists the output URLs.
type Prediction struct {
	ID, Status, Version, Error, Logs string
	Input                            map[string]any
	Output                           []string
	CreatedAt                        time.Time
	// DataRemoved is set once the API has removed the prediction's input, output and logs (it
	// does so for API predictions an hour after they finish): the output can never be fetched.
	DataRemoved bool
	// PredictTime is metrics.predict_time in seconds (0 when absent), what Replicate bills.
	PredictTime float64
}

// Gone reports whether a succeeded prediction's output can no longer be had: the API removed its
// data (data_removed, or a succeeded prediction without any output). Running it again is the only
// way to get the image back.
func (p *Prediction) Gone() bool {
	return p.Status == "succeeded" && (p.DataRemoved || len(p.Output) == 0)
}

// Terminal reports whether the prediction has finished (see TerminalStatus).
func (p *Prediction) Terminal() bool { return TerminalStatus(p.Status) }

func predictionFrom(p *rg.Prediction) *Prediction {
	out := &Prediction{ID: p.ID, Status: string(p.Status), Version: p.Version, Error: errString(p.Error),
		Input: p.Input, CreatedAt: parseTime(p.CreatedAt)}
	if p.Logs != nil {
		out.Logs = *p.Logs
	}
	out.PredictTime = predictTime(p.Metrics)
	if raw := p.RawJSON(); len(raw) > 0 {
		var extra struct {
			DataRemoved bool `json:"data_removed"`
		}
		if json.Unmarshal(raw, &extra) == nil {
			out.DataRemoved = extra.DataRemoved
		}
	}
	switch o := p.Output.(type) {
	case string:
		out.Output = []string{o}
	case []any:
		for _, v := range o {
			if s, ok := v.(string); ok {
				out.Output = append(out.Output, s)
			}
		}
	}
	return out
}

// CreatePrediction runs version (an id or "owner/name:id") on input. Retried only on 429; a 5xx
// or lost answer returns a *MaybeCreatedError (reconcile with FindPrediction).
func (c *Client) CreatePrediction(ctx context.Context, version string, input map[string]any) (*Prediction, error) {
	vid := versionID(version)
	if vid == "" {
		return nil, fmt.Errorf("replicate: %q is not a model version", version)
	}
	in := rg.PredictionInput{}
	for k, v := range input {
		if f, ok := v.(*File); ok {
			in[k] = f.URL
			continue
		}
		in[k] = v
	}
	p, err := c.rc.CreatePrediction(ctx, vid, in, nil, false)
	if err != nil {
		return nil, createErr("prediction", "create prediction on "+version, err)
	}
	return predictionFrom(p), nil
}

// GetPrediction reads a prediction.
func (c *Client) GetPrediction(ctx context.Context, id string) (*Prediction, error) {
	p, err := c.rc.GetPrediction(ctx, url.PathEscape(id))
	if err != nil {
		return nil, convertErr("get prediction "+id, err)
	}
	return predictionFrom(p), nil
}

// FindPrediction lists predictions (newest first, until older than `after`) and returns the one on
// version whose input holds `input` (as FindTraining), read in full; nil, nil if none.
func (c *Client) FindPrediction(ctx context.Context, version string, input map[string]any, after time.Time) (*Prediction, error) {
	want, err := canonical(input)
	if err != nil {
		return nil, fmt.Errorf("replicate: find prediction: input: %w", err)
	}
	vid := versionID(version)
	cutoff := after.Add(-ClockSkew)
	var found string
	err = c.paginate(ctx, c.api("/predictions"), "list predictions", func(raw json.RawMessage) (bool, error) {
		var p rg.Prediction
		if err := json.Unmarshal(raw, &p); err != nil {
			return false, err
		}
		created := parseTime(p.CreatedAt)
		if !after.IsZero() && !created.IsZero() && created.Before(cutoff) {
			return false, nil
		}
		if versionID(p.Version) != vid {
			return true, nil
		}
		if !inputsMatch(p.Input, want) {
			return true, nil
		}
		found = p.ID
		return false, nil
	})
	if err != nil || found == "" {
		return nil, err
	}
	return c.GetPrediction(ctx, found)
}

// IsGone reports whether err is (or wraps) an answer saying the object is no longer there: 404, 410
// or 403 (delivery URLs of removed outputs answer 403 on some CDNs).
func IsGone(err error) bool {
	var a *APIError
	return errors.As(err, &a) && (a.Status == http.StatusNotFound || a.Status == http.StatusGone || a.Status == http.StatusForbidden)
}

// Download fetches an output URL; the token is sent only to the API host. An output that is no
// longer served answers an *APIError for which IsGone holds.
func (c *Client) Download(ctx context.Context, rawURL string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("replicate: download %q: not an http(s) URL", rawURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("replicate: download %s: %w", rawURL, err)
	}
	if c.sameHost(u) {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, convertErr("download "+redactURL(u), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, decodeAPIError(resp.StatusCode, data, "download "+redactURL(u))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDownload+1))
	if err != nil {
		return nil, fmt.Errorf("replicate: download %s: %w", redactURL(u), err)
	}
	if len(data) > maxDownload {
		return nil, fmt.Errorf("replicate: download %s: larger than %d MB; hint: is it an image?", redactURL(u), maxDownload>>20)
	}
	return data, nil
}

// maxDownload bounds a downloaded output (a 1024² PNG is a few MB).
const maxDownload = 256 << 20

// redactURL drops the query (signed delivery URLs carry credentials there).
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}

// ---- helpers ----

// paginate GETs a list and each `next` page, calling each for every result until it returns
// false; onPage (optional) is called for every page read.
func (c *Client) paginate(ctx context.Context, first, op string, each func(json.RawMessage) (bool, error), onPage ...func()) error {
	next := first
	seen := map[string]bool{}
	for page := 1; next != ""; page++ {
		if seen[next] {
			return fmt.Errorf("replicate: %s: page %d repeats link %s; hint: the API's pagination looped", op, page, next)
		}
		seen[next] = true
		var p struct {
			Next    *string           `json:"next"`
			Results []json.RawMessage `json:"results"`
		}
		if err := c.do(ctx, http.MethodGet, next, nil, "", &p, fmt.Sprintf("%s (page %d)", op, page)); err != nil {
			return err
		}
		for _, f := range onPage {
			f()
		}
		for _, r := range p.Results {
			more, err := each(r)
			if err != nil {
				return fmt.Errorf("replicate: %s (page %d): %w", op, page, err)
			}
			if !more {
				return nil
			}
		}
		next = ""
		if p.Next != nil && *p.Next != "" {
			n, err := c.resolve(*p.Next)
			if err != nil {
				return err
			}
			next = n
		}
	}
	return nil
}

// SecretMarker is what the API shows instead of a secret input's value (hf_token,
// wandb_api_key); such keys match any value when inputs are compared.
const SecretMarker = "**********"

// inputsMatch reports whether a remote input holds everything we sent (want, canonical form):
// every key of want is on the remote side and JSON-equal. Keys the API added (the model's
// defaults, echoed back) are ignored, and so are keys named like secrets (token, key, secret) and
// values the API redacted: it never shows those back. The upload's unique input_images URL keeps
// the match to one training.
func inputsMatch(remote map[string]any, want any) bool {
	got, err := canonical(remote)
	if err != nil {
		return false
	}
	g, gok := got.(map[string]any)
	w, wok := want.(map[string]any)
	if !gok || !wok {
		return reflect.DeepEqual(got, want)
	}
	for k, wv := range w {
		if secretName(k) {
			continue
		}
		gv, ok := g[k]
		if !ok {
			return false
		}
		if gv == SecretMarker {
			continue
		}
		if !reflect.DeepEqual(gv, wv) {
			return false
		}
	}
	return true
}

// secretName reports whether an input name holds a credential (hf_token, wandb_api_key, ...).
func secretName(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "token") || strings.Contains(n, "key") || strings.Contains(n, "secret")
}

// canonical turns a value into its JSON-decoded form so inputs compare JSON-equal.
func canonical(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if m, ok := out.(map[string]any); ok && len(m) == 0 {
		return map[string]any{}, nil
	}
	if out == nil {
		return map[string]any{}, nil
	}
	return out, nil
}

// versionID returns the id part of "owner/name:id" (or the id itself).
func versionID(ref string) string {
	if i := strings.LastIndex(ref, ":"); i >= 0 {
		return ref[i+1:]
	}
	if strings.Contains(ref, "/") {
		return ""
	}
	return ref
}

// predictTime reads metrics.predict_time (seconds), 0 when absent or nonsense.
func predictTime(m *rg.PredictionMetrics) float64 {
	if m == nil || m.PredictTime == nil || *m.PredictTime < 0 || *m.PredictTime != *m.PredictTime {
		return 0
	}
	return *m.PredictTime
}

func errString(e any) string {
	switch v := e.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999Z07:00", "2006-01-02T15:04:05.999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

func parseTimePtr(s *string) *time.Time {
	if s == nil || *s == "" {
		return nil
	}
	t := parseTime(*s)
	if t.IsZero() {
		return nil
	}
	return &t
}
