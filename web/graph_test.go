package web

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// bigGraph is a source feeding n items of a ListMap group, each item a fetch and a build,
// and a summary depending on every build.
func bigGraph(n int) Graph {
	g := Graph{Nodes: []Node{{ID: "src", Label: "git heads", State: StateOk}}, Groups: []GroupInfo{{ID: "commits", Label: "commits", Kind: "listmap"}}}
	var builds []string
	for i := range n {
		f := fmt.Sprintf("fetch%d", i)
		b := fmt.Sprintf("build%d", i)
		st := StateOk
		if i == 7 {
			st = StateFailed
		}
		g.Nodes = append(g.Nodes,
			Node{ID: f, Label: "fetch " + fmt.Sprint(i), State: StateOk, Groups: []string{"commits"}, Inputs: []string{"src"}, JobID: "j" + f},
			Node{ID: b, Label: "build " + fmt.Sprint(i), State: st, Groups: []string{"commits"}, Inputs: []string{f}, JobID: "j" + b})
		builds = append(builds, b)
	}
	g.Nodes = append(g.Nodes, Node{ID: "sum", Label: "summary", State: StateBlocked, Inputs: builds})
	return g
}

func TestLayoutCollapsesLargeGroups(t *testing.T) {
	g := bigGraph(5000)
	var buf bytes.Buffer
	if err := Layout(g, nil).WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	svg := buf.String()
	if n := strings.Count(svg, "<rect"); n != 3 {
		t.Fatalf("collapsed graph has %d boxes, want 3 (source, group, summary)", n)
	}
	if !strings.Contains(svg, `class="node s-failed group"`) {
		t.Errorf("collapsed group does not take the failed colour of its member:\n%s", svg)
	}
	if !strings.Contains(svg, `href="/?expand=commits"`) {
		t.Errorf("collapsed group does not link to its expansion")
	}
	if !strings.Contains(svg, "10000 stages") && !strings.Contains(svg, "commits (10000)") {
		t.Errorf("group label does not give its size")
	}
	buf.Reset()
	if err := Layout(g, map[string]bool{"commits": true}).WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "<rect"); n != 10002 {
		t.Fatalf("expanded graph has %d boxes, want 10002", n)
	}
	if !strings.Contains(buf.String(), `<a href="/job/jbuild7"><g class="node s-failed"`) {
		t.Errorf("expanded node does not link to its job")
	}
}

func TestLayoutLayers(t *testing.T) {
	g := Graph{Nodes: []Node{
		{ID: "c", Label: "c", State: StateOk, Inputs: []string{"b", "a"}},
		{ID: "a", Label: "a", State: StateOk},
		{ID: "b", Label: "b", State: StateRunning, Inputs: []string{"a"}},
		{ID: "x", Label: "x", State: StateOk, Inputs: []string{"x", "missing"}},
	}}
	v := Layout(g, nil)
	layer := map[string]int{}
	for _, d := range v.nodes {
		layer[d.id] = d.layer
	}
	if layer["a"] != 0 || layer["b"] != 1 || layer["c"] != 2 || layer["x"] != 0 {
		t.Fatalf("layers = %v", layer)
	}
}

func BenchmarkGraphSVG10000(b *testing.B) {
	g := bigGraph(5000)
	for _, expand := range []bool{false, true} {
		b.Run(fmt.Sprintf("expanded=%v", expand), func(b *testing.B) {
			var buf bytes.Buffer
			for b.Loop() {
				buf.Reset()
				if err := Layout(g, map[string]bool{"commits": expand}).WriteSVG(&buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(buf.Len()), "svg-bytes")
		})
	}
}
