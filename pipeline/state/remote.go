package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// URLs
	"gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob" // gs:// URLs
	"gocloud.dev/blob/memblob"
	_ "gocloud.dev/blob/s3blob" // s3:// URLs
	"gocloud.dev/gcerrors"
)

// DefaultLockTTL is how long a remote lock stays valid without a refresh before it is reported as
// stale. Holders refresh every TTL/3.
const DefaultLockTTL = 15 * time.Minute

// RemoteOptions tunes remote locking; zero values take the defaults. The URL parameter
// lock_ttl=DURATION sets TTL as well.
type RemoteOptions struct {
	// TTL after the last refresh at which a lock counts as stale (DefaultLockTTL).
	TTL time.Duration
	// RefreshEvery is how often a held lock is refreshed (TTL/3).
	RefreshEvery time.Duration
	// RetryEvery is how often Lock retries while waiting for a -lock-timeout (1s, at most the timeout).
	RetryEvery time.Duration
}

// RemoteStore is remote state on object storage through gocloud.dev/blob: one object per batch
// instance, <prefix>/<config stem>/<key>.state.json (key "" is _default), with the previous
// version kept as <key>.state.json.backup and a lock object <key>.state.json.lock beside it.
//
// The portable blob API offers no compare-and-swap, so each backend gets its conditions from the
// service itself (see conds.go): S3 If-None-Match/If-Match, GCS generation preconditions, Azure
// ETags, and for file:// and mem:// a read-compare-write under an OS file lock or a mutex.
type RemoteStore struct {
	location string // as given
	dirURL   string // the URL of this config's directory (query kept), for the force-unlock hint
	describe string
	dir      string // object name prefix ending in "/" (or "")
	bucket   *blob.Bucket
	c        conds
	opts     RemoteOptions
	shared   bool // a process-wide mem:// bucket: Close leaves it open
	stemless bool // opened without a config file: the URL names the directory

	mu     sync.Mutex
	seen   map[string]uint64 // serial this store last read or wrote per key (0: read as absent)
	keyMu  map[string]*sync.Mutex
	locks  map[string]*remoteLock
	closed bool
	waits  opDeadlines

	calls atomic.Int64 // object-store requests, for the figures in tests and reports
}

// OpenRemote opens remote state at location (s3://bucket/prefix?region=..., gs://bucket/prefix,
// azblob://container/prefix, file:///dir, mem://name/prefix) for the config stem.
func OpenRemote(ctx context.Context, location, stem string) (*RemoteStore, error) {
	return OpenRemoteWith(ctx, location, stem, RemoteOptions{})
}

// OpenRemoteWith is OpenRemote with lock options.
func OpenRemoteWith(ctx context.Context, location, stem string, opts RemoteOptions) (*RemoteStore, error) {
	u, err := url.Parse(location)
	if err != nil {
		return nil, fmt.Errorf("state: %q is not a valid state URL: %w", location, err)
	}
	q := u.Query()
	if v := q.Get("lock_ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("state URL %s: lock_ttl=%q is not a positive Go duration such as 15m", location, v)
		}
		if opts.TTL == 0 {
			opts.TTL = d
		}
		q.Del("lock_ttl")
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultLockTTL
	}
	if opts.RefreshEvery <= 0 {
		opts.RefreshEvery = opts.TTL / 3
	}
	if opts.RetryEvery <= 0 {
		opts.RetryEvery = time.Second
	}
	rawQuery := u.RawQuery
	s := &RemoteStore{
		location: location,
		stemless: stem == "",
		opts:     opts,
		seen:     map[string]uint64{},
		keyMu:    map[string]*sync.Mutex{},
		locks:    map[string]*remoteLock{},
	}
	prefix := strings.Trim(u.Path, "/")
	switch u.Scheme {
	case "mem":
		mb := memBucket(u.Host)
		s.bucket, s.shared = mb.bucket, true
		s.c = &serialConds{b: mb.bucket, lock: &mb.lock, calls: &s.calls}
	case "file":
		if u.Host != "" && u.Host != "localhost" && u.Host != "." {
			return nil, fmt.Errorf("state URL %s: a file URL names a local directory: file:///abs/dir (three slashes)", location)
		}
		if len(q) > 0 {
			return nil, fmt.Errorf("state URL %s: file URLs take no parameters (put any prefix into the path)", location)
		}
		root := filepath.FromSlash(u.Path)
		if u.Host == "." {
			root = strings.TrimPrefix(root, string(filepath.Separator))
		}
		if root == "" {
			return nil, fmt.Errorf("state URL %s names no directory", location)
		}
		casDir := filepath.Join(root, stem)
		if err := os.MkdirAll(casDir, 0o755); err != nil {
			return nil, fmt.Errorf("state: creating %s for %s: %w", casDir, location, err)
		}
		b, err := fileblob.OpenBucket(root, &fileblob.Options{NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
		if err != nil {
			return nil, fmt.Errorf("state: opening %s: %w", location, err)
		}
		s.bucket = b
		s.c = newFileConds(b, root, &s.calls)
		prefix = ""
		// The directory that holds this config's objects, as a URL that needs no config file.
		s.dirURL = "file://" + filepath.ToSlash(casDir)
	case "s3", "gs", "azblob":
		if q.Get("prefix") != "" || q.Get("key") != "" {
			return nil, fmt.Errorf("state URL %s: put the prefix into the path (%s://%s/PREFIX), not a prefix= parameter", location, u.Scheme, u.Host)
		}
		bu := url.URL{Scheme: u.Scheme, Host: u.Host, RawQuery: q.Encode()}
		b, err := blob.OpenBucket(ctx, bu.String())
		if err != nil {
			return nil, fmt.Errorf("state: opening %s://%s: %w\n  hint: check the bucket name and credentials (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*)", u.Scheme, u.Host, err)
		}
		s.bucket = b
		s.c = &nativeConds{b: b, service: u.Scheme, calls: &s.calls}
	default:
		return nil, fmt.Errorf("state: unsupported state URL scheme %q in %s\n  hint: use s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix, file:///dir, mem://name or a plain file path", u.Scheme, location)
	}
	// <prefix>/<stem>/; with no config file (stem "") the URL path is that directory itself, which
	// is how the force-unlock hint names it.
	s.dir = strings.Trim(prefix+"/"+stem, "/")
	if s.dir != "" {
		s.dir += "/"
	}
	if s.dirURL == "" {
		s.dirURL = u.Scheme + "://" + u.Host + "/" + strings.TrimSuffix(s.dir, "/")
	}
	s.describe = strings.TrimSuffix(s.dirURL, "/") + "/"
	if rawQuery != "" {
		s.dirURL += "?" + rawQuery
	}
	return s, nil
}

// mem:// buckets live for the process and are shared by name, so two stores (two "runners" in
// a test, or Migrate) see the same objects.
type sharedMem struct {
	bucket *blob.Bucket
	lock   sync.Mutex
}

var (
	memMu      sync.Mutex
	memBuckets = map[string]*sharedMem{}
)

func memBucket(name string) *sharedMem {
	memMu.Lock()
	defer memMu.Unlock()
	mb := memBuckets[name]
	if mb == nil {
		mb = &sharedMem{bucket: memblob.OpenBucket(nil)}
		memBuckets[name] = mb
	}
	return mb
}

// Describe implements Store.
func (s *RemoteStore) Describe() string { return s.describe }

// Calls is the number of object-store requests made so far.
func (s *RemoteStore) Calls() int64 { return s.calls.Load() }

// escKey turns a batch key into an object name part: "" is _default, and anything outside a
// safe set is %-escaped (also a leading "_" or "."), so keys never collide or climb directories.
func escKey(key string) string {
	if key == "" {
		return "_default"
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		safe := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '~' || c == '@' || c == '+' || c == '='
		if !safe && i > 0 && (c == '_' || c == '.') {
			safe = true
		}
		if safe {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func unescKey(name string) (string, bool) {
	if name == "_default" {
		return "", true
	}
	k, err := url.PathUnescape(name)
	return k, err == nil && escKey(k) == name
}

const (
	stateSuffix  = ".state.json"
	backupSuffix = ".state.json.backup"
	lockSuffix   = ".state.json.lock"
)

func (s *RemoteStore) stateObj(key string) string  { return s.dir + escKey(key) + stateSuffix }
func (s *RemoteStore) backupObj(key string) string { return s.dir + escKey(key) + backupSuffix }
func (s *RemoteStore) lockObj(key string) string   { return s.dir + escKey(key) + lockSuffix }

// objURL names an object for messages.
func (s *RemoteStore) objURL(obj string) string {
	return s.describe + strings.TrimPrefix(obj, s.dir)
}

// unlockCommand is the exact command that removes lock id; it names the state directory, so it
// works without the config file.
func (s *RemoteStore) unlockCommand(id string) string {
	return "pipeline force-unlock -state " + shellQuote(s.dirURL) + " " + id
}

func shellQuote(v string) string {
	if strings.ContainsAny(v, " \t\n'\"&;|<>()$`\\*?[]#~!{}") {
		return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
	}
	return v
}

// ---- locks ----

// remoteLock is a held lock object, refreshed in the background.
type remoteLock struct {
	s    *RemoteStore
	key  string
	info LockInfo
	note string

	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	lost error
}

func (l *remoteLock) ID() string { return l.info.ID }

// Note says what Lock had to do to get the lock (e.g. breaking the lock of a dead process on this
// host); "" when nothing. The CLI shows it.
func (l *remoteLock) Note() string { return l.note }

// LockNote returns the note a Lock carries ("" for none); see remoteLock.Note.
func LockNote(lk Lock) string {
	if n, ok := lk.(interface{ Note() string }); ok {
		return n.Note()
	}
	return ""
}

func (l *remoteLock) lostErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Lock implements Store: it creates the lock object <key>.state.json.lock only if it does not
// exist. A lock held elsewhere is a *LockedError (Stale when not refreshed within the TTL); a lock
// left on this host by a process that no longer runs is broken, and Note says so.
func (s *RemoteStore) Lock(ctx context.Context, key string, info LockInfo, timeout time.Duration) (Lock, error) {
	fillLockInfo(&info)
	obj := s.lockObj(key)
	timeout = s.waits.remaining(info.ID, timeout)
	deadline := time.Now().Add(timeout)
	var note string
	retries := 0
	for {
		if s.isClosed() {
			return nil, fmt.Errorf("state %s: store is closed", s.describe)
		}
		now := time.Now().UTC()
		info.Refreshed = now
		data, _ := json.MarshalIndent(info, "", "  ")
		err := s.c.create(ctx, obj, data)
		if err == nil {
			l := &remoteLock{s: s, key: key, info: info, note: note, stop: make(chan struct{}), done: make(chan struct{})}
			s.mu.Lock()
			s.locks[key] = l
			s.mu.Unlock()
			go l.refreshLoop()
			return l, nil
		}
		if !errors.Is(err, errPrecondition) {
			return nil, fmt.Errorf("state: creating lock %s: %w", s.objURL(obj), err)
		}
		held, ver, rerr := s.readLock(ctx, obj)
		if errors.Is(rerr, errNotFound) {
			// Released between our create and our read: try again at once, but not forever (a
			// store whose conditional create and read disagree must not spin).
			if retries++; retries > 20 {
				return nil, fmt.Errorf("state: the lock %s exists for a conditional create but cannot be read (%v); check the store's consistency and permissions", s.objURL(obj), rerr)
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			continue
		}
		if rerr != nil {
			return nil, rerr
		}
		if dead, why := deadHolder(held); dead && retries < 20 {
			retries++
			// Conditional on the version we read, so a lock taken meanwhile is never removed.
			if err := s.c.remove(ctx, obj, ver); err == nil || errors.Is(err, errNotFound) {
				note = fmt.Sprintf("broke the lock %s of pid %d on this host (%s), taken %s: %s",
					held.ID, held.PID, held.Host, held.Created.Format(time.RFC3339), why)
				continue
			} else if !errors.Is(err, errPrecondition) {
				return nil, fmt.Errorf("state: removing the dead lock %s: %w", s.objURL(obj), err)
			}
			continue
		}
		lerr := s.lockedErr(key, obj, held)
		if timeout <= 0 || time.Now().After(deadline) {
			return nil, lerr
		}
		wait := min(s.opts.RetryEvery, time.Until(deadline))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (s *RemoteStore) lockedErr(key, obj string, held LockInfo) *LockedError {
	last := held.Refreshed
	if last.IsZero() {
		last = held.Created
	}
	age := time.Since(last)
	return &LockedError{
		Info:   held,
		Stale:  age > s.opts.TTL,
		Path:   s.objURL(obj),
		Age:    age,
		TTL:    s.opts.TTL,
		Unlock: s.unlockCommand(held.ID),
		Key:    key,
	}
}

// readLock reads a lock object; a lock object that does not parse is reported with its name.
func (s *RemoteStore) readLock(ctx context.Context, obj string) (LockInfo, string, error) {
	var info LockInfo
	data, ver, err := s.c.read(ctx, obj)
	if err != nil {
		if errors.Is(err, errNotFound) {
			return info, "", err
		}
		return info, "", fmt.Errorf("state: reading lock %s: %w", s.objURL(obj), err)
	}
	if err := json.Unmarshal(data, &info); err != nil || info.ID == "" {
		return info, ver, fmt.Errorf("state: lock object %s is not a pipeline lock (%v)\n  hint: if no run holds it, delete the object", s.objURL(obj), err)
	}
	return info, ver, nil
}

// deadHolder reports whether the lock was taken on this very machine and boot by a process that
// no longer runs: the one case where a lock may be broken without a human.
func deadHolder(info LockInfo) (bool, string) {
	host, _ := os.Hostname()
	if info.Host == "" || info.Host != host || info.PID <= 0 || info.PID == os.Getpid() {
		return false, ""
	}
	boot := bootID()
	if info.BootID == "" || boot == "" || info.BootID != boot {
		return false, "" // another machine with the same name, or a reboot: cannot tell
	}
	if processAlive(info.PID) {
		return false, ""
	}
	return true, fmt.Sprintf("process %d is not running any more", info.PID)
}

func (l *remoteLock) refreshLoop() {
	defer close(l.done)
	t := time.NewTicker(l.s.opts.RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.refresh(context.Background()); err != nil && errors.Is(err, errLockLost) {
				return
			}
		}
	}
}

var errLockLost = errors.New("lock lost")

// refresh rewrites the lock object with a new Refreshed time, if it is still ours.
func (l *remoteLock) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.s.opts.RefreshEvery)
	defer cancel()
	obj := l.s.lockObj(l.key)
	held, ver, err := l.s.readLock(ctx, obj)
	if err == nil && held.ID != l.info.ID {
		err = fmt.Errorf("%w: the lock object %s now belongs to lock %s (pid %d on host %s); was it force-unlocked?",
			errLockLost, l.s.objURL(obj), held.ID, held.PID, held.Host)
	} else if errors.Is(err, errNotFound) {
		err = fmt.Errorf("%w: the lock object %s was removed (force-unlock?)", errLockLost, l.s.objURL(obj))
	}
	if err == nil {
		info := l.info
		info.Refreshed = time.Now().UTC()
		data, _ := json.MarshalIndent(info, "", "  ")
		err = l.s.c.replace(ctx, obj, data, ver)
		if errors.Is(err, errPrecondition) {
			err = fmt.Errorf("%w: the lock object %s changed while we refreshed it", errLockLost, l.s.objURL(obj))
		}
	}
	if errors.Is(err, errLockLost) {
		l.mu.Lock()
		l.lost = err
		l.mu.Unlock()
	}
	return err
}

// Unlock stops the refresh and removes the lock object if it is still ours.
func (l *remoteLock) Unlock() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.s.mu.Lock()
		if l.s.locks[l.key] == l {
			delete(l.s.locks, l.key)
		}
		l.s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		obj := l.s.lockObj(l.key)
		held, ver, rerr := l.s.readLock(ctx, obj)
		switch {
		case errors.Is(rerr, errNotFound):
			err = fmt.Errorf("state: unlocking %s: the lock object was already removed (force-unlock?)", l.s.objURL(obj))
		case rerr != nil:
			err = rerr
		case held.ID != l.info.ID:
			err = fmt.Errorf("state: unlocking %s: it now belongs to lock %s (pid %d on host %s); left it alone",
				l.s.objURL(obj), held.ID, held.PID, held.Host)
		default:
			if rerr := l.s.c.remove(ctx, obj, ver); rerr != nil && !errors.Is(rerr, errNotFound) {
				err = fmt.Errorf("state: removing lock %s: %w\n  hint: run %s", l.s.objURL(obj), rerr, l.s.unlockCommand(l.info.ID))
			}
		}
	})
	return err
}

// ForceUnlock implements Store: it removes every lock object whose ID is id (a run takes one lock
// per batch instance, all with its ID). Without force it refuses when any of them is still being
// refreshed (its holder is alive), and then removes none. Opened without a config file, it also
// looks in the configs' directories below the URL, so -state may name the prefix or a config's
// directory.
func (s *RemoteStore) ForceUnlock(ctx context.Context, id string, force bool) error {
	delim := "/"
	if s.stemless {
		delim = ""
	}
	objs, err := s.listAll(ctx, delim)
	if err != nil {
		return err
	}
	type match struct {
		obj, ver string
		le       *LockedError
	}
	var found []match
	var others []string
	for _, obj := range objs {
		if !strings.HasSuffix(obj, lockSuffix) || isCacheObject(s.dir, obj) {
			continue
		}
		held, ver, err := s.readLock(ctx, obj)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if held.ID != id {
			others = append(others, fmt.Sprintf("%s (pid %d on host %s)", held.ID, held.PID, held.Host))
			continue
		}
		key, _ := unescKey(strings.TrimSuffix(path.Base(obj), lockSuffix))
		le := s.lockedErr(key, obj, held)
		dead, _ := deadHolder(held)
		if !force && !le.Stale && !dead {
			return fmt.Errorf("state: lock %s on %s is live: pid %d on host %s refreshed it %s ago (stale after %s); nothing removed\n  hint: if you are sure that run is gone, pass -force",
				id, s.objURL(obj), held.PID, held.Host, le.Age.Round(time.Second), s.opts.TTL)
		}
		found = append(found, match{obj, ver, le})
	}
	if len(found) == 0 {
		msg := fmt.Sprintf("state: no lock with ID %s in %s", id, s.describe)
		if len(others) > 0 {
			sort.Strings(others)
			msg += "; locks present: " + strings.Join(others, ", ")
		} else {
			msg += " (no locks are held there)"
		}
		return errors.New(msg)
	}
	var errs []error
	for _, m := range found {
		// Conditional on the version read: a refresh or a new holder in between wins.
		err := s.c.remove(ctx, m.obj, m.ver)
		switch {
		case err == nil, errors.Is(err, errNotFound):
		case errors.Is(err, errPrecondition):
			errs = append(errs, fmt.Errorf("state: lock %s on %s changed while removing it (refreshed or taken again); left it", id, s.objURL(m.obj)))
		default:
			errs = append(errs, fmt.Errorf("state: removing lock %s: %w", s.objURL(m.obj), err))
		}
	}
	return errors.Join(errs...)
}

// ---- state objects ----

func (s *RemoteStore) lockKey(key string) func() {
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

// readInstance reads an instance object; nil with no error when absent.
func (s *RemoteStore) readInstance(ctx context.Context, key string) (*Instance, []byte, string, error) {
	obj := s.stateObj(key)
	data, ver, err := s.c.read(ctx, obj)
	if errors.Is(err, errNotFound) {
		return nil, nil, "", nil
	}
	if err != nil {
		return nil, nil, "", fmt.Errorf("state: reading %s: %w", s.objURL(obj), err)
	}
	in, err := decodeInstanceFile(data) // plain JSON, or gzip as a local instance file
	if err != nil {
		return nil, nil, "", fmt.Errorf("state object %s is corrupt: %v; it was left untouched\n  hint: the previous version is in %s: inspect it and copy it over, or delete the object to start this instance afresh",
			s.objURL(obj), err, s.objURL(s.backupObj(key)))
	}
	return in, data, ver, nil
}

// Get implements Store.
func (s *RemoteStore) Get(ctx context.Context, key string) (*Instance, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("state %s: store is closed", s.describe)
	}
	in, _, _, err := s.readInstance(ctx, key)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if in == nil {
		s.seen[key] = 0
	} else {
		s.seen[key] = in.Serial
	}
	s.mu.Unlock()
	return in, nil
}

// ConflictError is a compare-and-swap failure: another writer changed the instance since this
// store (or the caller's Instance) last saw it. Nothing was overwritten.
type ConflictError struct {
	Object       string
	Key          string
	Have, Stored uint64 // serial we based the write on, serial found
	Absent       bool   // the object no longer exists
}

func (e *ConflictError) Error() string {
	now := fmt.Sprintf("it is at serial %d", e.Stored)
	if e.Absent {
		now = "it was deleted"
	}
	return fmt.Sprintf("state object %s changed under this run: %s, but this run last saw serial %d; another run wrote it (was it holding the lock?). Nothing was overwritten\n  hint: re-run to plan against the current state",
		e.Object, now, e.Have)
}

// Put implements Store: read the current object, check that its serial is the one this store last
// saw (or inst.Serial for an instance this store never read), keep the old version as the backup
// object, and write the new version on condition that the object has not changed since the read.
func (s *RemoteStore) Put(ctx context.Context, key string, inst *Instance) error {
	if inst == nil {
		return fmt.Errorf("state %s: Put of instance %q with a nil instance (use Delete to forget it)", s.describe, key)
	}
	return s.write(ctx, key, inst)
}

// Delete implements Store (compare-and-swap like Put; the backup object is kept).
func (s *RemoteStore) Delete(ctx context.Context, key string) error {
	return s.write(ctx, key, nil)
}

func (s *RemoteStore) write(ctx context.Context, key string, inst *Instance) error {
	if s.isClosed() {
		return fmt.Errorf("state %s: store is closed", s.describe)
	}
	s.mu.Lock()
	l := s.locks[key]
	s.mu.Unlock()
	if l != nil {
		if err := l.lostErr(); err != nil {
			return fmt.Errorf("state: not writing instance %q: %w", key, err)
		}
	} else {
		lk, err := s.Lock(ctx, key, NewLockInfo("write"), 0)
		if err != nil {
			return err
		}
		defer lk.Unlock()
	}
	defer s.lockKey(key)()

	obj := s.stateObj(key)
	cur, curData, ver, err := s.readInstance(ctx, key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	base, seen := s.seen[key]
	s.mu.Unlock()
	if !seen && inst != nil {
		base = inst.Serial
	}
	var stored uint64
	if cur != nil {
		stored = cur.Serial
	}
	if !seen && inst == nil {
		base = stored // a blind Delete (state rm) takes what is there
	}
	if stored != base || (cur == nil && base != 0) {
		return &ConflictError{Object: s.objURL(obj), Key: key, Have: base, Stored: stored, Absent: cur == nil}
	}

	if inst == nil {
		if cur == nil {
			return nil
		}
		if err := s.c.remove(ctx, obj, ver); err != nil {
			if errors.Is(err, errPrecondition) || errors.Is(err, errNotFound) {
				return &ConflictError{Object: s.objURL(obj), Key: key, Have: base, Stored: stored, Absent: errors.Is(err, errNotFound)}
			}
			return fmt.Errorf("state: deleting %s: %w", s.objURL(obj), err)
		}
		s.mu.Lock()
		s.seen[key] = 0
		s.mu.Unlock()
		return nil
	}

	out := *inst
	out.Key, out.Serial = key, stored+1
	switch {
	case cur != nil && cur.Lineage != "":
		out.Lineage = cur.Lineage
	case out.Lineage == "":
		out.Lineage = newLineage()
	}
	data, err := compactInstance(&out) // plain JSON: every release reads it, and it is half the indented size
	if err != nil {
		return fmt.Errorf("state: encoding instance %q: %w", key, err)
	}
	if cur != nil {
		if err := s.c.write(ctx, s.backupObj(key), curData); err != nil {
			return fmt.Errorf("state: writing backup %s: %w", s.objURL(s.backupObj(key)), err)
		}
		err = s.c.replace(ctx, obj, data, ver)
	} else {
		err = s.c.create(ctx, obj, data)
	}
	if errors.Is(err, errPrecondition) {
		now, _, _, _ := s.readInstance(ctx, key)
		ce := &ConflictError{Object: s.objURL(obj), Key: key, Have: base, Absent: now == nil}
		if now != nil {
			ce.Stored = now.Serial
		}
		return ce
	}
	if err != nil {
		return fmt.Errorf("state: writing %s: %w", s.objURL(obj), err)
	}
	inst.Key, inst.Lineage, inst.Serial = key, out.Lineage, out.Serial
	s.mu.Lock()
	s.seen[key] = out.Serial
	s.mu.Unlock()
	return nil
}

// Keys implements Store.
func (s *RemoteStore) Keys(ctx context.Context) ([]string, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("state %s: store is closed", s.describe)
	}
	objs, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, obj := range objs {
		name := obj[len(s.dir):]
		if !strings.HasSuffix(name, stateSuffix) {
			continue
		}
		if k, ok := unescKey(strings.TrimSuffix(name, stateSuffix)); ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// list returns the object names directly under the store's directory, a page (one request) at a time.
func (s *RemoteStore) list(ctx context.Context) ([]string, error) {
	return s.listAll(ctx, "/")
}

// listAll lists under the store's directory; delimiter "" descends into subdirectories.
func (s *RemoteStore) listAll(ctx context.Context, delimiter string) ([]string, error) {
	var names []string
	token := blob.FirstPageToken
	for {
		s.calls.Add(1)
		page, next, err := s.bucket.ListPage(ctx, token, 1000, &blob.ListOptions{Prefix: s.dir, Delimiter: delimiter})
		if err != nil {
			return nil, fmt.Errorf("state: listing %s: %w", s.describe, err)
		}
		for _, o := range page {
			if !o.IsDir {
				names = append(names, o.Key)
			}
		}
		if len(next) == 0 {
			return names, nil
		}
		token = next
	}
}

func (s *RemoteStore) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close releases the locks still held and closes the bucket.
func (s *RemoteStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	locks := make([]*remoteLock, 0, len(s.locks))
	for _, l := range s.locks {
		locks = append(locks, l)
	}
	s.mu.Unlock()
	var errs []error
	for _, l := range locks {
		if err := l.Unlock(); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.shared {
		return errors.Join(errs...)
	}
	if err := s.bucket.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// gcCode is gcerrors.Code, kept here so conds.go reads plainly.
func gcCode(err error) gcerrors.ErrorCode { return gcerrors.Code(err) }
