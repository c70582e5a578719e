package current

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// counterOp builds "<in>-built", counting its runs per input.
func counterOp(name string, runs *sync32) *Op[string, string] {
	return &Op[string, string]{
		Name: name,
		Run: func(ctx context.Context, j *Job, in string) (string, error) {
			runs.inc(in)
			j.Logf("building %s", in)
			if strings.HasPrefix(in, "bad") {
				return "", fmt.Errorf("cannot build %s", in)
			}
			return in + "-built", nil
		},
	}
}

func TestOpRunsOncePerKeyAndPersistsAcrossRestart(t *testing.T) {
	eachBackend(t, testOpRunsOncePerKeyAndPersistsAcrossRestart)
}

func testOpRunsOncePerKeyAndPersistsAcrossRestart(t *testing.T, cfg Config) {
	var runs sync32
	op := counterOp("build", &runs)
	pipeline := func(src *Var[[]string]) AnyTerm {
		return ListMap(src.Term(), func(s string) string { return s }, func(s Term[string]) Term[string] {
			a := Do(op, s).Named("a")
			b := Do(op, s).Named("b") // same key: shares a's job
			return Map(Pair(a, b), func(p Tuple[string, string]) string { return p.First })
		}).Named("all")
	}
	{
		e := testEngine(t, cfg)
		src := NewVar("src", []string{"x", "y", "bad1"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx, pipeline(src)) }()
		eventually(t, "builds finished", func() bool {
			res, _ := e.Query(Query{States: []JobState{JobOK, JobFailed}})
			return len(res) == 3
		})
		cancel()
		<-done
		e.Close()
	}
	if runs.get("x") != 1 || runs.get("y") != 1 || runs.get("bad1") != 1 {
		t.Fatalf("first run: %v", runs.snapshot())
	}
	// Reopen: nothing runs again, failures included, and the graph shows the results.
	e := testEngine(t, cfg)
	src := NewVar("src", []string{"x", "y", "bad1", "z"})
	running(t, e, pipeline(src))
	eventually(t, "z built", func() bool { return runs.get("z") == 1 })
	eventually(t, "graph settled", func() bool {
		for _, n := range e.Graph().Nodes {
			if n.Kind == "op" && n.State == StateActive {
				return false
			}
		}
		return true
	})
	if runs.total() != 4 {
		t.Fatalf("after restart: %v", runs.snapshot())
	}
	failed, _ := e.Query(Query{States: []JobState{JobFailed}})
	if len(failed) != 1 || failed[0].Message != "cannot build bad1" || failed[0].FailureKind != FailWork || failed[0].Build != 1 {
		t.Fatalf("failed results: %+v", failed)
	}
	var sawBlocked bool
	for _, n := range e.Graph().Nodes {
		if n.Kind == "op" && strings.Contains(n.Message, "cannot build bad1") {
			sawBlocked = n.State == StateFailed && n.JobID == failed[0].ID
		}
	}
	if n, _ := nodeByLabel(e, "a"); n.Key == "" {
		t.Fatalf("op node without its key: %+v", n)
	}
	if !sawBlocked {
		t.Fatal("the failed op node does not show its cached failure")
	}
	// Rebuild: a new build number, history kept.
	res, err := e.Rebuild(failed[0].ID)
	if err != nil || res.JobID == "" {
		t.Fatalf("rebuild: %+v %v", res, err)
	}
	eventually(t, "rebuilt", func() bool { return runs.get("bad1") == 2 })
	eventually(t, "history", func() bool {
		d, err := e.Job(res.JobID)
		return err == nil && d.State == JobFailed && d.Build == 2 && len(d.History) == 2
	})
}

func TestAutoCancel(t *testing.T) {
	e := testEngine(t, Config{})
	started := make(chan string, 10)
	var cancelled atomic.Int64
	op := &Op[string, string]{Name: "slow", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		started <- in
		<-ctx.Done()
		cancelled.Add(1)
		return "", ctx.Err()
	}}
	src := NewVar("src", []string{"a", "b"})
	running(t, e, ListMap(src.Term(), func(s string) string { return s }, func(s Term[string]) Term[string] { return Do(op, s) }))
	<-started
	<-started
	src.Set([]string{"a"})
	eventually(t, "b cancelled", func() bool { return cancelled.Load() == 1 })
	eventually(t, "b recorded", func() bool {
		r, _ := e.Query(Query{KeyContains: `"b"`})
		return len(r) == 1 && r[0].State == JobFailed
	})
	r, _ := e.Query(Query{KeyContains: `"b"`})
	if r[0].FailureKind != FailCancelled || !strings.Contains(r[0].Message, "no longer needed") || !r[0].Rebuild {
		t.Fatalf("cancelled job: %+v", r[0])
	}
	if len(e.Jobs()) != 1 {
		t.Fatalf("active jobs: %+v", e.Jobs())
	}
	// Wanted again: it runs again.
	src.Set([]string{"a", "b"})
	select {
	case s := <-started:
		if s != "b" {
			t.Fatalf("started %s", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("b did not run again")
	}
}

func TestReplacementTakesOverJob(t *testing.T) {
	// A Bind rebuilt with the same key must not cancel the running job.
	e := testEngine(t, Config{})
	release := make(chan struct{})
	var runs atomic.Int64
	op := &Op[string, string]{Name: "keep", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		runs.Add(1)
		select {
		case <-release:
			return in, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}}
	v := NewVar("v", 1)
	running(t, e, Bind(v.Term(), func(int) Term[string] { return Do(op, Return("same")) }))
	eventually(t, "running", func() bool { return len(e.Jobs()) == 1 && e.Jobs()[0].State == JobRunning })
	before := e.Status().Pass
	v.Set(2)
	eventually(t, "pass", func() bool { return e.Status().Pass > before })
	close(release)
	eventually(t, "finished", func() bool {
		r, _ := e.Query(Query{Op: "keep"})
		return len(r) == 1 && r[0].State == JobOK
	})
	if runs.Load() != 1 {
		t.Fatalf("runs = %d, want 1", runs.Load())
	}
}

func TestPublishLatches(t *testing.T) {
	e := testEngine(t, Config{})
	gate := make(chan struct{}, 10)
	op := &Op[string, string]{Name: "set-status", Publish: true,
		Key: func(string) string { return "status" },
		Run: func(ctx context.Context, j *Job, in string) (string, error) {
			select {
			case <-gate:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			return "published " + in, nil
		}}
	v := NewVar("v", "one")
	var seen sync32
	out := Map(Do(op, v.Term()).Named("publish"), func(s string) string { seen.inc(s); return s })
	running(t, e, out)
	gate <- struct{}{}
	eventually(t, "first publish", func() bool { return seen.get("published one") == 1 })
	v.Set("two")
	eventually(t, "second running", func() bool {
		n, _ := nodeByLabel(e, "publish")
		return n.State == StateActive && n.Active == ActiveRunning
	})
	n, _ := nodeByLabel(e, "publish")
	if !n.Latched {
		t.Fatalf("publish node not latched: %+v", n)
	}
	if seen.get("published two") != 0 || seen.total() != 1 {
		t.Fatalf("downstream saw %v while latched", seen.snapshot())
	}
	gate <- struct{}{}
	eventually(t, "second publish", func() bool { return seen.get("published two") == 1 })
	d, err := e.Job(n.JobID)
	if err != nil || d.Build != 2 || len(d.History) != 2 {
		t.Fatalf("history: %+v %v", d, err)
	}
}

func TestExpiryJitter(t *testing.T) {
	now := time.Now()
	valid := time.Hour
	seen := map[int64]bool{}
	for i := 0; i < 200; i++ {
		x := expiry(now, valid, 0.2)
		lo, hi := now.Add(valid-valid/5).UnixNano(), now.Add(valid).UnixNano()
		if x < lo || x > hi {
			t.Fatalf("expiry %v outside [%v, %v]", time.Unix(0, x), time.Unix(0, lo), time.Unix(0, hi))
		}
		seen[x] = true
	}
	if len(seen) < 150 {
		t.Fatalf("only %d distinct expiries out of 200: no jitter", len(seen))
	}
	if expiry(now, 0, 0.1) != 0 {
		t.Fatal("no ValidFor must never expire")
	}

	// A short-lived result is rebuilt when it expires, in the background lane.
	e := testEngine(t, Config{})
	var runs atomic.Int64
	op := &Op[string, int64]{Name: "poll", ValidFor: 300 * time.Millisecond, Run: func(ctx context.Context, j *Job, in string) (int64, error) {
		return runs.Add(1), nil
	}}
	running(t, e, Do(op, Return("k")))
	eventually(t, "expired and rebuilt twice", func() bool { return runs.Load() >= 3 })
	r, _ := e.Query(Query{Op: "poll"})
	if r[len(r)-1].Lane != LaneUrgent || r[0].Lane != LaneBackground {
		t.Fatalf("lanes: first %s, latest %s", r[len(r)-1].Lane, r[0].Lane)
	}
	if r[0].Expires.IsZero() {
		t.Fatal("no expiry recorded")
	}
}

func TestInfrastructureFailuresRetry(t *testing.T) {
	e := testEngine(t, Config{MaxRetries: 2, RetryBackoff: 10 * time.Millisecond})
	var runs atomic.Int64
	flaky := &Op[string, string]{Name: "flaky", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		if runs.Add(1) < 3 {
			return "", Infra(FailNetwork, errors.New("connection reset"))
		}
		return "ok", nil
	}}
	var hopeless atomic.Int64
	lost := &Op[string, string]{Name: "lost", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		hopeless.Add(1)
		return "", Infra(FailWorkerLost, errors.New("worker vanished"))
	}}
	var own atomic.Int64
	selfRetrying := &Op[string, string]{Name: "self-retrying", NoRetry: true, Run: func(ctx context.Context, j *Job, in string) (string, error) {
		own.Add(1)
		return "", Infra("host-unreachable", errors.New("host down after its own retries"))
	}}
	var work atomic.Int64
	broken := &Op[string, string]{Name: "broken", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		work.Add(1)
		return "", errors.New("compile error")
	}}
	slow := &Op[string, string]{Name: "slow", Timeout: 50 * time.Millisecond, Run: func(ctx context.Context, j *Job, in string) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}}
	running(t, e, All(Catch(Do(flaky, Return("a"))), Catch(Do(lost, Return("b"))), Catch(Do(broken, Return("c"))), Catch(Do(slow, Return("d"))), Catch(Do(selfRetrying, Return("e")))))
	eventually(t, "all final", func() bool {
		r, _ := e.Query(Query{States: []JobState{JobOK, JobFailed}})
		return len(r) == 5
	})
	get := func(op string) JobInfo {
		r, _ := e.Query(Query{Op: op})
		return r[0]
	}
	if j := get("flaky"); j.State != JobOK || j.Attempts != 3 {
		t.Fatalf("flaky: %+v", j)
	}
	if j := get("lost"); j.State != JobFailed || j.FailureKind != FailWorkerLost || hopeless.Load() != 3 {
		t.Fatalf("lost: %+v runs %d", j, hopeless.Load())
	}
	if j := get("self-retrying"); j.State != JobFailed || j.FailureKind != "host-unreachable" || j.Attempts != 1 || own.Load() != 1 {
		t.Fatalf("self-retrying (NoRetry): %+v runs %d", j, own.Load())
	}
	if j := get("broken"); j.FailureKind != FailWork || work.Load() != 1 {
		t.Fatalf("broken: %+v runs %d", j, work.Load())
	}
	if j := get("slow"); j.FailureKind != FailTimeout || j.Attempts != 3 || !strings.Contains(j.Message, "timed out") {
		t.Fatalf("slow: %+v", j)
	}
	if !FailNetwork.Infrastructure() || FailWork.Infrastructure() {
		t.Fatal("Infrastructure()")
	}
}

func TestRandomEditsWithJobs(t *testing.T) {
	e := testEngine(t, Config{Pools: map[string]int{"default": 3}})
	op := &Op[string, string]{Name: "work", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		select {
		case <-time.After(time.Duration(len(in)%5) * 3 * time.Millisecond):
			return "done " + in, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}}
	src := NewVar("src", []string{})
	var latest atomic.Value
	running(t, e, Map(ListMap(src.Term(), func(s string) string { return s }, func(s Term[string]) Term[string] { return Do(op, s) }),
		func(r []string) string { v := strings.Join(r, ","); latest.Store(v); return v }))
	names := []string{"a", "bb", "ccc", "dddd", "eeeee", "f", "gg", "hhh"}
	var cur []string
	for step := 0; step < 60; step++ {
		n := names[step*7%len(names)]
		if i := slicesIndex(cur, n); i >= 0 {
			cur = append(cur[:i:i], cur[i+1:]...)
		} else {
			cur = append(cur[:len(cur):len(cur)], n)
		}
		src.Set(cur)
		if step%10 == 9 {
			var want []string
			for _, c := range cur {
				want = append(want, "done "+c)
			}
			w := strings.Join(want, ",")
			eventually(t, "results "+w, func() bool { v, _ := latest.Load().(string); return v == w && len(e.Jobs()) == 0 })
		}
	}
	// No job is left running, and every key is done once per time it was wanted anew
	// after being cancelled: the latest result of each wanted key is ok.
	for _, c := range cur {
		r, err := e.Query(Query{KeyContains: `"` + c + `"`, LatestOnly: true})
		if err != nil || len(r) != 1 || r[0].State != JobOK {
			t.Fatalf("%s: %+v %v", c, r, err)
		}
	}
	failed, _ := e.Query(Query{States: []JobState{JobFailed}, Limit: 1000})
	for _, f := range failed {
		if f.FailureKind != FailCancelled || !f.Rebuild {
			t.Fatalf("unexpected failure: %+v", f)
		}
	}
}

func slicesIndex(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}
