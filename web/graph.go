package web

import (
	"fmt"
	"html"
	"io"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// CollapseOver is the size above which a group of nodes is drawn as one box until it is
// expanded.
const CollapseOver = 60

// stateRank orders states by how much they need attention; a collapsed group takes the
// colour of its highest-ranked member.
var stateRank = map[State]int{
	StateOk: 0, StateInterrupted: 1, StateBlocked: 2, StateReady: 3, StateWaiting: 4, StateRunning: 5, StateFailed: 6,
}

// drawNode is a box of the drawn graph: a node or a collapsed group.
type drawNode struct {
	id, label, title, href string
	state                  State
	inputs                 []int
	layer, row             int
	group                  string
	collapsed              bool
}

// GraphView is a graph laid out for drawing, with groups collapsed.
type GraphView struct {
	nodes  []*drawNode
	layers [][]*drawNode
	expand map[string]bool
	Groups []GroupSummary // the large groups
	Drawn  int            // boxes drawn
}

// GroupSummary describes a group of nodes: its size and how many are in each state.
type GroupSummary struct {
	ID       string        `json:"id"`
	Label    string        `json:"label"`
	Size     int           `json:"size"`
	States   map[State]int `json:"states"`
	Expanded bool          `json:"expanded"`
}

// Layout collapses the large groups of g (and those marked Collapse) not named in
// expand, and lays the rest out in layers, inputs to the left of what depends on them.
// It takes time linear in the size of g.
func Layout(g Graph, expand map[string]bool) *GraphView {
	v := &GraphView{expand: expand}
	info := make(map[string]GroupInfo, len(g.Groups))
	for _, gi := range g.Groups {
		info[gi.ID] = gi
	}
	sizes := map[string]*GroupSummary{}
	for _, n := range g.Nodes {
		for _, gid := range n.Groups {
			s := sizes[gid]
			if s == nil {
				label := info[gid].Label
				if label == "" {
					label = gid
				}
				s = &GroupSummary{ID: gid, Label: label, States: map[State]int{}, Expanded: expand[gid]}
				sizes[gid] = s
			}
			s.Size++
			s.States[n.State]++
		}
	}
	collapsible := func(gid string) bool {
		return sizes[gid].Size > CollapseOver || info[gid].Collapse && sizes[gid].Size > 1
	}
	// A node is drawn inside the outermost group holding it that is collapsible and not
	// expanded. Inside a large group, each subgroup (a ListMap item) is drawn as one box
	// until it is expanded too, so that expanding 5,000 items shows 5,000 boxes, not
	// every stage of every item.
	collapsedInto := func(n *Node) string {
		for i, gid := range n.Groups {
			if expand[gid] {
				continue
			}
			if collapsible(gid) || i > 0 && sizes[n.Groups[i-1]].Size > CollapseOver && sizes[gid].Size > 1 {
				return gid
			}
		}
		return ""
	}
	index := make(map[string]int, len(g.Nodes)) // node id -> draw node
	groupNode := map[string]int{}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		if gid := collapsedInto(n); gid != "" {
			i, ok := groupNode[gid]
			if !ok {
				i = len(v.nodes)
				groupNode[gid] = i
				s := sizes[gid]
				v.nodes = append(v.nodes, &drawNode{
					id: "group:" + gid, label: fmt.Sprintf("%s (%d)", s.Label, s.Size),
					title: groupTitle(s), state: n.State, group: gid, collapsed: true,
				})
			}
			d := v.nodes[i]
			if stateRank[n.State] > stateRank[d.state] {
				d.state = n.State
			}
			index[n.ID] = i
			continue
		}
		index[n.ID] = len(v.nodes)
		d := &drawNode{id: n.ID, label: n.Label, title: n.Label, state: n.State}
		if n.Message != "" {
			d.title += ": " + n.Message
		}
		if n.JobID != "" {
			d.href = "/job/" + url.PathEscape(n.JobID)
		}
		v.nodes = append(v.nodes, d)
	}
	for _, n := range g.Nodes {
		me := index[n.ID]
		for _, in := range n.Inputs {
			j, ok := index[in]
			if !ok || j == me || slices.Contains(v.nodes[me].inputs, j) {
				continue
			}
			v.nodes[me].inputs = append(v.nodes[me].inputs, j)
		}
	}
	v.assignLayers()
	for gid, s := range sizes {
		if collapsible(gid) {
			v.Groups = append(v.Groups, *s)
		}
	}
	v.Drawn = len(v.nodes)
	sort.Slice(v.Groups, func(i, j int) bool { return v.Groups[i].Label < v.Groups[j].Label })
	return v
}

func groupTitle(s *GroupSummary) string {
	var parts []string
	for _, st := range []State{StateFailed, StateRunning, StateWaiting, StateReady, StateBlocked, StateInterrupted, StateOk} {
		if c := s.States[st]; c > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c, st))
		}
	}
	return s.Label + ": " + strings.Join(parts, ", ")
}

// assignLayers puts each node one layer right of its deepest input (cycles, which a
// pipeline cannot have, are broken arbitrarily) and orders each layer by the mean row
// of the inputs.
func (v *GraphView) assignLayers() {
	const unset, visiting = -1, -2
	for _, d := range v.nodes {
		d.layer = unset
	}
	var stack []int
	for start := range v.nodes {
		if v.nodes[start].layer != unset {
			continue
		}
		stack = append(stack[:0], start)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			d := v.nodes[i]
			if d.layer == unset {
				d.layer = visiting
				for _, in := range d.inputs {
					if v.nodes[in].layer == unset {
						stack = append(stack, in)
					}
				}
				continue
			}
			stack = stack[:len(stack)-1]
			if d.layer != visiting {
				continue
			}
			l := 0
			for _, in := range d.inputs {
				if il := v.nodes[in].layer; il >= 0 && il+1 > l {
					l = il + 1
				}
			}
			d.layer = l
		}
	}
	for _, d := range v.nodes {
		for len(v.layers) <= d.layer {
			v.layers = append(v.layers, nil)
		}
		v.layers[d.layer] = append(v.layers[d.layer], d)
	}
	for li, layer := range v.layers {
		if li > 0 {
			key := make(map[*drawNode]float64, len(layer))
			for _, d := range layer {
				sum := 0.0
				for _, in := range d.inputs {
					sum += float64(v.nodes[in].row)
				}
				if len(d.inputs) > 0 {
					key[d] = sum / float64(len(d.inputs))
				}
			}
			sort.SliceStable(layer, func(i, j int) bool { return key[layer[i]] < key[layer[j]] })
		}
		for r, d := range layer {
			d.row = r
		}
	}
}

const (
	boxW, boxH     = 160, 28
	colGap, rowGap = 44, 12
	margin         = 10
)

func (d *drawNode) x() int { return margin + d.layer*(boxW+colGap) }
func (d *drawNode) y() int { return margin + d.row*(boxH+rowGap) }

// Size returns the width and height of the drawing in pixels.
func (v *GraphView) Size() (w, h int) {
	rows := 0
	for _, l := range v.layers {
		rows = max(rows, len(l))
	}
	return 2*margin + max(1, len(v.layers))*(boxW+colGap) - colGap, 2*margin + max(1, rows)*(boxH+rowGap) - rowGap
}

// WriteSVG draws the graph. Each box has the class s-<state>; boxes of jobs link to the
// job's page and collapsed groups link to the graph with that group expanded.
func (v *GraphView) WriteSVG(w io.Writer) error {
	width, height := v.Size()
	b := &strings.Builder{}
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" class="pipeline" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", width, height, width, height)
	b.WriteString(`<g class="edges">`)
	for _, d := range v.nodes {
		for _, in := range d.inputs {
			s := v.nodes[in]
			x1, y1 := s.x()+boxW, s.y()+boxH/2
			x2, y2 := d.x(), d.y()+boxH/2
			if s.layer >= d.layer { // only from a broken cycle
				continue
			}
			mx := (x1 + x2) / 2
			fmt.Fprintf(b, `<path d="M%d %dC%d %d %d %d %d %d"/>`, x1, y1, mx, y1, mx, y2, x2, y2)
		}
		if b.Len() > 1<<16 {
			if _, err := io.WriteString(w, b.String()); err != nil {
				return err
			}
			b.Reset()
		}
	}
	b.WriteString("</g>\n")
	for _, d := range v.nodes {
		href := d.href
		if d.collapsed {
			href = v.expandURL(d.group)
		}
		if href != "" {
			fmt.Fprintf(b, `<a href="%s">`, html.EscapeString(href))
		}
		cls := "node s-" + string(d.state)
		if d.collapsed {
			cls += " group"
		}
		fmt.Fprintf(b, `<g class="%s" data-id="%s"><title>%s</title><rect x="%d" y="%d" width="%d" height="%d" rx="4"/><text x="%d" y="%d">%s</text></g>`,
			cls, html.EscapeString(d.id), html.EscapeString(d.title), d.x(), d.y(), boxW, boxH,
			d.x()+8, d.y()+boxH/2+5, html.EscapeString(truncate(d.label, 23)))
		if href != "" {
			b.WriteString("</a>")
		}
		b.WriteString("\n")
		if b.Len() > 1<<16 {
			if _, err := io.WriteString(w, b.String()); err != nil {
				return err
			}
			b.Reset()
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// expandURL is the graph page with group also expanded.
func (v *GraphView) expandURL(group string) string {
	q := url.Values{}
	for g, on := range v.expand {
		if on {
			q.Add("expand", g)
		}
	}
	q.Add("expand", group)
	return "/?" + q.Encode()
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
