package config

import (
	"bytes"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Format returns src in canonical HCL formatting (hclwrite: aligned equals signs, two-space
// indentation, normalised spacing). A file with syntax errors is returned unchanged together with
// the errors, so `pipeline fmt` never rewrites a file it cannot parse. `fmt -check` compares the
// result with src:
//
//	out, diags := config.Format(src, "retrain.hcl")
//	changed := !diags.HasErrors() && !bytes.Equal(out, src)
func Format(src []byte, filename string) ([]byte, hcl.Diagnostics) {
	// hclwrite is lenient; the native parser reports syntax errors with ranges.
	if _, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos); diags.HasErrors() {
		return src, diags
	}
	f, diags := hclwrite.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return src, diags
	}
	out := hclwrite.Format(f.Bytes())
	// One trailing newline, as editors and gofmt-like tools expect; a blank file becomes empty.
	out = bytes.TrimRight(out, " \t\r\n")
	if len(out) > 0 {
		out = append(out, '\n')
	}
	return out, nil
}
