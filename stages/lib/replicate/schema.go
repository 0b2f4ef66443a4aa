package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// A version's openapi_schema is immutable, so a trainer's schema is read once per process (the
// memo, shared by concurrent callers) and kept across processes and CI runners in a
// pipeline.Cache under SchemaCacheKey.

// WithCache sets the cache trainer schemas are kept in across processes (FromEnv passes
// Env.Cache). nil: none, every process reads the schema once.
func WithCache(cache pipeline.Cache) Option {
	return func(c *Client) { c.cache = cache }
}

// schemaMemo holds one entry per version id; the first caller reads it, later ones wait for
// that read. A failed read is forgotten, so the next caller tries again.
type schemaMemo struct {
	mu      sync.Mutex
	entries map[string]*schemaEntry
}

type schemaEntry struct {
	done chan struct{}
	raw  json.RawMessage
	err  error
}

// SchemaCacheKey is the cache key of a version's openapi_schema as the API at host serves it
// ("replicate/schema/api.replicate.com/<id>"): the host keeps a test server's or a proxy's
// schema apart from the real one's.
func SchemaCacheKey(host, versionID string) string {
	host = strings.NewReplacer(":", "_", "/", "_").Replace(strings.ToLower(host))
	return "replicate/schema/" + host + "/" + versionID
}

func (c *Client) schemaKey(version string) string { return SchemaCacheKey(c.baseURL.Host, version) }

// TrainerInputs reads the training inputs of trainer ("owner/name:version") from the version's
// openapi_schema: components.schemas.TrainingInput, or Input for trainers built before cog split
// them (legacy), resolving allOf/$ref enums. A null or unreadable schema is a *SchemaUnknownError.
// The schema is read once per process and version (concurrent callers share the request) and
// kept in the client's cache (WithCache), so another process reads it from there.
func (c *Client) TrainerInputs(ctx context.Context, trainer string) (map[string]InputSpec, error) {
	owner, name, version, err := trainerParts(trainer)
	if err != nil {
		return nil, err
	}
	raw, err := c.trainerSchema(ctx, owner, name, version, "read input schema of "+trainer)
	if err != nil {
		return nil, err
	}
	return parseTrainingInput(raw, trainer)
}

// CachedTrainerInputs is TrainerInputs without any request (plan with -refresh=false): from this
// process's memo or the cache only. found is false when neither has the schema.
func (c *Client) CachedTrainerInputs(ctx context.Context, trainer string) (specs map[string]InputSpec, found bool, err error) {
	_, _, version, err := trainerParts(trainer)
	if err != nil {
		return nil, false, err
	}
	raw, ok := c.memoSchema(version)
	if !ok {
		raw, ok = c.cachedSchema(ctx, version)
	}
	if !ok {
		return nil, false, nil
	}
	specs, err = parseTrainingInput(raw, trainer)
	return specs, true, err
}

func trainerParts(trainer string) (owner, name, version string, err error) {
	owner, name, version, err = SplitVersion(trainer)
	if err != nil {
		return "", "", "", err
	}
	if owner == "" || version == "" {
		return "", "", "", fmt.Errorf("replicate: trainer %q must be \"owner/name:version\"", trainer)
	}
	return owner, name, version, nil
}

// memoSchema returns a schema this process has read already.
func (c *Client) memoSchema(version string) (json.RawMessage, bool) {
	c.schemas.mu.Lock()
	e := c.schemas.entries[version]
	c.schemas.mu.Unlock()
	if e == nil {
		return nil, false
	}
	select {
	case <-e.done:
		return e.raw, e.err == nil
	default:
		return nil, false
	}
}

// trainerSchema returns a version's raw openapi_schema: memo, then cache, then the API.
func (c *Client) trainerSchema(ctx context.Context, owner, name, version, op string) (json.RawMessage, error) {
	m := &c.schemas
	m.mu.Lock()
	if e := m.entries[version]; e != nil {
		m.mu.Unlock()
		select {
		case <-e.done:
			return e.raw, e.err
		case <-ctx.Done():
			return nil, fmt.Errorf("replicate: %s: %w", op, ctx.Err())
		}
	}
	if m.entries == nil {
		m.entries = map[string]*schemaEntry{}
	}
	e := &schemaEntry{done: make(chan struct{})}
	m.entries[version] = e
	m.mu.Unlock()

	e.raw, e.err = c.loadSchema(ctx, owner, name, version, op)
	if e.err != nil {
		m.mu.Lock()
		delete(m.entries, version)
		m.mu.Unlock()
	}
	close(e.done)
	return e.raw, e.err
}

// loadSchema reads the schema from the cache, else from the API (then stores it in the cache).
func (c *Client) loadSchema(ctx context.Context, owner, name, version, op string) (json.RawMessage, error) {
	if raw, ok := c.cachedSchema(ctx, version); ok {
		return raw, nil
	}
	// Read the schema raw: replicate-go would fail the whole call on a schema that is not an object.
	var v struct {
		OpenAPISchema json.RawMessage `json:"openapi_schema"`
	}
	err := c.do(ctx, http.MethodGet, c.api("/models/"+url.PathEscape(owner)+"/"+url.PathEscape(name)+"/versions/"+url.PathEscape(version)), nil, "", &v, op)
	if err != nil {
		return nil, err
	}
	raw := v.OpenAPISchema
	if len(raw) == 0 {
		raw = json.RawMessage("null")
	}
	if c.cache != nil {
		// Best effort: a cache that cannot be written only costs the next process one request.
		_ = c.cache.Put(ctx, c.schemaKey(version), raw)
	}
	return raw, nil
}

// cachedSchema reads a schema from the cache; a miss, an unreadable cache or an entry that is
// not JSON count as absent.
func (c *Client) cachedSchema(ctx context.Context, version string) (json.RawMessage, bool) {
	if c.cache == nil {
		return nil, false
	}
	b, ok, err := c.cache.Get(ctx, c.schemaKey(version))
	if err != nil || !ok || !json.Valid(b) {
		return nil, false
	}
	return b, true
}

// PlanTrainerInputs is TrainerInputs for a stage's Plan: with -refresh=false (env.NoRefresh) it
// reads only the memo and the cache, and a schema found in neither is a *SchemaUnknownError.
func (c *Client) PlanTrainerInputs(ctx context.Context, env *pipeline.Env, trainer string) (map[string]InputSpec, error) {
	if env == nil || !env.NoRefresh {
		return c.TrainerInputs(ctx, trainer)
	}
	specs, found, err := c.CachedTrainerInputs(ctx, trainer)
	if err != nil || found {
		return specs, err
	}
	return nil, &SchemaUnknownError{Trainer: trainer, Reason: "-refresh=false and no cached copy; it is read at apply"}
}
