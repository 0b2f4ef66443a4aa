// Package state persists what a pipeline run knows about its stage instances - status, input
// digest, outputs and the remote ids a stage must not lose - so that a later run reuses finished
// work and re-attaches to trainings in flight instead of paying twice.
//
// Three backends sit behind one Store interface; OpenWith picks one (see LocalPaths).
//
// FileStore, a single JSON file, is the state of a config without a batch: atomic writes (temp,
// fsync, rename, fsync of the directory), group commit of concurrent Puts, one instance per line
// of compact JSON.
//
//	.pipeline/retrain.state.json          {"version":1,"lineage":..,"serial":N,"instances":{KEY: {..}}}
//	.pipeline/retrain.state.json.backup   the previous version
//	.pipeline/retrain.state.json.lock     the OS lock, its holder inside
//
// DirStore, one file per instance in a directory, is the state of a batch: recording one
// transition writes one small file whether the batch has 10 subjects or 10,000. Each file is
// written atomically, Puts of different instances run in parallel, the lineage is shared through
// .meta.json and each instance has its serial. Keys are %-escaped into file names that are safe,
// reversible and distinct on case-insensitive file systems (names.go). With -state PATH, a
// directory (an existing one, or PATH ending in /) is a DirStore for any config; a file X.json is
// a FileStore without a batch and, for a batch, the directory X migrating X.json.
//
//	.pipeline/retrain.state/.meta.json        {"version":2,"layout":"per-instance","lineage":..}
//	.pipeline/retrain.state/.lock             the OS lock, its holder inside
//	.pipeline/retrain.state/ana.json          instance "ana": gzip-compressed compact JSON
//	.pipeline/retrain.state/ana.json.backup   its previous version
//	.pipeline/retrain.state/_default.json     the instance of key "", when there is one
//	.pipeline/retrain.state.json              a pointer to the directory (see Migration)
//
// RemoteStore is state on object storage through gocloud.dev/blob (s3://, gs://, azblob://,
// file://, mem://): one object per batch instance, <prefix>/<stem>/<key>.state.json (compact
// JSON), lock objects created only if absent and refreshed while held, and compare-and-swap
// writes built from each service's own preconditions.
//
// Both local layouts take one OS lock per state, reference-counted across the keys one process
// holds; a lock held elsewhere is a *LockedError (exit 4).
//
// Migration: a batch's state written by an earlier release is a single file (version 1). A
// DirStore reads it until its first write, which copies every instance into the directory (serial
// and all, each read back), writes .meta.json (the commit point: a crash before it leaves the
// single file in charge), keeps the old file as retrain.state.json.v1.backup and replaces it by a
// small version-2 pointer, which releases reading only version 1 refuse rather than find no state
// and pay for every training again. Open (no options) finds a migrated directory by itself.
//
// The cache of figures (pipeline.Cache) lives with the state: CacheOf(st) is .pipeline/cache
// beside a local state, and <prefix>/<stem>/.cache/ in the bucket of remote state.
//
// Example:
//
//	st, err := state.OpenWith(ctx, "", "examples/retrain.hcl", state.OpenOptions{Batch: true}) // or "s3://bucket/ci?region=eu-west-1"
//	if err != nil { ... }
//	defer st.Close()
//	lk, err := st.Lock(ctx, "ana", state.NewLockInfo("apply"), 0)
//	if err != nil { ... } // *state.LockedError: exit 4
//	defer lk.Unlock()
//	inst, err := st.Get(ctx, "ana") // nil when the instance never ran
//	if inst == nil { inst = &state.Instance{} }
//	inst.SetRecord(&state.Record{Kind: "train", Name: "lora", Status: pipeline.StatusRunning})
//	err = st.Put(ctx, "ana", inst) // durable when it returns; remote: compare-and-swap
//
// Pull, Push and Migrate move whole states (`state pull`, `state push`, `state migrate`) between
// any two backends.
package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Record is what state remembers about one stage instance.
type Record struct {
	Kind        string          `json:"kind"`
	Name        string          `json:"name"`
	Status      pipeline.Status `json:"status"`
	InputDigest string          `json:"input_digest,omitempty"`
	// Inputs holds the redacted display value of each input component, for "old -> new" reasons.
	Inputs map[string]json.RawMessage `json:"inputs,omitempty"`
	// DigestParts holds the digest of each input component.
	DigestParts map[string]string `json:"digest_parts,omitempty"`
	// Outputs is go-cty ctyjson with its type ({"value":...,"type":...}); nil until complete.
	Outputs json.RawMessage `json:"outputs,omitempty"`
	// Data is the stage kind's private data (remote ids, intents).
	Data      json.RawMessage `json:"data,omitempty"`
	Error     string          `json:"error,omitempty"`
	Warnings  []string        `json:"warnings,omitempty"`
	StartedAt time.Time       `json:"started_at,omitzero"`
	UpdatedAt time.Time       `json:"updated_at,omitzero"`
}

// Address is "KIND.NAME", the key of the record in Instance.Records.
func (r *Record) Address() string { return r.Kind + "." + r.Name }

// Instance is the state of one batch instance (or of the whole config outside a batch).
type Instance struct {
	// Key is the batch key, "" outside a batch.
	Key string `json:"key"`
	// Lineage identifies the state this instance belongs to; a store keeps its own lineage on Put.
	Lineage string `json:"lineage"`
	// Serial is bumped on every Put of this instance.
	Serial uint64 `json:"serial"`
	// Records by "KIND.NAME".
	Records map[string]*Record `json:"records"`
	// Outputs are the root outputs (a ctyjson object with its type).
	Outputs json.RawMessage `json:"outputs,omitempty"`
	// Shared holds the instance's shared records by name (pipeline.StateView.Shared): facts of
	// the subject that stages of any kind keep, such as the model versions made for it.
	Shared map[string]json.RawMessage `json:"shared,omitempty"`
}

// SetRecord stores r under its address, creating the map when needed.
func (in *Instance) SetRecord(r *Record) {
	if in.Records == nil {
		in.Records = map[string]*Record{}
	}
	in.Records[r.Address()] = r
}

// Clone returns a deep copy.
func (in *Instance) Clone() *Instance {
	if in == nil {
		return nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		// Every field is plain data or valid JSON: marshalling cannot fail unless a RawMessage
		// holds invalid JSON, and then a shallow copy is the best we can do.
		c := *in
		return &c
	}
	var c Instance
	if err := json.Unmarshal(b, &c); err != nil {
		c = *in
	}
	return &c
}

// compactRaw removes the file's indentation from the embedded JSON values, so callers see the
// same bytes they stored (whitespace aside).
func (in *Instance) compactRaw() {
	in.Outputs = compactJSON(in.Outputs)
	for _, r := range in.Records {
		if r == nil {
			continue
		}
		r.Outputs, r.Data = compactJSON(r.Outputs), compactJSON(r.Data)
		for k, v := range r.Inputs {
			r.Inputs[k] = compactJSON(v)
		}
	}
	for k, v := range in.Shared {
		in.Shared[k] = compactJSON(v)
	}
}

func compactJSON(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return m
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		return m
	}
	return b.Bytes()
}

// LockInfo describes who holds a lock. It is written into the lock file or object.
type LockInfo struct {
	ID        string    `json:"id"`
	Operation string    `json:"operation,omitempty"`
	Host      string    `json:"host,omitempty"`
	User      string    `json:"user,omitempty"`
	JobURL    string    `json:"job_url,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Created   time.Time `json:"created"`
	// Refreshed is when a remote lock's holder last proved it is alive (zero for local locks).
	Refreshed time.Time `json:"refreshed,omitzero"`
	// BootID identifies the holder's machine boot and pid namespace (Linux), so a dead pid is only
	// believed on the very machine - and container - that took the lock.
	BootID string `json:"boot_id,omitempty"`
}

// NewLockInfo describes this process holding a lock for operation ("apply", "state rm", ...):
// a fresh ID, host, user, pid, now, and the GitHub Actions job URL when GITHUB_SERVER_URL,
// GITHUB_REPOSITORY and GITHUB_RUN_ID are set.
func NewLockInfo(operation string) LockInfo {
	info := LockInfo{Operation: operation}
	fillLockInfo(&info)
	return info
}

// fillLockInfo fills the fields the caller left empty.
func fillLockInfo(info *LockInfo) {
	if info.ID == "" {
		info.ID = newID()
	}
	if info.Host == "" {
		info.Host, _ = os.Hostname()
	}
	if info.User == "" {
		if u, err := user.Current(); err == nil {
			info.User = u.Username
		}
	}
	if info.PID == 0 {
		info.PID = os.Getpid()
	}
	if info.Created.IsZero() {
		info.Created = time.Now().UTC()
	}
	if info.JobURL == "" {
		info.JobURL = githubJobURL(os.Getenv)
	}
	if info.BootID == "" {
		info.BootID = bootID()
	}
}

// bootID is the kernel's per-boot random id and this process's pid namespace ("" where there is
// none): containers on one host share the boot id but not their pids.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b)) + "/" + ns
}

// processAlive reports whether a process with that pid exists on this machine.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// githubJobURL is the URL of the GitHub Actions run, "" outside GitHub Actions.
func githubJobURL(getenv func(string) string) string {
	server, repo, run := getenv("GITHUB_SERVER_URL"), getenv("GITHUB_REPOSITORY"), getenv("GITHUB_RUN_ID")
	if server == "" || run == "" {
		return ""
	}
	if repo == "" {
		return strings.TrimRight(server, "/") + "/actions/runs/" + run
	}
	return strings.TrimRight(server, "/") + "/" + repo + "/actions/runs/" + run
}

// LockedError says a lock is held by someone else. The CLI maps it to exit status 4.
type LockedError struct {
	Info LockInfo
	// Stale is true when a remote lock has not been refreshed within its TTL: its holder is
	// probably dead and `pipeline force-unlock ID` may be run.
	Stale bool
	// Path is the lock file or lock object.
	Path string
	// Age is how long ago the lock was last refreshed (remote) or taken (local).
	Age time.Duration
	// TTL is the remote lock TTL (zero for local locks).
	TTL time.Duration
	// Unlock is the exact command that removes a stale lock ("" for local locks).
	Unlock string
	// Key is the batch key the lock guards ("" for a local file or the non-batch instance).
	Key string
}

func (e *LockedError) Error() string {
	var b strings.Builder
	who := "another process"
	if e.Info.PID != 0 {
		who = fmt.Sprintf("pid %d", e.Info.PID)
	}
	host := e.Info.Host
	if host == "" {
		host = "an unknown host"
	}
	since := "an unknown time"
	if !e.Info.Created.IsZero() {
		since = e.Info.Created.UTC().Format(time.RFC3339)
	}
	id := e.Info.ID
	if id == "" {
		id = "unknown"
	}
	fmt.Fprintf(&b, "state is locked by %s on host %s since %s (lock ID %s)", who, host, since, id)
	if e.Key != "" {
		fmt.Fprintf(&b, " for instance %q", e.Key)
	}
	var extra []string
	if e.Info.Operation != "" {
		extra = append(extra, "operation "+e.Info.Operation)
	}
	if e.Info.User != "" {
		extra = append(extra, "user "+e.Info.User)
	}
	if e.Info.JobURL != "" {
		extra = append(extra, "job "+e.Info.JobURL)
	}
	if e.Path != "" {
		extra = append(extra, "lock "+e.Path)
	}
	if len(extra) > 0 {
		b.WriteString("; " + strings.Join(extra, ", "))
	}
	switch {
	case e.Stale:
		fmt.Fprintf(&b, "\n  hint: the lock has not been refreshed for %s (TTL %s), so its holder is probably dead;"+
			" if no run is using this state any more, remove the lock with:\n    %s",
			e.Age.Round(time.Second), e.TTL, e.Unlock)
	case e.Unlock != "":
		fmt.Fprintf(&b, "\n  hint: another run is using this state; wait for it to finish or pass -lock-timeout 10m to wait."+
			" If its holder is dead, the lock turns stale after %s without refresh; then run: %s", e.TTL, e.Unlock)
	default:
		b.WriteString("\n  hint: another run is using this state; wait for it to finish or pass -lock-timeout 10m to wait" +
			" (the OS releases this lock when its process exits, so it cannot be stale)")
	}
	return b.String()
}

// opDeadlines makes -lock-timeout a budget per operation rather than per key: every Lock call
// that carries the same LockInfo.ID (one apply locking 1,000 batch keys) shares one deadline,
// counted from its first call, so keys held elsewhere cost one timeout in all, not one each.
type opDeadlines struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (d *opDeadlines) remaining(id string, timeout time.Duration) time.Duration {
	if timeout <= 0 || id == "" {
		return timeout
	}
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]time.Time{}
	}
	dl, ok := d.m[id]
	if !ok {
		dl = time.Now().Add(timeout)
		d.m[id] = dl
	}
	d.mu.Unlock()
	return max(time.Until(dl), 0)
}

// IsLocked reports whether err is (or wraps) a *LockedError.
func IsLocked(err error) bool {
	var le *LockedError
	return errors.As(err, &le)
}

// Lock is a held lock.
type Lock interface {
	ID() string
	Unlock() error
}

// Store is a state backend.
type Store interface {
	// Lock guards key ("" = the non-batch instance). A local file store has one lock for the whole
	// file (taken once per process, reference-counted across keys); remote stores lock per key.
	// timeout 0 = fail at once, else retry until timeout. Held locks are refreshed while held
	// (remote) so long stages keep them. A lock held elsewhere is reported as *LockedError.
	Lock(ctx context.Context, key string, info LockInfo, timeout time.Duration) (Lock, error)
	// Keys lists the stored instance keys, sorted.
	Keys(ctx context.Context) ([]string, error)
	// Get returns nil, nil when the instance is absent; the value is a copy the caller may modify.
	Get(ctx context.Context, key string) (*Instance, error)
	// Put is durable when it returns; it bumps Serial and keeps the store's lineage. Remote stores
	// compare-and-swap against the version last read.
	Put(ctx context.Context, key string, inst *Instance) error
	// Delete forgets an instance.
	Delete(ctx context.Context, key string) error
	// ForceUnlock removes the remote lock with that ID; force skips the same-ID safety check.
	// A local store explains that its OS lock is released with its process.
	ForceUnlock(ctx context.Context, id string, force bool) error
	// Describe names the backend for people: "local file .pipeline/x.state.json", "s3://b/p/x/".
	Describe() string
	Close() error
}

// DefaultPath is .pipeline/<config stem>.state.json beside the config file.
func DefaultPath(configPath string) string {
	return filepath.Join(filepath.Dir(configPath), ".pipeline", ConfigStem(configPath)+".state.json")
}

// ConfigStem is the config file's base name without its extension ("retrain" for retrain.hcl).
func ConfigStem(configPath string) string {
	if configPath == "" {
		return ""
	}
	base := filepath.Base(configPath)
	if stem := strings.TrimSuffix(base, filepath.Ext(base)); stem != "" && stem != "." {
		return stem
	}
	return base
}

// OpenOptions is what the caller knows about the config whose state it opens.
type OpenOptions struct {
	// Batch says the config has a batch block: its local state is one file per instance (a
	// DirStore), and a single-file state of an earlier release is migrated on the next write.
	// Without it a local state stays a single file, unless it already is a directory.
	Batch bool
	// Remote tunes the locks of remote state (zero values: the defaults).
	Remote RemoteOptions
}

// Open is OpenWith without options: a local state is a directory when one is there (or location
// names one), else the single file.
func Open(ctx context.Context, location, configPath string) (Store, error) {
	return OpenWith(ctx, location, configPath, OpenOptions{})
}

// OpenWith opens the state of the config at configPath.
//
// A URL (s3://, gs://, azblob://, file:///dir, mem://) is remote state on that bucket and prefix,
// with objects under <prefix>/<config stem>/; without a config file (configPath "") the URL names
// that directory itself, as Describe and the force-unlock hint print it.
//
// Anything else is local state, at LocalPaths(location, configPath): a *DirStore (one file per
// instance) when location names a directory, when the config has a batch (opts.Batch), or when
// the state already is a directory (an earlier batch run migrated it); otherwise a *FileStore.
func OpenWith(ctx context.Context, location, configPath string, opts OpenOptions) (Store, error) {
	if IsURL(location) {
		rs, err := OpenRemoteWith(ctx, location, ConfigStem(configPath), opts.Remote)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return rs, nil
	}
	file, dir := LocalPaths(location, configPath)
	if file == "" || opts.Batch || IsDirState(file, dir) {
		ds, err := OpenDir(dir, file)
		if err != nil {
			return nil, err
		}
		return ds, nil
	}
	fs, err := OpenFile(file)
	if err != nil {
		return nil, err
	}
	return fs, nil
}

// LocalPaths says where a local state lives. dir is its per-instance directory, file the single
// file it replaces (or is, for a config without a batch):
//   - location "": file is DefaultPath(configPath), .pipeline/<stem>.state.json, and dir
//     .pipeline/<stem>.state;
//   - a directory (an existing one, or a path ending in a separator): dir is location, file "";
//   - any other path is a state file; its directory is the path without ".json"
//     (ci.state.json: ci.state), or the path with ".d" when it has no such suffix.
func LocalPaths(location, configPath string) (file, dir string) {
	switch {
	case location == "":
		file = DefaultPath(configPath)
	case strings.HasSuffix(location, "/") || strings.HasSuffix(location, string(filepath.Separator)):
		return "", filepath.Clean(location)
	default:
		if fi, err := os.Stat(location); err == nil && fi.IsDir() {
			return "", filepath.Clean(location)
		}
		file = location
	}
	return file, DirFor(file)
}

// DirFor is the per-instance directory of a state file: without ".json", or with ".d" added.
func DirFor(file string) string {
	if d, ok := strings.CutSuffix(file, ".json"); ok && filepath.Base(d) != "" && filepath.Base(d) != "." {
		return d
	}
	return file + ".d"
}

// DefaultDir is .pipeline/<config stem>.state beside the config file: a batch's state directory.
func DefaultDir(configPath string) string { return DirFor(DefaultPath(configPath)) }

// IsDirState reports whether the local state of file is already the directory dir: the directory
// has its meta file, or file is the pointer a migration left.
func IsDirState(file, dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, metaName)); err == nil {
		return true
	}
	return file != "" && isLegacyStub(file)
}

// IsURL reports whether location names a remote backend rather than a local path.
func IsURL(location string) bool {
	i := strings.Index(location, "://")
	if i <= 0 {
		return false
	}
	for _, c := range location[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// newID returns 16 random hex characters.
func newID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Sprintf("%016x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b[:])
}

// newLineage returns a random UUID-shaped lineage id.
func newLineage() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Sprintf("%032x", time.Now().UnixNano())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
