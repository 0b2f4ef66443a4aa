package jpegscale

// Scale is how much a decode shrinks each side: the output is 1/Scale of the image's size.
type Scale int

const (
	Full    Scale = 1
	Half    Scale = 2
	Quarter Scale = 4
	Eighth  Scale = 8
)

// Reduce is the length a side of n pixels has at this scale (a partly covered pixel counts).
func (s Scale) Reduce(n int) int {
	d := int(s.valid())
	return (n + d - 1) / d
}

// valid maps anything but 2, 4 and 8 to Full.
func (s Scale) valid() Scale {
	switch s {
	case Half, Quarter, Eighth:
		return s
	}
	return Full
}

// blockSide is how many pixels of an 8×8 block's side remain at this scale.
func (s Scale) blockSide() int { return 8 / int(s.valid()) }

// ScaleFor is the smallest scale at which a w×h image keeps a long side of at least minLong
// pixels (Full when even the full size is shorter).
func ScaleFor(w, h, minLong int) Scale {
	long := max(w, h)
	for _, s := range []Scale{Eighth, Quarter, Half} {
		if s.Reduce(long) >= minLong {
			return s
		}
	}
	return Full
}
