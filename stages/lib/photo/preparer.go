package photo

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// FigureStore keeps small figures shared by every runner (pipeline.Cache is one): Preparer keeps
// the size of each prepared copy there, never the copy itself.
type FigureStore interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, data []byte) error
}

// DefaultCopiesBytes bounds the prepared copies kept on one machine: about 500 copies of a
// 12 MP photo at 2048 px (≈ 2 MB each), ten subjects' worth.
const DefaultCopiesBytes = 1 << 30

// Preparer makes prepared copies once per content: copies are kept in a local DiskCache (they
// are photos, so never in the shared store), their sizes in a FigureStore so that a plan on
// another runner knows the zip's size without preparing anything.
type Preparer struct {
	MaxSide int
	// Copies keeps prepared copies on this machine; nil keeps none.
	Copies *DiskCache
	// Sizes keeps the copies' sizes; nil keeps none.
	Sizes FigureStore
}

func (p *Preparer) maxSide() int {
	if p.MaxSide <= 0 {
		return DefaultMaxSide
	}
	return p.MaxSide
}

// key names a copy by what decides its bytes: the original's content, max_side, the way copies
// are made.
func (p *Preparer) key(sha string) string {
	return sha + "-" + strconv.Itoa(p.maxSide()) + "-v" + strconv.Itoa(PrepareVersion) + ".jpg"
}

// Prepared returns the prepared copy of the photo with content digest sha.
func (p *Preparer) Prepared(ctx context.Context, sha string, original func(context.Context) ([]byte, error)) ([]byte, error) {
	if p.Copies != nil {
		if data, ok, err := p.Copies.Get(p.key(sha)); err == nil && ok {
			return data, nil
		}
	}
	raw, err := original(ctx)
	if err != nil {
		return nil, err
	}
	data, err := Prepare(ctx, raw, p.maxSide())
	if err != nil {
		return nil, err
	}
	if p.Copies != nil {
		_ = p.Copies.Put(p.key(sha), data) // a copy not kept is only made again
	}
	p.putSize(ctx, sha, int64(len(data)))
	return data, nil
}

type sizeFigure struct {
	Bytes int64 `json:"bytes"`
}

// Size is the length of the photo's prepared copy, from the figures when known.
func (p *Preparer) Size(ctx context.Context, sha string, original func(context.Context) ([]byte, error)) (int64, error) {
	if p.Sizes != nil {
		if raw, ok, err := p.Sizes.Get(ctx, "photo/prepared/"+p.key(sha)); err == nil && ok {
			var f sizeFigure
			if json.Unmarshal(raw, &f) == nil && f.Bytes > 0 {
				return f.Bytes, nil
			}
		}
	}
	data, err := p.Prepared(ctx, sha, original)
	if err != nil {
		return 0, err
	}
	return int64(len(data)), nil
}

func (p *Preparer) putSize(ctx context.Context, sha string, n int64) {
	if p.Sizes == nil {
		return
	}
	raw, _ := json.Marshal(sizeFigure{Bytes: n})
	_ = p.Sizes.Put(ctx, "photo/prepared/"+p.key(sha), raw) // a figure not kept is only computed again
}

// Entry is the zip entry of one photo: its name, its prepared size and its prepared bytes.
func (p *Preparer) Entry(ctx context.Context, name, sha string, original func(context.Context) ([]byte, error)) (ZipEntry, error) {
	n, err := p.Size(ctx, sha, original)
	if err != nil {
		return ZipEntry{}, fmt.Errorf("preparing %s: %w", name, err)
	}
	return ZipEntry{Name: name, Size: n, Bytes: func(ctx context.Context) ([]byte, error) {
		return p.Prepared(ctx, sha, original)
	}}, nil
}
