package current

import (
	"container/heap"
	"fmt"
	"reflect"
)

// node is one vertex of the pipeline graph. Nodes are built by the term constructors
// (outside any engine) and become active when an engine evaluates a graph that uses them.
type node struct {
	id     int64
	label  string
	kind   string
	inputs []*node
	impl   nodeImpl

	// Set while active, owned by the engine's evaluation lock.
	e        *Engine
	refs     int32
	height   int32
	deps     []*node
	out      output
	ver      uint64
	display  State
	dmsg     string
	group    *group
	queued   bool
	released bool
}

// nodeImpl is the behaviour of one kind of node.
type nodeImpl interface {
	// compute returns the node's new output from its inputs.
	compute(n *node) output
}

// starter is implemented by nodes holding resources while active.
type starter interface {
	start(n *node)
	stop(n *node)
}

// resetter is implemented by nodes with run-time state (inputs added while active),
// dropped when the node is released so that it can be activated afresh.
type resetter interface {
	reset(n *node)
}

// grouper is implemented by nodes whose inputs belong to a group of their own.
type grouper interface {
	groupFor(n *node, input int) *group
}

// jobber is implemented by nodes showing a job in the graph.
type jobber interface {
	jobInfo(n *node) (jobID string, latched bool)
}

func newNode(kind, label string, impl nodeImpl, inputs ...*node) *node {
	return &node{kind: kind, label: label, impl: impl, inputs: inputs}
}

// group is a set of nodes shown together (a ListMap, one of its items, a Collapse).
type group struct {
	id     int64
	kind   string
	label  string
	item   string
	parent *group
}

// activate makes n (and its inputs) part of the live graph.
func (e *Engine) activate(n *node) {
	n.refs++
	if n.refs > 1 {
		return
	}
	if n.e != nil && n.e != e {
		panic("current: a term is used by two engines")
	}
	n.e = e
	n.released = false
	e.nextID++
	n.id = e.nextID
	if n.group == nil {
		n.group = e.curGroup
	}
	h := int32(0)
	gr, _ := n.impl.(grouper)
	for i, in := range n.inputs {
		if gr != nil {
			saved := e.curGroup
			if g := gr.groupFor(n, i); g != nil {
				e.curGroup = g
			}
			e.activate(in)
			e.curGroup = saved
		} else {
			e.activate(in)
		}
		in.deps = append(in.deps, n)
		if in.height >= h {
			h = in.height + 1
		}
	}
	n.height = h
	n.out = activeOut(ActiveReady)
	e.nodes[n.id] = n
	e.metrics.nodes.Inc()
	if s, ok := n.impl.(starter); ok {
		s.start(n)
	}
	e.markDirty(n)
}

// release drops one reference to n at the end of the current pass.
func (e *Engine) release(n *node) {
	if n != nil {
		e.releases = append(e.releases, n)
	}
}

func (e *Engine) deactivate(n *node) {
	n.refs--
	if n.refs > 0 {
		return
	}
	if s, ok := n.impl.(starter); ok {
		s.stop(n)
	}
	delete(e.nodes, n.id)
	e.metrics.nodes.Dec()
	n.released = true
	for _, in := range n.inputs {
		in.removeDep(n)
		e.deactivate(in)
	}
	n.deps = nil
	n.e = nil
	n.group = nil
	if r, ok := n.impl.(resetter); ok {
		r.reset(n)
	}
}

func (n *node) removeDep(d *node) {
	for i, x := range n.deps {
		if x == d {
			last := len(n.deps) - 1
			n.deps[i] = n.deps[last]
			n.deps[last] = nil
			n.deps = n.deps[:last]
			return
		}
	}
}

// addInput makes in an input of the active node n at run time (Bind, ListMap).
func (e *Engine) addInput(n, in *node) {
	e.activate(in)
	n.inputs = append(n.inputs, in)
	in.deps = append(in.deps, n)
	e.raise(n, in.height+1)
}

// dropInput removes in from n's inputs; its reference is released at the end of the pass.
func (e *Engine) dropInput(n, in *node) {
	for i, x := range n.inputs {
		if x == in {
			n.inputs = append(n.inputs[:i], n.inputs[i+1:]...)
			break
		}
	}
	in.removeDep(n)
	e.release(in)
}

func (e *Engine) raise(n *node, h int32) {
	if n.height >= h {
		return
	}
	n.height = h
	for _, d := range n.deps {
		e.raise(d, h+1)
	}
}

func (e *Engine) markDirty(n *node) {
	if n.queued || n.refs == 0 {
		return
	}
	n.queued = true
	heap.Push(&e.queue, queued{n: n, h: n.height})
}

// evaluate recomputes dirty nodes in height order until nothing changes.
func (e *Engine) evaluate() {
	for e.queue.Len() > 0 {
		q := heap.Pop(&e.queue).(queued)
		n := q.n
		if q.h != n.height {
			heap.Push(&e.queue, queued{n: n, h: n.height})
			continue
		}
		n.queued = false
		if n.refs == 0 {
			continue
		}
		e.recomputed++
		out := safeCompute(n)
		n.display, n.dmsg = displayOf(n, out)
		if sameOutput(out, n.out) {
			continue
		}
		n.out = out
		n.ver++
		for _, d := range n.deps {
			e.markDirty(d)
		}
	}
}

// displayOf gives the state shown for n: a node whose inputs are not all Ok is blocked,
// unless it has its own active or failed state.
func displayOf(n *node, out output) (State, string) {
	if d, ok := n.impl.(interface {
		display(*node, output) (State, string)
	}); ok {
		return d.display(n, out)
	}
	for _, in := range n.inputs {
		switch in.out.state {
		case StateFailed:
			return StateBlocked, "input failed: " + in.out.msg
		case StateActive:
			if out.state == StateActive {
				return StateBlocked, "waiting for input " + in.label
			}
		}
	}
	return out.state, out.msg
}

// safeCompute computes n, turning a panic in pipeline code into a failure of n.
func safeCompute(n *node) (out output) {
	defer func() {
		if r := recover(); r != nil {
			out = failOut(fmt.Sprintf("panic in %s: %v", n.label, r))
		}
	}()
	return n.impl.compute(n)
}

type queued struct {
	n *node
	h int32
}

type nodeQueue struct {
	items []queued
}

func (q nodeQueue) Len() int           { return len(q.items) }
func (q nodeQueue) Less(i, j int) bool { return q.items[i].h < q.items[j].h }
func (q nodeQueue) Swap(i, j int)      { q.items[i], q.items[j] = q.items[j], q.items[i] }
func (q *nodeQueue) Push(x any)        { q.items = append(q.items, x.(queued)) }
func (q *nodeQueue) Pop() any {
	last := len(q.items) - 1
	x := q.items[last]
	q.items[last] = queued{}
	q.items = q.items[:last]
	return x
}

func equalValues(a, b any) (eq bool) {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb || !ta.Comparable() {
		return false
	}
	defer func() {
		if recover() != nil {
			eq = false
		}
	}()
	return a == b
}
