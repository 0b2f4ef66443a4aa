package photo

import (
	"math"
	"testing"
)

// The tables of colour.go are integers so that every machine converts alike; these tests show
// where they come from.

func TestSRGBTableIsTheSRGBCurve(t *testing.T) {
	for k := 0; k < 256; k++ {
		v := float64(k) / 255
		l := v / 12.92
		if v > 0.04045 {
			l = math.Pow((v+0.055)/1.055, 2.4)
		}
		if want := uint16(math.Round(l * 65535)); srgbToLinear[k] != want {
			t.Errorf("srgbToLinear[%d] = %d, the curve gives %d", k, srgbToLinear[k], want)
		}
		if linearToSRGB[srgbToLinear[k]] != uint8(k) {
			t.Errorf("code %d does not survive a round trip", k)
		}
	}
}

type mat [3][3]float64

func (a mat) mul(b mat) (c mat) {
	for i := range 3 {
		for j := range 3 {
			for k := range 3 {
				c[i][j] += a[i][k] * b[k][j]
			}
		}
	}
	return c
}

func (a mat) inv() (r mat) {
	det := a[0][0]*(a[1][1]*a[2][2]-a[1][2]*a[2][1]) - a[0][1]*(a[1][0]*a[2][2]-a[1][2]*a[2][0]) + a[0][2]*(a[1][0]*a[2][1]-a[1][1]*a[2][0])
	for i := range 3 {
		for j := range 3 {
			r[i][j] = (a[(j+1)%3][(i+1)%3]*a[(j+2)%3][(i+2)%3] - a[(j+1)%3][(i+2)%3]*a[(j+2)%3][(i+1)%3]) / det
		}
	}
	return r
}

func xyz(x, y float64) [3]float64 { return [3]float64{x / y, 1, (1 - x - y) / y} }

// rgbToXYZ is the RGB → XYZ matrix of primaries (x, y) with a white point.
func rgbToXYZ(p [3][2]float64, w [2]float64) mat {
	var m mat
	for k := range 3 {
		v := xyz(p[k][0], p[k][1])
		for i := range 3 {
			m[i][k] = v[i]
		}
	}
	wv, mi := xyz(w[0], w[1]), m.inv()
	for k := range 3 {
		s := mi[k][0]*wv[0] + mi[k][1]*wv[1] + mi[k][2]*wv[2]
		for i := range 3 {
			m[i][k] *= s
		}
	}
	return m
}

var (
	d65        = [2]float64{0.3127, 0.3290}
	srgbXYZ    = rgbToXYZ([3][2]float64{{0.64, 0.33}, {0.30, 0.60}, {0.15, 0.06}}, d65)
	p3XYZ      = rgbToXYZ([3][2]float64{{0.680, 0.320}, {0.265, 0.690}, {0.150, 0.060}}, d65)
	bradfordD5 = func() mat { // D65 → D50 chromatic adaptation (Bradford), as ICC colorants use
		b := mat{{0.8951, 0.2664, -0.1614}, {-0.7502, 1.7135, 0.0367}, {0.0389, -0.0685, 1.0296}}
		d50, w := [3]float64{0.9642, 1, 0.8249}, xyz(d65[0], d65[1])
		var s mat
		for i := range 3 {
			s[i][i] = (b[i][0]*d50[0] + b[i][1]*d50[1] + b[i][2]*d50[2]) / (b[i][0]*w[0] + b[i][1]*w[1] + b[i][2]*w[2])
		}
		return b.inv().mul(s.mul(b))
	}()
)

func TestP3MatrixIsTheStandardOne(t *testing.T) {
	m := srgbXYZ.inv().mul(p3XYZ) // P3 linear → XYZ → sRGB linear
	for i := range 3 {
		sum := int64(0)
		for j := range 3 {
			if d := float64(p3ToSRGB[i][j]) - m[i][j]*65536; math.Abs(d) > 1 {
				t.Errorf("p3ToSRGB[%d][%d] = %d, the primaries give %.1f", i, j, p3ToSRGB[i][j], m[i][j]*65536)
			}
			sum += p3ToSRGB[i][j]
		}
		if sum != 65536 {
			t.Errorf("row %d sums to %d: greys would shift", i, sum)
		}
	}
}

func TestColorantsAreTheSpaces(t *testing.T) {
	for name, c := range map[string]struct {
		m    mat
		want [3][3]int32
	}{"P3": {p3XYZ, p3Colorants}, "sRGB": {srgbXYZ, srgbColorants}} {
		a := bradfordD5.mul(c.m)
		for k := range 3 {
			for i := range 3 {
				if d := float64(c.want[k][i]) - a[i][k]*65536; math.Abs(d) > 1 {
					t.Errorf("%s colorant %d.%d = %d, the primaries give %.1f", name, k, i, c.want[k][i], a[i][k]*65536)
				}
			}
		}
	}
}
