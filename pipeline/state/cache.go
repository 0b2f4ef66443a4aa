package state

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// The cache's directory beside a state: .pipeline/cache locally, <prefix>/<stem>/.cache
// in a bucket (its leading "." keeps it apart from instance objects, whose names never start so).
const (
	localCacheDir  = "cache"
	remoteCacheDir = ".cache"
)

// CacheOf is the pipeline.Cache that lives with st: beside a local state, in the same bucket for
// remote state. nil for a store that has none.
func CacheOf(st Store) pipeline.Cache {
	if c, ok := st.(interface{ Cache() pipeline.Cache }); ok {
		return c.Cache()
	}
	return nil
}

// LocalCache is the cache of a local state: the directory cache beside the state file or
// directory (.pipeline/cache for the default state).
func LocalCache(statePath string) pipeline.DirCache {
	return pipeline.DirCache(filepath.Join(filepath.Dir(filepath.Clean(statePath)), localCacheDir))
}

// Cache is the cache beside the state file.
func (s *FileStore) Cache() pipeline.Cache { return LocalCache(s.path) }

// Cache is the cache beside the state directory.
func (s *DirStore) Cache() pipeline.Cache { return LocalCache(s.dir) }

// Cache is the cache in the state's bucket, under <prefix>/<config stem>/.cache/. Entries are
// written with plain puts and no lock (they are figures anyone may compute again; the last writer
// wins with the same bytes), and never touch state or lock objects: plan may write them.
func (s *RemoteStore) Cache() pipeline.Cache {
	return &blobCache{s: s, prefix: s.dir + remoteCacheDir + "/"}
}

type blobCache struct {
	s      *RemoteStore
	prefix string
}

// object names a cache key, refusing keys that would leave the cache (the rule of DirCache).
func (c *blobCache) object(key string) (string, error) {
	clean := path.Clean("/" + key)[1:]
	if key == "" || clean != key || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("cache: invalid key %q", key)
	}
	return c.prefix + clean, nil
}

// Get implements pipeline.Cache; a missing entry is (nil, false, nil).
func (c *blobCache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	obj, err := c.object(key)
	if err != nil {
		return nil, false, err
	}
	c.s.calls.Add(1)
	data, err := c.s.bucket.ReadAll(ctx, obj)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cache %s: %w", c.s.objURL(obj), err)
	}
	return data, true, nil
}

// Put implements pipeline.Cache.
func (c *blobCache) Put(ctx context.Context, key string, data []byte) error {
	obj, err := c.object(key)
	if err != nil {
		return err
	}
	c.s.calls.Add(1)
	if err := c.s.bucket.WriteAll(ctx, obj, data, &blob.WriterOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("cache %s: %w", c.s.objURL(obj), err)
	}
	return nil
}

// isCacheObject reports whether a listed object is a cache entry (a state listing skips them).
func isCacheObject(dir, obj string) bool {
	rel := strings.TrimPrefix(obj, dir)
	return rel == remoteCacheDir || strings.HasPrefix(rel, remoteCacheDir+"/") || strings.Contains(rel, "/"+remoteCacheDir+"/")
}
