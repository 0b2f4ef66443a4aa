// Package photosource lists and reads a subject's photos where they are kept: a local directory
// or a prefix in object storage (gocloud.dev/blob, the library remote state uses), so image_check
// and train treat `dir = "s3://photos/users/ana/"` like `dir = "data/ana"`.
//
//	d, err := photosource.Open(ctx, "s3://photos/users/ana/", photosource.Options{CacheDir: dir})
//	objs, err := d.List(ctx)                // non-recursive, name order
//	sha, err := d.Digest(ctx, objs[0])      // content sha256, read only when no figure knows it
//	f, sha, err := d.Open(ctx, objs[0])     // the bytes, fetched once into a bounded local cache
//
// Objects are named by URL in reports (s3://photos/users/ana/a.jpg). A bucket object is fetched
// at most once per content: its sha256 is remembered under its URL and version (the service's
// MD5 where it gives one, else size and modification time) in the shared figures, so an unchanged
// object on another runner is recognised without a download; its bytes go to a local cache
// bounded in size (photos never go to the shared store). Downloads are written to a temp file
// and renamed, so nothing is half-cached.
package photosource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/pipeline-dev/pipeline/stages/lib/photo"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// URLs
	"gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob" // gs:// URLs
	_ "gocloud.dev/blob/s3blob"  // s3:// URLs
	"gocloud.dev/gcerrors"
	"golang.org/x/text/unicode/norm"
)

const (
	// DefaultCacheBytes bounds the bucket objects kept on this machine (about 170 phone photos).
	DefaultCacheBytes = 1 << 30
	// DefaultMaxObject is the largest object fetched: far beyond any photo, short of a disk.
	DefaultMaxObject = 512 << 20
)

// Options says where a Dir keeps what it fetched and remembered.
type Options struct {
	// BaseDir resolves a relative local directory (the config file's directory).
	BaseDir string
	// CacheDir is a local directory for fetched objects and the digests of local files; "" uses
	// one under the system's temp directory.
	CacheDir string
	// CacheBytes bounds the fetched objects kept (DefaultCacheBytes when 0).
	CacheBytes int64
	// MaxObject is the largest object fetched (DefaultMaxObject when 0).
	MaxObject int64
	// Figures is the shared store for URL+version → sha256 (nil: only the local one).
	Figures photo.FigureStore
	// Name is how refs name a local directory (default: dir as given to Open), e.g. the dir the
	// user wrote when Open is given its absolute path.
	Name string
}

// Object is one file or bucket object directly under the directory.
type Object struct {
	// Name is the object's base name ("IMG_0001.HEIC").
	Name string
	// Ref is how outputs and reasons name it: the directory as written joined with the name, or
	// the object's URL.
	Ref  string
	Size int64

	// Problem says why a local entry is no file that can be read (a dangling or looping symlink,
	// a directory or a pipe): listed all the same, so that a check can reject it by name instead
	// of it vanishing.
	Problem string

	path    string // a local file
	key     string // a bucket object
	version string // what changes when the content does
}

// Dir is a local directory or a bucket prefix.
type Dir struct {
	written string // as given to Open
	name    string // how refs name a local directory
	opts    Options

	root string // local: absolute directory

	bucket *blob.Bucket
	prefix string  // object key prefix, "" or ending in "/"
	base   url.URL // scheme and host, for refs
	query  string  // the URL's parameters, kept on refs so they can be opened again
	local  *photo.DiskCache
	digest *photo.DiskCache
}

// IsURL reports whether dir names object storage rather than a local path.
func IsURL(dir string) bool {
	i := strings.Index(dir, "://")
	return i > 0 && !strings.ContainsAny(dir[:i], `/\.`)
}

// Open opens dir: a local path (relative to opts.BaseDir) or a URL s3://bucket/prefix/,
// gs://bucket/prefix/, azblob://container/prefix/, file:///abs/dir.
func Open(ctx context.Context, dir string, opts Options) (*Dir, error) {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.MaxObject <= 0 {
		opts.MaxObject = DefaultMaxObject
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(os.TempDir(), "pipeline-photos")
	}
	d := &Dir{written: dir, opts: opts, name: opts.Name}
	if d.name == "" {
		d.name = dir
	}
	var err error
	if d.local, err = photo.OpenDiskCache(filepath.Join(cacheDir, "photosource", "objects"), opts.CacheBytes); err != nil {
		return nil, err
	}
	if d.digest, err = photo.OpenDiskCache(filepath.Join(cacheDir, "photosource", "digests"), 64<<20); err != nil {
		return nil, err
	}
	if !IsURL(dir) {
		d.root = dir
		if !filepath.IsAbs(dir) {
			d.root = filepath.Join(opts.BaseDir, dir)
		}
		if d.root, err = filepath.Abs(d.root); err != nil {
			return nil, fmt.Errorf("dir %q: %w", dir, err)
		}
		return d, nil
	}
	if err := d.openBucket(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Dir) openBucket(ctx context.Context) error {
	u, err := url.Parse(d.written)
	if err != nil {
		return fmt.Errorf("dir %s: %w", d.written, err)
	}
	d.base = url.URL{Scheme: u.Scheme, Host: u.Host}
	d.query = u.RawQuery
	d.prefix = strings.TrimPrefix(u.Path, "/")
	if d.prefix != "" && !strings.HasSuffix(d.prefix, "/") {
		d.prefix += "/"
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("dir %s: a file URL names a local directory: file:///abs/dir (three slashes)", d.written)
		}
		root := filepath.FromSlash(u.Path)
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			return fmt.Errorf("dir %s: %s is not a directory", d.written, root)
		}
		d.bucket, err = fileblob.OpenBucket(root, &fileblob.Options{NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
		d.prefix, d.base.Host = "", ""
		d.base.Path = strings.TrimSuffix(filepath.ToSlash(root), "/") + "/"
	case "s3", "gs", "azblob":
		d.bucket, err = blob.OpenBucket(ctx, (&url.URL{Scheme: u.Scheme, Host: u.Host, RawQuery: u.RawQuery}).String())
		d.base.Path = "/" + d.prefix
	default:
		return fmt.Errorf("dir %s: unsupported scheme %q: use a local directory, s3://bucket/prefix/, gs://bucket/prefix/, azblob://container/prefix/ or file:///abs/dir", d.written, u.Scheme)
	}
	if err != nil {
		return fmt.Errorf("dir %s: opening the bucket: %w\n  hint: check the bucket name and credentials (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*)", d.written, err)
	}
	return nil
}

// Close releases the bucket.
func (d *Dir) Close() error {
	if d.bucket != nil {
		return d.bucket.Close()
	}
	return nil
}

// IsBucket reports whether the directory is object storage.
func (d *Dir) IsBucket() bool { return d.bucket != nil }

// Root is the absolute local directory ("" for a bucket).
func (d *Dir) Root() string { return d.root }

// List returns the regular files or objects directly under the directory, in name order.
func (d *Dir) List(ctx context.Context) ([]Object, error) {
	if d.bucket == nil {
		return d.listLocal()
	}
	var out []Object
	for tok := blob.FirstPageToken; ; {
		page, next, err := d.bucket.ListPage(ctx, tok, 1000, &blob.ListOptions{Prefix: d.prefix, Delimiter: "/"})
		if err != nil {
			return nil, d.storageErr("listing", d.written, err)
		}
		for _, o := range page {
			name := strings.TrimPrefix(o.Key, d.prefix)
			if o.IsDir || name == "" || strings.Contains(name, "/") {
				continue
			}
			version := strconv.FormatInt(o.Size, 10) + "@" + o.ModTime.UTC().Format("20060102T150405.000000000")
			if len(o.MD5) > 0 {
				version = strconv.FormatInt(o.Size, 10) + "#" + hex.EncodeToString(o.MD5)
			}
			out = append(out, Object{Name: name, Ref: d.ref(name), Size: o.Size, key: o.Key, version: version})
		}
		if len(next) == 0 {
			break
		}
		tok = next
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dir %s: no objects under this prefix: check the URL (a prefix ends in /) and that the photos were uploaded", d.written)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *Dir) listLocal() ([]Object, error) {
	ents, err := os.ReadDir(d.root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("dir %q (%s) does not exist: create it and put the subject's photos there, or fix dir", d.name, d.root)
		}
		return nil, fmt.Errorf("dir %q: %w", d.name, err)
	}
	var out []Object
	for _, e := range ents {
		p := filepath.Join(d.root, e.Name())
		ref := path.Join(filepath.ToSlash(d.name), e.Name())
		fi, err := os.Stat(p) // follows symlinks
		if problem := notAFile(fi, err); problem != "" {
			out = append(out, Object{Name: e.Name(), Ref: ref, Problem: problem, path: p})
			continue
		}
		out = append(out, Object{Name: e.Name(), Ref: ref, Size: fi.Size(), path: p, version: localVersion(fi)})
	}
	return out, nil
}

// notAFile says why a directory entry cannot be read as a photo ("" when it can).
func notAFile(fi fs.FileInfo, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "a symbolic link to nothing: copy the photo itself here"
	case err != nil:
		return fmt.Sprintf("cannot be read (%v): a symbolic link loop, or no permission", unwrapPath(err))
	case fi.IsDir():
		return "a directory, not a photo: image_check does not look inside subdirectories"
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("not a regular file (%s): copy the photo itself here", fi.Mode().Type())
	}
	return ""
}

// unwrapPath is a PathError's cause (the path is already named by the caller).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// localVersion changes whenever a file is touched, replaced or rewritten.
func localVersion(fi fs.FileInfo) string {
	v := strconv.FormatInt(fi.Size(), 10) + "@" + strconv.FormatInt(fi.ModTime().UnixNano(), 10)
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v += "#" + strconv.FormatUint(uint64(st.Ino), 10)
	}
	return v
}

// ref is the URL of an object, with the directory URL's parameters.
func (d *Dir) ref(name string) string {
	u := d.base
	u.Path += name
	s := u.String()
	if u.Scheme == "file" {
		s = "file://" + u.Path
	}
	if d.query != "" {
		s += "?" + d.query
	}
	return s
}

// figureKey names what is remembered about one version of one object.
func (d *Dir) figureKey(o Object) string {
	id := o.version + "\x00" + o.Ref
	if d.bucket == nil {
		id = o.version + "\x00" + o.path
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// Digest returns the sha256 (hex) of the object's content. It reads the content only when
// neither the local digests nor the shared figures know this version of the object.
func (d *Dir) Digest(ctx context.Context, o Object) (string, error) {
	if sha, ok := d.Known(ctx, o); ok {
		return sha, nil
	}
	f, sha, err := d.Open(ctx, o)
	if err != nil {
		return "", err
	}
	f.Close()
	return sha, nil
}

// Known returns the object's sha256 when this version of it was read before (here, or on another
// runner sharing the figures), without reading it.
func (d *Dir) Known(ctx context.Context, o Object) (string, bool) {
	k := d.figureKey(o)
	if b, ok, err := d.digest.Get(k); err == nil && ok && validSHA(string(b)) {
		return string(b), true
	}
	if d.bucket != nil && d.opts.Figures != nil {
		if b, ok, err := d.opts.Figures.Get(ctx, "photosource/"+k); err == nil && ok && validSHA(string(b)) {
			_ = d.digest.Put(k, b)
			return string(b), true
		}
	}
	return "", false
}

// Remember records the sha256 of this version of the object, for Known: by a caller that read
// it through OpenFile and hashed it.
func (d *Dir) Remember(ctx context.Context, o Object, sha string) {
	k := d.figureKey(o)
	_ = d.digest.Put(k, []byte(sha)) // forgetting only costs a read
	if d.bucket != nil && d.opts.Figures != nil {
		_ = d.opts.Figures.Put(ctx, "photosource/"+k, []byte(sha))
	}
}

func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Open returns the object's content as an open local file (the caller closes it) and its sha256.
// A local file is opened where it is; a bucket object comes from the local cache, fetched into it
// first when it is not there.
func (d *Dir) Open(ctx context.Context, o Object) (*os.File, string, error) {
	if d.bucket == nil {
		return d.openLocal(o)
	}
	if sha, ok := d.Known(ctx, o); ok {
		if f, err := d.local.Open(sha); err == nil && f != nil {
			return f, sha, nil
		}
	}
	sha, err := d.fetch(ctx, o)
	if err != nil {
		return nil, "", err
	}
	f, err := d.local.Open(sha)
	if err != nil || f == nil {
		return nil, "", fmt.Errorf("%s: the fetched copy vanished from %s (is the cache bound too small?)", o.Ref, d.local.Dir())
	}
	return f, sha, nil
}

// OpenFile returns the object's content as an open local file, without hashing a local file (a
// caller that reads it whole anyway hashes it then, and tells Remember).
func (d *Dir) OpenFile(ctx context.Context, o Object) (*os.File, error) {
	if d.bucket == nil {
		return os.Open(o.path)
	}
	f, _, err := d.Open(ctx, o)
	return f, err
}

func (d *Dir) openLocal(o Object) (*os.File, string, error) {
	f, err := os.Open(o.path)
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, "", err
	}
	sha := hex.EncodeToString(h.Sum(nil))
	d.Remember(context.Background(), o, sha)
	return f, sha, nil
}

// fetch downloads an object into the local cache.
func (d *Dir) fetch(ctx context.Context, o Object) (string, error) {
	r, err := d.bucket.NewReader(ctx, o.key, nil)
	if err != nil {
		return "", d.storageErr("reading", o.Ref, err)
	}
	defer r.Close()
	sha, _, err := d.local.Ingest(r, d.opts.MaxObject)
	if err != nil {
		if code := gcerrors.Code(err); code != gcerrors.Unknown && code != gcerrors.OK {
			return "", d.storageErr("reading", o.Ref, err)
		}
		return "", fmt.Errorf("%s: fetching: %w", o.Ref, err)
	}
	d.Remember(ctx, o, sha)
	return sha, nil
}

// storageErr says what went wrong with the bucket in words that name the URL and what to check.
func (d *Dir) storageErr(doing, ref string, err error) error {
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		if doing == "listing" {
			return fmt.Errorf("dir %s: the bucket does not exist (%v): check its name", ref, err)
		}
		return fmt.Errorf("%s: the object is gone (%v): was it deleted after the listing?", ref, err)
	case gcerrors.PermissionDenied:
		return fmt.Errorf("%s: access denied %s it (%v): check the credentials and the bucket policy", ref, doing, err)
	}
	return fmt.Errorf("%s: %s: %w", ref, doing, err)
}

// Stat describes one object of the directory by name, as List would. A name whose Unicode form
// differs from the stored one (HCL strings are NFC; a file written on macOS is often named in
// NFD) finds the stored file, and the Object keeps the name asked for.
func (d *Dir) Stat(ctx context.Context, name string) (Object, error) {
	if d.bucket == nil {
		p := filepath.Join(d.root, name)
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			if stored, ok := d.storedName(ctx, name); ok {
				p = filepath.Join(d.root, stored)
				fi, err = os.Stat(p)
			}
		}
		if err != nil {
			return Object{}, err
		}
		return Object{Name: name, Ref: path.Join(filepath.ToSlash(d.name), name), Size: fi.Size(), path: p, version: localVersion(fi)}, nil
	}
	key := d.prefix + name
	a, err := d.bucket.Attributes(ctx, key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		if stored, ok := d.storedName(ctx, name); ok {
			key = d.prefix + stored
			a, err = d.bucket.Attributes(ctx, key)
		}
	}
	if err != nil {
		return Object{}, d.storageErr("reading", d.ref(name), err)
	}
	version := strconv.FormatInt(a.Size, 10) + "@" + a.ModTime.UTC().Format("20060102T150405.000000000")
	if len(a.MD5) > 0 {
		version = strconv.FormatInt(a.Size, 10) + "#" + hex.EncodeToString(a.MD5)
	}
	return Object{Name: name, Ref: d.ref(name), Size: a.Size, key: key, version: version}, nil
}

// storedName finds the object whose name is name in another Unicode normalisation form.
func (d *Dir) storedName(ctx context.Context, name string) (string, bool) {
	want := norm.NFC.String(name)
	objs, err := d.List(ctx)
	if err != nil {
		return "", false
	}
	for _, o := range objs {
		if o.Name != name && norm.NFC.String(o.Name) == want {
			return o.Name, true
		}
	}
	return "", false
}

// ReadRef reads one photo named as image_check's outputs name it: a path (relative to
// opts.BaseDir) or an object URL, parameters included. It returns the bytes and their sha256; a
// bucket object comes through the same local cache as Open.
func ReadRef(ctx context.Context, ref string, opts Options) ([]byte, string, error) {
	dir, name := splitRef(ref)
	d, err := Open(ctx, dir, opts)
	if err != nil {
		return nil, "", err
	}
	defer d.Close()
	o, err := d.Stat(ctx, name)
	if err != nil {
		return nil, "", err
	}
	f, sha, err := d.Open(ctx, o)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", ref, err)
	}
	return data, sha, nil
}

// splitRef splits a ref into its directory (a URL keeps its parameters) and base name.
func splitRef(ref string) (string, string) {
	if !IsURL(ref) {
		return filepath.Dir(ref), filepath.Base(ref)
	}
	base, query, _ := strings.Cut(ref, "?")
	i := strings.LastIndex(base, "/")
	dir, name := base[:i+1], base[i+1:]
	if query != "" {
		dir += "?" + query
	}
	return dir, name
}
