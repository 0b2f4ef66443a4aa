package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"github.com/pipeline-dev/pipeline/stages/lib/photosource"
	"github.com/pipeline-dev/pipeline/stages/lib/replicate"
)

// imageFile is one photo of the training set.
type imageFile struct {
	// Name is its base name ("IMG_1.HEIC"): the digest covers it, and the zip entry is named after
	// it (photo.ZipNames: "IMG_1.jpg").
	Name string
	// Path is a local path or, for a photo kept in a bucket, its URL as image_check names it.
	Path string
}

// collectImages resolves local paths against baseDir and orders the photos by name. Two photos
// with the same base name from different places would be the same name in the digest, so that is
// an error.
func collectImages(baseDir string, paths []string) ([]imageFile, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("images is empty: the training needs at least one photo (check the image_check stage's accepted list)")
	}
	files := make([]imageFile, 0, len(paths))
	seen := make(map[string]string, len(paths))
	for _, p := range paths {
		if p == "" {
			return nil, fmt.Errorf("images contains an empty path")
		}
		full, name := p, ""
		if photosource.IsURL(p) {
			_, name = splitURL(p)
		} else {
			if !filepath.IsAbs(full) && baseDir != "" {
				full = filepath.Join(baseDir, full)
			}
			name = filepath.Base(full)
		}
		if other, dup := seen[name]; dup {
			if other == full {
				continue // the same file listed twice adds nothing
			}
			return nil, fmt.Errorf("images %s and %s share the file name %q: rename one of them", other, full, name)
		}
		seen[name] = full
		files = append(files, imageFile{Name: name, Path: full})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// splitURL splits a bucket object's URL into its directory (parameters kept, so it opens the
// same bucket) and its base name.
func splitURL(ref string) (dir, name string) {
	base, query, _ := strings.Cut(ref, "?")
	i := strings.LastIndex(base, "/")
	dir, name = base[:i+1], base[i+1:]
	if query != "" {
		dir += "?" + query
	}
	return dir, name
}

// photoSet reads the originals where they are kept (local directories, buckets), through
// photosource: content digests come from its figures when they know the file, bucket objects
// through its bounded local cache. Close releases the buckets.
type photoSet struct {
	opts photosource.Options
	dirs map[string]*photosource.Dir
}

func newPhotoSet(env *pipeline.Env) *photoSet {
	s := &photoSet{dirs: map[string]*photosource.Dir{}}
	if env != nil {
		s.opts.CacheDir = env.CacheDir
		if env.Cache != nil {
			s.opts.Figures = env.Cache
		}
	}
	return s
}

// Close releases every directory opened.
func (s *photoSet) Close() {
	for _, d := range s.dirs {
		_ = d.Close()
	}
}

// object opens the photo's directory (once) and describes the photo as it is now.
func (s *photoSet) object(ctx context.Context, f imageFile) (*photosource.Dir, photosource.Object, error) {
	dir := filepath.Dir(f.Path)
	if photosource.IsURL(f.Path) {
		dir, _ = splitURL(f.Path)
	}
	d := s.dirs[dir]
	if d == nil {
		var err error
		if d, err = photosource.Open(ctx, dir, s.opts); err != nil {
			return nil, photosource.Object{}, fmt.Errorf("image %s: %w", f.Path, err)
		}
		s.dirs[dir] = d
	}
	o, err := d.Stat(ctx, f.Name)
	if err != nil {
		if !photosource.IsURL(f.Path) {
			err = fmt.Errorf("image %s: %w (was it moved after image_check ran?)", f.Path, err)
		}
		return nil, photosource.Object{}, err
	}
	return d, o, nil
}

// originals describes every photo: name, size and content digest (the content is read only when
// no figure knows this version of the file), with a reader for its bytes.
func (s *photoSet) originals(ctx context.Context, files []imageFile) ([]photo.Original, error) {
	out := make([]photo.Original, 0, len(files))
	for _, f := range files {
		d, o, err := s.object(ctx, f)
		if err != nil {
			return nil, err
		}
		sha, err := d.Digest(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("image %s: reading: %w", f.Path, err)
		}
		path := f.Path
		out = append(out, photo.Original{Name: f.Name, Source: path, SHA: sha, Size: o.Size, Read: func(ctx context.Context) ([]byte, error) {
			fh, err := d.OpenFile(ctx, o)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", path, err)
			}
			defer fh.Close()
			data, err := io.ReadAll(fh)
			if err != nil {
				return nil, fmt.Errorf("image %s: reading: %w", path, err)
			}
			return data, nil
		}})
	}
	return out, nil
}

// digestImages hashes the originals' names, sizes and contents in name order: the same photos
// always give the same digest, whatever their timestamps or where they are kept. It is the
// digest releases before prepared copies computed, so that an upgrade re-runs nothing; max_side
// enters the stage's digest as its own input.
func digestImages(originals []photo.Original) (string, error) {
	sorted := append([]photo.Original(nil), originals...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	h := sha256.New()
	for _, o := range sorted {
		sum, err := hex.DecodeString(o.SHA)
		if err != nil || len(sum) != sha256.Size {
			return "", fmt.Errorf("image %s: bad content digest %q", o.Name, o.SHA)
		}
		// name, size and content hash, length-prefixed so that no two file lists hash alike.
		io.WriteString(h, strconv.Itoa(len(o.Name)))
		io.WriteString(h, ":")
		io.WriteString(h, o.Name)
		io.WriteString(h, strconv.FormatInt(o.Size, 10))
		io.WriteString(h, ":")
		h.Write(sum)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// preparer makes the zip's copies, cached by content on this machine (Env.CacheDir) with their
// sizes in the shared figures (Env.Cache), so a plan elsewhere knows the zip's size unprepared.
func preparer(env *pipeline.Env, maxSide int) *photo.Preparer {
	p := &photo.Preparer{MaxSide: maxSide}
	dir := ""
	if env != nil {
		dir = env.CacheDir
		if env.Cache != nil {
			p.Sizes = env.Cache
		}
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "pipeline-photos")
	}
	if c, err := photo.OpenDiskCache(filepath.Join(dir, "train", "prepared"), photo.DefaultCopiesBytes); err == nil {
		p.Copies = c // without it copies are only made again
	}
	return p
}

// planArchive plans the training zip of the originals: every entry's name and prepared size.
func planArchive(ctx context.Context, env *pipeline.Env, maxSide int, originals []photo.Original) (*photo.Archive, error) {
	a, err := preparer(env, maxSide).Archive(ctx, originals)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var tooLarge *photo.TooLargeError
		if errors.As(err, &tooLarge) {
			return nil, err // its own hint says what to do
		}
		return nil, fmt.Errorf("%w; hint: every photo must decode as JPEG, PNG, WebP, HEIC or AVIF (image_check rejects the others)", err)
	}
	return a, nil
}

// zipStream is one upload attempt's zip, written into a pipe as the upload reads it.
type zipStream struct {
	r    *io.PipeReader
	done chan struct{}
	sum  hash.Hash
	err  error
}

// uploadArchive streams the zip to the files API with an exact Content-Length (a.Size), never
// holding it in memory: each attempt writes it afresh into a pipe. It returns the file and the
// zip's sha256.
func uploadArchive(ctx context.Context, c *replicate.Client, name string, a *photo.Archive) (*replicate.File, string, error) {
	var mu sync.Mutex
	var streams []*zipStream
	open := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		zs := &zipStream{r: pr, done: make(chan struct{}), sum: sha256.New()}
		mu.Lock()
		streams = append(streams, zs)
		mu.Unlock()
		go func() {
			defer close(zs.done)
			zs.err = a.WriteTo(ctx, io.MultiWriter(pw, zs.sum))
			pw.CloseWithError(zs.err)
		}()
		return pr, nil
	}
	f, err := c.UploadStream(ctx, name, "application/zip", a.Size, open)
	mu.Lock()
	defer mu.Unlock()
	for _, zs := range streams {
		zs.r.Close() // an attempt the transport left open must not keep its writer waiting
		<-zs.done
	}
	if err != nil {
		return nil, "", err
	}
	if len(streams) == 0 {
		return nil, "", fmt.Errorf("uploading the training zip: the upload read nothing")
	}
	last := streams[len(streams)-1]
	if last.err != nil {
		return nil, "", fmt.Errorf("writing the training zip: %w", last.err)
	}
	return f, hex.EncodeToString(last.sum.Sum(nil)), nil
}
