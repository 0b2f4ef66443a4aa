package photo

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
)

// TestPrepareStripsEveryMetadata prepares photos that carry what phones write (EXIF with GPS and a
// serial, XMP, an ICC profile, a comment; a HEIC with an Exif item) and parses each copy: only the
// segments of the image itself remain, and none of the metadata's bytes.
func TestPrepareStripsEveryMetadata(t *testing.T) {
	jpg := phototest.WithMetadata(readTestdata(t, "portrait.jpg"), phototest.Metadata{
		Orientation: 1, GPS: true, Serial: "SN-4242-CAMERA", XMP: true, Comment: "shot at home",
		ICC: phototest.ICCProfile("Display P3", phototest.P3Colorants),
	})
	for name, data := range map[string][]byte{"jpeg": jpg, "heic": readTestdata(t, "sideways.heic"), "avif": readTestdata(t, "portrait.avif")} {
		out, err := Prepare(context.Background(), data, 0)
		if err != nil {
			t.Fatal(err)
		}
		assertNoMetadata(t, name, out)
	}
}

// assertNoMetadata fails unless data is a JPEG of image segments only.
func assertNoMetadata(t *testing.T, name string, data []byte) {
	t.Helper()
	for _, m := range jpegMarkers(t, data) {
		switch {
		case m == 0xD8, m == 0xD9, m == 0xDB, m == 0xC4, m == 0xDA, m >= 0xC0 && m <= 0xC2, m == 0xDD:
		default:
			t.Errorf("%s: marker %#x in a prepared copy", name, m)
		}
	}
	for _, s := range []string{"Exif", "http://ns.adobe.com", "ICC_PROFILE", "SN-4242", "shot at home", "JFIF"} {
		if bytes.Contains(data, []byte(s)) {
			t.Errorf("%s: %q left in a prepared copy", name, s)
		}
	}
}

func TestPrepareBoundsTheLongSideAndNeverEnlarges(t *testing.T) {
	data := readTestdata(t, "portrait.jpg")
	for _, tc := range []struct{ side, w, h int }{{0, 480, 600}, {2048, 480, 600}, {300, 240, 300}, {599, 479, 599}, {64, 51, 64}} {
		out, err := Prepare(context.Background(), data, tc.side)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(out))
		if err != nil || cfg.Width != tc.w || cfg.Height != tc.h {
			t.Errorf("max side %d: %dx%d, want %dx%d", tc.side, cfg.Width, cfg.Height, tc.w, tc.h)
		}
	}
	// At full size the copy is the picture re-encoded, nothing lost to a resampler.
	ref, _ := upright(t, data)
	out, _ := Prepare(context.Background(), data, 0)
	if p := psnr(t, ref, decodeJPEG(t, out)); p < 38 {
		t.Errorf("full-size copy: %.1f dB", p)
	}
}

// TestResampleFiltersWell: a shrunk copy matches a careful float reference (imaging's Lanczos)
// closely, and is much closer to it than nearest-neighbour sampling, which aliases fine texture.
func TestResampleFiltersWell(t *testing.T) {
	src, _ := upright(t, readTestdata(t, "portrait.jpg"))
	n := imaging.Clone(src)
	got := &image.NRGBA{Pix: resample(n.Pix, n.Stride, 480, 600, 4, 160, 200), Stride: 160 * 4, Rect: image.Rect(0, 0, 160, 200)}
	ref := imaging.Resize(src, 160, 200, imaging.Lanczos)
	nearest := imaging.Resize(src, 160, 200, imaging.NearestNeighbor)
	good, bad := psnr(t, ref, got), psnr(t, ref, nearest)
	if good < 38 || good < bad+6 {
		t.Errorf("Catmull-Rom %.1f dB, nearest %.1f dB from Lanczos", good, bad)
	}
	// Flat stays exactly flat: weights sum to exactly one.
	flat := bytes.Repeat([]byte{200}, 97*61)
	for _, v := range resample(flat, 97, 97, 61, 1, 31, 20) {
		if v != 200 {
			t.Fatalf("a flat plane came out %d", v)
		}
	}
}

// TestDisplayP3BecomesSRGB: a picture re-expressed in Display P3 and tagged so (an ICC profile in
// a JPEG, nclx in a HEIC) prepares to the sRGB picture; the P3 pixels taken as sRGB, as a trainer
// would once the profile is dropped, are far from it (which shows the test can fail).
func TestDisplayP3BecomesSRGB(t *testing.T) {
	ref, _ := upright(t, readTestdata(t, "portrait.jpg"))
	p3pix := phototest.ToP3(ref)
	tagged := phototest.WithMetadata(phototest.JPEG(p3pix, 95), phototest.Metadata{ICC: phototest.ICCProfile("Display P3", phototest.P3Colorants)})
	unconverted := psnr(t, ref, p3pix)
	for name, data := range map[string][]byte{"jpeg+icc": tagged, "heic+nclx": readTestdata(t, "p3.heic")} {
		out, err := Prepare(context.Background(), data, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := psnr(t, ref, decodeJPEG(t, out))
		t.Logf("%s: %.1f dB (unconverted %.1f dB)", name, p, unconverted)
		if p < 36 || p < unconverted+4 {
			t.Errorf("%s: %.1f dB from the sRGB picture (unconverted P3: %.1f dB)", name, p, unconverted)
		}
	}
}

func TestPrepareIsDeterministic(t *testing.T) {
	for _, f := range []string{"portrait.jpg", "portrait.heic", "portrait.avif", "p3.heic"} {
		data := readTestdata(t, f)
		a, err := Prepare(context.Background(), data, 256)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Prepare(context.Background(), data, 256)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two runs differ", f)
		}
	}
}

// goldenZip is the sha256 of the training zip made from the committed test photos (see
// goldenEntries): the same on every machine and architecture, or Prepare's bytes are not
// deterministic there (checked on amd64, and on arm64, ppc64le and s390x under qemu: see
// testdata/README.md). Change it only with PrepareVersion.
const goldenZip = "3647b4193f52173e29a509307cae12239ed42f47b431a01f1738bb64cd2a1912"

func goldenEntries(t *testing.T) []ZipEntry {
	files := []string{"portrait.jpg", "portrait.heic", "portrait.avif", "p3.heic", "sideways.heic"}
	names := ZipNames(files)
	var es []ZipEntry
	for i, f := range files {
		out, err := Prepare(context.Background(), readTestdata(t, f), 256)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, ZipEntry{Name: names[i], Size: int64(len(out)), Bytes: func(context.Context) ([]byte, error) { return out, nil }})
	}
	return es
}

func TestZipIsDeterministicAndGolden(t *testing.T) {
	es := goldenEntries(t)
	var a, b bytes.Buffer
	if err := WriteZip(context.Background(), &a, es); err != nil {
		t.Fatal(err)
	}
	reversed := []ZipEntry{es[4], es[3], es[2], es[1], es[0]}
	if err := WriteZip(context.Background(), &b, reversed); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the entries' order changed the zip")
	}
	sum := sha256.Sum256(a.Bytes())
	if got := hex.EncodeToString(sum[:]); got != goldenZip {
		t.Errorf("zip sha256 %s, golden %s", got, goldenZip)
	}
	zr, err := zip.NewReader(bytes.NewReader(a.Bytes()), int64(a.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Method != zip.Store || f.Mode() != 0o644 || f.Modified.Year() != 1980 || len(f.Extra) != 0 {
			t.Errorf("%s: method %d mode %v modified %v extra %d", f.Name, f.Method, f.Mode(), f.Modified, len(f.Extra))
		}
		rc, _ := f.Open()
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err) // also checks the CRC
		}
		assertNoMetadata(t, f.Name, data)
	}
	if got := strings.Join(names, " "); got != "p3.jpg portrait-2.jpg portrait-3.jpg portrait.jpg sideways.jpg" {
		t.Errorf("entries %s", got)
	}
}

func TestZipSizeIsExact(t *testing.T) {
	for _, n := range []int{0, 1, 7} {
		var es []ZipEntry
		for i := 0; i < n; i++ {
			data := bytes.Repeat([]byte{byte(i)}, 1000*i+13)
			es = append(es, ZipEntry{Name: strings.Repeat("x", i+1) + "é.jpg", Size: int64(len(data)),
				Bytes: func(context.Context) ([]byte, error) { return data, nil }})
		}
		var buf bytes.Buffer
		if err := WriteZip(context.Background(), &buf, es); err != nil {
			t.Fatal(err)
		}
		if int64(buf.Len()) != ZipSize(es) {
			t.Errorf("%d entries: wrote %d bytes, ZipSize %d", n, buf.Len(), ZipSize(es))
		}
	}
	// An entry that is not the size it announced fails instead of writing a wrong Content-Length.
	bad := []ZipEntry{{Name: "a.jpg", Size: 5, Bytes: func(context.Context) ([]byte, error) { return []byte("abc"), nil }}}
	if err := WriteZip(context.Background(), io.Discard, bad); err == nil || !strings.Contains(err.Error(), "announced") {
		t.Errorf("short entry: %v", err)
	}
	dup := []ZipEntry{bad[0], bad[0]}
	if err := WriteZip(context.Background(), io.Discard, dup); err == nil {
		t.Error("two entries with one name")
	}
}

func TestZipNames(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"a.heic", "a.jpg"}, []string{"a-2.jpg", "a.jpg"}},
		{[]string{"a.jpg", "a.heic"}, []string{"a.jpg", "a-2.jpg"}},
		{[]string{"IMG_1.HEIC", "IMG_2.JPG", "b.jpeg", "c.png"}, []string{"IMG_1.jpg", "IMG_2.jpg", "b.jpg", "c.jpg"}},
		{[]string{"a.heic", "a.jpg", "a-2.jpg", "A.png"}, []string{"a-4.jpg", "a.jpg", "a-2.jpg", "A-3.jpg"}},
	}
	for _, c := range cases {
		got := ZipNames(c.in)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("ZipNames(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestLargeSetFitsUploadLimit: 150 MB of 12 MP phone-sized JPEGs (quality 97, sensor grain)
// give a training zip under the files API's 100 MiB, built without holding it.
func TestLargeSetFitsUploadLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("prepares 150 MB of photos")
	}
	copies, err := OpenDiskCache(t.TempDir(), DefaultCopiesBytes)
	if err != nil {
		t.Fatal(err)
	}
	p := &Preparer{MaxSide: DefaultMaxSide, Copies: copies}
	var originals int64
	var es []ZipEntry
	distinct := map[uint64][]byte{} // four pictures, each under several names: each prepared once
	for i := 0; originals < 150e6; i++ {
		seed := uint64(i % 4)
		if distinct[seed] == nil {
			distinct[seed] = phonePhoto(seed, 4032, 3024)
		}
		data := distinct[seed]
		originals += int64(len(data))
		sha := sha256.Sum256(data)
		e, err := p.Entry(context.Background(), "IMG_"+string(rune('A'+i))+".jpg", hex.EncodeToString(sha[:]),
			func(context.Context) ([]byte, error) { return data, nil })
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	var n countWriter
	if err := WriteZip(context.Background(), &n, es); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d photos, originals %.0f MB, zip %.1f MB", len(es), float64(originals)/1e6, float64(n)/1e6)
	if int64(n) != ZipSize(es) || n >= 100<<20 {
		t.Errorf("zip %d bytes (ZipSize %d), limit %d", n, ZipSize(es), 100<<20)
	}
}

// phonePhoto is a 12 MP JPEG at quality 97 with per-pixel grain, about as large as a phone's.
func phonePhoto(seed uint64, w, h int) []byte {
	img := imagechecktest.Portrait(imagechecktest.Options{Seed: seed + 1, Width: w / 4, Height: h / 4})
	big := imaging.Resize(img, w, h, imaging.Linear)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i+3 < len(big.Pix); i += 4 {
		g := int(rng.IntN(25)) - 12
		for c := 0; c < 3; c++ {
			big.Pix[i+c] = uint8(min(255, max(0, int(big.Pix[i+c])+g)))
		}
	}
	return phototest.JPEG(big, 97)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// TestPrepareRefusesAHeaderBombBeforeDecoding gives Prepare files whose headers claim 60000×60000
// pixels (3.6 gigapixels: 14 GB as RGBA), as a train stage fed straight from a folder would: each
// is refused naming its size and the limit, and nothing is decoded.
func TestPrepareRefusesAHeaderBombBeforeDecoding(t *testing.T) {
	var small bytes.Buffer
	if err := jpeg.Encode(&small, image.NewGray(image.Rect(0, 0, 64, 48)), nil); err != nil {
		t.Fatal(err)
	}
	jpegBomb := append([]byte{}, small.Bytes()...)
	sof := bytes.Index(jpegBomb, []byte{0xFF, 0xC0})
	if sof < 0 {
		t.Fatal("no SOF0")
	}
	jpegBomb[sof+5], jpegBomb[sof+6], jpegBomb[sof+7], jpegBomb[sof+8] = 0xEA, 0x60, 0xEA, 0x60 // 60000×60000
	heicBomb := heifWithSize(t, readTestdata(t, "portrait.heic"), 60000, 60000)
	for name, data := range map[string][]byte{"jpeg": jpegBomb, "heic": heicBomb} {
		before := Decodes()
		_, err := Prepare(context.Background(), data, 0)
		var tooLarge *TooLargeError
		if !errors.As(err, &tooLarge) || !strings.Contains(err.Error(), "60000×60000") || !strings.Contains(err.Error(), "100 MP") {
			t.Errorf("%s bomb: %v, want a refusal naming 60000×60000 and the 100 MP limit", name, err)
		}
		if Decodes() != before {
			t.Errorf("%s bomb was decoded", name)
		}
	}
}

// A non-ASCII entry name carries the zip's UTF-8 flag, so an unzipper does not read "José" as
// CP-437; an ASCII name leaves it clear, as archive/zip's own writer does.
func TestZipEntryNamesAreMarkedUTF8(t *testing.T) {
	entry := func(name string) ZipEntry {
		return ZipEntry{Name: name, Size: 3, Bytes: func(context.Context) ([]byte, error) { return []byte("abc"), nil }}
	}
	var buf bytes.Buffer
	if err := WriteZip(context.Background(), &buf, []ZipEntry{entry("José.jpg"), entry("ana.jpg")}); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		utf8Flag := f.Flags&0x800 != 0
		if want := f.Name == "José.jpg"; utf8Flag != want || f.NonUTF8 {
			t.Errorf("%s: UTF-8 flag %v, want %v (NonUTF8 %v)", f.Name, utf8Flag, want, f.NonUTF8)
		}
	}
	if int64(buf.Len()) != ZipSize([]ZipEntry{entry("José.jpg"), entry("ana.jpg")}) {
		t.Errorf("zip is %d bytes, ZipSize says %d", buf.Len(), ZipSize([]ZipEntry{entry("José.jpg"), entry("ana.jpg")}))
	}
}
