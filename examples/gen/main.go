// Command gen writes the example dataset: synthetic, face-like photos of two made-up subjects,
// "ana" and "ben", under examples/data/<subject>/ (no real person's photo is involved). Each set has
// varied light, colour and composition, plus photos that show the checks working: a mirrored,
// recompressed copy (a near-duplicate), a blurry photo and, for ben, a beauty-filtered one (skin
// without texture).
//
//	go run ./examples/gen              # from the repository root
//	go run ./examples/gen -out /tmp/d  # elsewhere
//
// The output is deterministic, so regenerating leaves the committed files unchanged.
package main

import (
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
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
	flag.Parse()
	for _, s := range subjects {
		if err := write(*out, s); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
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
