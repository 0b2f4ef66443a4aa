package photo

import (
	"context"
	"fmt"
	"image"
	"io"
	"runtime/debug"
	"sync/atomic"
	_ "unsafe" // for go:linkname

	"github.com/gen2brain/avif"
	_ "github.com/gen2brain/heic" // linked for its WebAssembly decoder, below
)

// HEIC and AVIF are decoded by libheif/libde265 and libavif/dav1d compiled to WebAssembly and run
// by wazero, inside the process: pure Go, the same pixels on every machine.
//
// Both libraries would rather use a system libheif/libavif: their init dlopens libheif.so /
// libavif.so (when the binary is dynamically linked) and their Decode then goes to it, with
// whatever version and build flags that machine has. Only the `nodynamic` build tag stops the
// dlopen, and no code can run before a dependency's init, nor reset its unexported `dynamic`
// flag. So we never call their Decode: we link to the WebAssembly decoder behind it, which takes
// the same path whatever the machine has. Plain `go run`/`go test` need no flag; building with
// `-tags nodynamic` additionally skips the (then useless) dlopen at start-up.
//
// The signatures are those of heic v0.4.5 (decode.go) and avif v0.4.4 (avif_wazero.go); a
// renamed function fails the link, and TestLinkedDecodersMatchPublicOnes compares these with the
// public Decode (which is the same code on a machine without the system libraries).

//go:linkname heicWasmDecode github.com/gen2brain/heic.decode
func heicWasmDecode(r io.Reader, configOnly bool) (image.Image, image.Config, error)

//go:linkname avifWasmDecode github.com/gen2brain/avif.decode
func avifWasmDecode(r io.Reader, configOnly, decodeAll bool) (*avif.AVIF, image.Config, error)

// wasmSlot lets one HEIC/AVIF decode run at a time in the whole process: one 12 MP HEIC takes
// seconds and a few hundred MB inside the WebAssembly memory, and two at once only add memory.
var wasmSlot = make(chan struct{}, 1)

// wasmActive and wasmPeak count decodes inside the slot, for the test that there is only ever one.
var wasmActive, wasmPeak atomic.Int32

// wasmDecode runs one decode under wasmSlot; a trap or panic inside the decoder is an error.
func wasmDecode(ctx context.Context, f Format, data []byte) (img image.Image, err error) {
	select {
	case wasmSlot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-wasmSlot }()
	n := wasmActive.Add(1)
	defer wasmActive.Add(-1)
	for p := wasmPeak.Load(); n > p && !wasmPeak.CompareAndSwap(p, n); p = wasmPeak.Load() {
	}
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, fmt.Errorf("%s decoder failed: %v", f.Name(), r)
		}
	}()
	wasmDecodes.Add(1)
	img, err = wasmDecodeRaw(f, data)
	if err != nil {
		return nil, err
	}
	img = compact(img)
	// The decoder's memory (hundreds of MB for a 12 MP photo) is garbage now; hand it back before
	// the next decode allocates its own, or two of them would be resident at once.
	debug.FreeOSMemory()
	return img, nil
}

// wasmDecodeRaw calls the linked decoder; its pixels are still inside the decoder's memory.
func wasmDecodeRaw(f Format, data []byte) (image.Image, error) {
	if f == AVIF {
		a, _, err := avifWasmDecode(bytesReader(data), false, false)
		if err != nil {
			return nil, err
		}
		if len(a.Image) == 0 {
			return nil, fmt.Errorf("no image")
		}
		return a.Image[0], nil
	}
	img, _, err := heicWasmDecode(bytesReader(data), false)
	return img, err
}

// compact copies pixels out of the decoder's WebAssembly memory, of which they are a slice: held
// by the image, they would keep that whole memory (hundreds of MB) alive.
func compact(img image.Image) image.Image {
	switch m := img.(type) {
	case *image.YCbCr:
		c := *m
		c.Y = append([]uint8(nil), m.Y...)
		c.Cb = append([]uint8(nil), m.Cb...)
		c.Cr = append([]uint8(nil), m.Cr...)
		return &c
	case *image.RGBA:
		c := *m
		c.Pix = append([]uint8(nil), m.Pix...)
		return &c
	case *image.NRGBA:
		c := *m
		c.Pix = append([]uint8(nil), m.Pix...)
		return &c
	case *image.Gray:
		c := *m
		c.Pix = append([]uint8(nil), m.Pix...)
		return &c
	}
	return img
}
