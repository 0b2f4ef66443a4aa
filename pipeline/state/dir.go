package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dirFormatVersion is the "version" of a per-instance state directory's meta file (the single
// file is version 1).
const dirFormatVersion = 2

const (
	layoutPerInstance = "per-instance"
	metaName          = ".meta.json"
	dirLockName       = ".lock"
	instanceExt       = ".json"
	instanceBackupExt = ".json.backup"
)

// DirStore is the local state of a batch: one file per instance, so recording one transition
// writes one small file whether the batch has 10 subjects or 10,000.
//
//	.pipeline/retrain.state/
//	  .meta.json        {"version":2,"layout":"per-instance","lineage":"...",...}
//	  .lock             the OS lock; its holder is written inside
//	  ana.json          instance "ana": gzip-compressed compact JSON (gzip -dc ana.json)
//	  ana.json.backup   its previous version
//	  _default.json     the instance of key "" (a config without a batch)
//
// Every file is written atomically (temp file, fsync, rename, fsync of the directory); Puts of
// different instances run in parallel. The lineage lives in .meta.json and is shared by every
// instance; each instance has its own serial. Key names: see keyName.
//
// A DirStore may replace a single-file state (its legacy file, .pipeline/retrain.state.json).
// Until the first write it reads that file; the first write migrates every instance into the
// directory, keeps the old file as FILE.v1.backup and leaves at FILE a small pointer that releases
// reading only the single file refuse (format version 2) instead of starting afresh.
type DirStore struct {
	dir, metaPath, lockPath string
	legacy                  string     // the single-file state this directory replaces, or ""
	legacyFile              *FileStore // reads legacy until the migration

	mu       sync.Mutex
	osLocked bool              // this process holds the OS lock: meta and known are authoritative
	meta     *dirMeta          // as read or written while osLocked
	ready    bool              // meta written and the single file retired: writes go ahead
	lineage  string            // the lineage to create when there is no meta yet
	known    map[string]uint64 // serial on disk per key, while osLocked
	keyMu    map[string]*sync.Mutex

	migMu sync.Mutex // one migration at a time

	locks     *keyLocks
	lf        *lockFile // DIR/.lock
	legacyLF  *lockFile // FILE.lock, also held while FILE may still be written by a FileStore
	legacyOwn bool

	writes       atomic.Int64 // instance files written (tests and benchmarks)
	bytesWritten atomic.Int64
}

// dirMeta is .meta.json: what the directory's instances share.
type dirMeta struct {
	Version int       `json:"version"`
	Layout  string    `json:"layout"`
	Lineage string    `json:"lineage"`
	Created time.Time `json:"created"`
	// MigratedFrom is the single-file state this directory replaced (its base name), with the
	// serial it had, the instances it held and where the old file was kept.
	MigratedFrom      string `json:"migrated_from,omitempty"`
	MigratedSerial    uint64 `json:"migrated_serial,omitempty"`
	MigratedInstances int    `json:"migrated_instances,omitempty"`
	MigratedBackup    string `json:"migrated_backup,omitempty"`
}

// testHookDirBeforeRename runs before an instance file's temp file is renamed over it.
var testHookDirBeforeRename func(tmp string)

// OpenDir opens (without reading yet) the per-instance state in dir. legacy, when not "", is the
// single-file state the directory replaces: read until the first write, which migrates it.
func OpenDir(dir, legacy string) (*DirStore, error) {
	if dir == "" {
		return nil, errors.New("state: empty state directory path")
	}
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("state: %s is a file, not a state directory", dir)
	}
	s := &DirStore{
		dir:      dir,
		metaPath: filepath.Join(dir, metaName),
		lockPath: filepath.Join(dir, dirLockName),
		legacy:   legacy,
		lineage:  newLineage(),
		known:    map[string]uint64{},
		keyMu:    map[string]*sync.Mutex{},
	}
	s.lf = newLockFile(s.lockPath)
	if legacy != "" {
		lf, err := OpenFile(legacy)
		if err != nil {
			return nil, err
		}
		s.legacyFile, s.legacyLF = lf, newLockFile(legacy+".lock")
	}
	s.locks = newKeyLocks(dir, func(info LockInfo, key string) *LockedError { return localLockedErr(s.lockPath, info, key) })
	s.locks.acquire, s.locks.release = s.acquireOSLock, s.releaseOSLock
	return s, nil
}

// Path is the state directory.
func (s *DirStore) Path() string { return s.dir }

// Legacy is the single-file state this directory replaces ("" for none).
func (s *DirStore) Legacy() string { return s.legacy }

// Describe implements Store.
func (s *DirStore) Describe() string { return "local directory " + s.dir + string(filepath.Separator) }

// Lock implements Store: one OS lock on DIR/.lock for the whole state, taken by the first Lock of
// this process and released by the last Unlock; within the process each key can be held once.
func (s *DirStore) Lock(ctx context.Context, key string, info LockInfo, timeout time.Duration) (Lock, error) {
	return s.locks.lock(ctx, key, info, timeout)
}

// acquireOSLock takes DIR/.lock and, while a single file may still hold (or be given) this
// state, that file's lock too: a FileStore of an older release or of a caller that did not know
// the config has a batch must not write it while we migrate. Called by keyLocks.
func (s *DirStore) acquireOSLock(ctx context.Context, info LockInfo, timeout time.Duration) error {
	start := time.Now()
	if err := s.lf.take(ctx, info, timeout); err != nil {
		return err
	}
	meta, err := s.readMeta()
	if err == nil && s.legacy != "" && (meta == nil || !isLegacyStub(s.legacy)) {
		if err = s.legacyLF.take(ctx, info, max(timeout-time.Since(start), 0)); err == nil {
			s.legacyOwn = true
		}
	}
	if err != nil {
		_ = s.lf.drop()
		return err
	}
	s.mu.Lock()
	s.osLocked, s.meta, s.known = true, meta, map[string]uint64{}
	s.mu.Unlock()
	s.removeStaleTemps()
	return nil
}

// releaseOSLock drops the locks acquireOSLock took. Called by keyLocks once no write runs: every
// write pins the lock.
func (s *DirStore) releaseOSLock() error {
	s.mu.Lock()
	s.osLocked, s.meta, s.ready = false, nil, false
	s.mu.Unlock()
	var errs []error
	if s.legacyOwn {
		s.legacyOwn = false
		errs = append(errs, s.legacyLF.drop())
	}
	return errors.Join(append(errs, s.lf.drop())...)
}

// removeStaleTemps deletes temp files a crashed writer left; only the lock holder writes.
func (s *DirStore) removeStaleTemps() {
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") {
			_ = os.Remove(filepath.Join(s.dir, n))
		}
	}
}

// ForceUnlock implements Store: a local lock is an OS lock that dies with its process.
func (s *DirStore) ForceUnlock(ctx context.Context, id string, force bool) error {
	return localForceUnlock(s.dir, s.lockPath)
}

// Close releases every lock this store holds.
func (s *DirStore) Close() error { return s.locks.close() }

// ---- reading ----

// readMeta reads .meta.json; nil, nil when the directory holds no state yet.
func (s *DirStore) readMeta() (*dirMeta, error) {
	b, err := os.ReadFile(s.metaPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: reading %s: %w", s.metaPath, err)
	}
	var m dirMeta
	if err := json.Unmarshal(b, &m); err != nil || m.Layout != layoutPerInstance || m.Lineage == "" {
		if err == nil {
			err = errors.New("not a per-instance state meta file")
		}
		return nil, fmt.Errorf("state: %s is corrupt: %v; it was left untouched\n  hint: it holds the lineage shared by the instance files beside it; restore it, or move the directory away to start with empty state (finished stages would run again)", s.metaPath, err)
	}
	if m.Version > dirFormatVersion {
		return nil, fmt.Errorf("state directory %s has format version %d, newer than this pipeline reads (%d)\n  hint: upgrade pipeline; the state was left untouched", s.dir, m.Version, dirFormatVersion)
	}
	return &m, nil
}

// currentMeta is the meta file as this process knows it: cached while we hold the lock (nobody
// else writes it), read afresh otherwise.
func (s *DirStore) currentMeta() (*dirMeta, error) {
	s.mu.Lock()
	locked, meta := s.osLocked, s.meta
	s.mu.Unlock()
	if locked && meta != nil {
		return meta, nil
	}
	return s.readMeta()
}

// fromLegacy reports whether reads come from the single file: no directory state yet, and a
// legacy file configured.
func (s *DirStore) fromLegacy() (bool, error) {
	meta, err := s.currentMeta()
	if err != nil {
		return false, err
	}
	return meta == nil && s.legacy != "", nil
}

func (s *DirStore) instancePath(key string) string {
	return filepath.Join(s.dir, keyName(key)+instanceExt)
}

func (s *DirStore) backupPath(key string) string {
	return filepath.Join(s.dir, keyName(key)+instanceBackupExt)
}

// Keys implements Store.
func (s *DirStore) Keys(ctx context.Context) ([]string, error) {
	if legacy, err := s.fromLegacy(); err != nil || legacy {
		if err != nil {
			return nil, err
		}
		return s.legacyFile.Keys(ctx)
	}
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: listing %s: %w", s.dir, err)
	}
	var keys []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), instanceExt)
		if !ok || strings.HasPrefix(name, ".") || !e.Type().IsRegular() {
			continue
		}
		if k, ok := nameKey(name); ok {
			keys = append(keys, k)
		} else if hashedName(name) {
			in, err := s.readFile(filepath.Join(s.dir, e.Name()), "")
			if err != nil {
				return nil, err
			}
			if in != nil {
				keys = append(keys, in.Key)
			}
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Get implements Store.
func (s *DirStore) Get(ctx context.Context, key string) (*Instance, error) {
	if legacy, err := s.fromLegacy(); err != nil || legacy {
		if err != nil {
			return nil, err
		}
		return s.legacyFile.Get(ctx, key)
	}
	in, err := s.readFile(s.instancePath(key), key)
	if err != nil || in == nil {
		return nil, err
	}
	s.mu.Lock()
	if s.osLocked {
		s.known[key] = in.Serial
	}
	s.mu.Unlock()
	return in, nil
}

// readFile reads one instance file; nil, nil when it does not exist. key is the key the name
// stands for ("" with hashed names read for their key): the name, not the content, says which
// instance a file is, except for hashed names, whose content must agree.
func (s *DirStore) readFile(path, key string) (*Instance, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: reading %s: %w", path, err)
	}
	in, err := decodeInstanceFile(data)
	if err != nil {
		return nil, s.corrupt(path, err)
	}
	name := strings.TrimSuffix(filepath.Base(path), instanceExt)
	switch {
	case !hashedName(name):
		in.Key = key
	case key != "" && in.Key != key, key == "" && keyName(in.Key) != name:
		return nil, s.corrupt(path, fmt.Errorf("it holds instance %q, whose file name is %s", in.Key, keyName(in.Key)+instanceExt))
	}
	return in, nil
}

func (s *DirStore) corrupt(path string, err error) error {
	backup := path + ".backup"
	hint := fmt.Sprintf("the previous version is in %s: inspect it (gzip -dc), and copy it over %s to go back one write", backup, path)
	if _, statErr := os.Stat(backup); statErr != nil {
		hint = fmt.Sprintf("there is no backup (%s does not exist); fix the file by hand", backup)
	}
	return fmt.Errorf("state file %s is corrupt: %v; it was left untouched\n  hint: %s, or move %s away to start this instance afresh (its finished stages would run again)",
		path, err, hint, path)
}

// Lineage returns the state's lineage (a new one until the state exists).
func (s *DirStore) Lineage() (string, error) {
	meta, err := s.currentMeta()
	if err != nil {
		return "", err
	}
	switch {
	case meta != nil:
		return meta.Lineage, nil
	case s.legacy != "":
		if _, err := os.Stat(s.legacy); err == nil {
			return s.legacyFile.Lineage()
		}
	}
	return s.lineage, nil
}

// ---- writing ----

// Put implements Store. It sets inst.Key, inst.Lineage and inst.Serial to what was written and
// returns once the instance's file is durable. Without a held lock it takes the lock for the
// write (failing with *LockedError when another process has it). The first write migrates a
// single-file state.
func (s *DirStore) Put(ctx context.Context, key string, inst *Instance) error {
	if inst == nil {
		return fmt.Errorf("state %s: Put of instance %q with a nil instance (use Delete to forget it)", s.dir, key)
	}
	return s.write(ctx, key, inst)
}

// Delete implements Store. The instance's last version stays as its backup file.
func (s *DirStore) Delete(ctx context.Context, key string) error {
	return s.write(ctx, key, nil)
}

func (s *DirStore) write(ctx context.Context, key string, inst *Instance) error {
	if s.locks.isClosed() {
		return fmt.Errorf("state %s: store is closed", s.dir)
	}
	done, err := s.locks.hold(ctx, key)
	if err != nil {
		return err
	}
	defer done()
	meta, err := s.ensureLayout(inst)
	if err != nil {
		return err
	}
	defer s.lockKey(key)()
	cur, err := s.storedSerial(key)
	if err != nil {
		return err
	}
	if inst == nil {
		return s.remove(key)
	}
	out := *inst
	out.Key, out.Lineage, out.Serial = key, meta.Lineage, cur+1
	data, err := encodeInstanceFile(&out)
	if err != nil {
		return fmt.Errorf("state %s: encoding instance %q: %w", s.dir, key, err)
	}
	if err := s.writeInstance(s.instancePath(key), data, true); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("state: syncing directory %s after writing %s: %w", s.dir, s.instancePath(key), err)
	}
	inst.Key, inst.Lineage, inst.Serial = out.Key, out.Lineage, out.Serial
	s.setKnown(key, out.Serial)
	return nil
}

func (s *DirStore) lockKey(key string) func() {
	s.mu.Lock()
	m := s.keyMu[key]
	if m == nil {
		m = &sync.Mutex{}
		s.keyMu[key] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (s *DirStore) setKnown(key string, serial uint64) {
	s.mu.Lock()
	s.known[key] = serial
	s.mu.Unlock()
}

// storedSerial is the serial of the instance on disk (0 when absent), from memory when this lock
// session already read or wrote it. A corrupt file is an error: it is never overwritten. After a
// Delete the backup's serial counts, so serials keep growing.
func (s *DirStore) storedSerial(key string) (uint64, error) {
	s.mu.Lock()
	n, ok := s.known[key]
	s.mu.Unlock()
	if ok {
		return n, nil
	}
	in, err := s.readFile(s.instancePath(key), key)
	if err != nil {
		return 0, err
	}
	if in == nil {
		if in, err = s.readFile(s.backupPath(key), key); err != nil {
			in = nil // a damaged backup only costs the serial its history
		}
	}
	if in != nil {
		n = in.Serial
	}
	return n, nil
}

// remove forgets an instance by renaming its file over its backup, so the last version stays.
func (s *DirStore) remove(key string) error {
	path, backup := s.instancePath(key), s.backupPath(key)
	cur, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if old, err := os.Lstat(backup); err == nil && os.SameFile(cur, old) {
		err = os.Remove(path) // already its own backup (a crashed write): rename would do nothing
	} else {
		err = os.Rename(path, backup)
	}
	if err != nil {
		return fmt.Errorf("state: deleting %s: %w", path, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("state: syncing directory %s: %w", s.dir, err)
	}
	return nil
}

// writeInstance replaces path atomically and durably (the caller syncs the directory), keeping
// the old file as its backup when backup is set.
func (s *DirStore) writeInstance(path string, data []byte, backup bool) error {
	tmp, err := writeTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*", data)
	if err != nil {
		return fmt.Errorf("state: writing %s: %w", path, err)
	}
	if backup {
		if err := keepBackup(path, path+".backup"); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	if testHookDirBeforeRename != nil {
		testHookDirBeforeRename(tmp)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("state: replacing %s: %w", path, err)
	}
	s.writes.Add(1)
	s.bytesWritten.Add(int64(len(data)))
	return nil
}

// writeTemp writes data to a new temp file in dir and fsyncs it.
func writeTemp(dir, pattern string, data []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// keepBackup makes backup the current file at path (nothing when there is none): a hard link
// where the file system allows it, a copy otherwise.
func keepBackup(path, backup string) error {
	cur, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if old, err := os.Lstat(backup); err == nil && os.SameFile(cur, old) {
		return nil // a write that crashed after its backup: rename would not replace a link to itself
	}
	tmp := filepath.Join(filepath.Dir(backup), "."+filepath.Base(backup)+".tmp-"+newID())
	if err := os.Link(path, tmp); err != nil {
		if err := copyFileSync(path, tmp); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("state: keeping the previous version as %s: %w", backup, err)
		}
	}
	if err := os.Rename(tmp, backup); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("state: keeping the previous version as %s: %w", backup, err)
	}
	return nil
}
