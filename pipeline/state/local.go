package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"
)

// fileFormatVersion is the "version" field of the local state file.
const fileFormatVersion = 1

// FileStore is the local state backend of a config without a batch: one JSON file
//
//	{"version":1,"lineage":"...","serial":N,"instances":{KEY: Instance, ...}}
//
// with each instance's JSON compact on one line (every release reads it: it is version 1),
// written atomically (temp file in the same directory, fsync, rename, fsync of the directory) with
// the previous file kept as FILE.backup, and guarded by an OS lock on the sibling FILE.lock (the
// rename replaces the state file, so the lock cannot live on it). Concurrent Puts coalesce into one
// write (group commit); each instance's JSON is cached so a Put re-marshals only its own instance.
// A batch's state is a DirStore instead, one file per instance.
type FileStore struct {
	path, lockPath, backupPath string

	mu       sync.Mutex
	cond     *sync.Cond // signals the end of a file write
	loaded   bool
	stamp    fs.FileInfo // the file as last loaded or written; nil when absent
	lineage  string
	serial   uint64
	inst     map[string][]byte // committed per-instance JSON, compact: one line each in the file
	serials  map[string]uint64 // last serial handed out per key
	next     *commitBatch      // Puts waiting for the next write
	writing  bool
	osLocked bool // this process holds the OS lock: memory is authoritative
	writes   int  // file writes done (group commit is measured by tests)

	locks *keyLocks
	lf    *lockFile
}

// commitBatch is a set of changes written by one file write.
type commitBatch struct {
	changes map[string][]byte // nil value = delete
	done    chan struct{}
	err     error
}

// testHookBeforeRename runs after the new state is written to its temp file and before the rename
// (tests use it to crash the process at the worst moment).
var testHookBeforeRename func(tmp string)

// OpenFile opens (without reading yet) the local state file at path.
func OpenFile(path string) (*FileStore, error) {
	if path == "" {
		return nil, errors.New("state: empty state file path")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("state: %s is a directory; OpenFile takes a state file path (such as %s); Open takes a directory for one file per instance",
			path, filepath.Join(path, "pipeline.state.json"))
	}
	s := &FileStore{
		path:       path,
		lockPath:   path + ".lock",
		backupPath: path + ".backup",
		inst:       map[string][]byte{},
		serials:    map[string]uint64{},
		lf:         newLockFile(path + ".lock"),
	}
	s.cond = sync.NewCond(&s.mu)
	s.locks = newKeyLocks(path, func(info LockInfo, key string) *LockedError { return localLockedErr(s.lockPath, info, key) })
	s.locks.acquire, s.locks.release = s.acquireOSLock, s.releaseOSLock
	return s, nil
}

// Path is the state file path.
func (s *FileStore) Path() string { return s.path }

// Describe implements Store.
func (s *FileStore) Describe() string { return "local file " + s.path }

// Lock implements Store. The OS lock is taken by the first Lock of this process and released by
// the last Unlock; within the process each key can be held once.
func (s *FileStore) Lock(ctx context.Context, key string, info LockInfo, timeout time.Duration) (Lock, error) {
	return s.locks.lock(ctx, key, info, timeout)
}

// acquireOSLock takes the flock on FILE.lock, records the holder in it and reloads the state,
// which another process may have changed since we last read it. Called by keyLocks.
func (s *FileStore) acquireOSLock(ctx context.Context, info LockInfo, timeout time.Duration) error {
	if err := s.lf.take(ctx, info, timeout); err != nil {
		return err
	}
	s.mu.Lock()
	s.osLocked = true
	err := s.load()
	if err != nil {
		s.osLocked = false
	}
	s.mu.Unlock()
	if err != nil {
		_ = s.lf.drop()
		return err
	}
	s.removeStaleTemps()
	return nil
}

// removeStaleTemps deletes temp files a crashed writer left behind; only the lock holder writes,
// so while we hold the lock no temp file can be in use.
func (s *FileStore) removeStaleTemps() {
	for _, pat := range []string{s.path + ".tmp-*", s.backupPath + ".tmp-*"} {
		matches, _ := filepath.Glob(globEscape(pat))
		for _, m := range matches {
			_ = os.Remove(m)
		}
	}
}

// globEscape escapes glob metacharacters in all but the trailing "*".
func globEscape(pat string) string {
	var b bytes.Buffer
	body := pat[:len(pat)-1]
	for _, c := range body {
		if c == '*' || c == '?' || c == '[' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('*')
	return b.String()
}

// releaseOSLock waits for a file write in progress, clears the holder from the lock file and
// drops the flock. Called by keyLocks.
func (s *FileStore) releaseOSLock() error {
	s.mu.Lock()
	for s.writing {
		s.cond.Wait()
	}
	s.osLocked = false
	s.mu.Unlock()
	return s.lf.drop()
}

// ForceUnlock implements Store: a local lock is an OS lock that dies with its process.
func (s *FileStore) ForceUnlock(ctx context.Context, id string, force bool) error {
	return localForceUnlock(s.path, s.lockPath)
}

// Keys implements Store.
func (s *FileStore) Keys(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fresh(); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(s.inst))
	for k := range s.inst {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// Get implements Store.
func (s *FileStore) Get(ctx context.Context, key string) (*Instance, error) {
	s.mu.Lock()
	if err := s.fresh(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	data, ok := s.inst[key]
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	var in Instance
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("state %s: instance %q: %w", s.path, key, err)
	}
	in.compactRaw()
	return &in, nil
}

// Lineage returns the state's lineage (a new one until the file exists).
func (s *FileStore) Lineage() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fresh(); err != nil {
		return "", err
	}
	return s.lineage, nil
}

// Put implements Store. It sets inst.Key, inst.Lineage and inst.Serial to what was written and
// returns once the file holding the change is durable. Without a held lock it takes the lock for
// the duration of the write (failing with *LockedError when another process has it).
func (s *FileStore) Put(ctx context.Context, key string, inst *Instance) error {
	if inst == nil {
		return fmt.Errorf("state %s: Put of instance %q with a nil instance (use Delete to forget it)", s.path, key)
	}
	return s.commit(ctx, key, inst)
}

// Delete implements Store.
func (s *FileStore) Delete(ctx context.Context, key string) error {
	return s.commit(ctx, key, nil)
}

// commit adds one change to the next file write and waits until it is durable.
func (s *FileStore) commit(ctx context.Context, key string, inst *Instance) error {
	if s.locks.isClosed() {
		return fmt.Errorf("state %s: store is closed", s.path)
	}
	// Keep the OS lock for the whole commit, even if the caller's lock is released meanwhile.
	done, err := s.locks.hold(ctx, key)
	if err != nil {
		return err
	}
	defer done()

	s.mu.Lock()
	var data []byte
	if inst != nil {
		s.serials[key]++
		inst.Key, inst.Lineage, inst.Serial = key, s.lineage, s.serials[key]
		data, err = compactInstance(inst)
		data = bytes.TrimSuffix(data, []byte("\n"))
		if err != nil {
			s.serials[key]--
			s.mu.Unlock()
			return fmt.Errorf("state %s: encoding instance %q: %w", s.path, key, err)
		}
	} else if _, ok := s.inst[key]; !ok && (s.next == nil || s.next.changes[key] == nil) {
		s.mu.Unlock()
		return nil // nothing to delete
	}
	b, leader := s.next, false
	if b == nil {
		b = &commitBatch{changes: map[string][]byte{}, done: make(chan struct{})}
		s.next, leader = b, true
	}
	b.changes[key] = data
	if !leader {
		s.mu.Unlock()
		<-b.done
		return b.err
	}

	// The leader waits for the write in progress, then writes its batch together with every change
	// that joined meanwhile.
	for s.writing {
		s.cond.Wait()
	}
	s.writing, s.next = true, nil
	keys := make([]string, 0, len(s.inst)+len(b.changes))
	for k := range s.inst {
		if _, changed := b.changes[k]; !changed {
			keys = append(keys, k)
		}
	}
	for k, v := range b.changes {
		if v != nil {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([][]byte, len(keys))
	for i, k := range keys {
		if v, ok := b.changes[k]; ok {
			parts[i] = v
		} else {
			parts[i] = s.inst[k]
		}
	}
	lineage, serial := s.lineage, s.serial+1
	s.mu.Unlock()

	buf := assembleFile(lineage, serial, keys, parts)
	fi, err := s.writeFile(buf)

	s.mu.Lock()
	if err == nil {
		for k, v := range b.changes {
			if v == nil {
				delete(s.inst, k)
			} else {
				s.inst[k] = v
			}
		}
		s.serial, s.stamp, s.loaded = serial, fi, true
		s.writes++
	}
	s.writing = false
	s.cond.Broadcast()
	b.err = err
	close(b.done)
	s.mu.Unlock()
	return err
}

// assembleFile lays out the state file from cached instance JSON, one instance per line.
func assembleFile(lineage string, serial uint64, keys []string, parts [][]byte) []byte {
	n := 128
	for i, p := range parts {
		n += len(p) + len(keys[i]) + 16
	}
	var b bytes.Buffer
	b.Grow(n)
	fmt.Fprintf(&b, "{\n  \"version\": %d,\n  \"lineage\": %s,\n  \"serial\": %d,\n  \"instances\": {", fileFormatVersion, strconv.Quote(lineage), serial)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kq, _ := json.Marshal(k)
		b.WriteString("\n    ")
		b.Write(kq)
		b.WriteString(": ")
		b.Write(parts[i])
	}
	if len(keys) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("}\n}\n")
	return b.Bytes()
}

// writeFile replaces the state file atomically and durably, keeping the old one as the backup.
func (s *FileStore) writeFile(data []byte) (fs.FileInfo, error) {
	dir, base := filepath.Dir(s.path), filepath.Base(s.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state: creating %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("state: writing %s: %w", s.path, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("state: writing %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("state: syncing %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("state: writing %s: %w", tmpName, err)
	}
	if err := s.backup(); err != nil {
		return nil, err
	}
	if testHookBeforeRename != nil {
		testHookBeforeRename(tmpName)
	}
	if err := os.Rename(tmpName, s.path); err != nil {
		return nil, fmt.Errorf("state: replacing %s: %w", s.path, err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("state: syncing directory %s after writing %s: %w", dir, s.path, err)
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return fi, nil
}

// backup makes FILE.backup the current state file: a hard link where the file system allows it
// (no copy, and the rename that follows leaves the old inode to the backup), a copy otherwise.
func (s *FileStore) backup() error {
	cur, err := os.Lstat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if old, err := os.Lstat(s.backupPath); err == nil && os.SameFile(cur, old) {
		return nil // a write that crashed after its backup: rename would not replace a link to itself
	}
	tmp := s.backupPath + ".tmp-" + newID()
	if err := os.Link(s.path, tmp); err != nil {
		if err := copyFileSync(s.path, tmp); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("state: keeping the previous state as %s: %w", s.backupPath, err)
		}
	}
	if err := os.Rename(tmp, s.backupPath); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("state: keeping the previous state as %s: %w", s.backupPath, err)
	}
	return nil
}

func copyFileSync(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// fresh makes the cached state current: loaded once, and re-read when another process replaced
// the file while we did not hold the lock. Called with mu held.
func (s *FileStore) fresh() error {
	if s.loaded && s.osLocked {
		return nil
	}
	if s.loaded {
		fi, err := os.Stat(s.path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && s.stamp == nil:
			return nil
		case err == nil && s.stamp != nil && os.SameFile(fi, s.stamp) &&
			fi.Size() == s.stamp.Size() && fi.ModTime().Equal(s.stamp.ModTime()):
			return nil
		}
	}
	return s.load()
}

// stateFile is the on-disk layout.
type stateFile struct {
	Version   int                        `json:"version"`
	Lineage   string                     `json:"lineage"`
	Serial    uint64                     `json:"serial"`
	Instances map[string]json.RawMessage `json:"instances"`
	// Layout and Directory are set in the stub a migration to one file per instance leaves.
	Layout    string `json:"layout,omitempty"`
	Directory string `json:"directory,omitempty"`
}

// load reads the state file. A missing file is empty state with a new lineage; a corrupt one is an
// error that names the backup and leaves the file alone. Called with mu held.
func (s *FileStore) load() error {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		if s.lineage == "" || s.stamp != nil {
			s.lineage = newLineage()
		}
		s.serial, s.stamp, s.loaded = 0, nil, true
		s.inst = map[string][]byte{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: reading %s: %w", s.path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("state: reading %s: %w", s.path, err)
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("state: reading %s: %w", s.path, err)
	}
	var sf stateFile
	if err := decodeStateFile(raw, &sf); err != nil {
		return s.corrupt(err)
	}
	if sf.Layout == layoutPerInstance {
		return s.moved(sf.Directory)
	}
	if sf.Version > fileFormatVersion {
		return fmt.Errorf("state file %s has format version %d, newer than this pipeline reads (%d)\n  hint: upgrade pipeline; the file was left untouched",
			s.path, sf.Version, fileFormatVersion)
	}
	inst := make(map[string][]byte, len(sf.Instances))
	serials := make(map[string]uint64, len(sf.Instances))
	for k, v := range sf.Instances {
		var in Instance
		if err := json.Unmarshal(v, &in); err != nil {
			return s.corrupt(fmt.Errorf("instance %q: %w", k, err))
		}
		var c bytes.Buffer
		if err := json.Compact(&c, v); err != nil {
			return s.corrupt(fmt.Errorf("instance %q: %w", k, err))
		}
		inst[k] = c.Bytes()
		serials[k] = in.Serial
	}
	// Serials only grow, also across a state that was edited or replaced meanwhile.
	for k, v := range s.serials {
		if v > serials[k] {
			serials[k] = v
		}
	}
	s.lineage, s.serial, s.inst, s.serials, s.stamp, s.loaded = sf.Lineage, sf.Serial, inst, serials, fi, true
	if s.lineage == "" {
		s.lineage = newLineage()
	}
	return nil
}

func decodeStateFile(raw []byte, sf *stateFile) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("the file is empty")
	}
	if err := json.Unmarshal(raw, sf); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(raw, se.Offset)
			return fmt.Errorf("line %d, column %d: %w", line, col, err)
		}
		return err
	}
	if sf.Version == 0 {
		return errors.New(`no "version" field: this is not a pipeline state file`)
	}
	return nil
}

func lineCol(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col := 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// moved is the error for the stub a migration left: the state is in the directory now.
func (s *FileStore) moved(dir string) error {
	return fmt.Errorf("state file %s was migrated to one file per instance in %s; it only points there now\n  hint: open the state through state.Open (the CLI does), or give -state %s",
		s.path, filepath.Join(filepath.Dir(s.path), dir), filepath.Join(filepath.Dir(s.path), dir)+string(filepath.Separator))
}

func (s *FileStore) corrupt(err error) error {
	hint := fmt.Sprintf("the previous version is in %s: inspect it, and copy it over %s to go back one write", s.backupPath, s.path)
	if _, statErr := os.Stat(s.backupPath); statErr != nil {
		hint = fmt.Sprintf("there is no backup (%s does not exist); fix the file by hand", s.backupPath)
	}
	return fmt.Errorf("state file %s is corrupt: %v; it was left untouched\n  hint: %s, or move %s away to start with empty state (finished stages would run again)",
		s.path, err, hint, s.path)
}

// Close releases every lock this store holds.
func (s *FileStore) Close() error { return s.locks.close() }
