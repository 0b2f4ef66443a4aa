package dag

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func at(line, col int) hcl.Range {
	return hcl.Range{Filename: "main.hcl", Start: hcl.Pos{Line: line, Column: col, Byte: 0}, End: hcl.Pos{Line: line, Column: col + 5}}
}

// build makes a graph from "from>to@line" edges after adding nodes in the given order.
func build(nodes []string, edges ...string) *Graph {
	g := New()
	for _, n := range nodes {
		g.AddNode(n)
	}
	for i, e := range edges {
		from, rest, _ := strings.Cut(e, ">")
		to, label, _ := strings.Cut(rest, "@")
		g.AddEdge(Edge{From: from, To: to, Label: label, Origin: at(i+1, 3)})
	}
	return g
}

func TestTopoSortIsDeterministic(t *testing.T) {
	tests := []struct {
		name  string
		nodes []string
		edges []string
		want  string
	}{
		{"independent nodes keep insertion order", []string{"c.x", "a.x", "b.x"}, nil, "c.x a.x b.x"},
		{"dependencies first", []string{"train.lora", "image_check.photos"}, []string{"train.lora>image_check.photos@images"}, "image_check.photos train.lora"},
		{"ties broken by insertion order", []string{"d.1", "a.1", "b.1", "c.1"}, []string{"d.1>c.1", "b.1>a.1"}, "a.1 b.1 c.1 d.1"},
		{"diamond", []string{"gen.c", "gate.b", "train.a", "check.z"}, []string{"gen.c>gate.b", "gen.c>train.a", "gate.b>train.a", "train.a>check.z"}, "check.z train.a gate.b gen.c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				order, cycles := build(tt.nodes, tt.edges...).TopoSort()
				if len(cycles) > 0 {
					t.Fatalf("cycles: %v", cycles)
				}
				if got := strings.Join(order, " "); got != tt.want {
					t.Fatalf("order = %s, want %s", got, tt.want)
				}
			}
		})
	}
}

func TestDepsDependentsAndReach(t *testing.T) {
	g := build([]string{"a.1", "b.1", "c.1", "d.1"}, "b.1>a.1", "c.1>b.1", "d.1>b.1", "d.1>a.1", "d.1>a.1@again")
	if got := strings.Join(g.Deps("d.1"), ","); got != "a.1,b.1" {
		t.Errorf("Deps(d.1) = %s", got)
	}
	if got := strings.Join(g.Dependents("b.1"), ","); got != "c.1,d.1" {
		t.Errorf("Dependents(b.1) = %s", got)
	}
	if got := strings.Join(g.Ancestors("c.1"), ","); got != "a.1,b.1" {
		t.Errorf("Ancestors(c.1) = %s", got)
	}
	if got := strings.Join(g.Descendants("a.1"), ","); got != "b.1,c.1,d.1" {
		t.Errorf("Descendants(a.1) = %s", got)
	}
	if got := len(g.EdgesBetween("d.1", "a.1")); got != 2 {
		t.Errorf("two references d.1 → a.1 are two edges, got %d", got)
	}
	if got := len(g.Edges()); got != 5 {
		t.Errorf("Edges() = %d, want 5", got)
	}
}

// Every cycle is reported once, naming its stages in order and where each edge comes from.
func TestCycles(t *testing.T) {
	g := build([]string{"work.a", "gate.b", "check.c", "x.y", "self.s"},
		"work.a>check.c@images", // line 1
		"check.c>gate.b@depends_on",
		"gate.b>work.a@training",
		"work.a>gate.b@steps", // line 4: a second cycle through work.a and gate.b
		"self.s>self.s@loop",
		"x.y>work.a",
	)
	order, cycles := g.TopoSort()
	if strings.Join(order, " ") != "" {
		t.Errorf("order = %v, want nothing (x.y depends on a cycle)", order)
	}
	var got []string
	for _, c := range cycles {
		got = append(got, c.String())
	}
	// Successors are explored in node order, so the short cycle through gate.b comes first.
	want := []string{"work.a → gate.b → work.a", "work.a → check.c → gate.b → work.a", "self.s → self.s"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("cycles = %v, want %v", got, want)
	}
	diags := g.CycleDiagnostics()
	if len(diags) != 3 {
		t.Fatalf("want 3 diagnostics, got %d", len(diags))
	}
	d := diags[1]
	if d.Summary != "Dependency cycle: work.a → check.c → gate.b → work.a" || d.Subject.Start.Line != 1 {
		t.Errorf("first diagnostic = %s at %s", d.Summary, d.Subject)
	}
	for _, want := range []string{
		"work.a references check.c at main.hcl:1,3-8 (in images)",
		"check.c depends on gate.b at main.hcl:2,3-8",
		"gate.b references work.a at main.hcl:3,3-8 (in training)",
	} {
		if !strings.Contains(d.Detail, want) {
			t.Errorf("detail lacks %q:\n%s", want, d.Detail)
		}
	}
}

// A dense tangle has exponentially many cycles; the enumeration stays bounded.
func TestCyclesBounded(t *testing.T) {
	g := New()
	var nodes []string
	for i := 0; i < 12; i++ {
		nodes = append(nodes, "k.n"+string(rune('a'+i)))
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				g.AddEdge(Edge{From: a, To: b})
			}
		}
	}
	if n := len(g.Cycles()); n == 0 || n > maxCyclesPerComponent {
		t.Errorf("cycles = %d, want 1..%d", n, maxCyclesPerComponent)
	}
}

func TestDOT(t *testing.T) {
	g := build([]string{"image_check.photos", "train.lora", `odd.na"me`}, "train.lora>image_check.photos@images", `odd.na"me>train.lora@depends_on`)
	g.SetNodeAttrs("train.lora", map[string]string{"style": "rounded,bold", "tool-tip": "x"})
	dot := g.DOT()
	for _, want := range []string{
		"digraph pipeline {",
		`"image_check.photos" [label = "image_check\nphotos"];`,
		`"image_check.photos" -> "train.lora" [label = "images"];`,
		`"train.lora" [label = "train\nlora", style = "rounded,bold", tooltip = "x"];`,
		`"train.lora" -> "odd.na\"me" [label = "depends_on", style = dashed];`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %s:\n%s", want, dot)
		}
	}
	// When Graphviz is installed, it must accept the output.
	dotBin, err := exec.LookPath("dot")
	if err != nil {
		t.Log("graphviz not installed; syntax not checked by dot")
		return
	}
	p := filepath.Join(t.TempDir(), "g.dot")
	if err := os.WriteFile(p, []byte(dot), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(dotBin, "-Tsvg", p, "-o", os.DevNull).CombinedOutput(); err != nil {
		t.Errorf("dot rejects the graph: %v\n%s", err, out)
	}
}
