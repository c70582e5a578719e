package current

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

func TestMapRecomputesOnlyChangedInputs(t *testing.T) {
	e := testEngine(t, Config{})
	a := NewVar("a", 1)
	b := NewVar("b", 10)
	var na, nb, nsum atomic.Int64
	ma := Map(a.Term(), func(x int) int { na.Add(1); return x * 2 }).Named("double-a")
	mb := Map(b.Term(), func(x int) int { nb.Add(1); return x * 2 }).Named("double-b")
	sum := Map(Pair(ma, mb), func(p Tuple[int, int]) int { nsum.Add(1); return p.First + p.Second }).Named("sum")
	running(t, e, sum)
	eventually(t, "first sum", func() bool { n, _ := nodeByLabel(e, "sum"); return n.State == StateOk })
	if na.Load() != 1 || nb.Load() != 1 || nsum.Load() != 1 {
		t.Fatalf("first pass: a=%d b=%d sum=%d, want 1 each", na.Load(), nb.Load(), nsum.Load())
	}
	a.Set(2)
	eventually(t, "a recomputed", func() bool { return nsum.Load() == 2 })
	if na.Load() != 2 || nb.Load() != 1 {
		t.Fatalf("after a changed: a=%d b=%d, want 2 and 1", na.Load(), nb.Load())
	}
	// Same value: nothing downstream runs.
	before := e.Status().Pass
	a.Set(2)
	b.Set(10)
	eventually(t, "pass", func() bool { return e.Status().Pass > before })
	if na.Load() != 2 || nb.Load() != 1 || nsum.Load() != 2 {
		t.Fatalf("after same values: a=%d b=%d sum=%d", na.Load(), nb.Load(), nsum.Load())
	}
	a.SetError("broken")
	eventually(t, "failure propagates", func() bool {
		n, _ := nodeByLabel(e, "sum")
		return n.State == StateBlocked
	})
	n, _ := nodeByLabel(e, "double-a")
	if n.State != StateBlocked || n.Message != "input failed: broken" {
		t.Fatalf("double-a: %v %q", n.State, n.Message)
	}
}

func TestListMapTouchesOnlyChangedItems(t *testing.T) {
	e := testEngine(t, Config{})
	items := NewVar("items", []string{"a", "b", "c"})
	var calls sync32
	out := ListMap(items.Term(), func(s string) string { return s[:1] }, func(it Term[string]) Term[string] {
		return Map(it, func(s string) string { calls.inc(s[:1]); return s + "!" })
	}).Named("bang")
	running(t, e, out)
	eventually(t, "three items", func() bool { return calls.total() == 3 })
	items.Set([]string{"a", "b2", "c", "d"})
	eventually(t, "b and d", func() bool { return calls.total() == 5 })
	if calls.get("a") != 1 || calls.get("c") != 1 || calls.get("b") != 2 || calls.get("d") != 1 {
		t.Fatalf("calls %v", calls.snapshot())
	}
	items.Set([]string{"d"})
	eventually(t, "items removed from graph", func() bool {
		g := e.Graph()
		items := 0
		for _, gr := range g.Groups {
			if gr.Kind == "item" {
				items++
			}
		}
		return items == 1
	})
	if calls.total() != 5 {
		t.Fatalf("removal recomputed items: %v", calls.snapshot())
	}
}

func TestBindRebuildsSubgraph(t *testing.T) {
	e := testEngine(t, Config{})
	n := NewVar("n", 2)
	out := Bind(n.Term(), func(k int) Term[[]int] {
		ts := make([]Term[int], k)
		for i := range ts {
			ts[i] = Return(i).Named(fmt.Sprint("c", i))
		}
		return List(ts...)
	}).Named("bound")
	col := Map(out, func(xs []int) int { return len(xs) }).Named("len")
	running(t, e, col)
	eventually(t, "len 2", func() bool { n, _ := nodeByLabel(e, "len"); return n.State == StateOk && len(e.Graph().Nodes) == 6 })
	n.Set(4)
	eventually(t, "len 4", func() bool {
		g := e.Graph()
		return len(g.Nodes) == 8
	})
	if _, ok := nodeByLabel(e, "c3"); !ok {
		t.Fatal("c3 missing after rebind")
	}
}

func TestGateCatchCollapse(t *testing.T) {
	e := testEngine(t, Config{})
	ok := NewEmptyVar[Unit]("approval")
	v := NewVar("v", 5)
	gated := Gate(v.Term(), ok.Term()).Named("gated")
	caught := Catch(MapErr(gated, func(x int) (int, error) {
		if x > 3 {
			return 0, fmt.Errorf("too big: %d", x)
		}
		return x, nil
	})).Named("caught")
	root := Collapse("checks", v.Term(), caught)
	running(t, e, root)
	eventually(t, "gate holds", func() bool { n, _ := nodeByLabel(e, "gated"); return n.State == StateBlocked })
	ok.Set(Unit{})
	eventually(t, "catch", func() bool { n, _ := nodeByLabel(e, "caught"); return n.State == StateOk })
	g := e.Graph()
	var coll int64
	for _, gr := range g.Groups {
		if gr.Kind == "collapse" && gr.Label == "checks" {
			coll = gr.ID
		}
	}
	if coll == 0 {
		t.Fatal("no collapse group")
	}
	c, _ := nodeByLabel(e, "caught")
	if c.Group != coll {
		t.Fatalf("caught in group %d, want %d", c.Group, coll)
	}
	vn, _ := nodeByLabel(e, "v")
	if vn.Group == coll {
		t.Fatal("the collapse's input is inside the group")
	}
}

func TestPanicsBecomeFailures(t *testing.T) {
	e := testEngine(t, Config{})
	items := NewVar("items", []string{"a", ""})
	keyed := ListMap(items.Term(), func(s string) string { return s[:1] }, func(s Term[string]) Term[string] { return s }).Named("keyed")
	boom := Map(Return(1), func(int) int { panic("boom") }).Named("boom")
	m := &Monitor[int]{Name: "bad monitor", Read: func(context.Context) (int, error) { panic("read") }}
	running(t, e, All(Catch(keyed), Catch(boom), Catch(m.Term())))
	eventually(t, "failures", func() bool {
		k, _ := nodeByLabel(e, "keyed")
		b, _ := nodeByLabel(e, "boom")
		mn, _ := nodeByLabel(e, "bad monitor")
		return strings.Contains(k.Message, "panic") && b.State == StateFailed && strings.Contains(b.Message, "boom") &&
			mn.State == StateFailed && strings.Contains(mn.Message, "panic: read")
	})
}

func TestListMapItemsNotComparable(t *testing.T) {
	type item struct {
		Name string
		Deps []string
	}
	e := testEngine(t, Config{})
	items := NewVar("items", []item{{"a", []string{"x"}}, {"b", nil}})
	var calls sync32
	running(t, e, ListMap(items.Term(), func(i item) string { return i.Name }, func(it Term[item]) Term[int] {
		return Map(it, func(i item) int { calls.inc(i.Name); return len(i.Deps) })
	}))
	eventually(t, "first", func() bool { return calls.total() == 2 })
	items.Set([]item{{"a", []string{"x"}}, {"b", []string{"y"}}})
	eventually(t, "b again", func() bool { return calls.get("b") == 2 })
	if calls.get("a") != 1 {
		t.Fatalf("unchanged item recomputed: %v", calls.snapshot())
	}
}

func TestRandomEditsKeepResultsRight(t *testing.T) {
	type kv struct {
		K string
		V int
	}
	e := testEngine(t, Config{})
	src := NewVar("src", []kv{})
	var latest atomic.Value
	out := ListMap(src.Term(), func(x kv) string { return x.K }, func(it Term[kv]) Term[string] {
		doubled := Map(it, func(x kv) int { return x.V * 2 })
		return Bind(doubled, func(d int) Term[string] {
			if d%4 == 0 {
				return Map(it, func(x kv) string { return fmt.Sprintf("%s=%d/even", x.K, d) })
			}
			return Return(fmt.Sprintf("odd%d", d))
		})
	})
	running(t, e, Map(out, func(s []string) string {
		r := strings.Join(s, ",")
		latest.Store(r)
		return r
	}))
	rng := rand.New(rand.NewPCG(1, 2))
	var cur []kv
	for step := 0; step < 150; step++ {
		// The pipeline holds the last value set: edit a copy.
		cur = slices.Clone(cur)
		switch op := rng.IntN(4); {
		case op == 0 || len(cur) == 0:
			cur = append(cur, kv{fmt.Sprint("k", rng.IntN(40)), rng.IntN(10)})
		case op == 1:
			i := rng.IntN(len(cur))
			cur = append(cur[:i:i], cur[i+1:]...)
		case op == 2:
			i := rng.IntN(len(cur))
			cur[i].V = rng.IntN(10)
		default:
			rng.Shuffle(len(cur), func(i, j int) { cur[i], cur[j] = cur[j], cur[i] })
		}
		var want []string
		seen := map[string]bool{}
		for _, x := range cur {
			if seen[x.K] {
				continue
			}
			seen[x.K] = true
			if d := x.V * 2; d%4 == 0 {
				want = append(want, fmt.Sprintf("%s=%d/even", x.K, d))
			} else {
				want = append(want, fmt.Sprintf("odd%d", d))
			}
		}
		w := strings.Join(want, ",")
		src.Set(cur)
		eventually(t, fmt.Sprintf("step %d: %s", step, w), func() bool { v, _ := latest.Load().(string); return v == w })
	}
	// Nothing leaked: the graph holds exactly the nodes of the live items.
	g := e.Graph()
	items := 0
	for _, gr := range g.Groups {
		if gr.Kind == "item" {
			items++
		}
	}
	keys := map[string]bool{}
	for _, x := range cur {
		keys[x.K] = true
	}
	if items != len(keys) {
		t.Fatalf("%d item groups for %d keys", items, len(keys))
	}
	// src, list-map, collect, the root Map, and per item: item, Map, Bind, its inner term.
	if want := 4 + 4*len(keys); len(g.Nodes) != want {
		t.Fatalf("%d live nodes, want %d", len(g.Nodes), want)
	}
}

func TestRunTwiceWithTheSameTerms(t *testing.T) {
	e := testEngine(t, Config{})
	src := NewVar("src", []int{1, 2, 3})
	var last atomic.Value
	root := Map(ListMap(src.Term(), func(i int) string { return fmt.Sprint(i) }, func(it Term[int]) Term[int] {
		return Bind(it, func(i int) Term[int] { return Return(i * 10) })
	}), func(xs []int) string { s := fmt.Sprint(xs); last.Store(s); return s })
	for round := 0; round < 2; round++ {
		last.Store("")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx, root) }()
		want := "[10 20 30]"
		if round == 1 {
			want = "[20 30 40]"
		}
		eventually(t, fmt.Sprint("round ", round), func() bool { v, _ := last.Load().(string); return v == want })
		// 1 var + list-map + collect + root, and per item: item, bind, return.
		g := e.Graph()
		if n := len(g.Nodes); n != 4+3*3 {
			t.Fatalf("round %d: %d nodes", round, n)
		}
		items := 0
		for _, gr := range g.Groups {
			if gr.Kind == "item" {
				items++
			}
		}
		if items != 3 {
			t.Fatalf("round %d: %d item groups", round, items)
		}
		src.Set([]int{2, 3, 4})
		if round == 0 {
			eventually(t, "update", func() bool { v, _ := last.Load().(string); return v == "[20 30 40]" })
		}
		cancel()
		<-done
		if n := len(e.Graph().Nodes); n != 0 {
			t.Fatalf("%d nodes left after Run", n)
		}
	}
}
