package jpegscale

import (
	"bytes"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"sync"
	"testing"
)

// photo12MP is a 4000×3000 photo-like JPEG (quality 90) made once: smooth shapes enlarged 4×, with
// sensor-like noise at full resolution, so the file is as dense as a phone camera's.
var photo12MP = sync.OnceValue(func() []byte {
	small := testPicture(1000, 750, 42)
	big := image.NewRGBA(image.Rect(0, 0, 4000, 3000))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := 0; y < 3000; y++ {
		for x := 0; x < 4000; x++ {
			p := small.Pix[(y/4)*small.Stride+4*(x/4):]
			n := rng.IntN(13) - 6
			o := big.Pix[y*big.Stride+4*x:]
			for c := 0; c < 3; c++ {
				o[c] = uint8(min(255, max(0, int(p[c])+n)))
			}
			o[3] = 255
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, big, &jpeg.Options{Quality: 90}); err != nil {
		panic(err)
	}
	return buf.Bytes()
})

// BenchmarkDecode12MP is the CPU time of one decode of a 12 MP photo, by image/jpeg (today's
// image_check) and by jpegscale at every scale (ns/op on one core).
//
//	go test -run '^$' -bench Decode12MP ./stages/lib/jpegscale/
func BenchmarkDecode12MP(b *testing.B) {
	data := photo12MP()
	b.Run("image-jpeg", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, s := range []Scale{Full, Half, Quarter, Eighth} {
		b.Run("jpegscale-1/"+string(rune('0'+s)), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := Decode(data, Options{Scale: s}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeProgressive is a progressive 3 MP photo with successive approximation at 1/4.
func BenchmarkDecodeProgressive(b *testing.B) {
	data := encode(testPicture(2000, 1500, 3), encOptions{sampling: [][2]int{{2, 2}, {1, 1}, {1, 1}}, quality: 90, progressive: standardScript(3)})
	for _, s := range []Scale{Full, Quarter} {
		b.Run("jpegscale-1/"+string(rune('0'+s)), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := Decode(data, Options{Scale: s}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("image-jpeg", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
