package current

import (
	"fmt"
	"reflect"
	"strings"
)

// Term is a typed value of the pipeline graph: a constant, an input, or the result of a
// step. Terms are built by ordinary Go code and evaluated by an Engine.
type Term[T any] struct{ n *node }

// AnyTerm is a Term of any type.
type AnyTerm interface{ termNode() *node }

func (t Term[T]) termNode() *node { return t.n }

// Named sets the label shown for the term's node in the graph and returns the term.
func (t Term[T]) Named(label string) Term[T] {
	t.n.label = label
	return t
}

// Unit is the value of a term that only says "done".
type Unit struct{}

// Tuple holds the values of two terms.
type Tuple[A, B any] struct {
	First  A
	Second B
}

// Result is a value or the message of the failure that replaced it (see Catch).
type Result[T any] struct {
	Value T
	Err   string
}

// OK reports whether r holds a value.
func (r Result[T]) OK() bool { return r.Err == "" }

// Option is a value that may be absent.
type Option[T any] struct {
	Value T
	Some  bool
}

// Some is a present option.
func Some[T any](v T) Option[T] { return Option[T]{Value: v, Some: true} }

// None is an absent option.
func None[T any]() Option[T] { return Option[T]{} }

func as[T any](v any) T {
	if v == nil {
		var z T
		return z
	}
	return v.(T)
}

func call(f func() (any, error)) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

type constImpl struct{ out output }

func (c *constImpl) compute(*node) output { return c.out }

// Return is a term with the constant value v.
func Return[T any](v T) Term[T] {
	return Term[T]{newNode("return", "return", &constImpl{okOut(v)})}
}

// Fail is a term that has failed with msg.
func Fail[T any](msg string) Term[T] {
	return Term[T]{newNode("fail", "fail", &constImpl{failOut(msg)})}
}

type mapImpl struct{ f func(any) (any, error) }

func (m *mapImpl) compute(n *node) output {
	in := n.inputs[0].out
	if in.state != StateOk {
		return in.passOn()
	}
	v, err := call(func() (any, error) { return m.f(in.value) })
	if err != nil {
		return failOut(err.Error())
	}
	return okOut(v)
}

// Map applies f to the value of t. f runs again only when t's value changes.
func Map[A, B any](t Term[A], f func(A) B) Term[B] {
	return Term[B]{newNode("map", "map", &mapImpl{func(v any) (any, error) { return f(as[A](v)), nil }}, t.n)}
}

// MapErr is Map for a function that can fail; an error fails the term with its message.
func MapErr[A, B any](t Term[A], f func(A) (B, error)) Term[B] {
	return Term[B]{newNode("map", "map", &mapImpl{func(v any) (any, error) { return f(as[A](v)) }}, t.n)}
}

// combine returns the first failure, else the first active input, else ok.
func combine(ins []*node) (output, bool) {
	for _, in := range ins {
		if in.out.state == StateFailed {
			return in.out.passOn(), false
		}
	}
	for _, in := range ins {
		if in.out.state == StateActive {
			return activeOut(in.out.active), false
		}
	}
	return output{}, true
}

type pairImpl struct{ mk func(a, b any) any }

func (p *pairImpl) compute(n *node) output {
	if o, ok := combine(n.inputs); !ok {
		return o
	}
	return okOut(p.mk(n.inputs[0].out.value, n.inputs[1].out.value))
}

// Pair pairs the values of a and b; it fails if either fails.
func Pair[A, B any](a Term[A], b Term[B]) Term[Tuple[A, B]] {
	return Term[Tuple[A, B]]{newNode("pair", "pair", &pairImpl{func(x, y any) any {
		return Tuple[A, B]{as[A](x), as[B](y)}
	}}, a.n, b.n)}
}

type mapNImpl struct{ f func(vs []any) any }

func (m *mapNImpl) compute(n *node) output {
	if o, ok := combine(n.inputs); !ok {
		return o
	}
	vs := make([]any, len(n.inputs))
	for i, in := range n.inputs {
		vs[i] = in.out.value
	}
	v, err := call(func() (any, error) { return m.f(vs), nil })
	if err != nil {
		return failOut(err.Error())
	}
	return okOut(v)
}

// Map2 applies f to the values of a and b; it fails if either fails. f runs again only
// when a value changes.
func Map2[A, B, C any](a Term[A], b Term[B], f func(A, B) C) Term[C] {
	return Term[C]{newNode("map", "map", &mapNImpl{func(vs []any) any {
		return f(as[A](vs[0]), as[B](vs[1]))
	}}, a.n, b.n)}
}

// Map3 applies f to the values of a, b and c; it fails if any fails.
func Map3[A, B, C, D any](a Term[A], b Term[B], c Term[C], f func(A, B, C) D) Term[D] {
	return Term[D]{newNode("map", "map", &mapNImpl{func(vs []any) any {
		return f(as[A](vs[0]), as[B](vs[1]), as[C](vs[2]))
	}}, a.n, b.n, c.n)}
}

type allImpl struct{}

func (allImpl) compute(n *node) output {
	if o, ok := combine(n.inputs); !ok {
		return o
	}
	return okOut(Unit{})
}

// All is ok when every term is; it fails if any fails.
func All(ts ...AnyTerm) Term[Unit] {
	ns := make([]*node, len(ts))
	for i, t := range ts {
		ns[i] = t.termNode()
	}
	return Term[Unit]{newNode("all", "all", allImpl{}, ns...)}
}

type listImpl struct{ mk func([]*node) any }

func (l *listImpl) compute(n *node) output {
	if o, ok := combine(n.inputs); !ok {
		return o
	}
	return okOut(l.mk(n.inputs))
}

// List gathers the values of ts into one list.
func List[T any](ts ...Term[T]) Term[[]T] {
	ns := make([]*node, len(ts))
	for i, t := range ts {
		ns[i] = t.n
	}
	return Term[[]T]{newNode("list", "list", &listImpl{func(ins []*node) any {
		out := make([]T, len(ins))
		for i, in := range ins {
			out[i] = as[T](in.out.value)
		}
		return out
	}}, ns...)}
}

type gateImpl struct{}

func (gateImpl) compute(n *node) output {
	ctrl := n.inputs[1].out
	if ctrl.state != StateOk {
		return ctrl.passOn()
	}
	return n.inputs[0].out
}

// Gate has the value of t once on is ok (for example a confirmation or a test result).
func Gate[T any](t Term[T], on Term[Unit]) Term[T] {
	return Term[T]{newNode("gate", "gate", gateImpl{}, t.n, on.n)}
}

type catchImpl struct{ mk func(v any, msg string) any }

func (c *catchImpl) compute(n *node) output {
	in := n.inputs[0].out
	switch in.state {
	case StateFailed:
		return okOut(c.mk(nil, in.msg))
	case StateOk:
		return okOut(c.mk(in.value, ""))
	}
	return in
}

func (c *catchImpl) display(n *node, out output) (State, string) {
	if n.inputs[0].out.state == StateActive {
		return StateBlocked, "waiting for input " + n.inputs[0].label
	}
	return out.state, out.msg
}

// Catch turns a failure of t into a value, so the pipeline can go on and report it.
func Catch[T any](t Term[T]) Term[Result[T]] {
	return Term[Result[T]]{newNode("catch", "catch", &catchImpl{func(v any, msg string) any {
		return Result[T]{Value: as[T](v), Err: msg}
	}}, t.n)}
}

type collapseImpl struct{ g *group }

func (c *collapseImpl) compute(n *node) output { return n.inputs[1].out }

func (c *collapseImpl) display(n *node, out output) (State, string) {
	in := n.inputs[1]
	return in.display, in.dmsg
}

func (c *collapseImpl) reset(*node) { c.g = nil }

func (c *collapseImpl) groupFor(n *node, i int) *group {
	if i == 0 {
		return nil
	}
	if c.g == nil {
		c.g = &group{kind: "collapse", label: n.label, parent: n.e.curGroup}
		n.e.nextGroup++
		c.g.id = n.e.nextGroup
	}
	return c.g
}

// Collapse marks the part of the graph between input and t as one group, which a
// console may show as a single box labelled label.
func Collapse[T any](label string, input AnyTerm, t Term[T]) Term[T] {
	return Term[T]{newNode("collapse", label, &collapseImpl{}, input.termNode(), t.n)}
}

type bindImpl struct {
	f      func(any) (*node, error)
	has    bool
	lhsVer uint64
	inner  *node
}

func (b *bindImpl) compute(n *node) output {
	e := n.e
	lhs := n.inputs[0]
	if !b.has || lhs.ver != b.lhsVer {
		b.has, b.lhsVer = true, lhs.ver
		old := b.inner
		b.inner = nil
		if old != nil {
			e.dropInput(n, old)
		}
		if lhs.out.state != StateOk {
			return lhs.out.passOn()
		}
		var inner *node
		_, err := call(func() (any, error) {
			var err error
			inner, err = b.f(lhs.out.value)
			return nil, err
		})
		if err != nil {
			return failOut(err.Error())
		}
		b.inner = inner
		saved := e.curGroup
		e.curGroup = n.group
		e.addInput(n, inner)
		e.curGroup = saved
		e.markDirty(n)
		return n.out
	}
	if b.inner == nil {
		return n.out
	}
	return b.inner.out
}

func (b *bindImpl) reset(n *node) {
	b.has, b.inner = false, nil
	n.inputs = n.inputs[:1]
}

// Bind builds part of the graph from the value of t at run time. When t's value changes
// the part built for the old value is released and f builds a new one.
func Bind[A, B any](t Term[A], f func(A) Term[B]) Term[B] {
	return Term[B]{newNode("bind", "bind", &bindImpl{f: func(v any) (*node, error) {
		return f(as[A](v)).n, nil
	}}, t.n)}
}

// listMapImpl is the node diffing the list; its collect node is the ListMap's term.
type listMapImpl struct {
	length  func(list any) int
	keyAt   func(list any, i int) string
	valAt   func(list any, i int) any
	sameAt  func(list any, i int, old any) bool
	f       func(*node) *node
	items   map[string]*lmItem
	order   []*lmItem
	gen     uint64
	g       *group
	collect *node
}

type lmItem struct {
	key  string
	in   *node
	root *node
	g    *group
	gen  uint64
}

type itemImpl struct{ value any }

func (it *itemImpl) compute(n *node) output { return okOut(it.value) }

func (l *listMapImpl) compute(n *node) output {
	e := n.e
	src := n.inputs[0].out
	if src.state != StateOk {
		return src.passOn()
	}
	if l.g == nil {
		e.nextGroup++
		l.g = &group{id: e.nextGroup, kind: "listmap", label: l.collect.label, parent: n.group}
		l.items = map[string]*lmItem{}
	}
	list := src.value
	count := l.length(list)
	l.gen++
	gen := l.gen
	var order []*lmItem
	same := count == len(l.order)
	if !same {
		order = make([]*lmItem, 0, count)
	}
	for i := 0; i < count; i++ {
		k := l.keyAt(list, i)
		it := l.items[k]
		if it != nil && it.gen == gen {
			continue // duplicate key
		}
		if it == nil {
			e.nextGroup++
			it = &lmItem{key: k, g: &group{id: e.nextGroup, kind: "item", label: k, item: k, parent: l.g}}
			it.in = newNode("item", k, &itemImpl{value: l.valAt(list, i)}, n)
			var root *node
			_, err := call(func() (any, error) { root = l.f(it.in); return nil, nil })
			if err != nil {
				root = newNode("fail", "fail", &constImpl{failOut(err.Error())})
			}
			it.root = root
			l.items[k] = it
			saved := e.curGroup
			e.curGroup = it.g
			e.addInput(l.collect, root)
			e.curGroup = saved
		} else {
			ii := it.in.impl.(*itemImpl)
			if !l.sameAt(list, i, ii.value) {
				ii.value = l.valAt(list, i)
				e.markDirty(it.in)
			}
		}
		it.gen = gen
		if same {
			if l.order[len(order)] != it {
				same = false
				order = append(make([]*lmItem, 0, count), l.order[:len(order)]...)
				order = append(order, it)
			} else {
				order = l.order[:len(order)+1]
			}
		} else {
			order = append(order, it)
		}
	}
	if same && len(order) != len(l.order) {
		same = false
	}
	for k, it := range l.items {
		if it.gen != gen {
			delete(l.items, k)
			e.dropInput(l.collect, it.root)
		}
	}
	if !same {
		l.order = order
		e.markDirty(l.collect)
	}
	return okOut(Unit{})
}

func (l *listMapImpl) reset(n *node) {
	l.items, l.order, l.g = nil, nil, nil
}

func (c *collectImpl) reset(n *node) { n.inputs = n.inputs[:1] }

func (l *listMapImpl) display(n *node, out output) (State, string) {
	if n.inputs[0].out.state == StateFailed {
		return StateBlocked, "input failed: " + n.inputs[0].out.msg
	}
	return out.state, out.msg
}

type collectImpl struct {
	l  *listMapImpl
	mk func([]*lmItem) any
}

func (c *collectImpl) compute(n *node) output {
	lm := n.inputs[0].out
	if lm.state != StateOk {
		return lm
	}
	failed, active := 0, false
	var first string
	var act ActiveState
	for _, it := range c.l.order {
		switch it.root.out.state {
		case StateFailed:
			if failed == 0 {
				first = it.key + ": " + it.root.out.msg
			}
			failed++
		case StateActive:
			if !active {
				act = it.root.out.active
			}
			active = true
		}
	}
	if failed == 1 {
		return failOut(first)
	}
	if failed > 1 {
		return failOut(fmt.Sprintf("%d items failed (first %s)", failed, first))
	}
	if active {
		return activeOut(act)
	}
	return okOut(c.mk(c.l.order))
}

func (c *collectImpl) display(n *node, out output) (State, string) {
	if out.state == StateFailed || out.state == StateActive {
		return StateBlocked, strings.TrimSpace(out.msg)
	}
	return out.state, out.msg
}

// ListMap runs one isolated sub-pipeline f per item of items, keyed by key: when the
// list changes, only the sub-pipelines of new, changed or removed keys are touched.
// Items with a duplicate key are ignored.
func ListMap[A, B any](items Term[[]A], key func(A) string, f func(Term[A]) Term[B]) Term[[]B] {
	eq := equalFunc[A]()
	l := &listMapImpl{
		length: func(list any) int { return len(as[[]A](list)) },
		keyAt:  func(list any, i int) string { return key(list.([]A)[i]) },
		valAt:  func(list any, i int) any { return list.([]A)[i] },
		sameAt: func(list any, i int, old any) bool {
			o, ok := old.(A)
			return ok && eq(list.([]A)[i], o)
		},
		f: func(in *node) *node { return f(Term[A]{in}).n },
	}
	lm := newNode("listmap", "list-map", l, items.n)
	c := &collectImpl{l: l, mk: func(its []*lmItem) any {
		out := make([]B, len(its))
		for i, it := range its {
			out[i] = as[B](it.root.out.value)
		}
		return out
	}}
	coll := newNode("collect", "list-map", c, lm)
	l.collect = coll
	return Term[[]B]{coll}
}

// equalFunc compares values of T: with == when T is comparable, else deeply.
func equalFunc[T any]() func(a, b T) bool {
	if !reflect.TypeFor[T]().Comparable() {
		return func(a, b T) bool { return reflect.DeepEqual(a, b) }
	}
	return func(a, b T) (eq bool) {
		// Interfaces inside T may hold values that cannot be compared.
		defer func() {
			if recover() != nil {
				eq = false
			}
		}()
		return any(a) == any(b)
	}
}

// ListIter runs f once per item of items (see ListMap) and is ok when all are.
func ListIter[A any](items Term[[]A], key func(A) string, f func(Term[A]) Term[Unit]) Term[Unit] {
	return Map(ListMap(items, key, f), func([]Unit) Unit { return Unit{} }).Named("list-iter")
}

// OptionMap runs the sub-pipeline f on the value of t when it is present.
func OptionMap[A, B any](t Term[Option[A]], f func(Term[A]) Term[B]) Term[Option[B]] {
	list := Map(t, func(o Option[A]) []A {
		if o.Some {
			return []A{o.Value}
		}
		return nil
	})
	res := ListMap(list, func(A) string { return "some" }, f)
	return Map(res, func(bs []B) Option[B] {
		if len(bs) == 0 {
			return None[B]()
		}
		return Some(bs[0])
	}).Named("option-map")
}

// ListCount is the number of items of t.
func ListCount[T any](t Term[[]T]) Term[int] {
	return Map(t, func(xs []T) int { return len(xs) }).Named("count")
}
