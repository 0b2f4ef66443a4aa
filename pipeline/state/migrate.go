package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// legacyStub is what a migrated single-file state is replaced by. Its version 2 makes releases
// that read only version 1 refuse it ("newer than this pipeline reads ... upgrade") rather than
// find no state and pay for every training again.
type legacyStub struct {
	Version   int    `json:"version"`
	Layout    string `json:"layout"`
	Directory string `json:"directory"`
	Backup    string `json:"backup,omitempty"`
	Note      string `json:"note"`
}

// testHookMigrate runs at each step of a migration ("instances", "meta"), so tests can crash it.
var testHookMigrate func(step string)

// ensureLayout makes the directory the state's home before the first write: it creates the
// meta file, migrating the single-file state first when there is one, and retires that file.
// A new state without a single file takes the lineage of its first instance when that has one
// (state migrate and push keep the source's lineage, as remote state does). Called with the OS
// lock held.
func (s *DirStore) ensureLayout(first *Instance) (*dirMeta, error) {
	s.mu.Lock()
	meta, ready := s.meta, s.ready
	s.mu.Unlock()
	if ready {
		return meta, nil
	}
	s.migMu.Lock()
	defer s.migMu.Unlock()
	meta, err := s.readMeta()
	if err != nil {
		return nil, err
	}
	if meta == nil {
		if meta, err = s.migrate(first); err != nil {
			return nil, err
		}
	}
	if err := s.retireLegacy(meta); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.meta, s.ready = meta, true
	s.mu.Unlock()
	return meta, nil
}

// migrate copies every instance of the legacy file (if any) into the directory and then writes
// the meta file, the commit point: a crash before it leaves the single file in charge, and the
// next write migrates again from scratch.
func (s *DirStore) migrate(first *Instance) (*dirMeta, error) {
	meta := &dirMeta{Version: dirFormatVersion, Layout: layoutPerInstance, Lineage: s.lineage, Created: time.Now().UTC()}
	if first != nil && first.Lineage != "" {
		meta.Lineage = first.Lineage
	}
	src, err := s.readLegacy()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("state: creating %s: %w", s.dir, err)
	}
	if src != nil {
		meta.Lineage = src.lineage
		meta.MigratedFrom, meta.MigratedSerial, meta.MigratedInstances = filepath.Base(s.legacy), src.serial, len(src.inst)
		if err := s.setAsideStrays(src); err != nil {
			return nil, err
		}
		if err := s.copyInstances(src); err != nil {
			return nil, err
		}
		if err := syncDir(s.dir); err != nil {
			return nil, fmt.Errorf("state: syncing directory %s: %w", s.dir, err)
		}
		if testHookMigrate != nil {
			testHookMigrate("instances")
		}
		backup, err := s.keepLegacy()
		if err != nil {
			return nil, err
		}
		meta.MigratedBackup = filepath.Base(backup)
	}
	data, _ := json.MarshalIndent(meta, "", "  ")
	if err := s.writeInstance(s.metaPath, append(data, '\n'), false); err != nil {
		return nil, err
	}
	if err := syncDir(s.dir); err != nil {
		return nil, fmt.Errorf("state: syncing directory %s: %w", s.dir, err)
	}
	if testHookMigrate != nil {
		testHookMigrate("meta")
	}
	return meta, nil
}

// legacyState is a single-file state as read for migration.
type legacyState struct {
	lineage string
	serial  uint64
	inst    map[string]*Instance
}

// readLegacy reads the whole single file strictly (a corrupt one stops the migration with the
// FileStore's error, which names it and its backup); nil when there is none.
func (s *DirStore) readLegacy() (*legacyState, error) {
	if s.legacy == "" {
		return nil, nil
	}
	if _, err := os.Stat(s.legacy); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	lf := s.legacyFile
	lf.mu.Lock()
	err := lf.load()
	raw := lf.inst
	st := &legacyState{lineage: lf.lineage, serial: lf.serial, inst: make(map[string]*Instance, len(raw))}
	lf.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for k, v := range raw {
		var in Instance
		if err := json.Unmarshal(v, &in); err != nil {
			return nil, lf.corrupt(fmt.Errorf("instance %q: %w", k, err))
		}
		in.compactRaw()
		in.Key = k
		if in.Lineage == "" {
			in.Lineage = st.lineage
		}
		st.inst[k] = &in
	}
	return st, nil
}

// setAsideStrays renames instance files the single file does not hold (left by an earlier
// migration that crashed before the single file changed again) to their backup names: once the
// meta file exists, every instance file is an instance.
func (s *DirStore) setAsideStrays(src *legacyState) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("state: listing %s: %w", s.dir, err)
	}
	want := make(map[string]bool, len(src.inst))
	for k := range src.inst {
		want[keyName(k)+instanceExt] = true
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, instanceExt) || want[n] {
			continue
		}
		p := filepath.Join(s.dir, n)
		if err := os.Rename(p, p+".backup"); err != nil {
			return fmt.Errorf("state: setting aside %s, which %s does not hold: %w", p, s.legacy, err)
		}
	}
	return nil
}

// copyInstances writes every legacy instance as it was (serial and all) into its own file, a few
// at a time, and reads each back: a migration that lost a recorded training would cost money.
func (s *DirStore) copyInstances(src *legacyState) error {
	keys := make([]string, 0, len(src.inst))
	for k := range src.inst {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.copyInstance(k, src.inst[k]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("state: migrating %s into %s (the single file is unchanged and still in use): %w", s.legacy, s.dir, errors.Join(errs...))
	}
	return nil
}

func (s *DirStore) copyInstance(key string, in *Instance) error {
	data, err := encodeInstanceFile(in)
	if err != nil {
		return fmt.Errorf("encoding instance %q: %w", key, err)
	}
	path := s.instancePath(key)
	if err := s.writeInstance(path, data, false); err != nil {
		return err
	}
	back, err := s.readFile(path, key)
	if err != nil {
		return err
	}
	want, _ := compactInstance(in)
	got, _ := compactInstance(back)
	if !bytes.Equal(want, got) {
		return fmt.Errorf("instance %q read back from %s differs from the single file", key, path)
	}
	return nil
}

// retireLegacy replaces the single file by the stub, once it is kept as the backup the meta file
// names (also when there never was a single file, so that older releases refuse this config's
// state rather than start it afresh). A single file found beside a migrated directory (a crash
// between the meta file and the stub) is kept under a new backup name first. Called with
// FILE.lock held; nothing to do once the stub is there.
func (s *DirStore) retireLegacy(meta *dirMeta) error {
	if s.legacy == "" || isLegacyStub(s.legacy) {
		return nil
	}
	backup := ""
	if meta.MigratedBackup != "" {
		backup = filepath.Join(filepath.Dir(s.legacy), meta.MigratedBackup)
	}
	if fi, err := os.Lstat(s.legacy); err == nil {
		if kept, err := os.Stat(backup); backup == "" || err != nil || !os.SameFile(fi, kept) {
			if backup, err = s.keepLegacy(); err != nil {
				return err
			}
		}
	}
	if err := s.writeStub(backup); err != nil {
		return err
	}
	s.legacyOwn = false
	return s.legacyLF.drop()
}

// writeStub replaces the single file by the pointer to the directory, atomically.
func (s *DirStore) writeStub(backup string) error {
	rel, err := filepath.Rel(filepath.Dir(s.legacy), s.dir)
	if err != nil {
		rel = s.dir
	}
	stub := legacyStub{Version: dirFormatVersion, Layout: layoutPerInstance, Directory: rel, Note: "this state moved to one file per instance in " +
		rel + "; pipeline reads it there (a release older than that refuses this file rather than start afresh)"}
	if backup != "" {
		stub.Backup = filepath.Base(backup)
		stub.Note += "; the single file as it was is " + stub.Backup
	}
	data, _ := json.MarshalIndent(stub, "", "  ")
	tmp, err := writeTemp(filepath.Dir(s.legacy), filepath.Base(s.legacy)+".tmp-*", append(data, '\n'))
	if err != nil {
		return fmt.Errorf("state: writing %s: %w", s.legacy, err)
	}
	if err := os.Rename(tmp, s.legacy); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("state: replacing %s: %w", s.legacy, err)
	}
	if err := syncDir(filepath.Dir(s.legacy)); err != nil {
		return fmt.Errorf("state: syncing directory of %s: %w", s.legacy, err)
	}
	return nil
}

// keepLegacy hard-links (or copies) the single file to the first free FILE.v1.backup[.N] and
// returns that name.
func (s *DirStore) keepLegacy() (string, error) {
	for n := 1; ; n++ {
		name := s.legacy + ".v1.backup"
		if n > 1 {
			name += "." + strconv.Itoa(n)
		}
		if _, err := os.Lstat(name); err == nil {
			continue
		}
		if err := os.Link(s.legacy, name); err != nil {
			if err := copyFileSync(s.legacy, name); err != nil {
				_ = os.Remove(name)
				return "", fmt.Errorf("state: keeping %s as %s: %w", s.legacy, name, err)
			}
		}
		if err := syncDir(filepath.Dir(name)); err != nil {
			return "", fmt.Errorf("state: syncing directory of %s: %w", name, err)
		}
		return name, nil
	}
}

// isLegacyStub reports whether the file at path is the pointer a migration left.
func isLegacyStub(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > 64<<10 {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var st legacyStub
	return json.Unmarshal(b, &st) == nil && st.Layout == layoutPerInstance
}
