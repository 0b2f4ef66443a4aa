package photo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// DiskCache is a directory of files named by content keys, on this machine only, bounded in
// size: once the files total more than the bound, the least recently used go (a runner that
// prepares the photos of 1,000 subjects keeps the latest few hundred MB, not all of them). Files
// are written to a temp file and renamed, so nothing is ever half-cached, and a reader holding
// an open file keeps reading it even if it is evicted meanwhile.
//
// Every DiskCache of one directory in a process shares one index, so the bound holds however
// many stages use it; other processes sharing the directory evict by the same rule, using the
// files' modification times (touched on every hit) as the last use.
type DiskCache struct {
	dir string
	max int64

	mu     sync.Mutex
	loaded bool
	files  map[string]*cached
	total  int64
	clock  func() time.Time
}

type cached struct {
	size int64
	used time.Time
}

var (
	diskCachesMu sync.Mutex
	diskCaches   = map[string]*DiskCache{}
)

// OpenDiskCache returns the cache kept in dir, bounded to maxBytes (the largest bound asked for
// in this process wins). The directory is created when the first file is put.
func OpenDiskCache(dir string, maxBytes int64) (*DiskCache, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	diskCachesMu.Lock()
	defer diskCachesMu.Unlock()
	c := diskCaches[abs]
	if c == nil {
		c = &DiskCache{dir: abs, files: map[string]*cached{}, clock: time.Now}
		diskCaches[abs] = c
	}
	c.mu.Lock()
	c.max = max(c.max, maxBytes)
	c.mu.Unlock()
	return c, nil
}

// Dir is where the files are.
func (c *DiskCache) Dir() string { return c.dir }

// load indexes the files already in the directory (left by earlier runs).
func (c *DiskCache) load() {
	if c.loaded {
		return
	}
	c.loaded = true
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			c.files[e.Name()] = &cached{size: fi.Size(), used: fi.ModTime()}
			c.total += fi.Size()
		}
	}
}

// Open returns the file of key, or (nil, nil) when it is not cached.
func (c *DiskCache) Open(key string) (*os.File, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(c.dir, key))
	if errors.Is(err, fs.ErrNotExist) {
		c.forget(key)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c.touch(key, f)
	return f, nil
}

// Get returns the content of key, or (nil, false, nil) when it is not cached.
func (c *DiskCache) Get(key string) ([]byte, bool, error) {
	f, err := c.Open(key)
	if f == nil || err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, false, err
	}
	return data, true, nil
}

// Put stores data under key.
func (c *DiskCache) Put(key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	tmp, err := c.temp()
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	return c.commit(tmp, werr, key)
}

// Ingest copies r into the cache under the sha256 of its content, which it returns with the
// size. More than limit bytes is an error and leaves nothing behind.
func (c *DiskCache) Ingest(r io.Reader, limit int64) (key string, size int64, err error) {
	tmp, err := c.temp()
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	size, werr := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, limit+1))
	if werr == nil && size > limit {
		werr = fmt.Errorf("more than %d bytes", limit)
	}
	key = hex.EncodeToString(h.Sum(nil))
	if err := c.commit(tmp, werr, key); err != nil {
		return "", 0, err
	}
	return key, size, nil
}

func (c *DiskCache) temp() (*os.File, error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return f, nil
}

// commit renames a written temp file to key, or removes it when writing failed.
func (c *DiskCache) commit(tmp *os.File, werr error, key string) error {
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	fi, err := os.Stat(tmp.Name())
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(c.dir, key))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	if old := c.files[key]; old != nil {
		c.total -= old.size
	}
	c.files[key] = &cached{size: fi.Size(), used: c.clock()}
	c.total += fi.Size()
	c.evict(key)
	return nil
}

// evict removes the least recently used files until the total is within the bound; keep (the
// file just written) stays even if it alone is larger.
func (c *DiskCache) evict(keep string) {
	if c.total <= c.max {
		return
	}
	keys := make([]string, 0, len(c.files))
	for k := range c.files {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if d := c.files[a].used.Compare(c.files[b].used); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		if c.total <= c.max {
			return
		}
		if k == keep {
			continue
		}
		if err := os.Remove(filepath.Join(c.dir, k)); err == nil || errors.Is(err, fs.ErrNotExist) {
			c.total -= c.files[k].size
			delete(c.files, k)
		}
	}
}

func (c *DiskCache) touch(key string, f *os.File) {
	now := c.clock()
	os.Chtimes(f.Name(), now, now) // the last use, for other processes' eviction
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	e := c.files[key]
	if e == nil {
		if fi, err := f.Stat(); err == nil {
			e = &cached{size: fi.Size()}
			c.files[key] = e
			c.total += fi.Size()
		} else {
			return
		}
	}
	e.used = now
}

func (c *DiskCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.files[key]; e != nil {
		c.total -= e.size
		delete(c.files, key)
	}
}

// Bytes is the size of the files the cache holds, as it knows them.
func (c *DiskCache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	return c.total
}

// checkKey refuses keys that are not a plain file name.
func checkKey(key string) error {
	if key == "" || strings.ContainsAny(key, `/\`) || strings.HasPrefix(key, ".") {
		return fmt.Errorf("cache: invalid key %q", key)
	}
	return nil
}
