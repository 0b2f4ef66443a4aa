package engine

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"
)

// SavedPlan is what `plan -out FILE` writes and `apply FILE` reads. It holds what is needed to
// re-run the same plan and to notice that the world moved on: the config files' digests, the
// variable values (sensitive ones are never written: they must be supplied again), the options,
// the state serial of every instance and the planned actions.
type SavedPlan struct {
	Version       int                        `json:"format_version"`
	CreatedAt     time.Time                  `json:"created_at"`
	Files         []SavedFile                `json:"files"`
	Vars          map[string]json.RawMessage `json:"variables"`
	SensitiveVars []string                   `json:"sensitive_variables,omitempty"`
	// SensitiveDigests are salted hashes of the left-out values, so apply can tell the user that a
	// value given again differs from the planned one (never the value itself).
	SensitiveDigests map[string]string `json:"sensitive_digests,omitempty"`
	Salt             string            `json:"salt,omitempty"`
	State            string            `json:"state,omitempty"`
	Only             []string          `json:"only,omitempty"`
	Shard            string            `json:"shard,omitempty"`
	Replace          []string          `json:"replace,omitempty"`
	Simulate         bool              `json:"simulate,omitempty"`
	Serials          map[string]uint64 `json:"serials"`
	Actions          map[string]string `json:"actions"`
}

// SavedFile is one config file and the digest of its content.
type SavedFile struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

const savedPlanVersion = 1

// NewSavedPlan captures a plan. sensitive names the variables whose values must not be written;
// a variable whose value holds one of secrets (a value that reached a secret-named input, see
// Engine.Secrets) is not written either. Both must be supplied again to apply the plan.
func NewSavedPlan(files []string, vars map[string]cty.Value, sensitive map[string]bool, secrets []string, plan *Plan) (*SavedPlan, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	sp := &SavedPlan{Version: savedPlanVersion, CreatedAt: time.Now().UTC(), Vars: map[string]json.RawMessage{},
		Serials: map[string]uint64{}, Actions: map[string]string{}, SensitiveDigests: map[string]string{}, Salt: hex.EncodeToString(salt)}
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, err
		}
		sum, err := fileDigest(abs)
		if err != nil {
			return nil, err
		}
		sp.Files = append(sp.Files, SavedFile{Path: abs, SHA256: sum})
	}
	for name, v := range vars {
		if sensitive[name] || holdsSecret(v, secrets) {
			sp.SensitiveVars = append(sp.SensitiveVars, name)
			if d, ok := sp.saltedDigest(v); ok {
				sp.SensitiveDigests[name] = d
			}
			continue
		}
		if !v.IsWhollyKnown() {
			continue
		}
		raw, err := marshalValue(v)
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", name, err)
		}
		sp.Vars[name] = raw
	}
	sort.Strings(sp.SensitiveVars)
	for _, ip := range plan.Instances {
		sp.Serials[ip.Key] = ip.Serial
		for _, s := range ip.Stages {
			sp.Actions[s.Address] = string(s.Action)
		}
	}
	return sp, nil
}

func holdsSecret(v cty.Value, secrets []string) bool {
	var strs []string
	collectStrings(v, &strs)
	for _, x := range strs {
		for _, sec := range secrets {
			if strings.Contains(x, sec) {
				return true
			}
		}
	}
	return false
}

func fileDigest(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// Write saves the plan file atomically.
func (sp *SavedPlan) Write(path string) error {
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadSavedPlan loads a plan file; it also tells a plan file from an HCL config.
func ReadSavedPlan(path string) (*SavedPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sp SavedPlan
	if err := json.Unmarshal(b, &sp); err != nil || sp.Version == 0 {
		return nil, ErrNotPlanFile
	}
	if sp.Version != savedPlanVersion {
		return nil, fmt.Errorf("%s: plan file format %d is not supported (want %d): run plan again", path, sp.Version, savedPlanVersion)
	}
	return &sp, nil
}

// ErrNotPlanFile means the file is not a saved plan.
var ErrNotPlanFile = errors.New("not a saved plan file")

// ConfigPaths lists the plan's config files after checking none changed since the plan.
func (sp *SavedPlan) ConfigPaths() ([]string, error) {
	var out []string
	for _, f := range sp.Files {
		sum, err := fileDigest(f.Path)
		if err != nil {
			return nil, fmt.Errorf("saved plan: config %s: %w", f.Path, err)
		}
		if sum != f.SHA256 {
			return nil, fmt.Errorf("saved plan is stale: %s changed since the plan was made; run plan again", f.Path)
		}
		out = append(out, f.Path)
	}
	return out, nil
}

// VarValues decodes the saved variable values.
func (sp *SavedPlan) VarValues() (map[string]cty.Value, error) {
	out := make(map[string]cty.Value, len(sp.Vars))
	for name, raw := range sp.Vars {
		v, err := unmarshalValue(raw)
		if err != nil {
			return nil, fmt.Errorf("saved plan: variable %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

func (sp *SavedPlan) saltedDigest(v cty.Value) (string, bool) {
	if !v.IsWhollyKnown() {
		return "", false
	}
	raw, err := marshalValue(v)
	if err != nil {
		return "", false
	}
	sum := sha256.Sum256(append([]byte(sp.Salt), raw...))
	return hex.EncodeToString(sum[:]), true
}

// CheckSensitive tells, before anything runs, which left-out values differ from the planned ones.
func (sp *SavedPlan) CheckSensitive(vars map[string]cty.Value) error {
	var bad []string
	for _, name := range sp.SensitiveVars {
		want, ok := sp.SensitiveDigests[name]
		if !ok {
			continue
		}
		if got, ok := sp.saltedDigest(vars[name]); !ok || got != want {
			bad = append(bad, name)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("the saved plan left out the value of %s (sensitive); the value given now differs from the planned one: pass the same value again with -var or PIPELINE_VAR_%s", strings.Join(bad, ", "), bad[0])
}

// CheckCurrent refuses a stale plan: the state serial of an instance moved since the plan was
// made, or re-planning now gives other actions.
func (sp *SavedPlan) CheckCurrent(now *Plan) error {
	var problems []string
	for _, ip := range now.Instances {
		want, ok := sp.Serials[ip.Key]
		if !ok {
			problems = append(problems, fmt.Sprintf("instance %q was not in the plan", ip.Key))
			continue
		}
		if ip.Serial != want {
			problems = append(problems, fmt.Sprintf("state of %s moved on since the plan (serial %d → %d)", instanceName(ip), want, ip.Serial))
		}
		for _, s := range ip.Stages {
			if a := sp.Actions[s.Address]; a != string(s.Action) {
				problems = append(problems, fmt.Sprintf("%s: planned %s, now %s", s.Address, a, s.Action))
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if len(problems) > 5 {
		problems = append(problems[:5], fmt.Sprintf("… and %d more", len(problems)-5))
	}
	return fmt.Errorf("saved plan is stale: %s; run plan again", strings.Join(problems, "; "))
}

func instanceName(ip *InstancePlan) string {
	if !ip.Batch {
		return "the pipeline"
	}
	return fmt.Sprintf("%q", ip.Key)
}
