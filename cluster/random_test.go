package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRandomOperationsKeepInvariants drives the core with random sequences of every
// operation (submissions, workers joining, beating, completing, vanishing, restarting,
// pauses, cancels, a scheduler restart) and checks its bookkeeping after each step, and
// that a job never runs on two workers at once.
func TestRandomOperationsKeepInvariants(t *testing.T) {
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 7))
		clk := newClock()
		pol := testPolicy()
		pol.AffinityWait = 3
		var c *core
		running := map[string]string{} // job -> worker the worker believes runs it
		mk := func() {
			c = newCore(pol, []string{"p", "q"}, clk.now, hooks{assign: func(w *worker, j *Job) {
				if other, ok := running[j.ID]; ok && other != w.Name {
					t.Fatalf("seed %d: job %s assigned to %s while %s runs it; history %v", seed, j.ID, w.Name, other, j.History)
				}
				running[j.ID] = w.Name
			}})
		}
		mk()
		sessions := map[string]string{}
		lastOK := map[string]time.Time{} // last renewal each worker saw
		workers := []string{"a", "b", "c", "d"}
		nJobs := 0
		for step := range 1000 {
			switch op := r.IntN(12); op {
			case 0, 1, 2:
				nJobs++
				pool := "p"
				if r.IntN(4) == 0 {
					pool = "q"
				}
				_, _ = c.submit(Request{ID: fmt.Sprint("j", nJobs), Pool: pool, Client: fmt.Sprint("c", r.IntN(3)), Spec: "x",
					CacheHint: fmt.Sprint("h", r.IntN(5)), Urgent: r.IntN(3) == 0})
			case 3:
				w := workers[r.IntN(len(workers))]
				pool := "p"
				if w == "d" {
					pool = "q"
				}
				var refs []JobRef
				for id, on := range running {
					if on == w {
						refs = append(refs, JobRef{id, c.jobs[id].Attempt})
					}
				}
				if r.IntN(2) == 0 { // the worker process restarted: it runs nothing
					for id, on := range running {
						if on == w {
							delete(running, id)
						}
					}
					refs = nil
				}
				if ses, err := c.hello(WorkerSpec{Name: w, Pool: pool, Capacity: 1 + int(w[0]-'a')%3}, refs); err == nil {
					sessions[w] = ses
					lastOK[w] = clk.now()
				}
			case 4, 5:
				for _, w := range workers {
					var refs []JobRef
					for id, on := range running {
						if on == w {
							refs = append(refs, JobRef{id, c.jobs[id].Attempt})
						}
					}
					if r.IntN(4) == 0 {
						continue // this heartbeat is lost
					}
					rep := c.heartbeat(beat{Name: w, Session: sessions[w], Running: refs})
					if rep.Unknown {
						continue
					}
					lastOK[w] = clk.now()
					keep := map[string]bool{}
					for _, k := range rep.Keep {
						keep[k.ID] = true
					}
					for _, ref := range refs {
						if !keep[ref.ID] {
							delete(running, ref.ID) // the worker stops what it may not keep
						}
					}
				}
			case 6, 7:
				for id, w := range running {
					delete(running, id)
					out := []Outcome{OutcomeOK, OutcomeFailed, OutcomeInfrastructure}[r.IntN(3)]
					c.complete(w, sessions[w], JobRef{id, c.jobs[id].Attempt}, Result{Outcome: out})
					break
				}
			case 8:
				clk.add(time.Duration(r.IntN(8)) * time.Second)
				// a worker that has not renewed for 4/5 of the lease stops its runs (Worker.fence)
				for id, w := range running {
					if clk.now().Sub(lastOK[w]) >= pol.LeaseTTL*4/5 {
						delete(running, id)
					}
				}
				c.tick()
			case 9:
				w := workers[r.IntN(len(workers))]
				_ = c.setPaused(w, r.IntN(2) == 0)
			case 10:
				if nJobs > 0 {
					_, _ = c.cancel(fmt.Sprint("j", 1+r.IntN(nJobs)))
				}
			case 11:
				if r.IntN(10) == 0 { // scheduler restart: reload what was stored
					var js []*Job
					for _, j := range c.jobs {
						if j.State != StateDone {
							cp := *j
							cp.History = append([]Event(nil), j.History...)
							js = append(js, &cp)
						}
					}
					paused := c.paused
					mk()
					c.paused = paused
					c.restore(js)
					sessions = map[string]string{}
				}
			}
			if err := c.invariants(); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
		}
	}
}
