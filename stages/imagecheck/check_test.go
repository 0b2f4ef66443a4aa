package imagecheck

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/pipeline"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
)

// TestRejectionReasons builds one directory with a file for every rejection reason and checks
// that each is rejected for exactly its reasons while the good photos pass.
func TestRejectionReasons(t *testing.T) {
	root := t.TempDir()
	p := func(name string) string { return filepath.Join(root, name) }
	for i := uint64(1); i <= 5; i++ {
		writeJPEG(t, p("a0"+string(rune('0'+i))+".jpg"), portrait(i, imagechecktest.Options{}), 90)
	}
	writePNG(t, p("a06.png"), portrait(6, imagechecktest.Options{}))
	// A mirrored, recompressed copy of a02: a near-duplicate only the mirror hash catches.
	writeJPEG(t, p("b_dup.jpg"), imaging.FlipH(portrait(2, imagechecktest.Options{})), 70)
	writeJPEG(t, p("c_blur.jpg"), imaging.Blur(portrait(40, imagechecktest.Options{}), 6), 90)
	writeJPEG(t, p("d_dark.jpg"), portrait(41, imagechecktest.Options{Gain: 0.04}), 90)
	writeJPEG(t, p("e_bright.jpg"), portrait(42, imagechecktest.Options{Gain: 6}), 90)
	writeJPEG(t, p("f_small.jpg"), portrait(43, imagechecktest.Options{Width: 400, Height: 400}), 90)
	writeJPEG(t, p("g_wide.jpg"), portrait(44, imagechecktest.Options{Width: 1800, Height: 450}), 90)
	writeFile(t, p("h_text.jpg"), []byte("<html>this is a web page saved as .jpg</html>\n"))
	good := jpegBytes(t, portrait(45, imagechecktest.Options{}), 90)
	writeFile(t, p("i_trunc.jpg"), good[:len(good)/2])
	writeFile(t, p("j_empty.jpg"), nil)
	writeFile(t, p("k.HEIC"), append([]byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"), make([]byte, 64)...))
	writeFile(t, p("l.avif"), append([]byte("\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"), make([]byte, 64)...))
	var gb bytes.Buffer
	if err := gif.Encode(&gb, portrait(46, imagechecktest.Options{Width: 64, Height: 64}), nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("m.gif"), gb.Bytes())
	writeFile(t, p("n.tif"), append([]byte("II*\x00\x08\x00\x00\x00"), make([]byte, 64)...))
	writeFile(t, p("o.bmp"), append([]byte("BM"), make([]byte, 64)...))
	writeFile(t, p("p_bomb.png"), pngBomb(60000, 60000))
	writeFile(t, p("q_bomb.jpg"), jpegBomb(60000, 60000))
	writeFile(t, p("r_png_named.jpg"), mustPNG(t, portrait(47, imagechecktest.Options{})))
	// Ignored: hidden files and names outside the patterns.
	writeJPEG(t, p(".hidden.jpg"), portrait(48, imagechecktest.Options{}), 90)
	writeFile(t, p("notes.txt"), []byte("not considered"))

	cfg := testConfig(root)
	cfg.Dir = "photos" // reported paths use the dir as written
	before := Decodes()
	rep := mustCheck(t, cfg)

	want := map[string][]string{
		"b_dup.jpg":    {"duplicate of photos/a02.jpg (distance "},
		"c_blur.jpg":   {"blurry: sharpness", "the set median"},
		"d_dark.jpg":   {"underexposed:", "max_dark 50%"},
		"e_bright.jpg": {"overexposed:", "max_bright 50%"},
		"f_small.jpg":  {"short side 400 < min_side 480"},
		"g_wide.jpg":   {"short side 450 < min_side 480", "aspect 4.00 > max_aspect 2"},
		"h_text.jpg":   {"not an image: the file contains text"},
		"i_trunc.jpg":  {"truncated JPEG", "copy or export it again"},
		"j_empty.jpg":  {"empty file"},
		"k.HEIC":       {"corrupt HEIC", "re-export the photo"},
		"l.avif":       {"corrupt AVIF", "re-export the photo"},
		"m.gif":        {"GIF is not supported", "export the photo as JPEG"},
		"n.tif":        {"TIFF is not supported: export as JPEG"},
		"o.bmp":        {"BMP is not supported: export as JPEG"},
		"p_bomb.png":   {"60000×60000 = 3600.0 MP > max_pixels 50.0 MP: not decoded"},
		"q_bomb.jpg":   {"60000×60000 = 3600.0 MP > max_pixels 50.0 MP: not decoded"},
	}
	for name, parts := range want {
		reason, ok := rep.Rejected["photos/"+name]
		if !ok {
			t.Errorf("%s: not rejected (accepted=%v)", name, rep.Accepted)
			continue
		}
		for _, part := range parts {
			if !strings.Contains(reason, part) {
				t.Errorf("%s: reason %q lacks %q", name, reason, part)
			}
		}
	}
	if len(rep.Rejected) != len(want) {
		t.Errorf("rejected %d files, want %d: %v", len(rep.Rejected), len(want), rep.Rejected)
	}
	wantAcc := []string{"photos/a01.jpg", "photos/a02.jpg", "photos/a03.jpg", "photos/a04.jpg", "photos/a05.jpg", "photos/a06.png", "photos/r_png_named.jpg"}
	if strings.Join(rep.Accepted, ",") != strings.Join(wantAcc, ",") {
		t.Errorf("accepted %v, want %v", rep.Accepted, wantAcc)
	}
	if len(rep.Duplicates) != 1 || rep.Duplicates[0].Files[0] != "photos/a02.jpg" || rep.Duplicates[0].Files[1] != "photos/b_dup.jpg" {
		t.Errorf("duplicates %+v", rep.Duplicates)
	}
	for _, w := range rep.Warnings {
		if !strings.HasPrefix(w, "photos") {
			t.Errorf("warning does not start with its path: %q", w)
		}
	}
	// Decoded: the 7 accepted, dup, blur, dark, bright, small, wide and the truncated JPEG — never the bombs.
	if got := Decodes() - before; got != 14 {
		t.Errorf("decoded %d images, want 14", got)
	}
	if findImage(rep, "p_bomb.png").Decoded || findImage(rep, ".hidden.jpg") != nil || findImage(rep, "notes.txt") != nil {
		t.Error("bomb decoded, or an ignored file considered")
	}
	if rep.Refused != "" {
		t.Errorf("refused: %s", rep.Refused)
	}
	// Outputs keep the declared types.
	out := Outputs(rep)
	for name, typ := range schema.Outputs {
		if !out[name].Type().Equals(typ) {
			t.Errorf("output %s has type %s, want %s", name, out[name].Type().FriendlyName(), typ.FriendlyName())
		}
	}
	if n := out["stats"].LengthInt(); n != len(rep.Images) {
		t.Errorf("stats has %d entries, want %d", n, len(rep.Images))
	}
}

func mustPNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	writePNGTo(t, &b, img)
	return b.Bytes()
}

func writePNGTo(t testing.TB, b *bytes.Buffer, img image.Image) {
	tmp := filepath.Join(t.TempDir(), "x.png")
	writePNG(t, tmp, img)
	data, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(data)
}

// pngBomb is a valid PNG signature and IHDR claiming w×h pixels, followed by a token IDAT: the
// header is all a decoder needs to try to allocate w×h×4 bytes.
func pngBomb(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// jpegBomb is a JPEG whose SOF0 claims w×h pixels, with minimal tables and no real scan.
func jpegBomb(w, h uint16) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xFF, 0xD8})
	// DQT: one table of ones.
	b.Write([]byte{0xFF, 0xDB, 0x00, 0x43, 0x00})
	b.Write(bytes.Repeat([]byte{1}, 64))
	// SOF0: 8-bit, h, w, 1 component.
	b.Write([]byte{0xFF, 0xC0, 0x00, 0x0B, 0x08, byte(h >> 8), byte(h), byte(w >> 8), byte(w), 0x01, 0x01, 0x11, 0x00})
	// SOS for the one component, then the end: a decoder would now allocate w×h bytes.
	b.Write([]byte{0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00})
	b.Write([]byte{0xFF, 0xD9})
	return b.Bytes()
}

func TestBombDoesNotAllocate(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "bomb.png"), pngBomb(60000, 60000))
	writeFile(t, filepath.Join(root, "bomb.jpg"), jpegBomb(60000, 60000))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep := mustCheck(t, testConfig(root))
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
		t.Errorf("checking two bomb headers allocated %d MB", d>>20)
	}
	if len(rep.Rejected) != 2 || rep.Refused == "" {
		t.Errorf("rejected %v, refused %q", rep.Rejected, rep.Refused)
	}
	for _, name := range []string{"bomb.png", "bomb.jpg"} {
		if r := rep.Rejected[filepath.Join(root, name)]; !strings.Contains(r, "60000×60000 = 3600.0 MP > max_pixels 50.0 MP") {
			t.Errorf("%s: %q", name, r)
		}
	}
}

func TestWebPAndPNGDecode(t *testing.T) {
	root := t.TempDir()
	data, err := os.ReadFile("testdata/blue-purple-pink.lossy.webp")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "w.webp"), data)
	cfg := testConfig(root)
	cfg.MinSide, cfg.MinCount = 1, 0
	rep := mustCheck(t, cfg)
	im := findImage(rep, "w.webp")
	if im == nil || !im.Decoded || im.Format != "webp" || !im.Accepted() || im.Width == 0 {
		t.Fatalf("webp: %+v rejected=%v", im, rep.Rejected)
	}
}

func TestEXIFOrientation(t *testing.T) {
	root := t.TempDir()
	upright := portrait(7, imagechecktest.Options{Width: 600, Height: 800})
	writeJPEG(t, filepath.Join(root, "a_upright.jpg"), upright, 92)
	// Stored turned 90° anticlockwise (as a sideways-held phone stores it), with orientation 6
	// telling viewers to turn it clockwise; big-endian EXIF as many cameras write.
	writeFile(t, filepath.Join(root, "b_tag6.jpg"), withOrientation(jpegBytes(t, imaging.Rotate90(upright), 92), 6, binary.BigEndian))
	// Stored upside down with orientation 3, little-endian EXIF.
	writeFile(t, filepath.Join(root, "c_tag3.jpg"), withOrientation(jpegBytes(t, imaging.Rotate180(upright), 92), 3, binary.LittleEndian))
	// Stored sideways without a tag: it must NOT look like the upright one.
	writeJPEG(t, filepath.Join(root, "d_untagged.jpg"), imaging.Rotate90(upright), 92)
	cfg := testConfig(root)
	cfg.DuplicateDistance = -1 // compare figures, not verdicts
	rep := mustCheck(t, cfg)
	a, b, c, d := findImage(rep, "a_upright.jpg"), findImage(rep, "b_tag6.jpg"), findImage(rep, "c_tag3.jpg"), findImage(rep, "d_untagged.jpg")
	if b.Orientation != 6 || c.Orientation != 3 || d.Orientation != 1 {
		t.Fatalf("orientations %d %d %d", b.Orientation, c.Orientation, d.Orientation)
	}
	if b.Width != 600 || b.Height != 800 {
		t.Errorf("tagged photo reported %dx%d, want 600x800 as displayed", b.Width, b.Height)
	}
	for _, im := range []*Image{b, c} {
		if dist := hashDistance(a, im); dist > 6 {
			t.Errorf("%s: upright copy differs from the original by %d bits", im.Name, dist)
		}
	}
	if dist := hashDistance(a, d); dist < 16 {
		t.Errorf("untagged sideways photo looks like the upright one (distance %d)", dist)
	}
	if a.Face != nil && b.Face != nil && a.Face.Faces != b.Face.Faces {
		t.Errorf("faces upright %d, tagged %d", a.Face.Faces, b.Face.Faces)
	}
}

func TestCacheSkipsDecoding(t *testing.T) {
	root := t.TempDir()
	for i := uint64(1); i <= 4; i++ {
		writeJPEG(t, filepath.Join(root, "p"+string(rune('0'+i))+".jpg"), portrait(i+10, imagechecktest.Options{}), 90)
	}
	cfg := testConfig(root)
	figures := filepath.Join(t.TempDir(), "cache") // created on demand
	cfg.Figures = pipeline.DirCache(figures)
	cfg.CacheDir = t.TempDir()
	before := Decodes()
	first := mustCheck(t, cfg)
	if got := Decodes() - before; got != 4 || first.Decoded != 4 {
		t.Fatalf("cold check decoded %d (report %d), want 4", got, first.Decoded)
	}
	before = Decodes()
	second := mustCheck(t, cfg)
	if got := Decodes() - before; got != 0 || second.FromCache != 4 {
		t.Fatalf("unchanged dataset: decoded %d, from cache %d", got, second.FromCache)
	}
	if first.Digest != second.Digest || strings.Join(first.Accepted, ",") != strings.Join(second.Accepted, ",") {
		t.Error("cached check disagrees with the cold one")
	}
	// Rules change without decoding: the cache holds figures, not verdicts.
	cfg2 := cfg
	cfg2.MinSide = 2000
	before = Decodes()
	if rep := mustCheck(t, cfg2); len(rep.Accepted) != 0 || Decodes() != before {
		t.Errorf("stricter min_side: accepted %v, decoded %d", rep.Accepted, Decodes()-before)
	}
	// The cache is keyed by content: a touched file, the same photos in another directory or on
	// another runner (a fresh local cache dir) decode nothing.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(root, "p2.jpg"), later, later); err != nil {
		t.Fatal(err)
	}
	moved := t.TempDir()
	for i := 1; i <= 4; i++ {
		name := "p" + string(rune('0'+i)) + ".jpg"
		data, _ := os.ReadFile(filepath.Join(root, name))
		writeFile(t, filepath.Join(moved, "renamed-"+name), data)
	}
	elsewhere := testConfig(moved)
	elsewhere.Figures, elsewhere.CacheDir = cfg.Figures, t.TempDir()
	before = Decodes()
	if third, fourth := mustCheck(t, cfg), mustCheck(t, elsewhere); Decodes() != before || third.FromCache != 4 || fourth.FromCache != 4 {
		t.Errorf("touched / moved photos: decoded %d, from cache %d and %d", Decodes()-before, third.FromCache, fourth.FromCache)
	}
	// Editing content changes the digest and decodes exactly that photo.
	writeJPEG(t, filepath.Join(root, "p3.jpg"), portrait(99, imagechecktest.Options{}), 90)
	before = Decodes()
	if fifth := mustCheck(t, cfg); fifth.Digest == first.Digest || Decodes()-before != 1 {
		t.Errorf("a changed photo: digest kept %v, decoded %d", fifth.Digest == first.Digest, Decodes()-before)
	}
	// Entries are figures, named by content; a corrupt one is ignored, not fatal.
	matches, _ := filepath.Glob(filepath.Join(figures, "imagecheck", "v*", "*"))
	if len(matches) != 5 {
		t.Fatalf("cache entries: %v", matches)
	}
	for _, m := range matches {
		if fi, _ := os.Stat(m); fi.Size() > 4096 {
			t.Errorf("%s is %d bytes: figures only", m, fi.Size())
		}
	}
	writeFile(t, matches[0], []byte("{not json"))
	before = Decodes()
	if rep := mustCheck(t, cfg); len(rep.Accepted) != 4 || Decodes()-before > 1 {
		t.Errorf("with a corrupt entry: accepted %d, decoded %d", len(rep.Accepted), Decodes()-before)
	}
}

func TestBlurRules(t *testing.T) {
	root := t.TempDir()
	for i := uint64(1); i <= 4; i++ {
		writeJPEG(t, filepath.Join(root, "s"+string(rune('0'+i))+".jpg"), portrait(i+20, imagechecktest.Options{}), 90)
	}
	writeJPEG(t, filepath.Join(root, "t_soft.jpg"), imaging.Blur(portrait(30, imagechecktest.Options{}), 5), 90)
	cfg := testConfig(root)
	rep := mustCheck(t, cfg)
	soft := findImage(rep, "t_soft.jpg")
	if soft.Accepted() {
		t.Fatalf("relative rule: blurred photo accepted (sharpness %.1f, median %.1f)", soft.Sharpness, rep.MedianSharpness)
	}
	// Absolute threshold between the blurred photo and the sharp ones.
	cfg.MinSharpness = soft.Sharpness * 1.5
	rep = mustCheck(t, cfg)
	if r := rep.Rejected[filepath.Join(root, "t_soft.jpg")]; !strings.Contains(r, "< min_sharpness") || len(rep.Accepted) != 4 {
		t.Errorf("absolute rule: %q, accepted %v", r, rep.Accepted)
	}
	cfg.MinSharpness = 0 // off
	if rep = mustCheck(t, cfg); len(rep.Accepted) != 5 {
		t.Errorf("min_sharpness 0 still rejects: %v", rep.Rejected)
	}
}

func TestCountRulesAndOnWarning(t *testing.T) {
	root := t.TempDir()
	for i := uint64(1); i <= 3; i++ {
		writeJPEG(t, filepath.Join(root, "c"+string(rune('0'+i))+".jpg"), portrait(i+60, imagechecktest.Options{}), 90)
	}
	writeFile(t, filepath.Join(root, "c9.jpg"), nil)
	cfg := testConfig(root)
	cfg.Dir = "data/x"
	cfg.MinCount = 4
	rep := mustCheck(t, cfg)
	if !strings.Contains(rep.Refused, "only 3 of 4 photos accepted, below min_count 4") {
		t.Errorf("refused %q", rep.Refused)
	}
	cfg.MinCount, cfg.MaxCount = 2, 2
	rep = mustCheck(t, cfg)
	if rep.Refused != "" || !hasWarning(rep, "data/x:", "only 3 accepted photos; 15 or more") || !hasWarning(rep, "data/x:", "3 accepted photos > max_count 2") {
		t.Errorf("refused %q warnings %q", rep.Refused, rep.Warnings)
	}
	cfg.OnWarning = "fail"
	rep = mustCheck(t, cfg)
	if !strings.HasPrefix(rep.Refused, `on_warning = "fail" and`) {
		t.Errorf("on_warning fail: refused %q", rep.Refused)
	}
}

func TestDiversity(t *testing.T) {
	mk := func(luma, contrast, cb, cr float64, hash uint64) *Image {
		return &Image{analysis: analysis{Decoded: true, Width: 600, Height: 800, Luma: luma, Contrast: contrast, Cb: cb, Cr: cr, Hash: hash, Mirror: ^hash}}
	}
	uniform := &Report{Images: []*Image{mk(120, 40, 0, 5, 0x3F), mk(122, 41, 1, 5, 0xFC0), mk(119, 40, 0, 6, 0x3F000)}}
	diversity(uniform)
	varied := &Report{Images: []*Image{mk(60, 30, -10, 15, 0x0123456789ABCDEF), mk(180, 70, 12, -5, 0xFEDCBA9876543210), mk(120, 50, 0, 25, 0x5555AAAA5555AAAA)}}
	diversity(varied)
	if uniform.Diversity >= lowDiversity || varied.Diversity < 0.5 || varied.Diversity > 1 {
		t.Errorf("diversity uniform %.3f varied %.3f", uniform.Diversity, varied.Diversity)
	}
	// Through the rules: the low score becomes a warning about the directory.
	rep := &Report{Images: uniform.Images, Rejected: map[string]string{}}
	cfg := testConfig("d")
	cfg.MinCount, cfg.MinSharpness = 0, 0
	applyRules(cfg, rep)
	if !hasWarning(rep, "d:", "diversity") {
		t.Errorf("no diversity warning: %q", rep.Warnings)
	}
}

func TestShrinkMatchesFilteredResize(t *testing.T) {
	// The fast JPEG path (luma block means, chroma samples) must agree with a filtered resize of the
	// whole image for every chroma layout a JPEG can have, or figures would depend on the encoder.
	src := portrait(77, imagechecktest.Options{Width: 3000, Height: 2200})
	for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio440} {
		yc := image.NewYCbCr(src.Rect, ratio)
		for y := 0; y < src.Rect.Dy(); y++ {
			for x := 0; x < src.Rect.Dx(); x++ {
				c := src.NRGBAAt(x, y)
				Y, cb, cr := color.RGBToYCbCr(c.R, c.G, c.B)
				yc.Y[yc.YOffset(x, y)] = Y
				ci := yc.COffset(x, y)
				yc.Cb[ci], yc.Cr[ci] = cb, cr
			}
		}
		fast := shrink(yc, 1024)
		slow := imaging.Resize(yc, fast.Rect.Dx(), fast.Rect.Dy(), imaging.Lanczos)
		var diff float64
		for i := range fast.Pix {
			d := float64(fast.Pix[i]) - float64(slow.Pix[i])
			diff += d * d
		}
		if mse := diff / float64(len(fast.Pix)); fast.Rect.Dx() != 1024 || fast.Rect.Dy() != 751 || mse > 25 {
			t.Errorf("%v: fast shrink %v, mean squared difference %.1f", ratio, fast.Rect, mse)
		}
	}
}

func TestGreyJPEG(t *testing.T) {
	root := t.TempDir()
	grey := image.NewGray(image.Rect(0, 0, 1100, 1500))
	src := portrait(8, imagechecktest.Options{Width: 1100, Height: 1500})
	for i := range grey.Pix {
		p := src.Pix[4*i : 4*i+3]
		grey.Pix[i] = uint8((int(p[0])*299 + int(p[1])*587 + int(p[2])*114) / 1000)
	}
	writeJPEG(t, filepath.Join(root, "grey.jpg"), grey, 90)
	cfg := testConfig(root)
	cfg.MinCount = 1
	rep := mustCheck(t, cfg)
	im := findImage(rep, "grey.jpg")
	if !im.Accepted() || !im.Decoded || im.Width != 1100 || math.Abs(im.Cb) > 1 || math.Abs(im.Cr) > 1 {
		t.Errorf("grey JPEG: %+v, rejected %v", im.analysis, rep.Rejected)
	}
}

func TestMissingDir(t *testing.T) {
	cfg := testConfig(filepath.Join(t.TempDir(), "nope"))
	_, err := Check(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err = %v", err)
	}
}

func TestOversizedFileIsNotRead(t *testing.T) {
	root := t.TempDir()
	data := jpegBytes(t, image.NewGray(image.Rect(0, 0, 16, 16)), 90)
	writeFile(t, filepath.Join(root, "padded.jpg"), append(data, make([]byte, 20<<20)...))
	cfg := testConfig(root)
	cfg.MinSide = 1
	before := Decodes()
	rep := mustCheck(t, cfg)
	if r := rep.Rejected[filepath.Join(root, "padded.jpg")]; !strings.Contains(r, "more than a 16×16 JPEG can need") || Decodes() != before {
		t.Errorf("reason %q, decodes %d", r, Decodes()-before)
	}
}

func TestUnwritableCacheIsANote(t *testing.T) {
	root := t.TempDir()
	writeJPEG(t, filepath.Join(root, "a.jpg"), portrait(5, imagechecktest.Options{}), 90)
	cfg := testConfig(root)
	cfg.MinCount = 1
	cfg.Figures = pipeline.DirCache(filepath.Join(t.TempDir(), "file"))
	writeFile(t, string(cfg.Figures.(pipeline.DirCache)), []byte("a file where the cache dir should be"))
	rep := mustCheck(t, cfg)
	if rep.CacheErr == nil || len(rep.Accepted) != 1 {
		t.Fatalf("cache error %v, accepted %v", rep.CacheErr, rep.Accepted)
	}
	notes := strings.Join(Notes(rep), "\n")
	if !strings.Contains(notes, "analysis cache not written") {
		t.Errorf("notes: %s", notes)
	}
}

func TestUnreadableFileIsRejectedNotFatal(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their permissions")
	}
	root := t.TempDir()
	p := filepath.Join(root, "locked.jpg")
	writeJPEG(t, p, portrait(3, imagechecktest.Options{}), 90)
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(root)
	cfg.Figures = pipeline.DirCache(t.TempDir())
	rep := mustCheck(t, cfg)
	if r := rep.Rejected[p]; !strings.Contains(r, "cannot read the file") {
		t.Fatalf("rejected %v", rep.Rejected)
	}
	// Once readable it is analysed: the failure was not cached.
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if rep = mustCheck(t, cfg); len(rep.Accepted) != 1 {
		t.Errorf("after chmod: accepted %v rejected %v", rep.Accepted, rep.Rejected)
	}
}

func TestVanishedFileIsRejectedNotFatal(t *testing.T) {
	// A file removed between listing and reading (a sync client at work) is rejected, not fatal.
	root := t.TempDir()
	writeJPEG(t, filepath.Join(root, "gone.jpg"), portrait(3, imagechecktest.Options{}), 90)
	cfg := testConfig(root)
	src, err := openSource(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := src.List(context.Background())
	if err != nil || len(objs) != 1 {
		t.Fatal(objs, err)
	}
	os.Remove(filepath.Join(root, "gone.jpg"))
	rep := &Report{Images: []*Image{{Name: "gone.jpg", Path: "gone.jpg", obj: objs[0]}}}
	if err := analyzeAll(context.Background(), cfg, src, rep); err != nil {
		t.Fatal(err)
	}
	if im := rep.Images[0]; !im.readErr || !strings.Contains(im.Unreadable, "cannot read the file") {
		t.Errorf("%+v", im)
	}
}

// What is named like a photo but is no file (a symlink to nothing, a symlink loop, a directory, a
// named pipe) is rejected by name with what to do, never silently left out, and a pipe is never
// opened (that would hang the check).
func TestEntriesThatAreNoFilesAreRejectedByName(t *testing.T) {
	root := t.TempDir()
	writeJPEG(t, filepath.Join(root, "ok.jpg"), portrait(3, imagechecktest.Options{}), 90)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(root, "nowhere.jpg"), filepath.Join(root, "dangling.jpg")))
	must(os.Symlink(filepath.Join(root, "loop.jpg"), filepath.Join(root, "loop.jpg")))
	must(os.Mkdir(filepath.Join(root, "album.jpg"), 0o755))
	must(syscall.Mkfifo(filepath.Join(root, "pipe.jpg"), 0o644))
	cfg := testConfig(root)
	cfg.MinCount = 1
	rep := mustCheck(t, cfg)
	for name, want := range map[string]string{"dangling.jpg": "symbolic link to nothing", "loop.jpg": "loop",
		"album.jpg": "a directory", "pipe.jpg": "not a regular file"} {
		if r := rep.Rejected[filepath.Join(root, name)]; !strings.Contains(r, want) {
			t.Errorf("%s: reason %q, want it to say %q", name, r, want)
		}
	}
	if len(rep.Accepted) != 1 {
		t.Errorf("accepted %v, want ok.jpg only", rep.Accepted)
	}
}
