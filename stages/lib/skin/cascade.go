package skin

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"

	pigo "github.com/esimov/pigo/core"
)

// cascade is the facefinder cascade laid out for scanning. It is pico's classifier (Markuš et
// al. 2013): a chain of binary trees whose every node compares two pixels at fixed positions
// relative to the window (in 1/256 of its side); each tree adds the score of the leaf reached,
// and a window is rejected as soon as the running score falls to that tree's threshold.
//
// pigo evaluates the same trees, but works each pixel position out from the window's size at
// every node of every window; most of the face search went there. Here the positions are
// offsets into the image, worked out once per window size (windowTable), so that a node costs
// two loads and a compare. Its detections are pigo's to the bit (TestCascadeMatchesPigo).
type cascade struct {
	depth int
	// codes are each tree's nodes in heap order, node 0 unused: row and column of the first pixel,
	// then of the second, in 1/256 of the window's side from its centre.
	codes  [][4]int8
	preds  []float32 // each tree's 2^depth leaf scores
	thresh []float32 // each tree's rejection threshold
}

// nodes is how many node slots a tree has (node 0 unused).
func (cs *cascade) nodes() int { return 1 << cs.depth }

// parseCascade reads pico's cascade format: 8 bytes this detector does not use, the trees' depth
// and count (little-endian uint32), then per tree its 2^depth−1 nodes' four int8 codes, its
// 2^depth leaf scores and its threshold (little-endian float32).
func parseCascade(b []byte) (*cascade, error) {
	if len(b) < 16 {
		return nil, errors.New("cascade: file too short")
	}
	depth, trees := binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])
	if depth < 1 || depth > 12 || trees < 1 || trees > 1<<16 {
		return nil, errors.New("cascade: implausible depth or tree count")
	}
	cs := &cascade{depth: int(depth)}
	n := cs.nodes()
	per := 4*(n-1) + 4*n + 4
	b = b[16:]
	if len(b) < int(trees)*per {
		return nil, errors.New("cascade: file too short for its trees")
	}
	cs.codes = make([][4]int8, int(trees)*n)
	cs.preds = make([]float32, 0, int(trees)*n)
	for t := 0; t < int(trees); t++ {
		tree := b[t*per : (t+1)*per]
		for i := 1; i < n; i++ {
			c := tree[4*(i-1):]
			cs.codes[t*n+i] = [4]int8{int8(c[0]), int8(c[1]), int8(c[2]), int8(c[3])}
		}
		leaves := tree[4*(n-1):]
		for i := 0; i < n; i++ {
			cs.preds = append(cs.preds, math.Float32frombits(binary.LittleEndian.Uint32(leaves[4*i:])))
		}
		cs.thresh = append(cs.thresh, math.Float32frombits(binary.LittleEndian.Uint32(leaves[4*n:])))
	}
	return cs, nil
}

// windowTable holds, for one window size and image stride, each node's two pixel offsets from
// the window's centre. Trees are filled as windows first reach them: most windows are rejected
// by the first few trees, so the deep ones are worked out only at sizes where many windows pass
// (where only a few do, walkDirect serves them without a table).
type windowTable struct {
	offs  []int32   // per tree, per node slot: first pixel's offset, second's
	at    []int32   // windows still in the running (centre's pixel index)
	score []float32 // and their scores so far
	size  int
	dim   int
	ready int // trees filled so far
}

// reset makes t the table of windows of side size in an image of stride dim, filled lazily.
func (t *windowTable) reset(cs *cascade, size, dim int) {
	if need := 2 * cs.nodes() * len(cs.thresh); len(t.offs) < need {
		t.offs = make([]int32, need)
	}
	t.size, t.dim, t.ready = size, dim, 0
}

// fill works out the offsets of the trees from t.ready up to at least tree i.
func (t *windowTable) fill(cs *cascade, i int) {
	n := cs.nodes()
	upTo := min(len(cs.thresh), max(i+1, 2*t.ready, 16))
	s := t.size
	for k := t.ready * n; k < upTo*n; k++ {
		c := cs.codes[k]
		// pigo's ((256·row + code·s) >> 8) is row + (code·s) >> 8: the shift floors either way.
		t.offs[2*k] = int32((int(c[0])*s>>8)*t.dim + int(c[1])*s>>8)
		t.offs[2*k+1] = int32((int(c[2])*s>>8)*t.dim + int(c[3])*s>>8)
	}
	t.ready = upTo
}

// run scans img with windows from p.MinSize to p.MaxSize px as pigo's RunCascade does (the same
// grid, sizes and order) and returns the windows scoring above 0; t is scratch space.
//
// Each window size is scanned tree by tree, not window by window: every window still in the
// running goes through the next tree, and those it rejects drop from the list. A tree is a chain
// of dependent loads, so walking it for one window waits on memory at every node; walking it for
// many independent windows in a row lets the processor overlap those waits.
func (cs *cascade) run(p pigo.CascadeParams, t *windowTable) []pigo.Detection {
	var out []pigo.Detection
	pix := p.Pixels
	n, last := cs.nodes(), len(cs.thresh)-1
	for size := p.MinSize; size <= p.MaxSize; size = int(float64(size) + math.Max(2, float64(size)*p.ScaleFactor-float64(size))) {
		step := int(math.Max(p.ShiftFactor*float64(size), 1))
		half := size/2 + 1
		t.reset(cs, size, p.Dim)
		at := t.at[:0]
		for row := half; row <= p.Rows-half; row += step {
			for col := half; col <= p.Cols-half; col += step {
				at = append(at, int32(row*p.Dim+col))
			}
		}
		score := slices.Grow(t.score[:0], len(at))[:len(at)]
		clear(score)
		t.at, t.score = at, score
		for i := 0; i <= last && len(at) > 0; i++ {
			leaves := cs.preds[n*i : n*i+n]
			if i >= t.ready && len(at) <= fewWindows {
				kept := cs.walkDirect(pix, at, score, i, size, p.Dim)
				at, score = at[:kept], score[:kept]
				continue
			}
			if i >= t.ready {
				t.fill(cs, i)
			}
			o := t.offs[2*n*i : 2*n*(i+1)]
			var kept int
			if cs.depth == 6 {
				kept = walk6(pix, at, score, (*[128]int32)(o), (*[64]float32)(leaves), cs.thresh[i])
			} else {
				kept = walk(pix, at, score, o, leaves, cs.thresh[i], cs.depth)
			}
			at, score = at[:kept], score[:kept]
		}
		for j, a := range at {
			if q := score[j] - cs.thresh[last]; q > 0 {
				out = append(out, pigo.Detection{Row: int(a) / p.Dim, Col: int(a) % p.Dim, Scale: size, Q: q})
			}
		}
	}
	return out
}

// fewWindows: when no more windows than this reach a tree whose offsets are not worked out yet,
// they walk it working out each node's offsets as they go (as pigo does) rather than the table
// being filled: a tree has 63 nodes and a walk visits 6 (the deep trees are reached only at
// sizes near a face, by a handful of windows).
const fewWindows = 16

// walkDirect is walk for tree i without the table: each visited node's offsets are worked out
// from the codes for windows of side size in an image of stride dim.
func (cs *cascade) walkDirect(pix []uint8, at []int32, score []float32, i, size, dim int) int {
	n := cs.nodes()
	codes, leaves, th := cs.codes[n*i:n*i+n], cs.preds[n*i:n*i+n], cs.thresh[i]
	score = score[:len(at)]
	kept := 0
	for j, a := range at {
		idx := 1
		for range cs.depth {
			c := codes[idx]
			p1 := int(a) + (int(c[0])*size>>8)*dim + int(c[1])*size>>8
			p2 := int(a) + (int(c[2])*size>>8)*dim + int(c[3])*size>>8
			idx = 2*idx + le(pix[p1], pix[p2])
		}
		s := score[j] + leaves[idx-n]
		at[kept], score[kept] = a, s
		kept += above(s, th)
	}
	return kept
}

// walk runs one tree (its node offsets o, its leaves) over the windows at with their scores so
// far, adds the leaf each reaches, and moves those scoring above th to the front, in order, for
// the next tree; it returns how many those are. (A function of its own: the scan around it holds
// too many values for its loop to stay in registers.)
func walk(pix []uint8, at []int32, score []float32, o []int32, leaves []float32, th float32, depth int) int {
	n := len(leaves)
	score = score[:len(at)]
	kept := 0
	for j, a := range at {
		idx := 1
		for range depth {
			idx = 2*idx + le(pix[int(a)+int(o[2*idx])], pix[int(a)+int(o[2*idx+1])])
		}
		s := score[j] + leaves[idx-n]
		at[kept], score[kept] = a, s // kept in order, as pigo reports them
		kept += above(s, th)
	}
	return kept
}

// walk6 is walk for trees of depth 6 (facefinder's), unrolled, four windows side by side: a tree
// walk is a chain of dependent loads, and four independent chains overlap their waits. With the
// node index masked to the table's size, every value fits in a register.
func walk6(pix []uint8, at []int32, score []float32, o *[128]int32, leaves *[64]float32, th float32) int {
	score = score[:len(at)]
	kept, j := 0, 0
	for ; j+4 <= len(at); j += 4 {
		p0, p1, p2, p3 := int(at[j]), int(at[j+1]), int(at[j+2]), int(at[j+3])
		i0 := 2 + le(pix[p0+int(o[2])], pix[p0+int(o[3])])
		i1 := 2 + le(pix[p1+int(o[2])], pix[p1+int(o[3])])
		i2 := 2 + le(pix[p2+int(o[2])], pix[p2+int(o[3])])
		i3 := 2 + le(pix[p3+int(o[2])], pix[p3+int(o[3])])
		for range 5 {
			i0 = 2*i0 + le(pix[p0+int(o[2*i0&127])], pix[p0+int(o[(2*i0+1)&127])])
			i1 = 2*i1 + le(pix[p1+int(o[2*i1&127])], pix[p1+int(o[(2*i1+1)&127])])
			i2 = 2*i2 + le(pix[p2+int(o[2*i2&127])], pix[p2+int(o[(2*i2+1)&127])])
			i3 = 2*i3 + le(pix[p3+int(o[2*i3&127])], pix[p3+int(o[(2*i3+1)&127])])
		}
		s0, s1, s2, s3 := score[j]+leaves[i0&63], score[j+1]+leaves[i1&63], score[j+2]+leaves[i2&63], score[j+3]+leaves[i3&63]
		// Kept in order, as pigo reports them; kept ≤ j, so nothing unread is overwritten.
		at[kept], score[kept] = int32(p0), s0
		kept += above(s0, th)
		at[kept], score[kept] = int32(p1), s1
		kept += above(s1, th)
		at[kept], score[kept] = int32(p2), s2
		kept += above(s2, th)
		at[kept], score[kept] = int32(p3), s3
		kept += above(s3, th)
	}
	for ; j < len(at); j++ {
		p := int(at[j])
		i := 1
		for range 6 {
			i = 2*i + le(pix[p+int(o[2*i&127])], pix[p+int(o[(2*i+1)&127])])
		}
		s := score[j] + leaves[i&63]
		at[kept], score[kept] = int32(p), s
		kept += above(s, th)
	}
	return kept
}

// le is 1 when a ≤ b, else 0: the step to a node's right child, written so that it compiles to a
// flag rather than a jump (which child comes next is as unpredictable as the pixels).
func le(a, b uint8) int {
	v := 0
	if a <= b {
		v = 1
	}
	return v
}

// above is 1 when s > th, else 0 (a window the tree keeps).
func above(s, th float32) int {
	v := 0
	if s > th {
		v = 1
	}
	return v
}
