package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// keyLocks is the in-process half of a local state's lock: within a process each key is held
// once, and the OS lock is taken by the first holder and released by the last (reference-counted),
// so one apply locking 1,000 batch keys takes one OS lock. Both local layouts use it.
type keyLocks struct {
	name string // the state, for "store is closed"
	// acquire takes the OS lock for the first holder, release drops it after the last; both are
	// called with mu held.
	acquire func(ctx context.Context, info LockInfo, timeout time.Duration) error
	release func() error

	mu     sync.Mutex
	refs   int
	held   map[string]*heldKey
	closed bool
	waits  opDeadlines
	// lockedErr describes a key held by this process (the OS lock is ours, the key is not free).
	lockedErr func(info LockInfo, key string) *LockedError
}

type heldKey struct {
	info     LockInfo
	released chan struct{}
}

func newKeyLocks(name string, lockedErr func(LockInfo, string) *LockedError) *keyLocks {
	return &keyLocks{name: name, held: map[string]*heldKey{}, lockedErr: lockedErr}
}

// lock implements Store.Lock for a local state.
func (k *keyLocks) lock(ctx context.Context, key string, info LockInfo, timeout time.Duration) (Lock, error) {
	fillLockInfo(&info)
	timeout = k.waits.remaining(info.ID, timeout)
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		k.mu.Lock()
		if k.closed {
			k.mu.Unlock()
			return nil, fmt.Errorf("state %s: store is closed", k.name)
		}
		h, busy := k.held[key]
		if !busy {
			break // keep mu
		}
		k.mu.Unlock()
		if timeout <= 0 {
			return nil, k.lockedErr(h.info, key)
		}
		select {
		case <-h.released:
		case <-deadline:
			return nil, k.lockedErr(h.info, key)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer k.mu.Unlock()
	if k.refs == 0 {
		if err := k.acquire(ctx, info, k.waits.remaining(info.ID, timeout)); err != nil {
			return nil, err
		}
	}
	k.refs++
	k.held[key] = &heldKey{info: info, released: make(chan struct{})}
	return &localLock{k: k, key: key, id: info.ID}, nil
}

type localLock struct {
	k    *keyLocks
	key  string
	id   string
	once sync.Once
}

func (l *localLock) ID() string { return l.id }

func (l *localLock) Unlock() error {
	var err error
	l.once.Do(func() { err = l.k.unlock(l.key) })
	return err
}

func (k *keyLocks) unlock(key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, ok := k.held[key]
	if !ok {
		return nil // released by Close
	}
	delete(k.held, key)
	close(h.released)
	k.refs--
	if k.refs > 0 || k.closed {
		return nil
	}
	return k.release()
}

// pin adds a reference to the OS lock when this process holds it, so a write keeps it even if
// the caller's lock is released meanwhile.
func (k *keyLocks) pin() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refs == 0 {
		return false
	}
	k.refs++
	return true
}

func (k *keyLocks) unpin() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed || k.refs == 0 {
		return
	}
	k.refs--
	if k.refs == 0 {
		_ = k.release()
	}
}

// hold runs a write under the OS lock: the one this process holds, or one taken for the write
// (failing with *LockedError when another process has it).
func (k *keyLocks) hold(ctx context.Context, key string) (func(), error) {
	if k.pin() {
		return k.unpin, nil
	}
	lk, err := k.lock(ctx, "\x00write "+key, NewLockInfo("write"), 0)
	if err != nil {
		return nil, err
	}
	return func() { _ = lk.Unlock() }, nil
}

func (k *keyLocks) isClosed() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.closed
}

// close releases every key and the OS lock.
func (k *keyLocks) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	for key, h := range k.held {
		delete(k.held, key)
		close(h.released)
	}
	if k.refs > 0 {
		k.refs = 0
		return k.release()
	}
	return nil
}

// lockFile is an OS lock on a .lock file that also records who holds it, for the LockedError of
// the next process. The lock cannot live on the state file itself: rename replaces that.
type lockFile struct {
	path string
	fl   *flock.Flock
}

func newLockFile(path string) *lockFile {
	return &lockFile{path: path, fl: flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o600))}
}

// take locks the file within timeout (0: one try) and writes info into it. A lock held by another
// process is a *LockedError naming the holder it wrote.
func (f *lockFile) take(ctx context.Context, info LockInfo, timeout time.Duration) error {
	if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
		return fmt.Errorf("state: creating the directory for %s: %w", f.path, err)
	}
	var ok bool
	var err error
	if timeout <= 0 {
		ok, err = f.fl.TryLock()
	} else {
		tctx, cancel := context.WithTimeout(ctx, timeout)
		ok, err = f.fl.TryLockContext(tctx, 50*time.Millisecond)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = nil // timed out: report who holds it below
		}
	}
	if err != nil {
		return fmt.Errorf("state: locking %s: %w", f.path, err)
	}
	if !ok {
		holder, _ := readLockFile(f.path)
		return localLockedErr(f.path, holder, "")
	}
	data, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(f.path, append(data, '\n'), 0o600); err != nil {
		_ = f.fl.Unlock()
		return fmt.Errorf("state: writing lock holder to %s: %w", f.path, err)
	}
	return nil
}

// drop clears the holder and releases the lock.
func (f *lockFile) drop() error {
	_ = os.Truncate(f.path, 0)
	if err := f.fl.Unlock(); err != nil {
		return fmt.Errorf("state: unlocking %s: %w", f.path, err)
	}
	return nil
}

func localLockedErr(path string, info LockInfo, key string) *LockedError {
	e := &LockedError{Info: info, Path: path, Key: key}
	if !info.Created.IsZero() {
		e.Age = time.Since(info.Created)
	}
	return e
}

// readLockFile reads the holder a process wrote into the lock file (empty while it is being taken).
func readLockFile(path string) (LockInfo, error) {
	var info LockInfo
	b, err := os.ReadFile(path)
	if err != nil {
		return info, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return info, nil
	}
	return info, json.Unmarshal(b, &info)
}

// localForceUnlock explains that an OS lock needs no force-unlock.
func localForceUnlock(state, lockPath string) error {
	holder, _ := readLockFile(lockPath)
	msg := fmt.Sprintf("state %s is guarded by an OS file lock on %s, which the operating system releases when its process exits;"+
		" there is nothing to force-unlock", state, lockPath)
	if holder.PID != 0 {
		msg += fmt.Sprintf(" (last holder: pid %d on host %s, lock ID %s: if it is still running, wait for it or stop it)",
			holder.PID, holder.Host, holder.ID)
	}
	return errors.New(msg)
}
