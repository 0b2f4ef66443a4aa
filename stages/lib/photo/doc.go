// Package photo reads the photos people actually have and makes the copies a trainer should get.
// image_check uses it to read and measure every photo; train uses it to build the training zip.
//
//	meta, _ := photo.Probe(f)                   // header only: format, displayed size, colours
//	img, meta, _ := photo.Decode(ctx, data)     // JPEG, PNG, WebP, HEIC/HEIF, AVIF
//	upright := meta.Pending.Apply(imaging.Clone(img))
//	jpg, _ := photo.Prepare(ctx, data, 2048)    // upright sRGB JPEG, ≤ 2048 px, no metadata
//
//	names := photo.ZipNames([]string{"a.heic", "a.jpg"}) // ["a-2.jpg", "a.jpg"]
//	entries := []photo.ZipEntry{{Name: names[0], Size: int64(len(jpg)), Bytes: ...}}
//	size := photo.ZipSize(entries)              // exact, before anything is read
//	err := photo.WriteZip(ctx, w, entries)      // streamed, deterministic bytes
//
// The content decides the format, never the file name (Sniff). HEIC and AVIF are decoded by
// libheif and libavif compiled to WebAssembly (see wasm.go): pure Go, one at a time per process,
// the same pixels everywhere. Each photo is turned upright exactly once: by its EXIF orientation
// (JPEG, PNG, WebP) or by HEIF's irot/imir (HEIC, AVIF), never both. Display P3, what iPhones
// write, is converted to sRGB by its standard matrix, since the profile is dropped; sRGB and
// untagged photos pass through; other profiles pass through unconverted (Colour.Note says so).
//
// Prepared copies are deterministic: the same original and max side give the same bytes on every
// machine and architecture, because resampling and colour conversion are integer arithmetic
// (resize.go says why floats would not be) and Go's JPEG encoder is. Preparer caches them by
// content in a bounded DiskCache on the local disk, and their sizes in a shared FigureStore.
package photo
