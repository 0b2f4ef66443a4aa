package photo

import (
	"archive/zip"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"
)

// ZipEntry is one prepared photo of a training archive.
type ZipEntry struct {
	// Name is the entry's name (see ZipNames).
	Name string
	// Size is the exact length of what Bytes returns: ZipSize is computed from it before any
	// photo is read, so that an upload can announce its Content-Length.
	Size int64
	// Bytes returns the content. WriteZip calls it once per entry, in name order, and holds one
	// entry's bytes at a time.
	Bytes func(ctx context.Context) ([]byte, error)
}

// zipDate is 1980-01-01 00:00:00 in MS-DOS form, the earliest a zip can say: every entry has it,
// so the archive depends on the photos alone, never on when they were copied.
const zipDate, zipTime = 1<<5 | 1, 0

// Per-entry overhead of an archive as WriteZip writes it: stored entries, no extra fields, no
// data descriptors, no zip64 (the upload limit keeps archives far below 4 GiB).
const (
	localHeaderLen   = 30
	centralHeaderLen = 46
	endRecordLen     = 22
	maxZipBytes      = 1<<32 - 1
)

// ZipSize is the exact size of the archive WriteZip writes for these entries.
func ZipSize(entries []ZipEntry) int64 {
	n := int64(endRecordLen)
	for _, e := range entries {
		n += localHeaderLen + centralHeaderLen + 2*int64(len(e.Name)) + e.Size
	}
	return n
}

// WriteZip streams a deterministic archive of the entries to w: sorted by name, stored (photos
// are compressed already, and stored bytes do not depend on a deflate implementation), mode 0644,
// dated 1980-01-01, no extra fields. It never holds more than one entry in memory, and fails if
// an entry's bytes are not the Size it announced (the archive would not be ZipSize long).
func WriteZip(ctx context.Context, w io.Writer, entries []ZipEntry) error {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b ZipEntry) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Name == sorted[i-1].Name {
			return fmt.Errorf("zip: two entries named %q", sorted[i].Name)
		}
	}
	if total := ZipSize(sorted); total > maxZipBytes {
		return fmt.Errorf("zip: %d bytes is beyond what an archive without zip64 holds", total)
	}
	zw := zip.NewWriter(w)
	for _, e := range sorted {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := e.Bytes(ctx)
		if err != nil {
			return fmt.Errorf("zip: %s: %w", e.Name, err)
		}
		if int64(len(data)) != e.Size {
			return fmt.Errorf("zip: %s is %d bytes, %d were announced (did the photo change?)", e.Name, len(data), e.Size)
		}
		if err := writeEntry(zw, e.Name, data); err != nil {
			return fmt.Errorf("zip: %s: %w", e.Name, err)
		}
	}
	return zw.Close()
}

func writeEntry(zw *zip.Writer, name string, data []byte) error {
	h := &zip.FileHeader{
		Name:               name,
		Method:             zip.Store,
		ModifiedDate:       zipDate,
		ModifiedTime:       zipTime,
		CRC32:              crc32.ChecksumIEEE(data),
		CompressedSize64:   uint64(len(data)),
		UncompressedSize64: uint64(len(data)),
		ReaderVersion:      20,
	}
	h.SetMode(0o644)
	h.CreatorVersion = h.CreatorVersion&0xFF00 | 20
	if !isASCII(name) {
		// CreateRaw, unlike CreateHeader, leaves the language-encoding flag to us: without it an
		// unzipper reads "José.jpg" as CP-437 ("Jos├⌐.jpg"). ASCII names keep the flag clear, as
		// CreateHeader would.
		h.Flags |= 0x800
	}
	fw, err := zw.CreateRaw(h)
	if err != nil {
		return err
	}
	_, err = fw.Write(data)
	return err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// ZipNames gives each original (a base name such as "IMG_1.HEIC") its entry name: the same stem
// with ".jpg", since every prepared copy is a JPEG. When two would clash (a.heic and a.jpg, or
// names that differ only in case, which a trainer on a case-insensitive disk would merge), a file
// already called stem.jpg keeps it and the others get stem-2.jpg, stem-3.jpg… in name order. The
// result depends only on the set of names, not on their order.
func ZipNames(originals []string) []string {
	order := make([]int, len(originals))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(originals[a], originals[b]) })
	out := make([]string, len(originals))
	taken := map[string]bool{}
	claim := func(i int, name string) bool {
		if taken[strings.ToLower(name)] {
			return false
		}
		taken[strings.ToLower(name)] = true
		out[i] = name
		return true
	}
	for _, exact := range []bool{true, false} { // files already named stem.jpg first
		for _, i := range order {
			if want := stem(originals[i]) + ".jpg"; out[i] == "" && (originals[i] == want) == exact {
				claim(i, want)
			}
		}
	}
	for _, i := range order {
		for n := 2; out[i] == ""; n++ {
			claim(i, stem(originals[i])+"-"+strconv.Itoa(n)+".jpg")
		}
	}
	return out
}

// stem is a base name without its extension, with any path separator made harmless.
func stem(name string) string {
	name = strings.NewReplacer("/", "_", "\\", "_").Replace(name)
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	if name == "" || name == "." {
		return "photo"
	}
	return name
}
