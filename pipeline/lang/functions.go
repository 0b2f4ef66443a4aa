package lang

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Functions returns the functions available in expressions: go-cty's standard library under
// Terraform's familiar names (length also counts string characters and object attributes),
// try/can, startswith/endswith/strcontains, alltrue/anytrue/sum, sha256 and base64, and file
// helpers (file, filebase64, filesha256, fileexists, fileset with **, templatefile, abspath,
// basename, dirname) whose relative paths resolve against baseDir, the directory of the file
// being evaluated. Nothing time- or randomness-dependent (timestamp, uuid) is offered: a stage's
// inputs must be the same on every run or it would re-run every time.
func Functions(baseDir string) map[string]function.Function {
	fns := map[string]function.Function{
		"abs":             stdlib.AbsoluteFunc,
		"can":             tryfunc.CanFunc,
		"ceil":            stdlib.CeilFunc,
		"chomp":           stdlib.ChompFunc,
		"chunklist":       stdlib.ChunklistFunc,
		"coalesce":        stdlib.CoalesceFunc,
		"coalescelist":    stdlib.CoalesceListFunc,
		"compact":         stdlib.CompactFunc,
		"concat":          stdlib.ConcatFunc,
		"contains":        stdlib.ContainsFunc,
		"csvdecode":       stdlib.CSVDecodeFunc,
		"distinct":        stdlib.DistinctFunc,
		"element":         stdlib.ElementFunc,
		"flatten":         stdlib.FlattenFunc,
		"floor":           stdlib.FloorFunc,
		"format":          stdlib.FormatFunc,
		"formatdate":      stdlib.FormatDateFunc,
		"formatlist":      stdlib.FormatListFunc,
		"indent":          stdlib.IndentFunc,
		"index":           stdlib.IndexFunc,
		"join":            stdlib.JoinFunc,
		"jsondecode":      stdlib.JSONDecodeFunc,
		"jsonencode":      stdlib.JSONEncodeFunc,
		"keys":            stdlib.KeysFunc,
		"length":          lengthFunc,
		"log":             stdlib.LogFunc,
		"lookup":          stdlib.LookupFunc,
		"lower":           stdlib.LowerFunc,
		"max":             stdlib.MaxFunc,
		"merge":           stdlib.MergeFunc,
		"min":             stdlib.MinFunc,
		"parseint":        stdlib.ParseIntFunc,
		"pow":             stdlib.PowFunc,
		"range":           stdlib.RangeFunc,
		"regex":           stdlib.RegexFunc,
		"regexall":        stdlib.RegexAllFunc,
		"replace":         stdlib.ReplaceFunc,
		"reverse":         stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc,
		"setproduct":      stdlib.SetProductFunc,
		"setsubtract":     stdlib.SetSubtractFunc,
		"setunion":        stdlib.SetUnionFunc,
		"signum":          stdlib.SignumFunc,
		"slice":           stdlib.SliceFunc,
		"sort":            stdlib.SortFunc,
		"split":           stdlib.SplitFunc,
		"strrev":          stdlib.ReverseFunc,
		"substr":          stdlib.SubstrFunc,
		"timeadd":         stdlib.TimeAddFunc,
		"title":           stdlib.TitleFunc,
		"tobool":          stdlib.MakeToFunc(cty.Bool),
		"tolist":          stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"tomap":           stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"tonumber":        stdlib.MakeToFunc(cty.Number),
		"toset":           stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tostring":        stdlib.MakeToFunc(cty.String),
		"trim":            stdlib.TrimFunc,
		"trimprefix":      stdlib.TrimPrefixFunc,
		"trimspace":       stdlib.TrimSpaceFunc,
		"trimsuffix":      stdlib.TrimSuffixFunc,
		"try":             tryfunc.TryFunc,
		"upper":           stdlib.UpperFunc,
		"values":          stdlib.ValuesFunc,
		"zipmap":          stdlib.ZipmapFunc,

		"alltrue":      boolFoldFunc(true),
		"anytrue":      boolFoldFunc(false),
		"endswith":     stringPredFunc(strings.HasSuffix),
		"startswith":   stringPredFunc(strings.HasPrefix),
		"strcontains":  stringPredFunc(strings.Contains),
		"sum":          sumFunc,
		"base64decode": base64DecodeFunc,
		"base64encode": base64EncodeFunc,
		"sha256":       sha256Func,

		"abspath":    pathFunc(baseDir, func(base, p string) (string, error) { return resolve(base, p), nil }),
		"basename":   pathFunc(baseDir, func(_, p string) (string, error) { return filepath.Base(p), nil }),
		"dirname":    pathFunc(baseDir, func(_, p string) (string, error) { return filepath.Dir(p), nil }),
		"file":       pathFunc(baseDir, readTextFile),
		"filebase64": pathFunc(baseDir, readBase64File),
		"filesha256": pathFunc(baseDir, hashFile),
		"fileexists": fileExistsFunc(baseDir),
		"fileset":    filesetFunc(baseDir),
	}
	fns["templatefile"] = templateFileFunc(baseDir, fns)
	return fns
}

// resolve makes p absolute against base unless it already is.
func resolve(base, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

func pathFunc(baseDir string, impl func(base, p string) (string, error)) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			s, err := impl(baseDir, args[0].AsString())
			if err != nil {
				return cty.UnknownVal(cty.String), err
			}
			return cty.StringVal(s), nil
		},
	})
}

func readTextFile(base, p string) (string, error) {
	b, err := os.ReadFile(resolve(base, p))
	if err != nil {
		return "", fileError(p, err)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not valid UTF-8 text; use filebase64 for binary files", p)
	}
	return string(b), nil
}

func readBase64File(base, p string) (string, error) {
	b, err := os.ReadFile(resolve(base, p))
	if err != nil {
		return "", fileError(p, err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func hashFile(base, p string) (string, error) {
	b, err := os.ReadFile(resolve(base, p))
	if err != nil {
		return "", fileError(p, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func fileError(p string, err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	return fmt.Errorf("reading %s: %w (relative paths resolve against the directory of the configuration file)", p, err)
}

func fileExistsFunc(baseDir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			fi, err := os.Stat(resolve(baseDir, p))
			if err != nil {
				if os.IsNotExist(err) {
					return cty.False, nil
				}
				return cty.UnknownVal(cty.Bool), fileError(p, err)
			}
			if !fi.Mode().IsRegular() {
				return cty.UnknownVal(cty.Bool), fmt.Errorf("%s is not a regular file", p)
			}
			return cty.True, nil
		},
	})
}

// filesetFunc lists the regular files under dir matching pattern (with ** for any depth), as
// sorted slash-separated paths relative to dir.
func filesetFunc(baseDir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{
			{Name: "path", Type: cty.String},
			{Name: "pattern", Type: cty.String},
		},
		Type: function.StaticReturnType(cty.Set(cty.String)),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			dir := args[0].AsString()
			pattern := args[1].AsString()
			if !doublestar.ValidatePattern(pattern) {
				return cty.UnknownVal(cty.Set(cty.String)), fmt.Errorf("invalid pattern %q", pattern)
			}
			root := resolve(baseDir, dir)
			var matches []string
			err := doublestar.GlobWalk(os.DirFS(root), pattern, func(p string, d fs.DirEntry) error {
				if d.Type().IsRegular() {
					matches = append(matches, p)
				}
				return nil
			}, doublestar.WithFilesOnly())
			if err != nil {
				return cty.UnknownVal(cty.Set(cty.String)), fileError(dir, err)
			}
			if len(matches) == 0 {
				return cty.SetValEmpty(cty.String), nil
			}
			sort.Strings(matches)
			vals := make([]cty.Value, len(matches))
			for i, m := range matches {
				vals[i] = cty.StringVal(m)
			}
			return cty.SetVal(vals), nil
		},
	})
}

// templateFileFunc renders a file as an HCL template with the given variables; the template may
// call every other function except templatefile itself.
func templateFileFunc(baseDir string, fns map[string]function.Function) function.Function {
	inner := make(map[string]function.Function, len(fns))
	for k, v := range fns {
		inner[k] = v
	}
	return function.New(&function.Spec{
		Params: []function.Parameter{
			{Name: "path", Type: cty.String},
			{Name: "vars", Type: cty.DynamicPseudoType},
		},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			src, err := readTextFile(baseDir, p)
			if err != nil {
				return cty.UnknownVal(cty.String), err
			}
			vars := args[1]
			if !vars.IsKnown() {
				return cty.UnknownVal(cty.String), nil
			}
			if vars.IsNull() || !(vars.Type().IsObjectType() || vars.Type().IsMapType()) {
				return cty.UnknownVal(cty.String), fmt.Errorf("templatefile vars must be a map or object")
			}
			expr, diags := hclsyntax.ParseTemplate([]byte(src), resolve(baseDir, p), hcl.InitialPos)
			if diags.HasErrors() {
				return cty.UnknownVal(cty.String), fmt.Errorf("parsing template %s: %s", p, diags.Error())
			}
			ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}, Functions: inner}
			for it := vars.ElementIterator(); it.Next(); {
				k, v := it.Element()
				ctx.Variables[k.AsString()] = v
			}
			for _, tr := range expr.Variables() {
				if _, ok := ctx.Variables[tr.RootName()]; !ok {
					return cty.UnknownVal(cty.String), fmt.Errorf("template %s uses %q, which is not in the vars given to templatefile", p, tr.RootName())
				}
			}
			val, diags := expr.Value(ctx)
			if diags.HasErrors() {
				return cty.UnknownVal(cty.String), fmt.Errorf("rendering template %s: %s", p, diags.Error())
			}
			if !val.IsKnown() {
				return cty.UnknownVal(cty.String), nil
			}
			return stringResult(val)
		},
	})
}

func stringResult(val cty.Value) (cty.Value, error) {
	if val.IsNull() || val.Type() != cty.String {
		return cty.UnknownVal(cty.String), fmt.Errorf("template did not produce a string")
	}
	return val, nil
}

var base64EncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
	},
})

var base64DecodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		b, err := base64.StdEncoding.DecodeString(args[0].AsString())
		if err != nil {
			return cty.UnknownVal(cty.String), fmt.Errorf("not valid base64: %w", err)
		}
		if !utf8.Valid(b) {
			return cty.UnknownVal(cty.String), fmt.Errorf("the decoded bytes are not valid UTF-8")
		}
		return cty.StringVal(string(b)), nil
	},
})

var sha256Func = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		sum := sha256.Sum256([]byte(args[0].AsString()))
		return cty.StringVal(hex.EncodeToString(sum[:])), nil
	},
})

// lengthFunc is stdlib's length extended to strings (in characters) and objects (attributes), as
// Terraform users expect.
var lengthFunc = function.New(&function.Spec{
	Params: []function.Parameter{{
		Name: "value", Type: cty.DynamicPseudoType, AllowDynamicType: true, AllowUnknown: true,
	}},
	Type: function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		switch ty := args[0].Type(); {
		case ty == cty.String:
			return stdlib.Strlen(args[0])
		case ty.IsObjectType():
			return cty.NumberIntVal(int64(len(ty.AttributeTypes()))), nil
		}
		return stdlib.Length(args[0])
	},
})

// stringPredFunc makes startswith/endswith/strcontains: (str, part) -> bool.
func stringPredFunc(pred func(s, part string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "part", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(pred(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

// boolFoldFunc makes alltrue (all = true) and anytrue (all = false) over a list of bools.
func boolFoldFunc(all bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if !args[0].IsWhollyKnown() {
				return cty.UnknownVal(cty.Bool), nil
			}
			for it := args[0].ElementIterator(); it.Next(); {
				_, v := it.Element()
				if v.IsNull() {
					return cty.UnknownVal(cty.Bool), fmt.Errorf("the list must not contain null")
				}
				if v.True() != all {
					return cty.BoolVal(!all), nil
				}
			}
			return cty.BoolVal(all), nil
		},
	})
}

// sumFunc adds a list of numbers.
var sumFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Number)}},
	Type:   function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if !args[0].IsWhollyKnown() {
			return cty.UnknownVal(cty.Number), nil
		}
		total := cty.Zero
		for it := args[0].ElementIterator(); it.Next(); {
			_, v := it.Element()
			if v.IsNull() {
				return cty.UnknownVal(cty.Number), fmt.Errorf("the list must not contain null")
			}
			total = total.Add(v)
		}
		return total, nil
	},
})
