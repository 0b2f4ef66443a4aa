package generate

import (
	"sort"

	"github.com/zclconf/go-cty/cty"
)

// reference is what the guard compares with: the texture figures image_check measured on the
// subject's accepted photos.
type reference struct {
	// known is false while the reference stage's outputs are unknown (plan before it ran).
	known bool
	// missing: no reference configured.
	missing bool
	// invalid says why the value is not an image_check stage's output ("" when it is).
	invalid string
	// photos counts the accepted photos; texture and sharpness hold the scored ones' figures, in
	// path order.
	photos             int
	texture, sharpness []float64
	// count is the stage's `count` output (-1 when absent); rejected its `rejected` (path → reason).
	count    int
	rejected map[string]string
}

// referenceOf reads an image_check stage's whole output object (fields `accepted` and `stats`,
// where stats maps path → {accepted, texture, face_sharpness, ...}; unscored figures are -1).
func referenceOf(v cty.Value) reference {
	if v == cty.NilVal || v.IsNull() {
		return reference{known: true, missing: true}
	}
	if !v.IsWhollyKnown() {
		return reference{}
	}
	ty := v.Type()
	if !(ty.IsObjectType() || ty.IsMapType()) {
		return reference{known: true, invalid: "reference is a " + ty.FriendlyName() + ", not an image_check stage; hint: reference = image_check.photos (the whole stage)"}
	}
	stats := attr(v, "stats")
	if stats == cty.NilVal || stats.IsNull() || !(stats.Type().IsMapType() || stats.Type().IsObjectType()) {
		return reference{known: true, invalid: "reference has no per-photo stats; hint: reference = image_check.photos (the whole stage, not one of its outputs)"}
	}
	var accepted map[string]bool
	if a := attr(v, "accepted"); a != cty.NilVal && !a.IsNull() && (a.Type().IsListType() || a.Type().IsSetType() || a.Type().IsTupleType()) {
		accepted = map[string]bool{}
		for _, p := range a.AsValueSlice() {
			if p.Type() == cty.String && !p.IsNull() {
				accepted[p.AsString()] = true
			}
		}
	}
	ref := reference{known: true, count: -1, rejected: map[string]string{}}
	if n, ok := numberAttr(v, "count"); ok {
		ref.count = int(n)
	}
	for p, why := range entries(attr(v, "rejected")) {
		if why.Type() == cty.String && !why.IsNull() {
			ref.rejected[p] = why.AsString()
		}
	}
	stat := stats.AsValueMap()
	paths := make([]string, 0, len(stat))
	for p := range stat {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	number := func(obj cty.Value, name string) float64 {
		n := attr(obj, name)
		if n == cty.NilVal || n.IsNull() || n.Type() != cty.Number {
			return -1
		}
		f, _ := n.AsBigFloat().Float64()
		return f
	}
	for _, p := range paths {
		st := stat[p]
		if st.IsNull() || !(st.Type().IsObjectType() || st.Type().IsMapType()) {
			continue
		}
		if accepted != nil {
			if !accepted[p] {
				continue
			}
		} else if a := attr(st, "accepted"); a != cty.NilVal && a.Type() == cty.Bool && !a.IsNull() && a.False() {
			continue
		}
		ref.photos++
		if t := number(st, "texture"); t > 0 {
			ref.texture = append(ref.texture, t)
			ref.sharpness = append(ref.sharpness, number(st, "face_sharpness"))
		}
	}
	return ref
}
