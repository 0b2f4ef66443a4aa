package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Cache is a small key-value store for figures a kind could compute again but should not: image
// analyses keyed by the photo's content digest, a trainer version's schema keyed by its id. With
// remote state it lives in the same store (under .cache/), so every CI runner of a batch shares
// it; locally it is a directory beside the state. It holds figures, never photos or secrets.
//
// Keys are slash-separated paths that start with the owning package's name
// ("imagecheck/<sha256>", "replicate/schema/<version id>"). A missing key is (nil, false, nil).
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, data []byte) error
}

// DirCache is a Cache in a local directory: one file per key, written atomically.
type DirCache string

// Get implements Cache.
func (d DirCache) Get(_ context.Context, key string) ([]byte, bool, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cache %s: %w", p, err)
	}
	return b, true, nil
}

// Put implements Cache. A reader never sees a half-written entry: the bytes go to a temp file
// that is renamed over the key.
func (d DirCache) Put(_ context.Context, key string, data []byte) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cache %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cache %s: %w", p, err)
	}
	return nil
}

// path maps a key to a file under the directory, refusing keys that would leave it.
func (d DirCache) path(key string) (string, error) {
	if string(d) == "" {
		return "", errors.New("cache: no directory")
	}
	clean := filepath.ToSlash(filepath.Clean("/" + key))[1:]
	if key == "" || clean != key || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("cache: invalid key %q", key)
	}
	return filepath.Join(string(d), filepath.FromSlash(clean)), nil
}
