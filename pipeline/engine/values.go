package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"sort"
	"strings"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/pipeline-dev/pipeline/pipeline"
)

// Unknown is how a value not known until apply is shown.
const Unknown = "(known after apply)"

// Redacted is how a sensitive value is shown.
const Redacted = "(sensitive)"

// Plain turns a cty value into plain Go values for JSON and display: unknown values become
// Unknown, values at a sensitive path become Redacted, numbers become json.Number.
func Plain(v cty.Value, sensitive []cty.Path) any {
	return plain(v, nil, sensitive)
}

func plain(v cty.Value, path cty.Path, sensitive []cty.Path) any {
	for _, p := range sensitive {
		if p.Equals(path) {
			return Redacted
		}
	}
	if v == cty.NilVal {
		return nil
	}
	if v.IsMarked() {
		v, _ = v.Unmark()
	}
	if !v.IsKnown() {
		return Unknown
	}
	if v.IsNull() {
		return nil
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return v.AsString()
	case t == cty.Number:
		return json.Number(numberString(v.AsBigFloat()))
	case t == cty.Bool:
		return v.True()
	case t.IsListType() || t.IsSetType() || t.IsTupleType():
		out := make([]any, 0, v.LengthInt())
		i := 0
		for it := v.ElementIterator(); it.Next(); i++ {
			k, e := it.Element()
			out = append(out, plain(e, append(path.Copy(), cty.IndexStep{Key: k}), sensitive))
		}
		return out
	case t.IsMapType() || t.IsObjectType():
		out := make(map[string]any, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			var step cty.PathStep = cty.IndexStep{Key: k}
			if t.IsObjectType() {
				step = cty.GetAttrStep{Name: k.AsString()}
			}
			out[k.AsString()] = plain(e, append(path.Copy(), step), sensitive)
		}
		return out
	}
	return v.GoString()
}

func numberString(f *big.Float) string {
	if f.IsInt() {
		i, _ := f.Int(nil)
		return i.String()
	}
	x, _ := f.Float64()
	b, _ := json.Marshal(x)
	return string(b)
}

// SensitiveName reports whether an attribute name must be redacted by name alone.
func SensitiveName(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "token") || strings.Contains(n, "key") || strings.Contains(n, "secret")
}

// sensitiveByName finds attribute paths inside v whose names contain token/key/secret.
func sensitiveByName(v cty.Value, path cty.Path, out []cty.Path) []cty.Path {
	if v == cty.NilVal || !v.IsKnown() || v.IsNull() {
		return out
	}
	t := v.Type()
	if t.IsObjectType() || t.IsMapType() {
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			var step cty.PathStep = cty.IndexStep{Key: k}
			if t.IsObjectType() {
				step = cty.GetAttrStep{Name: k.AsString()}
			}
			p := append(path.Copy(), step)
			if SensitiveName(k.AsString()) && e.Type() == cty.String {
				out = append(out, p)
				continue
			}
			out = sensitiveByName(e, p, out)
		}
	}
	return out
}

// marshalValue encodes a wholly known value with its type (for state).
func marshalValue(v cty.Value) (json.RawMessage, error) {
	if v == cty.NilVal {
		return nil, nil
	}
	v, _ = v.UnmarkDeep()
	b, err := ctyjson.Marshal(v, cty.DynamicPseudoType)
	return b, err
}

// unmarshalValue decodes a value written by marshalValue.
func unmarshalValue(b json.RawMessage) (cty.Value, error) {
	if len(b) == 0 {
		return cty.NilVal, nil
	}
	return ctyjson.Unmarshal(b, cty.DynamicPseudoType)
}

// digestOf hashes a wholly known value; ok is false when it is not wholly known.
func digestOf(v cty.Value) (string, bool) {
	if v == cty.NilVal {
		return hashString("null"), true
	}
	v, _ = v.UnmarkDeep()
	if !v.IsWhollyKnown() {
		return "", false
	}
	b, err := ctyjson.Marshal(v, cty.DynamicPseudoType)
	if err != nil {
		return "", false
	}
	return hashBytes(b), true
}

func hashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}

func hashString(s string) string { return hashBytes([]byte(s)) }

// combineDigest folds digest parts into one digest, independent of map order.
func combineDigest(parts map[string]string) string {
	names := make([]string, 0, len(parts))
	for n := range parts {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		sb.WriteString(n)
		sb.WriteByte('=')
		sb.WriteString(parts[n])
		sb.WriteByte('\n')
	}
	return "sha256:" + hashString(sb.String())
}

// outputObject builds the stage's output object of its declared types from a Result. Missing
// outputs are unknown while planning and null after apply.
func outputObject(types map[string]cty.Type, got map[string]cty.Value, planning bool) (cty.Value, error) {
	attrs := make(map[string]cty.Value, len(types))
	for name, ty := range types {
		v, ok := got[name]
		switch {
		case !ok || v == cty.NilVal:
			if planning {
				attrs[name] = cty.UnknownVal(ty)
			} else {
				attrs[name] = cty.NullVal(ty)
			}
		default:
			cv, err := convert.Convert(v, ty)
			if err != nil {
				return cty.NilVal, &outputTypeError{name: name, err: err}
			}
			attrs[name] = cv
		}
	}
	return cty.ObjectVal(attrs), nil
}

// unknownOutputs is the output object of a stage whose outputs are all unknown.
func unknownOutputs(types map[string]cty.Type) cty.Value {
	attrs := make(map[string]cty.Value, len(types))
	for name, ty := range types {
		attrs[name] = cty.UnknownVal(ty)
	}
	return cty.ObjectVal(attrs)
}

// outputsType is the object type of a kind's outputs.
func outputsType(types map[string]cty.Type) cty.Type {
	return cty.Object(types)
}

type outputTypeError struct {
	name string
	err  error
}

func (e *outputTypeError) Error() string {
	return "output " + e.name + " has the wrong type: " + e.err.Error()
}

// restoreOutputs converts recorded outputs back to the kind's declared output object type, so a
// kind that changed its outputs (or a hand-edited state) cannot break evaluation.
func restoreOutputs(types map[string]cty.Type, raw json.RawMessage) (cty.Value, bool) {
	v, err := unmarshalValue(raw)
	if err != nil || v == cty.NilVal || v.IsNull() || !v.Type().IsObjectType() {
		return cty.NilVal, false
	}
	got := make(map[string]cty.Value)
	for name := range types {
		if v.Type().HasAttribute(name) {
			got[name] = v.GetAttr(name)
		}
	}
	out, err := outputObject(types, got, false)
	if err != nil {
		return cty.NilVal, false
	}
	return out, true
}

// recordable is what state keeps of a stage's outputs: all but the schema's Transient ones.
func recordable(schema *pipeline.Schema, outputs cty.Value) cty.Value {
	if len(schema.Transient) == 0 || outputs == cty.NilVal || !outputs.IsKnown() || outputs.IsNull() || !outputs.Type().IsObjectType() {
		return outputs
	}
	attrs := outputs.AsValueMap()
	for _, name := range schema.Transient {
		delete(attrs, name)
	}
	if len(attrs) == 0 {
		return cty.EmptyObjectVal
	}
	return cty.ObjectVal(attrs)
}
