// Package dag is the stage graph of a pipeline: nodes are stage addresses "KIND.NAME", an edge
// A → B means A depends on B (A references B or lists it in depends_on), and every edge remembers
// where in the configuration it comes from, so a cycle can be explained line by line.
//
//	g := dag.New()
//	g.AddNode("image_check.photos")
//	g.AddNode("train.lora")
//	g.AddEdge(dag.Edge{From: "train.lora", To: "image_check.photos", Label: "images", Origin: rng})
//	order, cycles := g.TopoSort() // ["image_check.photos", "train.lora"], nil
//	fmt.Print(g.DOT())            // for `pipeline graph`
package dag

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Edge is one dependency: From depends on To.
type Edge struct {
	From, To string
	// Label says why, e.g. the attribute holding the reference ("images") or "depends_on".
	Label string
	// Origin is the range of the reference or depends_on entry.
	Origin hcl.Range
}

// Graph is a directed graph of stage addresses. Node order (the order of AddNode) breaks ties so
// every listing is deterministic. A Graph is not safe for concurrent mutation; reading it from
// many goroutines after it is built is fine.
type Graph struct {
	nodes []string
	index map[string]int
	// out[from][to] lists every edge from → to (several references may join the same pair).
	out map[string]map[string][]Edge
	in  map[string]map[string]bool
	// attrs are extra Graphviz attributes per node (style, tooltip), see SetNodeAttrs.
	attrs map[string]map[string]string
}

// New returns an empty graph.
func New() *Graph {
	return &Graph{index: map[string]int{}, out: map[string]map[string][]Edge{}, in: map[string]map[string]bool{}, attrs: map[string]map[string]string{}}
}

// AddNode adds a node; adding it again is a no-op that keeps its first position.
func (g *Graph) AddNode(addr string) {
	if _, ok := g.index[addr]; ok {
		return
	}
	g.index[addr] = len(g.nodes)
	g.nodes = append(g.nodes, addr)
}

// SetNodeAttrs sets extra Graphviz attributes of a node for DOT (e.g. style, tooltip); "label"
// replaces the default label.
func (g *Graph) SetNodeAttrs(addr string, attrs map[string]string) {
	g.AddNode(addr)
	if g.attrs[addr] == nil {
		g.attrs[addr] = map[string]string{}
	}
	for k, v := range attrs {
		g.attrs[addr][k] = v
	}
}

// Has reports whether addr is a node.
func (g *Graph) Has(addr string) bool {
	_, ok := g.index[addr]
	return ok
}

// AddEdge records that e.From depends on e.To, adding missing nodes.
func (g *Graph) AddEdge(e Edge) {
	g.AddNode(e.From)
	g.AddNode(e.To)
	if g.out[e.From] == nil {
		g.out[e.From] = map[string][]Edge{}
	}
	g.out[e.From][e.To] = append(g.out[e.From][e.To], e)
	if g.in[e.To] == nil {
		g.in[e.To] = map[string]bool{}
	}
	g.in[e.To][e.From] = true
}

// Nodes returns every node in insertion order.
func (g *Graph) Nodes() []string { return append([]string(nil), g.nodes...) }

// Deps returns the nodes addr depends on directly, in node order.
func (g *Graph) Deps(addr string) []string {
	var out []string
	for to := range g.out[addr] {
		out = append(out, to)
	}
	g.sortByIndex(out)
	return out
}

// Dependents returns the nodes that depend on addr directly, in node order.
func (g *Graph) Dependents(addr string) []string {
	var out []string
	for from := range g.in[addr] {
		out = append(out, from)
	}
	g.sortByIndex(out)
	return out
}

// Ancestors returns every node addr depends on, directly or not, in node order.
func (g *Graph) Ancestors(addr string) []string { return g.reach(addr, g.Deps) }

// Descendants returns every node that depends on addr, directly or not, in node order.
func (g *Graph) Descendants(addr string) []string { return g.reach(addr, g.Dependents) }

func (g *Graph) reach(addr string, next func(string) []string) []string {
	seen := map[string]bool{}
	stack := next(addr)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, next(n)...)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	g.sortByIndex(out)
	return out
}

// EdgesBetween returns the edges from → to (one per reference), in the order they were added.
func (g *Graph) EdgesBetween(from, to string) []Edge {
	return append([]Edge(nil), g.out[from][to]...)
}

// Edges returns every edge, ordered by From then To (node order), then insertion.
func (g *Graph) Edges() []Edge {
	var out []Edge
	for _, from := range g.nodes {
		for _, to := range g.Deps(from) {
			out = append(out, g.out[from][to]...)
		}
	}
	return out
}

func (g *Graph) sortByIndex(s []string) {
	sort.Slice(s, func(i, j int) bool { return g.index[s[i]] < g.index[s[j]] })
}

// TopoSort returns the nodes with every node after the nodes it depends on; among nodes that are
// ready together, the one added first comes first. When the graph has cycles, order holds only
// the nodes outside them and cycles lists them (see Cycles).
func (g *Graph) TopoSort() (order []string, cycles []Cycle) {
	pending := make(map[string]int, len(g.nodes))
	for _, n := range g.nodes {
		pending[n] = len(g.out[n])
	}
	ready := &indexHeap{g: g}
	for _, n := range g.nodes {
		if pending[n] == 0 {
			ready.push(n)
		}
	}
	for ready.len() > 0 {
		n := ready.pop()
		order = append(order, n)
		for _, d := range g.Dependents(n) {
			pending[d]--
			if pending[d] == 0 {
				ready.push(d)
			}
		}
	}
	if len(order) < len(g.nodes) {
		cycles = g.Cycles()
	}
	return order, cycles
}

// indexHeap is a min-heap of nodes by insertion index.
type indexHeap struct {
	g *Graph
	s []string
}

func (h *indexHeap) len() int { return len(h.s) }

func (h *indexHeap) less(i, j int) bool { return h.g.index[h.s[i]] < h.g.index[h.s[j]] }

func (h *indexHeap) push(n string) {
	h.s = append(h.s, n)
	i := len(h.s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.s[i], h.s[p] = h.s[p], h.s[i]
		i = p
	}
}

func (h *indexHeap) pop() string {
	top := h.s[0]
	last := len(h.s) - 1
	h.s[0] = h.s[last]
	h.s = h.s[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h.s) && h.less(l, m) {
			m = l
		}
		if r < len(h.s) && h.less(r, m) {
			m = r
		}
		if m == i {
			return top
		}
		h.s[i], h.s[m] = h.s[m], h.s[i]
		i = m
	}
}

// Cycle is one elementary cycle: Nodes[0] depends on Nodes[1] … and the last depends on Nodes[0].
// Edges[i] is the edge Nodes[i] → Nodes[(i+1)%len].
type Cycle struct {
	Nodes []string
	Edges []Edge
}

// String renders the cycle as "a → b → a".
func (c Cycle) String() string {
	if len(c.Nodes) == 0 {
		return ""
	}
	return strings.Join(append(append([]string(nil), c.Nodes...), c.Nodes[0]), " → ")
}

// maxCyclesPerComponent bounds the enumeration: a dense tangle has exponentially many cycles and
// a handful explains it.
const maxCyclesPerComponent = 20

// Cycles returns the elementary cycles of the graph, each starting at its earliest node, ordered
// by that node; at most maxCyclesPerComponent per strongly connected component.
func (g *Graph) Cycles() []Cycle {
	var out []Cycle
	for _, comp := range g.components() {
		inComp := map[string]bool{}
		for _, n := range comp {
			inComp[n] = true
		}
		if len(comp) == 1 {
			n := comp[0]
			if es := g.out[n][n]; len(es) > 0 {
				out = append(out, Cycle{Nodes: []string{n}, Edges: []Edge{es[0]}})
			}
			continue
		}
		found := 0
		// A cycle is reported once, from its earliest node: start s only uses nodes after s.
		for si, s := range comp {
			if found >= maxCyclesPerComponent {
				break
			}
			allowed := map[string]bool{}
			for _, n := range comp[si:] {
				allowed[n] = true
			}
			path := []string{s}
			onPath := map[string]bool{s: true}
			var walk func(n string) bool
			walk = func(n string) bool {
				for _, to := range g.Deps(n) {
					if !allowed[to] {
						continue
					}
					if to == s {
						c := Cycle{Nodes: append([]string(nil), path...)}
						for i, from := range c.Nodes {
							next := c.Nodes[(i+1)%len(c.Nodes)]
							c.Edges = append(c.Edges, g.out[from][next][0])
						}
						if len(c.Nodes) > 1 || to == n {
							out = append(out, c)
							found++
						}
						if found >= maxCyclesPerComponent {
							return false
						}
						continue
					}
					if onPath[to] {
						continue
					}
					onPath[to] = true
					path = append(path, to)
					if !walk(to) {
						return false
					}
					path = path[:len(path)-1]
					onPath[to] = false
				}
				return true
			}
			walk(s)
		}
	}
	return out
}

// components returns the strongly connected components (Tarjan), each sorted by node order,
// ordered by their earliest node.
func (g *Graph) components() [][]string {
	index := map[string]int{}
	low := map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var comps [][]string
	next := 0
	var strong func(v string)
	strong = func(v string) {
		index[v] = next
		low[v] = next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range g.Deps(v) {
			if _, seen := index[w]; !seen {
				strong(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var comp []string
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp = append(comp, w)
				if w == v {
					break
				}
			}
			g.sortByIndex(comp)
			comps = append(comps, comp)
		}
	}
	for _, n := range g.nodes {
		if _, seen := index[n]; !seen {
			strong(n)
		}
	}
	sort.Slice(comps, func(i, j int) bool { return g.index[comps[i][0]] < g.index[comps[j][0]] })
	return comps
}

// CycleDiagnostics returns one error per cycle, naming the stages and where each edge comes from
// (file:line:col); the subject is the first edge's origin.
func (g *Graph) CycleDiagnostics() hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, c := range g.Cycles() {
		var lines []string
		for _, e := range c.Edges {
			how := "references"
			if e.Label == "depends_on" {
				how = "depends on"
			}
			where := e.Origin.String()
			if e.Label != "" && e.Label != "depends_on" {
				where = fmt.Sprintf("%s (in %s)", where, e.Label)
			}
			lines = append(lines, fmt.Sprintf("  %s %s %s at %s", e.From, how, e.To, where))
		}
		d := &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Dependency cycle: " + c.String(),
			Detail: "These stages depend on each other, so none of them can run first:\n" +
				strings.Join(lines, "\n") +
				"\nRemove one of these references or depends_on entries to break the cycle.",
		}
		if len(c.Edges) > 0 && c.Edges[0].Origin.Filename != "" {
			d.Subject = c.Edges[0].Origin.Ptr()
		}
		diags = append(diags, d)
	}
	return diags
}

// DOT renders the graph in Graphviz DOT, drawn in the direction data flows: an arrow goes from a
// stage to the stages that use it, labelled with the attribute that references it (dashed for
// depends_on). Nodes are labelled KIND on one line and NAME on the next.
func (g *Graph) DOT() string {
	var b strings.Builder
	b.WriteString("digraph pipeline {\n")
	b.WriteString("  rankdir = \"LR\";\n")
	b.WriteString("  node [shape = box, style = rounded, fontname = \"Helvetica\"];\n")
	b.WriteString("  edge [fontname = \"Helvetica\", fontsize = 10];\n")
	for _, n := range g.nodes {
		label := n
		if kind, name, ok := strings.Cut(n, "."); ok {
			label = kind + "\n" + name
		}
		extra := g.attrs[n]
		if l, ok := extra["label"]; ok {
			label = l
		}
		fmt.Fprintf(&b, "  %s [label = %s", dotQuote(n), dotQuote(label))
		keys := make([]string, 0, len(extra))
		for k := range extra {
			if k != "label" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, ", %s = %s", dotID(k), dotQuote(extra[k]))
		}
		b.WriteString("];\n")
	}
	for _, from := range g.nodes {
		for _, to := range g.Deps(from) {
			var labels []string
			seen := map[string]bool{}
			for _, e := range g.out[from][to] {
				if e.Label != "" && !seen[e.Label] {
					seen[e.Label] = true
					labels = append(labels, e.Label)
				}
			}
			attrs := ""
			if len(labels) > 0 {
				attrs = " [label = " + dotQuote(strings.Join(labels, ", ")) + "]"
				if len(labels) == 1 && labels[0] == "depends_on" {
					attrs = " [label = \"depends_on\", style = dashed]"
				}
			}
			fmt.Fprintf(&b, "  %s -> %s%s;\n", dotQuote(to), dotQuote(from), attrs)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// dotID makes an attribute name safe as a bare DOT identifier.
func dotID(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 || (s[0] >= '0' && s[0] <= '9') {
		return "x" + b.String()
	}
	return b.String()
}

// dotQuote quotes s as a DOT string: backslash and double quote escaped, newlines as \n.
func dotQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
