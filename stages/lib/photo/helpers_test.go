package photo

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/disintegration/imaging"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// upright decodes a file and turns it upright as Prepare would, at full size.
func upright(t testing.TB, data []byte) (*image.NRGBA, Meta) {
	t.Helper()
	img, m, err := Decode(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	n := m.Pending.Apply(imaging.Clone(img))
	ToSRGB(n, m.Colour)
	return n, m
}

func decodeJPEG(t testing.TB, data []byte) *image.NRGBA {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return imaging.Clone(img)
}

// psnr compares two pictures of the same size (dB over RGB; +Inf when identical).
func psnr(t testing.TB, a, b *image.NRGBA) float64 {
	t.Helper()
	if !a.Rect.Size().Eq(b.Rect.Size()) {
		t.Fatalf("sizes differ: %v vs %v", a.Rect.Size(), b.Rect.Size())
	}
	var se float64
	n := 0
	for i := 0; i+3 < len(a.Pix); i += 4 {
		for c := 0; c < 3; c++ {
			d := float64(a.Pix[i+c]) - float64(b.Pix[i+c])
			se += d * d
			n++
		}
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(se/float64(n)))
}

// meanRGB is the mean of each channel.
func meanRGB(img *image.NRGBA) [3]float64 {
	var s [3]float64
	for i := 0; i+3 < len(img.Pix); i += 4 {
		for c := 0; c < 3; c++ {
			s[c] += float64(img.Pix[i+c])
		}
	}
	n := float64(len(img.Pix) / 4)
	return [3]float64{s[0] / n, s[1] / n, s[2] / n}
}

// jpegMarkers lists a JPEG's markers up to the end of the image.
func jpegMarkers(t testing.TB, data []byte) []byte {
	t.Helper()
	var ms []byte
	i := 2
	if len(data) < 2 || data[0] != 0xFF || data[1] != 0xD8 {
		t.Fatal("not a JPEG")
	}
	ms = append(ms, 0xD8)
	for i+4 <= len(data) {
		if data[i] != 0xFF {
			t.Fatalf("no marker at %d", i)
		}
		m := data[i+1]
		ms = append(ms, m)
		if m == 0xD9 {
			break
		}
		n := int(data[i+2])<<8 | int(data[i+3])
		i += 2 + n
		if m == 0xDA { // entropy-coded data: skip to the next marker that is not a stuffed 0 or RST
			for i+1 < len(data) && !(data[i] == 0xFF && data[i+1] != 0 && (data[i+1] < 0xD0 || data[i+1] > 0xD7)) {
				i++
			}
		}
	}
	return ms
}
