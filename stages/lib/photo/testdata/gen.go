//go:build ignore

// Command gen writes the committed test photos of package photo (see README.md): a synthetic
// portrait as JPEG, and the same picture as HEIC and AVIF made by libheif's heif-enc, which the
// project cannot make in pure Go (the Go HEIC/AVIF libraries decode only).
//
//	go run ./stages/lib/photo/testdata/gen.go -heif-enc /tmp/heif/usr/bin/heif-enc
package main

import (
	"bytes"
	"flag"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/disintegration/imaging"
	"github.com/pipeline-dev/pipeline/stages/imagecheck/imagechecktest"
	"github.com/pipeline-dev/pipeline/stages/lib/photo/phototest"
)

func main() {
	enc := flag.String("heif-enc", "heif-enc", "libheif's heif-enc (Debian package libheif-examples)")
	out := flag.String("out", filepath.Join("stages", "lib", "photo", "testdata"), "directory to write into")
	flag.Parse()
	if err := run(*enc, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(enc, out string) error {
	tmp, err := os.MkdirTemp("", "photo-gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	upright := imagechecktest.Portrait(imagechecktest.Options{Seed: 7, Width: 480, Height: 600})
	if err := os.WriteFile(filepath.Join(out, "portrait.jpg"), phototest.JPEG(upright, 92), 0o644); err != nil {
		return err
	}
	// The same pixels for heif-enc, losslessly; stored sideways as a phone held upright stores
	// them, with EXIF orientation 6 (heif-enc keeps the EXIF but writes no irot: the tests add it);
	// and re-expressed in Display P3, tagged so by nclx.
	sideways := phototest.WithMetadata(phototest.JPEG(imaging.Rotate90(upright), 95), phototest.Metadata{Orientation: 6})
	jobs := []struct {
		name string
		src  []byte
		ext  string
		args []string
		add  []phototest.Property
	}{
		{"portrait.heic", pngOf(upright), ".png", []string{"-q", "70"}, nil},
		{"portrait.avif", pngOf(upright), ".png", []string{"-A", "-q", "70"}, nil},
		{"sideways.heic", sideways, ".jpg", []string{"-q", "70"}, nil},
		{"sideways.avif", sideways, ".jpg", []string{"-A", "-q", "70"}, nil},
		{"p3.heic", pngOf(phototest.ToP3(upright)), ".png", []string{"-q", "70", "--colour_primaries", "12", "--transfer_characteristic", "13", "--matrix_coefficients", "6"},
			[]phototest.Property{phototest.NCLX(12, 13, 6, true)}},
	}
	for _, j := range jobs {
		src := filepath.Join(tmp, j.name+j.ext)
		if err := os.WriteFile(src, j.src, 0o644); err != nil {
			return err
		}
		args := append(append([]string{}, j.args...), "-o", filepath.Join(out, j.name), src)
		cmd := exec.Command(enc, args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		fmt.Println(enc, args)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", j.name, err)
		}
		if j.add != nil {
			if err := addProperties(filepath.Join(out, j.name), j.add); err != nil {
				return err
			}
		}
	}
	return nil
}

// addProperties adds item properties heif-enc does not write (it drops the nclx of PNG input).
func addProperties(path string, ps []phototest.Property) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if data, err = phototest.WithProperties(data, ps...); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func pngOf(img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic(err)
	}
	return b.Bytes()
}
