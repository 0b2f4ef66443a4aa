package imagecheck

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// cacheVersion changes whenever analysis figures are computed differently, so old entries are
// recomputed rather than mixed with new ones.
const cacheVersion = 5

// fileKey identifies one version of a file without reading it: a touched, replaced or rewritten
// file gets a new key.
type fileKey struct {
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Inode uint64 `json:"inode"`
}

func keyOf(fi fs.FileInfo) fileKey {
	k := fileKey{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.Inode = uint64(st.Ino)
	}
	return k
}

type cacheEntry struct {
	Key      fileKey  `json:"key"`
	Analysis analysis `json:"analysis"`
}

type cacheFile struct {
	Version int                    `json:"version"`
	Dir     string                 `json:"dir"`
	Files   map[string]*cacheEntry `json:"files"`
}

// cache is the per-directory analysis cache: one JSON file per dataset directory under the
// command's cache dir (.pipeline/cache/imagecheck/<hash of the dir>.json).
type cache struct {
	path string
	data cacheFile
}

// openCache loads the cache for dir; a missing, unreadable or outdated cache is simply empty (it
// only saves work). cacheDir "" disables caching.
func openCache(cacheDir, dir string) *cache {
	c := &cache{data: cacheFile{Version: cacheVersion, Dir: dir, Files: map[string]*cacheEntry{}}}
	if cacheDir == "" {
		return c
	}
	sum := sha256.Sum256([]byte(dir))
	c.path = filepath.Join(cacheDir, "imagecheck", hex.EncodeToString(sum[:8])+".json")
	raw, err := os.ReadFile(c.path)
	if err != nil {
		return c
	}
	var f cacheFile
	if json.Unmarshal(raw, &f) != nil || f.Version != cacheVersion || f.Dir != dir || f.Files == nil {
		return c
	}
	c.data = f
	return c
}

// lookup returns the cached analysis of name when the file is unchanged.
func (c *cache) lookup(name string, k fileKey) (analysis, bool) {
	e := c.data.Files[name]
	if e == nil || e.Key != k {
		return analysis{}, false
	}
	return e.Analysis, true
}

// save replaces the cache with exactly the given entries (files gone from the directory drop out)
// and writes it atomically: a temp file in the same directory, synced, then renamed over the old
// one, so concurrent checks of the same directory never read half a file.
func (c *cache) save(entries map[string]*cacheEntry) error {
	if c.path == "" {
		return nil
	}
	c.data.Files = entries
	raw, err := json.Marshal(&c.data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), ".imagecheck-*.tmp")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(raw)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
