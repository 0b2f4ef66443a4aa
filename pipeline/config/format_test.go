package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			name: "aligns equals and indents",
			in:   "stage \"train\" \"lora\" {\nimages = image_check.photos.accepted\n    input={a=1}\n}\n",
			want: "stage \"train\" \"lora\" {\n  images = image_check.photos.accepted\n  input  = { a = 1 }\n}\n",
		},
		{
			name: "one trailing newline",
			in:   "variable \"x\" {}\n\n\n",
			want: "variable \"x\" {}\n",
		},
		{
			name: "already canonical",
			in:   "locals {\n  a   = 1\n  bcd = \"x\"\n}\n",
			want: "locals {\n  a   = 1\n  bcd = \"x\"\n}\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, diags := Format([]byte(tt.in), "x.hcl")
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if string(out) != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, tt.want)
			}
			again, _ := Format(out, "x.hcl")
			if !bytes.Equal(again, out) {
				t.Errorf("not idempotent:\n%s\nthen:\n%s", out, again)
			}
		})
	}
}

// The -check use case: a file needs formatting exactly when Format changes it.
func TestFormatCheck(t *testing.T) {
	canonical := "stage \"a\" \"b\" {\n  x = 1\n}\n"
	if out, _ := Format([]byte(canonical), "a.hcl"); !bytes.Equal(out, []byte(canonical)) {
		t.Errorf("canonical file reported as changed:\n%s", out)
	}
	messy := "stage \"a\" \"b\" {\n x=1\n}\n"
	if out, _ := Format([]byte(messy), "a.hcl"); bytes.Equal(out, []byte(messy)) {
		t.Error("messy file reported as unchanged")
	}
}

// A file with syntax errors is returned unchanged with located errors.
func TestFormatSyntaxError(t *testing.T) {
	src := []byte("stage \"a\" \"b\" {\n  x = \n}\n")
	out, diags := Format(src, "bad.hcl")
	if !diags.HasErrors() {
		t.Fatal("want a syntax error")
	}
	if !bytes.Equal(out, src) {
		t.Error("a file that does not parse must come back unchanged")
	}
	if d := diags[0]; d.Subject == nil || d.Subject.Filename != "bad.hcl" || !strings.Contains(d.Summary, "Invalid expression") {
		t.Errorf("diagnostic = %s at %v", d.Summary, d.Subject)
	}
}

// Formatting the lang fixtures keeps them parseable and is idempotent.
func TestFormatFixturesIdempotent(t *testing.T) {
	for _, src := range []string{full} {
		out, diags := Format([]byte(src), "full.hcl")
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		again, _ := Format(out, "full.hcl")
		if !bytes.Equal(out, again) {
			t.Errorf("not idempotent")
		}
		if _, d := LoadSources(map[string][]byte{"full.hcl": out}); d.HasErrors() {
			t.Errorf("formatted source no longer loads: %s", d.Error())
		}
	}
}
