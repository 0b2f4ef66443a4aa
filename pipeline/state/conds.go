package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	azblobblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/gofrs/flock"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

var (
	// errPrecondition: the object exists (create) or changed since it was read (replace, remove).
	errPrecondition = errors.New("precondition failed")
	errNotFound     = errors.New("object not found")
)

// conds are the conditional object operations remote state is built on. A version is an opaque
// token from read: an S3 or Azure ETag, a GCS generation, or a content hash where the store itself
// enforces the condition under a lock.
type conds interface {
	read(ctx context.Context, obj string) (data []byte, version string, err error)
	// create writes obj only if it does not exist (errPrecondition otherwise).
	create(ctx context.Context, obj string, data []byte) error
	// replace writes obj only if its version is still version.
	replace(ctx context.Context, obj string, data []byte, version string) error
	// remove deletes obj only if its version is still version ("" = unconditionally).
	remove(ctx context.Context, obj, version string) error
	// write writes obj unconditionally (backups).
	write(ctx context.Context, obj string, data []byte) error
}

func mapErr(err error) error {
	switch gcerrors.Code(err) {
	case gcerrors.OK:
		return nil
	case gcerrors.NotFound:
		return fmt.Errorf("%w: %v", errNotFound, err)
	case gcerrors.FailedPrecondition:
		return fmt.Errorf("%w: %v", errPrecondition, err)
	}
	return err
}

// nativeConds uses the service's own preconditions, reached through the blob API's As hooks.
type nativeConds struct {
	b       *blob.Bucket
	service string // s3, gs, azblob
	calls   *atomic.Int64
}

func (c *nativeConds) read(ctx context.Context, obj string) ([]byte, string, error) {
	c.calls.Add(1)
	r, err := c.b.NewReader(ctx, obj, nil)
	if err != nil {
		return nil, "", mapErr(err)
	}
	defer r.Close()
	ver, err := c.version(r)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", obj, err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, "", mapErr(err)
	}
	return data, ver, nil
}

// version takes the version token from the service's own read response, so the data and the
// token belong to the same object version.
func (c *nativeConds) version(r *blob.Reader) (string, error) {
	switch c.service {
	case "s3":
		var out s3.GetObjectOutput
		if r.As(&out) && aws.ToString(out.ETag) != "" {
			return aws.ToString(out.ETag), nil
		}
	case "gs":
		var sr *storage.Reader
		if r.As(&sr) && sr != nil && sr.Attrs.Generation != 0 {
			return strconv.FormatInt(sr.Attrs.Generation, 10), nil
		}
	case "azblob":
		var resp azblobblob.DownloadStreamResponse
		if r.As(&resp) && resp.ETag != nil {
			return string(*resp.ETag), nil
		}
	}
	return "", fmt.Errorf("the %s service returned no ETag/generation, which compare-and-swap needs", c.service)
}

func (c *nativeConds) create(ctx context.Context, obj string, data []byte) error {
	c.calls.Add(1)
	// IfNotExist is the service's own conditional create for s3 (If-None-Match: *), gs
	// (DoesNotExist precondition) and azblob (If-None-Match: *).
	return mapErr(c.upload(ctx, obj, data, &blob.WriterOptions{IfNotExist: true, ContentType: "application/json"}))
}

func (c *nativeConds) replace(ctx context.Context, obj string, data []byte, version string) error {
	c.calls.Add(1)
	opts := &blob.WriterOptions{ContentType: "application/json", BeforeWrite: func(as func(any) bool) error {
		return c.ifMatchWrite(as, version)
	}}
	return mapErr(c.upload(ctx, obj, data, opts))
}

// upload writes through Bucket.Upload rather than WriteAll: gocloud.dev v0.47.0's azureblob
// writer panics in Close (a nil pipe reader) when an upload that went through Write fails, which
// is exactly what a refused conditional write does; the Upload path does not touch that pipe.
func (c *nativeConds) upload(ctx context.Context, obj string, data []byte, opts *blob.WriterOptions) error {
	return c.b.Upload(ctx, obj, bytes.NewReader(data), opts)
}

// ifMatchWrite sets "write only if the object is still at version" on the service's request.
func (c *nativeConds) ifMatchWrite(as func(any) bool, version string) error {
	switch c.service {
	case "s3":
		var in *transfermanager.UploadObjectInput
		if as(&in) {
			in.IfMatch = aws.String(version)
			return nil
		}
	case "gs":
		var h **storage.ObjectHandle
		if as(&h) {
			return gcsIfGeneration(h, version)
		}
	case "azblob":
		var o *azblob.UploadStreamOptions
		if as(&o) {
			azureIfMatch(&o.AccessConditions, version)
			return nil
		}
	}
	return fmt.Errorf("cannot set a write precondition on %s through gocloud.dev/blob", c.service)
}

// gcsIfGeneration makes a GCS request conditional on the object's generation.
func gcsIfGeneration(h **storage.ObjectHandle, version string) error {
	gen, err := strconv.ParseInt(version, 10, 64)
	if err != nil {
		return fmt.Errorf("bad GCS generation %q", version)
	}
	*h = (*h).If(storage.Conditions{GenerationMatch: gen})
	return nil
}

// azureIfMatch makes an Azure request conditional on the blob's ETag.
func azureIfMatch(ac **azblobblob.AccessConditions, version string) {
	etag := azcore.ETag(version)
	if *ac == nil {
		*ac = &azblobblob.AccessConditions{}
	}
	if (*ac).ModifiedAccessConditions == nil {
		(*ac).ModifiedAccessConditions = &azblobblob.ModifiedAccessConditions{}
	}
	(*ac).ModifiedAccessConditions.IfMatch = &etag
}

func (c *nativeConds) remove(ctx context.Context, obj, version string) error {
	c.calls.Add(1)
	var opts *blob.DeleteOptions
	if version != "" {
		opts = &blob.DeleteOptions{BeforeDelete: func(as func(any) bool) error { return c.ifMatchDelete(as, version) }}
	}
	return mapErr(c.b.DeleteWithOptions(ctx, obj, opts))
}

func (c *nativeConds) ifMatchDelete(as func(any) bool, version string) error {
	switch c.service {
	case "s3":
		var in *s3.DeleteObjectInput
		if as(&in) {
			in.IfMatch = aws.String(version)
			return nil
		}
	case "gs":
		var h **storage.ObjectHandle
		if as(&h) {
			return gcsIfGeneration(h, version)
		}
	case "azblob":
		var o *azblobblob.DeleteOptions
		if as(&o) {
			azureIfMatch(&o.AccessConditions, version)
			return nil
		}
	}
	return fmt.Errorf("cannot set a delete precondition on %s through gocloud.dev/blob", c.service)
}

func (c *nativeConds) write(ctx context.Context, obj string, data []byte) error {
	c.calls.Add(1)
	return mapErr(c.upload(ctx, obj, data, &blob.WriterOptions{ContentType: "application/json"}))
}

// serialConds makes a store without preconditions conditional by doing every conditional
// read-compare-write under one lock that all writers of the store take: a mutex for mem:// (one
// process), an OS file lock for file:// (all processes on the machine, or sharing the directory on
// a file system with working flock). Versions are content hashes; every object we write is unique
// (serials, lock ids, refresh times), so equal hashes mean an unchanged object.
type serialConds struct {
	b     *blob.Bucket
	lock  sync.Locker
	calls *atomic.Int64
	// root, when set (file://), is the bucket directory: the OS lock guarding an object is
	// DIR/.state-cas.lock in the object's own directory, so every store that reaches that
	// directory - through any URL prefix - takes the same lock.
	root string
	fmu  sync.Mutex
	fls  map[string]*flock.Flock
}

func newFileConds(b *blob.Bucket, root string, calls *atomic.Int64) *serialConds {
	return &serialConds{b: b, lock: &sync.Mutex{}, calls: calls, root: root, fls: map[string]*flock.Flock{}}
}

func hashVersion(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func (c *serialConds) critical(ctx context.Context, obj string, fn func() error) error {
	c.lock.Lock()
	defer c.lock.Unlock()
	if c.root != "" {
		p := filepath.Join(c.root, filepath.FromSlash(path.Dir(obj)), ".state-cas.lock")
		c.fmu.Lock()
		fl := c.fls[p]
		if fl == nil {
			fl = flock.New(p, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o644))
			c.fls[p] = fl
		}
		c.fmu.Unlock()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		ok, err := fl.TryLockContext(ctx, 5*time.Millisecond)
		if err != nil || !ok {
			return fmt.Errorf("taking %s: %v", p, err)
		}
		defer fl.Unlock()
	}
	return fn()
}

func (c *serialConds) read(ctx context.Context, obj string) ([]byte, string, error) {
	c.calls.Add(1)
	data, err := c.b.ReadAll(ctx, obj)
	if err != nil {
		return nil, "", mapErr(err)
	}
	return data, hashVersion(data), nil
}

func (c *serialConds) create(ctx context.Context, obj string, data []byte) error {
	return c.critical(ctx, obj, func() error {
		c.calls.Add(1)
		ok, err := c.b.Exists(ctx, obj)
		if err != nil {
			return mapErr(err)
		}
		if ok {
			return fmt.Errorf("%w: %s exists", errPrecondition, obj)
		}
		c.calls.Add(1)
		return mapErr(c.b.WriteAll(ctx, obj, data, nil))
	})
}

func (c *serialConds) check(ctx context.Context, obj, version string) error {
	c.calls.Add(1)
	cur, err := c.b.ReadAll(ctx, obj)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return fmt.Errorf("%w: %s no longer exists", errPrecondition, obj)
		}
		return mapErr(err)
	}
	if hashVersion(cur) != version {
		return fmt.Errorf("%w: %s changed", errPrecondition, obj)
	}
	return nil
}

func (c *serialConds) replace(ctx context.Context, obj string, data []byte, version string) error {
	return c.critical(ctx, obj, func() error {
		if err := c.check(ctx, obj, version); err != nil {
			return err
		}
		c.calls.Add(1)
		return mapErr(c.b.WriteAll(ctx, obj, data, nil))
	})
}

func (c *serialConds) remove(ctx context.Context, obj, version string) error {
	return c.critical(ctx, obj, func() error {
		if version != "" {
			if err := c.check(ctx, obj, version); err != nil {
				return err
			}
		}
		c.calls.Add(1)
		return mapErr(c.b.Delete(ctx, obj))
	})
}

func (c *serialConds) write(ctx context.Context, obj string, data []byte) error {
	c.calls.Add(1)
	return mapErr(c.b.WriteAll(ctx, obj, data, nil))
}
