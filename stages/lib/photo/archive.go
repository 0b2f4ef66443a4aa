package photo

import (
	"context"
	"fmt"
	"io"
)

// UploadLimit is the largest file Replicate's files API takes (its 413 says "exceeds the maximum
// size of 100 MiB").
const UploadLimit = 100 << 20

// Original is one photo that goes into a training archive.
type Original struct {
	// Name is its base name ("IMG_0001.HEIC"); the entry gets ZipNames' name for it.
	Name string
	// Source is where it is kept (a path or URL), to name it in errors; Name when empty.
	Source string
	// SHA is its content's sha256 (hex), which keys the prepared copy.
	SHA string
	// Size is the original's length, for the plan's "originals" figure.
	Size int64
	// Read returns its bytes; called only when the prepared copy is not cached.
	Read func(ctx context.Context) ([]byte, error)
}

// Archive is a training zip, planned: every entry's name and prepared size is known, nothing is
// held but those figures.
type Archive struct {
	Entries   []ZipEntry
	Originals int64 // bytes of the originals
	Size      int64 // exact bytes of the zip
	MaxSide   int
}

// Archive plans the zip of the originals: names from ZipNames, sizes from the figures or by
// preparing (and caching) the copies.
func (p *Preparer) Archive(ctx context.Context, originals []Original) (*Archive, error) {
	names := make([]string, len(originals))
	for i, o := range originals {
		names[i] = o.Name
	}
	names = ZipNames(names)
	a := &Archive{MaxSide: p.maxSide()}
	for i, o := range originals {
		e, err := p.Entry(ctx, names[i], o.SHA, o.Read)
		if err != nil {
			if o.Source != "" {
				return nil, fmt.Errorf("image %s: %w", o.Source, err)
			}
			return nil, err
		}
		a.Entries = append(a.Entries, e)
		a.Originals += o.Size
	}
	a.Size = ZipSize(a.Entries)
	return a, nil
}

// Summary is the plan's line: "uploads 19 photos, 38 MB after preparing (originals 122 MB)".
func (a *Archive) Summary() string {
	return fmt.Sprintf("uploads %d photos, %s after preparing (originals %s)", len(a.Entries), megabytes(a.Size), megabytes(a.Originals))
}

// OverLimit says why the zip cannot be uploaded and what to do, or "" when it can.
func (a *Archive) OverLimit() string {
	if a.Size <= UploadLimit {
		return ""
	}
	return fmt.Sprintf("the training zip is %s after preparing %d photos at max_side %d, over the files API's limit of 100 MiB (104.9 MB): lower max_side or remove photos",
		megabytes(a.Size), len(a.Entries), a.MaxSide)
}

// WriteTo streams the zip (a.Size bytes) to w.
func (a *Archive) WriteTo(ctx context.Context, w io.Writer) error {
	return WriteZip(ctx, w, a.Entries)
}

func megabytes(n int64) string {
	if n < 10e6 {
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}
