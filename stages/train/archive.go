package train

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// zipEpoch is the timestamp every zip entry carries, so that the archive depends only on the photos'
// names and bytes, never on when they were copied or touched.
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// imageFile is one photo that goes into the training archive.
type imageFile struct {
	// Name is the entry name inside the zip (the file's base name).
	Name string
	// Path is where it is read from.
	Path string
}

// collectImages resolves paths against baseDir and orders them by entry name. Two photos with the same
// base name would collide inside the flat zip the trainer expects, so that is an error.
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
		full := p
		if !filepath.IsAbs(full) && baseDir != "" {
			full = filepath.Join(baseDir, full)
		}
		name := filepath.Base(full)
		if other, dup := seen[name]; dup {
			if other == full {
				continue // the same file listed twice adds nothing
			}
			return nil, fmt.Errorf("images %s and %s share the file name %q: the training zip is flat, rename one of them", other, full, name)
		}
		seen[name] = full
		files = append(files, imageFile{Name: name, Path: full})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// digestImages hashes the photos' names and contents in name order: the same photos always give the
// same digest, whatever their timestamps, and it costs one read of each file (no zip is built).
func digestImages(files []imageFile) (string, error) {
	h := sha256.New()
	for _, f := range files {
		fh, err := os.Open(f.Path)
		if err != nil {
			return "", fmt.Errorf("image %s: %w (was it moved after image_check ran?)", f.Path, err)
		}
		c := sha256.New()
		n, err := io.Copy(c, fh)
		fh.Close()
		if err != nil {
			return "", fmt.Errorf("image %s: reading: %w", f.Path, err)
		}
		// name, size and content hash, length-prefixed so that no two file lists hash alike.
		io.WriteString(h, strconv.Itoa(len(f.Name)))
		io.WriteString(h, ":")
		io.WriteString(h, f.Name)
		io.WriteString(h, strconv.FormatInt(n, 10))
		io.WriteString(h, ":")
		h.Write(c.Sum(nil))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// buildZip writes the photos into a zip with sorted names, fixed timestamps and fixed modes, stored
// without compression (photos are already compressed, and stored entries do not depend on the
// deflate implementation): the same photos give the same bytes. It returns the archive and its sha256.
func buildZip(files []imageFile) ([]byte, string, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			return nil, "", fmt.Errorf("image %s: %w (was it moved after image_check ran?)", f.Path, err)
		}
		hdr := &zip.FileHeader{Name: f.Name, Method: zip.Store, Modified: zipEpoch}
		hdr.SetMode(0o644)
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return nil, "", fmt.Errorf("zipping %s: %w", f.Path, err)
		}
		if _, err := w.Write(data); err != nil {
			return nil, "", fmt.Errorf("zipping %s: %w", f.Path, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("finishing the training zip: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:]), nil
}
