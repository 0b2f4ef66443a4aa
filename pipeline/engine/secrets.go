package engine

import (
	"encoding/json"
	"sort"
	"strings"
	"sync"

	"github.com/zclconf/go-cty/cty"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// secrets is the set of secret strings this run knows: the values of sensitive variables (and of
// variables named like a secret) and of inputs at sensitive paths. Whatever a stage kind writes —
// notes, warnings, errors, outputs, private data — passes through redact before it reaches a
// person, a -json line or state, so a secret cannot leak through a path the kind did not think of.
type secrets struct {
	mu   sync.RWMutex
	set  map[string]bool
	list []string // longest first, so a secret containing another is replaced whole
}

// minSecretLen keeps short values ("1", "TOK") from redacting ordinary text.
const minSecretLen = 4

func (s *secrets) add(v cty.Value) {
	var found []string
	collectStrings(v, &found)
	if len(found) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[string]bool{}
	}
	changed := false
	for _, f := range found {
		if len(f) >= minSecretLen && f != Redacted && !s.set[f] {
			s.set[f] = true
			changed = true
		}
	}
	if changed {
		s.list = s.list[:0]
		for k := range s.set {
			s.list = append(s.list, k)
		}
		sort.Slice(s.list, func(i, j int) bool { return len(s.list[i]) > len(s.list[j]) })
	}
}

func collectStrings(v cty.Value, out *[]string) {
	if v == cty.NilVal {
		return
	}
	v, _ = v.UnmarkDeep()
	if !v.IsKnown() || v.IsNull() {
		return
	}
	t := v.Type()
	switch {
	case t == cty.String:
		*out = append(*out, v.AsString())
	case t.IsListType() || t.IsSetType() || t.IsTupleType() || t.IsMapType() || t.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			collectStrings(e, out)
		}
	}
}

// redact replaces every known secret in s.
func (s *secrets) redact(text string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, sec := range s.list {
		if strings.Contains(text, sec) {
			text = strings.ReplaceAll(text, sec, Redacted)
		}
	}
	return text
}

// redactJSON redacts secrets in a JSON document, raw and JSON-escaped.
func (s *secrets) redactJSON(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	text := string(b)
	changed := false
	for _, sec := range s.list {
		esc, _ := json.Marshal(sec)
		inner := string(esc[1 : len(esc)-1])
		if strings.Contains(text, inner) {
			text = strings.ReplaceAll(text, inner, Redacted)
			changed = true
		}
	}
	if !changed {
		return b
	}
	return []byte(text)
}

func (s *secrets) redactAll(list []string) []string {
	if len(list) == 0 {
		return list
	}
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = s.redact(x)
	}
	return out
}

// redactAny redacts strings inside plain event values.
func (s *secrets) redactAny(v any) any {
	switch t := v.(type) {
	case string:
		return s.redact(t)
	case []any:
		for i := range t {
			t[i] = s.redactAny(t[i])
		}
	case map[string]any:
		for k := range t {
			t[k] = s.redactAny(t[k])
		}
	}
	return v
}

// redactEvent scrubs every free-text field of an event.
func (s *secrets) redactEvent(ev *pipeline.Event) {
	s.mu.RLock()
	empty := len(s.list) == 0
	s.mu.RUnlock()
	if empty {
		return
	}
	ev.Reasons = s.redactAll(ev.Reasons)
	ev.Notes = s.redactAll(ev.Notes)
	ev.Details = s.redactAll(ev.Details)
	ev.Deletes = s.redactAll(ev.Deletes)
	ev.Warnings = s.redactAll(ev.Warnings)
	ev.Message = s.redact(ev.Message)
	if ev.Outputs != nil {
		s.redactAny(ev.Outputs)
	}
	if p := ev.Progress; p != nil {
		pp := *p
		pp.Message = s.redact(p.Message)
		ev.Progress = &pp
	}
}

// Redact replaces every secret this run knows in text (for reports written outside the engine,
// such as the CI job summary).
func (e *Engine) Redact(text string) string { return e.secrets.redact(text) }

// Secrets returns the secret strings known so far (for plan files).
func (e *Engine) Secrets() []string {
	e.secrets.mu.RLock()
	defer e.secrets.mu.RUnlock()
	return append([]string(nil), e.secrets.list...)
}

// collectVarSecrets records the values of sensitive variables and of variables named like a secret.
func (e *Engine) collectVarSecrets() {
	for _, v := range e.Module.Config().Variables {
		if v.Sensitive || SensitiveName(v.Name) {
			e.secrets.add(e.Vars[v.Name])
		}
	}
}

// valueAt returns the value at path inside v (cty.NilVal when absent).
func valueAt(v cty.Value, path cty.Path) cty.Value {
	out, err := path.Apply(v)
	if err != nil {
		return cty.NilVal
	}
	return out
}
