package current

import (
	"context"
	"testing"
	"time"
)

func TestObserveReportsActiveThenOk(t *testing.T) {
	v := NewEmptyVar[int]("in")
	seen := make(chan Observed[int], 16)
	root := Map(Observe(v.Term()), func(o Observed[int]) Unit { seen <- o; return Unit{} })
	e, err := Open(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, root) }()
	defer func() { cancel(); <-done; e.Close() }()
	next := func() Observed[int] {
		select {
		case o := <-seen:
			return o
		case <-time.After(10 * time.Second):
			t.Fatal("no evaluation")
		}
		return Observed[int]{}
	}
	if o := next(); o.State != StateActive {
		t.Fatalf("empty var observed as %v, want active", o.State)
	}
	v.Set(7)
	if o := next(); o.State != StateOk || o.Value != 7 {
		t.Fatalf("after Set(7) observed %+v", o)
	}
	v.SetError("broken")
	if o := next(); o.State != StateFailed || o.Message != "broken" {
		t.Fatalf("after SetError observed %+v", o)
	}
	observers := 0
	for _, n := range e.Graph().Nodes {
		if n.Kind == "observe" {
			observers++
			if n.State != StateOk {
				t.Errorf("the observing node shows %v (%s), want ok: it has a value", n.State, n.Message)
			}
		}
	}
	if observers != 1 {
		t.Errorf("the graph has %d observing nodes, want 1", observers)
	}
}
