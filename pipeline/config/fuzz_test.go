package config

import (
	"bytes"
	"testing"
)

// FuzzFormat: Format never panics, and formatting a formatted file changes nothing (so
// `pipeline fmt -check` right after `pipeline fmt` always passes).
//
//	go test ./pipeline/config -run '^$' -fuzz FuzzFormat -fuzztime 30s
func FuzzFormat(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("stage \"a\" \"b\" {\nx=1\n  y = [1,2,\n3]\n}\n"))
	f.Add([]byte("locals {\n  t = <<EOT\n  hi\nEOT\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		out, diags := Format(src, "f.hcl")
		if diags.HasErrors() {
			if !bytes.Equal(out, src) {
				t.Fatal("a file with errors must come back unchanged")
			}
			return
		}
		again, diags := Format(out, "f.hcl")
		if diags.HasErrors() {
			t.Fatalf("formatted output does not parse: %s\n%s", diags.Error(), out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%q\nthen\n%q", out, again)
		}
	})
}
