// Command gen writes the example dataset: synthetic, face-like photos of two made-up subjects,
// "ana" and "ben", under examples/data/<subject>/ (no real person's photo is involved). Each set has
// varied light, colour and composition, plus photos that show the checks working: a mirrored,
// recompressed copy (a near-duplicate), a blurry photo and, for ben, a beauty-filtered one (skin
// without texture).
//
//	go run ./examples/gen              # from the repository root
//	go run ./examples/gen -out /tmp/d  # elsewhere
//
// The output is deterministic, so regenerating leaves the committed files unchanged. ana also has
// a photo as an iPhone saves it, a HEIC (stored sideways with an irot, in Display P3), which Go
// cannot encode: with -heif-enc (libheif's heif-enc, Debian package libheif-examples) gen makes it
// too; without, the committed one is left as it is.
//
//	go run ./examples/gen -heif-enc /tmp/heif/usr/bin/heif-enc
package main

import (
	"flag"
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
)

type subject struct {
	name       string
	skin, hair color.NRGBA
	seed       uint64
	photos     int // distinct good photos
	smoothed   bool
}

var subjects = []subject{
	{name: "ana", skin: color.NRGBA{226, 182, 150, 255}, hair: color.NRGBA{70, 40, 25, 255}, seed: 900, photos: 16},
	{name: "ben", skin: color.NRGBA{175, 125, 92, 255}, hair: color.NRGBA{25, 20, 18, 255}, seed: 400, photos: 15, smoothed: true},
}

const quality = 80

func main() {
	out := flag.String("out", filepath.Join("examples", "data"), "directory to write <subject>/*.jpg into")
	heifEnc := flag.String("heif-enc", "", "libheif's heif-enc, to make ana's HEIC photo as well")
	flag.Parse()
	for _, s := range subjects {
		if err := write(*out, s); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
	if *heifEnc != "" {
		if err := writeHEIC(*out, *heifEnc); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}

// writeHEIC makes ana-18-iphone.heic the way an iPhone held upright stores a photo: the sensor's
// pixels sideways with an irot that turns them upright, colours in Display P3 tagged by nclx.
// image_check reads it like the JPEGs; train's prepared copy is an upright sRGB JPEG.
func writeHEIC(out, heifEnc string) error {
	s := subjects[0]
	o := imagechecktest.Options{Seed: s.seed + 18, Skin: s.skin, Hair: s.hair, Width: 1024, Height: 1280,
		Light: -0.45, Gain: 1.05, Warmth: 0.5, FaceX: 0.5, FaceScale: 0.36, FaceY: 0.4}
	stored := phototest.ToP3(imaging.Rotate90(imagechecktest.Portrait(o)))
	tmp, err := os.MkdirTemp("", "gen-heic-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	src, dst := filepath.Join(tmp, "stored.png"), filepath.Join(out, s.name, s.name+"-18-iphone.heic")
	if err := imaging.Save(stored, src); err != nil {
		return err
	}
	args := []string{"-q", "50", "-o", dst, src}
	fmt.Println(heifEnc, strings.Join(args, " "))
	cmd := exec.Command(heifEnc, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return err
	}
	data, err := os.ReadFile(dst)
	if err != nil {
		return err
	}
	// heif-enc 1.15 writes neither irot nor the nclx of PNG input.
	if data, err = phototest.WithProperties(data, phototest.Irot(3), phototest.NCLX(12, 13, 6, true)); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

func write(out string, s subject) error {
	dir := filepath.Join(out, s.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	opts := func(i int) imagechecktest.Options {
		seed := s.seed + uint64(i)
		o := imagechecktest.Options{
			Seed: seed, Skin: s.skin, Hair: s.hair, Width: 1024, Height: 1280,
			// Light from either side, brighter and darker days, warm and cool white balance.
			Light:  []float64{-0.6, -0.3, 0, 0.3, 0.6}[i%5],
			Gain:   []float64{0.75, 0.9, 1, 1.1, 1.2, 0.85}[i%6],
			Warmth: []float64{-0.6, -0.2, 0, 0.3, 0.7}[(i/2)%5],
			// Framing: each of the 16 combinations of position and size occurs once.
			FaceX:     []float64{0.3, 0.43, 0.57, 0.7}[(i-1)%4],
			FaceScale: []float64{0.28, 0.34, 0.4, 0.46}[((i-1)/4)%4],
			FaceY:     []float64{0.36, 0.42, 0.39}[i%3],
		}
		if i%4 == 3 { // some landscape shots
			o.Width, o.Height = 1280, 1024
		}
		return o
	}
	n := 0
	for i := 1; i <= s.photos; i++ {
		img := imagechecktest.Portrait(opts(i))
		if err := imagechecktest.WriteJPEG(filepath.Join(dir, fmt.Sprintf("%s-%02d.jpg", s.name, i)), img, quality); err != nil {
			return err
		}
		n++
	}
	// A near-duplicate: photo 03 mirrored (a selfie camera's export) and resized by a messaging app;
	// it sorts after the original, so the original is the one kept.
	o3 := opts(3)
	dup := imaging.Resize(imaging.FlipH(imagechecktest.Portrait(o3)), o3.Width*102/100, 0, imaging.Linear)
	if err := imagechecktest.WriteJPEG(filepath.Join(dir, fmt.Sprintf("%s-%02d-copy-of-03.jpg", s.name, s.photos+1)), dup, 85); err != nil {
		return err
	}
	// A blurry photo (missed focus).
	ob := opts(40)
	ob.FaceX, ob.FaceScale, ob.FaceY = 0.5, 0.37, 0.45 // a framing of its own
	blurry := imaging.Blur(imagechecktest.Portrait(ob), 5)
	if err := imagechecktest.WriteJPEG(filepath.Join(dir, s.name+"-blurry.jpg"), blurry, quality); err != nil {
		return err
	}
	n += 2
	if s.smoothed {
		o := opts(41)
		o.FaceX, o.FaceScale, o.FaceY = 0.62, 0.31, 0.44
		o.Texture = -1 // a beauty filter's waxy skin
		if err := imagechecktest.WriteJPEG(filepath.Join(dir, s.name+"-filtered.jpg"), imagechecktest.Portrait(o), quality); err != nil {
			return err
		}
		n++
	}
	fmt.Printf("wrote %d photos to %s\n", n, dir)
	return nil
}
