package lang

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// errorMarker is how a fixture line announces the diagnostic it causes:
//
//	min_count = "many" # ERROR: a number is required
var errorMarker = regexp.MustCompile(`#\s*ERROR:\s*(.+?)\s*$`)

type marker struct {
	line int
	text string
}

func readMarkers(t *testing.T, path string) []marker {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []marker
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		if m := errorMarker.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, marker{line: n, text: m[1]})
		}
	}
	return out
}

// TestInvalidFixtures loads every testdata/invalid/*.hcl on its own and requires that the
// diagnostics are exactly the ones its "# ERROR:" markers announce: each marker matches an error on
// its line (by a substring of summary or detail) and each error matches a marker.
func TestInvalidFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.hcl")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			markers := readMarkers(t, path)
			if len(markers) == 0 {
				t.Fatalf("%s announces no error", path)
			}
			m, diags := Load([]string{path}, testKinds())
			if m == nil {
				t.Fatal("Load returned no module")
			}
			matched := make([]bool, len(markers))
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					continue
				}
				if d.Subject == nil {
					t.Errorf("diagnostic without a source range: %s: %s", d.Summary, d.Detail)
					continue
				}
				if d.Subject.Filename != path {
					t.Errorf("diagnostic points into %q, not %q: %s", d.Subject.Filename, path, d.Summary)
				}
				text := d.Summary + "\n" + d.Detail
				found := false
				for i, mk := range markers {
					if mk.line == d.Subject.Start.Line && strings.Contains(text, mk.text) {
						matched[i] = true
						found = true
					}
				}
				if !found {
					t.Errorf("unexpected diagnostic at line %d: %s: %s", d.Subject.Start.Line, d.Summary, d.Detail)
				}
			}
			for i, mk := range markers {
				if !matched[i] {
					t.Errorf("line %d: no diagnostic containing %q; got:\n%s", mk.line, mk.text, describe(diags))
				}
			}
		})
	}
}

func describe(diags hcl.Diagnostics) string {
	var lines []string
	for _, d := range diags {
		line := 0
		if d.Subject != nil {
			line = d.Subject.Start.Line
		}
		lines = append(lines, fmt.Sprintf("  line %d: %s: %s", line, d.Summary, d.Detail))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestValidFixtures requires every testdata/valid/*.hcl to load without any diagnostic.
func TestValidFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.hcl")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, diags := Load([]string{path}, testKinds())
			if len(diags) > 0 {
				t.Errorf("unexpected diagnostics:\n%s", describe(diags))
			}
		})
	}
}
