package current

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lastObserved keeps the latest Observed value a pipeline saw.
type lastObserved[T any] struct {
	mu sync.Mutex
	o  Observed[T]
	n  int
}

func (l *lastObserved[T]) set(o Observed[T]) Unit {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.o, l.n = o, l.n+1
	return Unit{}
}

func (l *lastObserved[T]) get() Observed[T] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.o
}

func TestFailureFactsReachObservers(t *testing.T) {
	lines := []string{"File \"main.ml\", line 3:", "Error: Unbound value x"}
	cases := []struct {
		name     string
		err      error
		kind     FailureKind
		message  string
		wantLine bool
	}{
		{"work failure with lines", WithLines(errors.New("exit 1"), lines), FailWork, "exit 1", true},
		{"infrastructure failure", Infra(FailWorkerLost, errors.New("worker w1 vanished")), FailWorkerLost, "worker w1 vanished", false},
		{"infrastructure failure with lines", Infra(FailDiskFull, WithLines(errors.New("no space"), lines)), FailDiskFull, "no space", true},
		{"plain error", errors.New("bad spec"), FailWork, "bad spec", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var runs atomic.Int64
			op := &Op[string, string]{Name: "fails", Run: func(ctx context.Context, j *Job, in string) (string, error) {
				runs.Add(1)
				return "", c.err
			}}
			check := func(e *Engine, when string) {
				t.Helper()
				var seen lastObserved[string]
				// A Map between the job and the observer must carry the facts along.
				root := Map(Observe(Map(Do(op, Return("x")), func(s string) string { return s })), seen.set)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- e.Run(ctx, root) }()
				defer func() { cancel(); <-done }()
				eventually(t, "a failure", func() bool { return seen.get().State == StateFailed })
				o := seen.get()
				if o.Kind != c.kind || o.Message != c.message {
					t.Errorf("%s: observed kind %q message %q, want %q %q", when, o.Kind, o.Message, c.kind, c.message)
				}
				if got := slices.Equal(o.Lines, lines); got != c.wantLine {
					t.Errorf("%s: observed lines %q, want lines: %v", when, o.Lines, c.wantLine)
				}
				jobs, err := e.Query(Query{Op: "fails"})
				if err != nil || len(jobs) == 0 {
					t.Fatalf("%s: query: %v %v", when, jobs, err)
				}
				if jobs[0].FailureKind != c.kind || (len(jobs[0].FailingLines) > 0) != c.wantLine {
					t.Errorf("%s: job info %+v", when, jobs[0])
				}
			}
			// No retries within the test: a disk-full failure is built again, but only
			// after RetryBackoff (see TestDiskFullRecovers).
			cfg := Config{StateDir: dir, MaxRetries: -1, RetryBackoff: time.Hour}
			e := testEngine(t, cfg)
			check(e, "first run")
			e.Close()
			before := runs.Load()
			// The facts come back from the store after a restart, without running again.
			e = testEngine(t, cfg)
			check(e, "after restart")
			if runs.Load() != before {
				t.Errorf("the failed job ran again after the restart")
			}
		})
	}
}

func TestInfraErrorMessageIsTheCause(t *testing.T) {
	err := Infra(FailNetwork, errors.New("connection refused"))
	if err.Error() != "connection refused" {
		t.Fatalf("message %q: the kind is a separate fact, not a prefix", err.Error())
	}
	if KindOf(err) != FailNetwork || KindOf(WithLines(err, nil)) != FailNetwork {
		t.Fatal("the kind is lost")
	}
	if LinesOf(Infra(FailNetwork, WithLines(errors.New("x"), []string{"a"}))) == nil {
		t.Fatal("lines under an infrastructure error are lost")
	}
	if WithLines(nil, []string{"a"}) != nil {
		t.Fatal("WithLines(nil) is not nil")
	}
}

func TestMap2Map3(t *testing.T) {
	a, b, c := NewVar("a", 1), NewVar("b", "x"), NewVar("c", true)
	var two, three lastObserved[string]
	var calls2 atomic.Int64
	root := All(
		Map(Observe(Map2(a.Term(), b.Term(), func(x int, y string) string {
			calls2.Add(1)
			return strings.Repeat(y, x)
		})), two.set),
		Map(Observe(Map3(a.Term(), b.Term(), c.Term(), func(x int, y string, z bool) string {
			if z {
				return strings.ToUpper(strings.Repeat(y, x))
			}
			return y
		})), three.set),
	)
	e := testEngine(t, Config{})
	running(t, e, root)
	eventually(t, "first values", func() bool { return two.get().Value == "x" && three.get().Value == "X" })
	a.Set(3)
	eventually(t, "after a changes", func() bool { return two.get().Value == "xxx" && three.get().Value == "XXX" })
	before := calls2.Load()
	c.Set(false)
	eventually(t, "after c changes", func() bool { return three.get().Value == "x" })
	if calls2.Load() != before {
		t.Errorf("Map2 ran again when only Map3's third input changed")
	}
	b.SetError("b broke")
	eventually(t, "failure", func() bool {
		return two.get().State == StateFailed && three.get().State == StateFailed
	})
	if m := two.get().Message; m != "b broke" {
		t.Errorf("Map2 failure message %q", m)
	}
}

func TestOpRebuildByTypedInput(t *testing.T) {
	type in struct {
		Repo   string `json:"repo"`
		Commit string `json:"commit"`
	}
	var runs sync32
	op := &Op[in, string]{Name: "typed", Key: func(i in) string { return i.Repo + "@" + i.Commit },
		Run: func(ctx context.Context, j *Job, i in) (string, error) {
			runs.inc(i.Repo + "@" + i.Commit)
			return i.Commit, nil
		}}
	e := testEngine(t, Config{})
	running(t, e, All(
		Do(op, Return(in{"a", "1"})), Do(op, Return(in{"a", "2"})), Do(op, Return(in{"b", "1"})),
	))
	eventually(t, "three builds", func() bool { return runs.get("a@1")+runs.get("a@2")+runs.get("b@1") == 3 })
	// A job still recording its result is not started again: wait until all are over.
	eventually(t, "three results recorded", func() bool { return len(e.Jobs()) == 0 })
	n, err := op.Rebuild(e, func(i in) bool { return i.Commit == "1" })
	if err != nil || n != 2 {
		t.Fatalf("Rebuild: %d, %v; want 2 keys", n, err)
	}
	eventually(t, "rebuilds", func() bool { return runs.get("a@1") == 2 && runs.get("b@1") == 2 })
	if runs.get("a@2") != 1 {
		t.Errorf("a key the match refused was rebuilt")
	}
	other := &Op[in, string]{Name: "other"}
	if n, err := other.Rebuild(e, func(in) bool { return true }); n != 0 || err != nil {
		t.Errorf("an op with no live results rebuilt %d (%v)", n, err)
	}
}
