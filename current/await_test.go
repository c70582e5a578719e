package current

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// gate is something outside the engine that jobs await: opening it resumes them.
type gate struct {
	mu      sync.Mutex
	open    map[string]bool
	resumes map[string]func()
}

func newGate() *gate { return &gate{open: map[string]bool{}, resumes: map[string]func(){}} }

func (g *gate) isOpen(k string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open[k]
}

func (g *gate) arm(k string, resume func()) {
	g.mu.Lock()
	open := g.open[k]
	if !open {
		g.resumes[k] = resume
	}
	g.mu.Unlock()
	if open {
		resume()
	}
}

func (g *gate) openKey(k string) {
	g.mu.Lock()
	g.open[k] = true
	r := g.resumes[k]
	delete(g.resumes, k)
	g.mu.Unlock()
	if r != nil {
		r()
	}
}

// awaitingOp waits for the gate of its input without holding a goroutine.
func awaitingOp(g *gate, runs, awoken *atomic.Int64) *Op[string, string] {
	return &Op[string, string]{Name: "awaits", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		runs.Add(1)
		if j.Awoken() {
			awoken.Add(1)
		}
		j.Logf("run %d of %s", runs.Load(), in)
		if !g.isOpen(in) {
			return "", Await("waiting for the gate of "+in, func(_ context.Context, resume func()) { g.arm(in, resume) })
		}
		return "done " + in, nil
	}}
}

func TestAwaitHoldsNoGoroutine(t *testing.T) {
	const n = 500
	g := newGate()
	var runs, awoken atomic.Int64
	op := awaitingOp(g, &runs, &awoken)
	e := testEngine(t, Config{DefaultPoolSlots: 4})
	terms := make([]AnyTerm, n)
	for i := range terms {
		terms[i] = Do(op, Return(fmt.Sprint(i)))
	}
	before, fdsBefore := runtime.NumGoroutine(), testenv.OpenFiles(t)
	running(t, e, All(terms...))
	eventually(t, "every job parked", func() bool { return runs.Load() == n && e.Status().ParkedJobs == n })
	eventually(t, "the jobs' goroutines gone", func() bool { return runtime.NumGoroutine() < before+50 })
	if grown := testenv.OpenFiles(t) - fdsBefore; grown > 50 {
		t.Errorf("%d more open files with %d jobs parked: a parked job should hold none", grown, n)
	}
	jobs := e.Jobs()
	if len(jobs) != n {
		t.Fatalf("%d active jobs, want %d", len(jobs), n)
	}
	for _, j := range jobs[:3] {
		if j.State != JobReady || !strings.HasPrefix(j.WaitReason, "waiting for the gate of ") {
			t.Errorf("parked job %s: state %s, reason %q", j.ID, j.State, j.WaitReason)
		}
		// The key, kept only in the store while the job is active, is listed.
		if want := fmt.Sprintf("%q", strings.TrimPrefix(j.WaitReason, "waiting for the gate of ")); j.Key != want {
			t.Errorf("parked job %s: key %q, want %q", j.ID, j.Key, want)
		}
	}
	if st := e.Status(); st.ParkedJobs != n || st.ActiveJobs != n {
		t.Errorf("status: %d parked of %d active jobs, want %d of %d", st.ParkedJobs, st.ActiveJobs, n, n)
	}
	// With 4 slots, 500 jobs could only all have run because parked jobs give theirs back.
	for i := 0; i < n; i++ {
		g.openKey(fmt.Sprint(i))
	}
	eventually(t, "every job done", func() bool {
		r, _ := e.Query(Query{Op: "awaits", States: []JobState{JobOK}, Limit: 10 * n})
		return len(r) == n
	})
	if st := e.Status(); st.ParkedJobs != 0 {
		t.Errorf("status: %d jobs still parked once all are done", st.ParkedJobs)
	}
	if awoken.Load() != n {
		t.Errorf("%d runs were awoken, want %d", awoken.Load(), n)
	}
	r, _ := e.Query(Query{Op: "awaits", Limit: 1})
	if r[0].Attempts != 1 {
		t.Errorf("a job awoken once counts %d attempts, want 1", r[0].Attempts)
	}
	// The log, closed while the job was parked, goes on after it.
	chunk, err := e.ReadLog(r[0].ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	log := string(chunk.Data)
	wait := strings.Index(log, "--- kiln: waiting for the gate of")
	if wait < 0 || strings.LastIndex(log, "\nrun ") < wait || strings.LastIndex(log, "job succeeded") < wait {
		t.Errorf("log of a job awoken once:\n%s", log)
	}
}

func TestAwaitEnds(t *testing.T) {
	cases := []struct {
		name string
		end  func(t *testing.T, e *Engine, g *gate, id string, stop func())
		want FailureKind
		ok   bool
	}{
		{"gate opens", func(t *testing.T, e *Engine, g *gate, id string, stop func()) { g.openKey("x") }, "", true},
		{"operator cancels", func(t *testing.T, e *Engine, g *gate, id string, stop func()) {
			if err := e.Cancel(id); err != nil {
				t.Fatal(err)
			}
		}, FailCancelled, false},
		{"engine stops", func(t *testing.T, e *Engine, g *gate, id string, stop func()) { stop() }, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newGate()
			var runs, awoken atomic.Int64
			op := awaitingOp(g, &runs, &awoken)
			dir := t.TempDir()
			e := testEngine(t, Config{StateDir: dir})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx, Catch(Do(op, Return("x")))) }()
			eventually(t, "the job parked", func() bool { return len(e.Jobs()) == 1 && e.Jobs()[0].WaitReason != "ready" && runs.Load() == 1 })
			id := e.Jobs()[0].ID
			stopped := false
			c.end(t, e, g, id, func() { cancel(); <-done; stopped = true })
			if !stopped {
				eventually(t, "the job finished", func() bool {
					j, err := e.Job(id)
					return err == nil && (j.State == JobOK || j.State == JobFailed)
				})
				cancel()
				<-done
			}
			j, err := e.Job(id)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.ok && j.State != JobOK:
				t.Errorf("job %s (%s), want ok", j.State, j.Message)
			case !c.ok && !stopped && (j.State != JobFailed || j.FailureKind != c.want):
				t.Errorf("job %s %s (%s), want failed %s", j.State, j.FailureKind, j.Message, c.want)
			case stopped && j.State != JobInterrupted:
				t.Errorf("job %s after the engine stopped, want interrupted", j.State)
			}
			if !stopped {
				return
			}
			// The interrupted job runs again when the engine is back, and awaits again.
			e.Close()
			e2 := testEngine(t, Config{StateDir: dir})
			running(t, e2, Catch(Do(op, Return("x"))))
			eventually(t, "the job parked again", func() bool { return runs.Load() == 3 })
			g.openKey("x")
			eventually(t, "the job finished after the restart", func() bool {
				j, err := e2.Job(id)
				return err == nil && j.State == JobOK
			})
		})
	}
}
