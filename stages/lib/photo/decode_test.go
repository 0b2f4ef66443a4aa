package photo

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/png"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/disintegration/imaging"
	"github.com/gen2brain/heic"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
)

func TestSniffDecidesByContent(t *testing.T) {
	ftyp := func(major string, compat ...string) []byte {
		b := []byte{0, 0, 0, byte(16 + 4*len(compat))}
		b = append(b, "ftyp"+major+"\x00\x00\x00\x00"...)
		for _, c := range compat {
			b = append(b, c...)
		}
		return append(b, make([]byte, 16)...)
	}
	cases := map[Format][][]byte{
		JPEG:    {{0xFF, 0xD8, 0xFF, 0xE0}},
		PNG:     {[]byte("\x89PNG\r\n\x1a\n....")},
		WebP:    {[]byte("RIFF\x00\x00\x00\x00WEBPVP8 ")},
		GIF:     {[]byte("GIF89a......")},
		TIFF:    {[]byte("II*\x00\x08\x00\x00\x00"), []byte("MM\x00*\x00\x00\x00\x08")},
		BMP:     {append([]byte("BM"), make([]byte, 20)...)},
		Text:    {[]byte("<html>a web page saved as .jpg</html>\n")},
		Unknown: {{0x00, 0x01, 0x02, 0x03}, ftyp("isom", "mp41")},
		HEIC: {ftyp("heic", "mif1", "heic"), ftyp("mif1", "heix"), ftyp("hevc"), ftyp("heim"), ftyp("heis"),
			ftyp("msf1", "hevc"), ftyp("mif1")},
		AVIF: {ftyp("avif", "mif1", "miaf"), ftyp("mif1", "avif"), ftyp("avis", "msf1")},
	}
	for want, heads := range cases {
		for _, h := range heads {
			if got := Sniff(h); got != want {
				t.Errorf("Sniff(%q) = %s, want %s", h[:min(len(h), 16)], got, want)
			}
		}
	}
	for _, f := range []Format{GIF, TIFF, BMP} {
		if f.Readable() || !strings.Contains(UnsupportedReason(f), "export") {
			t.Errorf("%s: readable %v, reason %q", f, f.Readable(), UnsupportedReason(f))
		}
	}
	if r := UnsupportedReason(TIFF); r != "TIFF is not supported: export as JPEG" {
		t.Errorf("TIFF reason %q", r)
	}
}

func TestProbeReadsHeadersOnly(t *testing.T) {
	for _, tc := range []struct {
		file string
		w, h int
	}{{"portrait.jpg", 480, 600}, {"portrait.heic", 480, 600}, {"portrait.avif", 480, 600}, {"sideways.heic", 600, 480}} {
		m, err := Probe(bytes.NewReader(readTestdata(t, tc.file)))
		if err != nil || m.Width != tc.w || m.Height != tc.h {
			t.Errorf("%s: %dx%d (%v), want %dx%d", tc.file, m.Width, m.Height, err, tc.w, tc.h)
		}
	}
	// irot 90° or 270° swaps the displayed size, from the header.
	turned, err := phototest.WithProperties(readTestdata(t, "sideways.heic"), phototest.Irot(3))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := Probe(bytes.NewReader(turned)); err != nil || m.Width != 480 || m.Height != 600 || m.Turn != 6 {
		t.Errorf("irot 270°: %+v %v", m, err)
	}
	// A 60000×60000 HEIC "bomb": its header says so, and Probe reads no media data to find out.
	bomb := heifWithSize(t, readTestdata(t, "portrait.heic"), 60000, 60000)
	r := &countingReader{r: bytes.NewReader(bomb)}
	before := wasmDecodes.Load()
	m, err := Probe(r)
	if err != nil || m.Width != 60000 || m.Height != 60000 {
		t.Fatalf("bomb: %+v %v", m, err)
	}
	if r.n > 4096 {
		t.Errorf("probing read %d bytes of a %d-byte file", r.n, len(bomb))
	}
	if wasmDecodes.Load() != before {
		t.Error("probing decoded")
	}
}

// heifWithSize rewrites the ispe of a HEIF file.
func heifWithSize(t *testing.T, data []byte, w, h uint32) []byte {
	t.Helper()
	out := append([]byte{}, data...)
	i := bytes.Index(out, []byte("ispe"))
	if i < 0 {
		t.Fatal("no ispe")
	}
	binary.BigEndian.PutUint32(out[i+8:], w)
	binary.BigEndian.PutUint32(out[i+12:], h)
	return out
}

type countingReader struct {
	r interface {
		Read([]byte) (int, error)
	}
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestHEICAndAVIFDecodeLikeJPEG: the same picture saved as JPEG (quality 92), HEIC and AVIF
// (quality 70) decodes to nearly the same pixels. 30 dB PSNR is what two lossy codecs of the same
// picture reach and what a wrong turn, colour coding or channel order never does (those measure
// under 15 dB here, see the negative check).
func TestHEICAndAVIFDecodeLikeJPEG(t *testing.T) {
	ref, _ := upright(t, readTestdata(t, "portrait.jpg"))
	for _, f := range []string{"portrait.heic", "portrait.avif", "p3.heic"} {
		img, m := upright(t, readTestdata(t, f))
		if p := psnr(t, ref, img); p < 30 {
			t.Errorf("%s: PSNR %.1f dB against the JPEG (%+v)", f, p, m)
		}
		if p := psnr(t, ref, imaging.FlipH(img)); p > 20 {
			t.Errorf("%s: a mirrored picture still scores %.1f dB: the check cannot fail", f, p)
		}
	}
}

// TestHEIFTransformsAppliedOnce gives the sideways photo (stored turned 90° anticlockwise, with
// an EXIF orientation 6 that a HEIF reader must ignore) each irot/imir combination and checks
// that the displayed picture is the stored one turned by exactly that transform: libheif applies
// it for HEIC, this package for AVIF, and nobody applies the EXIF orientation on top.
func TestHEIFTransformsAppliedOnce(t *testing.T) {
	combos := map[Orientation][]phototest.Property{
		1: nil,
		8: {phototest.Irot(1)},
		3: {phototest.Irot(2)},
		6: {phototest.Irot(3)},
		4: {phototest.Imir(0)},
		2: {phototest.Imir(1)},
		5: {phototest.Irot(1), phototest.Imir(0)}, // turn, then mirror top-bottom: a transpose
		7: {phototest.Irot(1), phototest.Imir(1)}, // turn, then mirror left-right: a transverse
	}
	ref, _ := upright(t, readTestdata(t, "portrait.jpg"))
	for _, file := range []string{"sideways.heic", "sideways.avif"} {
		stored, _ := upright(t, readTestdata(t, file))
		for want, props := range combos {
			data, err := phototest.WithProperties(readTestdata(t, file), props...)
			if err != nil {
				t.Fatal(err)
			}
			got, m := upright(t, data)
			if m.Turn != want {
				t.Errorf("%s %d: container says %d", file, want, m.Turn)
			}
			// AVIF is turned here, in RGB: exactly. libheif turns a HEIC's YCbCr planes before
			// converting, which moves the subsampled chroma a little: 40 dB.
			min := math.Inf(1)
			if file == "sideways.heic" {
				min = 40
			}
			if p := psnr(t, want.Apply(stored), got); p < min {
				t.Errorf("%s, transform %d: %.1f dB from the stored picture turned once", file, want, p)
			}
			if want == 6 { // the turn that makes this photo upright
				if p := psnr(t, ref, got); p < 30 {
					t.Errorf("%s with irot 270°: %.1f dB from the upright picture", file, p)
				}
			}
		}
	}
}

// TestEXIFOrientationsAllUpright stores the upright picture as each of the eight EXIF
// orientations ask (JPEG and PNG) and checks that decoding turns each back exactly.
func TestEXIFOrientationsAllUpright(t *testing.T) {
	want, _ := upright(t, readTestdata(t, "portrait.jpg"))
	for o := Orientation(1); o <= 8; o++ {
		stored := inverse(o).Apply(want)
		jpg := phototest.WithMetadata(pngToJPEG(t, stored), phototest.Metadata{Orientation: int(o)})
		for name, data := range map[string][]byte{"jpeg": jpg, "png": pngWithEXIF(t, stored, o)} {
			img, m, err := Decode(context.Background(), data)
			if err != nil {
				t.Fatal(err)
			}
			got := m.Pending.Apply(imaging.Clone(img))
			if m.Width != 480 || m.Height != 600 || m.Turn != o {
				t.Errorf("%s %d: %dx%d turn %d", name, o, m.Width, m.Height, m.Turn)
			}
			min := 40.0
			if name == "png" {
				min = math.Inf(1)
			}
			if p := psnr(t, want, got); p < min {
				t.Errorf("%s orientation %d: %.1f dB from upright", name, o, p)
			}
		}
	}
}

// inverse is the orientation that undoes o.
func inverse(o Orientation) Orientation {
	for p := Orientation(1); p <= 8; p++ {
		if p.then(o) == Upright {
			return p
		}
	}
	panic("no inverse")
}

func pngToJPEG(t *testing.T, img image.Image) []byte {
	t.Helper()
	return phototest.JPEG(img, 95)
}

// pngWithEXIF encodes img as PNG with an eXIf chunk before IDAT.
func pngWithEXIF(t *testing.T, img image.Image, o Orientation) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	jpg := phototest.WithMetadata([]byte{0xFF, 0xD8}, phototest.Metadata{Orientation: int(o)})
	tiff := jpg[2+4+6:]
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(tiff)))
	chunk = append(chunk, "eXIf"...)
	chunk = append(chunk, tiff...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32PNG(chunk[4:]))
	data := b.Bytes()
	at := 8 + 25 // after the signature and IHDR
	return append(append(append([]byte{}, data[:at]...), chunk...), data[at:]...)
}

func crc32PNG(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

func TestOrientationParsing(t *testing.T) {
	base := phototest.JPEG(image.NewGray(image.Rect(0, 0, 8, 8)), 90)
	for o := 1; o <= 8; o++ {
		if got := exifOrientation(JPEG, phototest.WithMetadata(base, phototest.Metadata{Orientation: o, GPS: true, Serial: "X1"})); got != Orientation(o) {
			t.Errorf("orientation %d: got %d", o, got)
		}
	}
	if got := exifOrientation(JPEG, base); got != Upright {
		t.Errorf("no EXIF: %d", got)
	}
	bad := append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x10}, []byte("Exif\x00\x00MM\x00\x2A\xFF\xFF\xFF\xFF")...)
	if got := exifOrientation(JPEG, append(bad, base[2:]...)); got != Upright {
		t.Errorf("corrupt EXIF: %d", got)
	}
	// WebP: RIFF header, a VP8X chunk, then an EXIF chunk (with the "Exif\0\0" prefix some
	// writers add).
	jpg := phototest.WithMetadata([]byte{0xFF, 0xD8}, phototest.Metadata{Orientation: 8})
	exif := jpg[2+4:]
	var w bytes.Buffer
	w.WriteString("RIFF\x00\x00\x00\x00WEBPVP8X")
	binary.Write(&w, binary.LittleEndian, uint32(10))
	w.Write(make([]byte, 10))
	w.WriteString("EXIF")
	binary.Write(&w, binary.LittleEndian, uint32(len(exif)))
	w.Write(exif)
	if got := exifOrientation(WebP, w.Bytes()); got != 8 {
		t.Errorf("webp orientation: got %d", got)
	}
	if exifOrientation(HEIC, readTestdata(t, "sideways.heic")) != Upright {
		t.Error("a HEIC's EXIF was read")
	}
}

func TestColourProfiles(t *testing.T) {
	cases := []struct {
		icc  []byte
		want Space
	}{
		{phototest.ICCProfile("Display P3", phototest.P3Colorants), DisplayP3},
		{phototest.ICCProfile("", phototest.P3Colorants), DisplayP3}, // by colorants alone
		{phototest.ICCProfile("sRGB IEC61966-2.1", phototest.SRGBColorants), SRGB},
		{phototest.ICCProfile("Adobe RGB (1998)", phototest.AdobeRGBColorants), OtherSpace},
		{nil, SRGB},
	}
	for _, c := range cases {
		if got := iccColour(c.icc); got.Space != c.want {
			t.Errorf("%q: %+v, want %s", iccDescription(c.icc), got, c.want)
		}
	}
	base := phototest.JPEG(image.NewGray(image.Rect(0, 0, 8, 8)), 90)
	tagged := phototest.WithMetadata(base, phototest.Metadata{ICC: phototest.ICCProfile("Display P3", phototest.P3Colorants)})
	if c := colourOf(JPEG, tagged); c.Space != DisplayP3 || c.Name != "Display P3" {
		t.Errorf("JPEG with a P3 profile: %+v", c)
	}
	if !strings.Contains(iccColour(phototest.ICCProfile("Adobe RGB (1998)", phototest.AdobeRGBColorants)).Note(), "Adobe RGB (1998)") {
		t.Error("the note about an unconverted profile does not name it")
	}
}

// TestLinkedDecodersMatchPublicOnes guards the go:linkname of wasm.go: on a machine without a
// system libheif the library's public Decode runs the same WebAssembly decoder, so the pixels
// must be identical; with one, ours must still decode (and the public one may differ).
func TestLinkedDecodersMatchPublicOnes(t *testing.T) {
	data := readTestdata(t, "portrait.heic")
	ours, err := wasmDecode(context.Background(), HEIC, data)
	if err != nil {
		t.Fatal(err)
	}
	if heic.Dynamic() == nil {
		t.Skip("a system libheif is loaded: the public Decode uses it")
	}
	theirs, err := heic.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if p := psnr(t, imaging.Clone(ours), imaging.Clone(theirs)); !math.IsInf(p, 1) {
		t.Errorf("linked decoder differs from heic.Decode: %.1f dB", p)
	}
}

func TestOneWasmDecodeAtATime(t *testing.T) {
	data := readTestdata(t, "portrait.avif")
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := Decode(context.Background(), data); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if p := wasmPeak.Load(); p != 1 {
		t.Errorf("%d HEIC/AVIF decodes ran at once", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wasmSlot <- struct{}{} // held: a cancelled caller gives up instead of waiting
	_, err := wasmDecode(ctx, AVIF, data)
	<-wasmSlot
	if err != context.Canceled {
		t.Errorf("cancelled wait: %v", err)
	}
}

func TestCorruptHEIFIsAnError(t *testing.T) {
	data := readTestdata(t, "portrait.heic")
	for name, bad := range map[string][]byte{
		"truncated": data[:len(data)/2],
		"no meta":   data[:40],
	} {
		if _, _, err := Decode(context.Background(), bad); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}
