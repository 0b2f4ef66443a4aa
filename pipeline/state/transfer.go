package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Snapshot is every instance of a state, in the local file's layout, so that `state pull` output
// and a local state file can both be given to `state push`.
type Snapshot struct {
	Version   int                  `json:"version"`
	Lineage   string               `json:"lineage,omitempty"`
	Serial    uint64               `json:"serial"`
	Instances map[string]*Instance `json:"instances"`
}

// ReadAll reads every instance of st with at most parallelism reads in flight (8 when <= 0).
func ReadAll(ctx context.Context, st Store, parallelism int) (map[string]*Instance, error) {
	keys, err := st.Keys(ctx)
	if err != nil {
		return nil, err
	}
	return ReadKeys(ctx, st, keys, parallelism)
}

// ReadKeys reads the given instances in parallel (bounded); absent ones are left out.
func ReadKeys(ctx context.Context, st Store, keys []string, parallelism int) (map[string]*Instance, error) {
	if parallelism <= 0 {
		parallelism = 8
	}
	out := make(map[string]*Instance, len(keys))
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, parallelism)
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			in, err := st.Get(ctx, k)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if in != nil {
				out[k] = in
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Pull reads the whole state for `pipeline state pull`.
func Pull(ctx context.Context, st Store) (*Snapshot, error) {
	all, err := ReadAll(ctx, st, 16)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Version: fileFormatVersion, Instances: all}
	lineages := map[string]bool{}
	for _, in := range all {
		lineages[in.Lineage] = true
		snap.Serial = max(snap.Serial, in.Serial)
	}
	if ls, ok := st.(interface{ Lineage() (string, error) }); ok { // the local layouts
		snap.Lineage, _ = ls.Lineage()
	} else if len(lineages) == 1 {
		for l := range lineages {
			snap.Lineage = l
		}
	}
	if fs, ok := st.(*FileStore); ok {
		fs.mu.Lock()
		snap.Serial = fs.serial
		fs.mu.Unlock()
	}
	return snap, nil
}

// MarshalSnapshot renders a snapshot as indented JSON (what `state pull` prints).
func MarshalSnapshot(s *Snapshot) ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseSnapshot reads `state pull` output or a local state file; name is used in errors.
func ParseSnapshot(data []byte, name string) (*Snapshot, error) {
	var s Snapshot
	if err := decodeSnapshot(data, &s); err != nil {
		return nil, fmt.Errorf("state push: %s is not a pipeline state file: %v\n  hint: give the output of `pipeline state pull` or a .state.json file", name, err)
	}
	for k, in := range s.Instances {
		if in == nil {
			return nil, fmt.Errorf("state push: %s: instance %q is null", name, k)
		}
		in.Key = k
		in.compactRaw()
	}
	return &s, nil
}

func decodeSnapshot(data []byte, s *Snapshot) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(s); err != nil {
		return err
	}
	var stub legacyStub
	if json.Unmarshal(data, &stub) == nil && stub.Layout == layoutPerInstance {
		return fmt.Errorf("it only points to the per-instance state in %s; give the output of `pipeline state pull` instead", stub.Directory)
	}
	if s.Version == 0 {
		return errors.New(`no "version" field`)
	}
	if s.Version > fileFormatVersion {
		return fmt.Errorf("format version %d is newer than this pipeline reads (%d)", s.Version, fileFormatVersion)
	}
	return nil
}

// PushOptions tunes Push.
type PushOptions struct {
	// Force overwrites instances whose stored lineage differs or whose stored serial is newer.
	Force bool
	// Info describes the pusher in the locks it takes.
	Info LockInfo
	// LockTimeout is how long to wait for each instance's lock.
	LockTimeout time.Duration
}

// Push writes every instance of snap into st (`pipeline state push FILE`), each under its lock.
// Without Force it refuses to replace an instance of another lineage or with a newer serial, the
// two ways a push loses work. Instances in st that snap lacks are left alone. It returns the keys
// written.
func Push(ctx context.Context, st Store, snap *Snapshot, opts PushOptions) ([]string, error) {
	keys := make([]string, 0, len(snap.Instances))
	for k := range snap.Instances {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if opts.Info.Operation == "" {
		opts.Info.Operation = "state push"
	}
	var written []string
	for _, k := range keys {
		in := snap.Instances[k]
		if err := pushOne(ctx, st, k, in, opts); err != nil {
			return written, err
		}
		written = append(written, k)
	}
	return written, nil
}

func pushOne(ctx context.Context, st Store, key string, in *Instance, opts PushOptions) error {
	info := opts.Info
	info.ID = ""
	lk, err := st.Lock(ctx, key, info, opts.LockTimeout)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	cur, err := st.Get(ctx, key)
	if err != nil {
		return err
	}
	if cur != nil && !opts.Force {
		if in.Lineage != "" && cur.Lineage != "" && in.Lineage != cur.Lineage {
			return fmt.Errorf("state push: instance %q in %s has lineage %s, the pushed one %s: they are different states\n  hint: pass -force to replace it anyway",
				displayKey(key), st.Describe(), cur.Lineage, in.Lineage)
		}
		if cur.Serial > in.Serial {
			return fmt.Errorf("state push: instance %q in %s is at serial %d, newer than the pushed serial %d; pushing would lose its later changes\n  hint: pull first, or pass -force",
				displayKey(key), st.Describe(), cur.Serial, in.Serial)
		}
	}
	c := in.Clone()
	if cur != nil {
		c.Serial = cur.Serial // base the compare-and-swap on what we just read
	} else {
		c.Serial = 0
	}
	return st.Put(ctx, key, c)
}

func displayKey(key string) string {
	if key == "" {
		return "(default)"
	}
	return key
}

// Migrate copies every instance of from into to — finished and in-flight records alike, with their
// private data (remote training ids), lineage and outputs — holding the locks of both while it
// copies, so no run can change either side meanwhile. It refuses to overwrite an instance that
// exists in to with different content; an identical one is skipped. Locks held elsewhere fail it
// at once (*LockedError).
func Migrate(ctx context.Context, from, to Store) error {
	return MigrateWith(ctx, from, to, NewLockInfo("state migrate"), 0)
}

// MigrateWith is Migrate with the lock holder description and a lock timeout.
func MigrateWith(ctx context.Context, from, to Store, info LockInfo, lockTimeout time.Duration) error {
	if info.Operation == "" {
		info.Operation = "state migrate"
	}
	keys, err := from.Keys(ctx)
	if err != nil {
		return err
	}
	// Hold every source lock first: a run that starts against the old location now cannot write
	// what we are moving. (A local file store takes its one OS lock on the first.)
	var held []Lock
	defer func() {
		for i := len(held) - 1; i >= 0; i-- {
			_ = held[i].Unlock()
		}
	}()
	lockFrom := keys
	if len(lockFrom) == 0 {
		lockFrom = []string{""}
	}
	for _, k := range lockFrom {
		li := info
		li.ID = ""
		lk, err := from.Lock(ctx, k, li, lockTimeout)
		if err != nil {
			return fmt.Errorf("state migrate: locking %s: %w", from.Describe(), err)
		}
		held = append(held, lk)
	}
	for _, k := range keys {
		if err := migrateOne(ctx, from, to, k, info, lockTimeout); err != nil {
			return err
		}
	}
	return nil
}

func migrateOne(ctx context.Context, from, to Store, key string, info LockInfo, lockTimeout time.Duration) error {
	in, err := from.Get(ctx, key)
	if err != nil || in == nil {
		return err
	}
	info.ID = ""
	lk, err := to.Lock(ctx, key, info, lockTimeout)
	if err != nil {
		return fmt.Errorf("state migrate: locking %s: %w", to.Describe(), err)
	}
	defer lk.Unlock()
	cur, err := to.Get(ctx, key)
	if err != nil {
		return err
	}
	if cur != nil {
		if sameRecords(cur, in) {
			return nil
		}
		return fmt.Errorf("state migrate: %s already has instance %q (serial %d) with other content; not overwriting it\n  hint: remove it there first, or migrate into an empty location",
			to.Describe(), displayKey(key), cur.Serial)
	}
	c := in.Clone()
	c.Serial = 0
	if err := to.Put(ctx, key, c); err != nil {
		return fmt.Errorf("state migrate: writing instance %q to %s: %w", displayKey(key), to.Describe(), err)
	}
	// Read it back: a migration that lost a recorded training would cost money later.
	back, err := to.Get(ctx, key)
	if err != nil {
		return err
	}
	if back == nil || !sameRecords(back, in) {
		return fmt.Errorf("state migrate: instance %q read back from %s differs from the source; the source %s is unchanged",
			displayKey(key), to.Describe(), from.Describe())
	}
	return nil
}

// sameRecords compares what matters of two instances: records and outputs.
func sameRecords(a, b *Instance) bool {
	ja, _ := json.Marshal(struct {
		R map[string]*Record
		O json.RawMessage
	}{a.Records, compactJSON(a.Outputs)})
	jb, _ := json.Marshal(struct {
		R map[string]*Record
		O json.RawMessage
	}{b.Records, compactJSON(b.Outputs)})
	return bytes.Equal(ja, jb)
}
