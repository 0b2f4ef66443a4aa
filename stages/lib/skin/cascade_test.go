package skin

import (
	"encoding/binary"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/disintegration/imaging"
	pigo "github.com/esimov/pigo/core"
)

// greyOf is img's luma as pigo reads it, padded like detectFrom's copy.
func greyOf(img image.Image, pad int) pigo.ImageParams {
	b := img.Bounds()
	cols, rows := b.Dx()+2*pad, b.Dy()+2*pad
	pix := make([]uint8, cols*rows)
	for i := range pix {
		pix[i] = 128
	}
	src := lumaOf(img)
	row := make([]float32, src.w)
	for y := 0; y < src.h; y++ {
		src.row(y, row)
		for x, v := range row {
			pix[(y+pad)*cols+pad+x] = clamp8(v)
		}
	}
	return pigo.ImageParams{Pixels: pix, Rows: rows, Cols: cols, Dim: cols}
}

// The cascade's windows are pigo's RunCascade's to the bit: same windows, same order, same
// scores, on faces, a face-free photo and noise, at the grids detectFrom and refine use and others.
func TestCascadeMatchesPigo(t *testing.T) {
	ref, err := pigo.NewPigo().Unpack(facefinder)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := classifier()
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]pigo.ImageParams{}
	for name, img := range portraits(t) {
		imgs[name] = greyOf(img, 0)
		imgs[name+" padded"] = greyOf(imaging.Resize(img, 300, 0, imaging.Linear), 80)
	}
	imgs["coffee"] = greyOf(loadImage(t, "coffee.jpg"), 40)
	noise := image.NewGray(image.Rect(0, 0, 257, 191)) // odd sizes: the stride is not the width's
	for i := range noise.Pix {
		noise.Pix[i] = uint8(i*7919 + i/13*31)
	}
	imgs["noise"] = greyOf(noise, 3)
	var tab windowTable
	total := 0
	for name, img := range imgs {
		for _, p := range []struct {
			min, max     int
			shift, scale float64
		}{{minDetect, 1000, coarseShift, scanScaleFactor}, {42, 200, 0.05, 1.1}, {9, 60, 0.2, 1.3}, {100, 100, 0.01, 1.1}} {
			params := pigo.CascadeParams{MinSize: p.min, MaxSize: min(p.max, img.Rows, img.Cols), ShiftFactor: p.shift, ScaleFactor: p.scale, ImageParams: img}
			want, got := ref.RunCascade(params, 0), cl.run(params, &tab)
			label := fmt.Sprintf("%s %+v", name, p)
			if !slices.Equal(got, want) {
				t.Errorf("%s: %d windows, pigo %d; first difference %v", label, len(got), len(want), firstDiff(got, want))
			}
			total += len(want)
		}
	}
	if total < 100 {
		t.Errorf("only %d windows passed in all: the comparison is too weak to mean anything", total)
	}
}

// A cascade of another depth (the general walk, not facefinder's unrolled one) reads and scans
// as pigo reads and scans it.
func TestOtherCascadesMatchPigo(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, depth := range []int{1, 3, 7} {
		const trees = 40
		b := binary.LittleEndian.AppendUint32(nil, 0) // 8 bytes neither reader uses
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(depth))
		b = binary.LittleEndian.AppendUint32(b, trees)
		for i := 0; i < trees; i++ {
			for j := 0; j < 4*(1<<depth-1); j++ {
				b = append(b, byte(rng.IntN(255)-127))
			}
			for j := 0; j < 1<<depth; j++ {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(rng.Float32()*2-0.9))
			}
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(-0.6*float32(i+1)))
		}
		ref, err := pigo.NewPigo().Unpack(b)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := parseCascade(b)
		if err != nil {
			t.Fatal(err)
		}
		img := greyOf(portraits(t)["hopper"], 20)
		params := pigo.CascadeParams{MinSize: 30, MaxSize: 200, ShiftFactor: 0.1, ScaleFactor: 1.2, ImageParams: img}
		var tab windowTable
		want, got := ref.RunCascade(params, 0), cl.run(params, &tab)
		if !slices.Equal(got, want) {
			t.Errorf("depth %d: %d windows, pigo %d; %s", depth, len(got), len(want), firstDiff(got, want))
		}
		if len(want) < 20 {
			t.Errorf("depth %d: only %d windows passed: too few to compare", depth, len(want))
		}
	}
}

func firstDiff(a, b []pigo.Detection) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("at %d: %+v vs %+v", i, a[i], b[i])
		}
	}
	return "one is a prefix of the other"
}

func TestParseCascadeRejectsDamage(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"header":    facefinder[:16],
		"truncated": facefinder[:len(facefinder)-1],
	} {
		if _, err := parseCascade(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func BenchmarkCascade(b *testing.B) {
	img := greyOf(imaging.Resize(portraits(b)["hopper"], 512, 0, imaging.Linear), 128)
	params := pigo.CascadeParams{MinSize: 42, MaxSize: min(img.Rows, img.Cols), ShiftFactor: coarseShift, ScaleFactor: scanScaleFactor, ImageParams: img}
	ref, err := pigo.NewPigo().Unpack(facefinder)
	if err != nil {
		b.Fatal(err)
	}
	cl, _ := classifier()
	b.Run("pigo", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			ref.RunCascade(params, 0)
		}
	})
	b.Run("cascade", func(b *testing.B) {
		defer cpuPerOp(b)()
		var tab windowTable
		for b.Loop() {
			cl.run(params, &tab)
		}
	})
}

// cpuPerOp reports the process's CPU time per iteration when the returned func runs: on a shared
// machine wall time also measures the neighbours.
func cpuPerOp(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() { b.ReportMetric(float64((cpu()-start).Microseconds())/1000/float64(b.N), "cpu-ms/op") }
}
