package cluster

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// sim drives the core in simulated time: assignments complete after a duration chosen by
// the workload, workers join and leave.
type sim struct {
	clk      *fakeClock
	c        *core
	ev       evHeap
	seq      int
	sessions map[string]string
	dur      func(worker string, j *Job) time.Duration
	started  map[string]time.Time
	onStart  func(w string, j *Job)
}

type simEvent struct {
	at  time.Time
	seq int
	f   func()
}

type evHeap []simEvent

func (h evHeap) Len() int { return len(h) }
func (h evHeap) Less(a, b int) bool {
	if !h[a].at.Equal(h[b].at) {
		return h[a].at.Before(h[b].at)
	}
	return h[a].seq < h[b].seq
}
func (h evHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *evHeap) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *evHeap) Pop() any     { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }
func (s *sim) at(t time.Time, f func()) {
	s.seq++
	heap.Push(&s.ev, simEvent{at: t, seq: s.seq, f: f})
}

func newSim(p Policy) *sim {
	s := &sim{clk: newClock(), sessions: map[string]string{}, started: map[string]time.Time{}}
	p.LeaseTTL, p.WorkerTTL = 1000*time.Hour, 1000*time.Hour
	s.c = newCore(p, []string{"p"}, s.clk.now, hooks{assign: func(w *worker, j *Job) {
		name, ref := w.Name, JobRef{j.ID, j.Attempt}
		s.started[j.ID] = s.clk.now()
		if s.onStart != nil {
			s.onStart(name, j)
		}
		d := s.dur(name, j)
		s.at(s.clk.now().Add(d), func() {
			s.c.complete(name, s.sessions[name], ref, Result{Outcome: OutcomeOK, Duration: Duration(d)})
		})
	}})
	return s
}

func (s *sim) join(name string, capacity int) {
	ses, err := s.c.hello(WorkerSpec{Name: name, Pool: "p", Capacity: capacity}, nil)
	if err != nil {
		panic(err)
	}
	s.sessions[name] = ses
}

func (s *sim) run(until time.Time) {
	for len(s.ev) > 0 && !s.ev[0].at.After(until) {
		e := heap.Pop(&s.ev).(simEvent)
		s.clk.t = e.at
		e.f()
	}
}

// fairShare floods the pool with big's jobs, then submits small's, and returns the
// longest wait of small's jobs in job lengths.
func fairShare(bigJobs, smallJobs, workers int) float64 {
	jobLen := time.Minute
	s := newSim(DefaultPolicy())
	s.dur = func(string, *Job) time.Duration { return jobLen }
	for i := range workers {
		s.join(fmt.Sprint("w", i), 1)
	}
	for i := range bigJobs {
		s.c.submit(Request{ID: fmt.Sprint("big", i), Pool: "p", Client: "big", Spec: "x"})
	}
	s.run(s.clk.now().Add(10 * jobLen))
	submitted := s.clk.now().Add(7 * time.Second)
	s.at(submitted, func() {
		for i := range smallJobs {
			s.c.submit(Request{ID: fmt.Sprint("small", i), Pool: "p", Client: "small", Spec: "x"})
		}
	})
	s.run(submitted.Add(time.Duration(bigJobs) * jobLen))
	var worst time.Duration
	for i := range smallJobs {
		st, ok := s.started[fmt.Sprint("small", i)]
		if !ok {
			return -1
		}
		worst = max(worst, st.Sub(submitted))
	}
	return worst.Seconds() / jobLen.Seconds()
}

func TestFairShareFloodVsSmallClient(t *testing.T) {
	worst := fairShare(8000, 10, 20)
	t.Logf("small client's worst wait: %.2f job lengths (8,000 queued by another client, 20 workers)", worst)
	if worst < 0 || worst > 1.0 {
		t.Fatalf("small client's jobs waited %.2f job lengths behind the flood", worst)
	}
}

// BenchmarkFairShare reports the small client's worst wait in job lengths when another
// client has 8,000 jobs queued.
func BenchmarkFairShare(b *testing.B) {
	var worst float64
	for b.Loop() {
		worst = fairShare(8000, 10, 20)
	}
	b.ReportMetric(worst, "small-wait-joblens")
}

// affinityReplay replays a workload of hinted jobs (Zipf-popular hints; cold builds cost
// 4× warm ones; every worker caches its 40 most recent hints) while workers join and
// leave, and returns the share of jobs that ran on a worker holding their hint, and the
// mean time from submission to completion.
func affinityReplay(p Policy, seed uint64) (hitRate float64, meanTurnaround time.Duration) {
	r := rand.New(rand.NewPCG(seed, 1))
	s := newSim(p)
	caches := map[string][]string{}
	has := func(w, h string) bool {
		for _, x := range caches[w] {
			if x == h {
				return true
			}
		}
		return false
	}
	var hits, total int
	warm, cold := 30*time.Second, 120*time.Second
	s.dur = func(w string, j *Job) time.Duration {
		total++
		if has(w, j.CacheHint) {
			hits++
			return warm
		}
		c := append([]string{j.CacheHint}, caches[w]...)
		if len(c) > 40 {
			c = c[:40]
		}
		caches[w] = c
		return cold
	}
	const nWorkers, nJobs = 24, 20000
	for i := range nWorkers {
		s.join(fmt.Sprint("w", i), 2)
	}
	zipf := rand.NewZipf(r, 1.1, 1, 999)
	start := s.clk.now()
	t := start
	submitted := map[string]time.Time{}
	for i := range nJobs {
		t = t.Add(time.Duration(r.ExpFloat64() * float64(1200*time.Millisecond)))
		id := fmt.Sprint("j", i)
		h := fmt.Sprint("hint", zipf.Uint64())
		submitted[id] = t
		s.at(t, func() { s.c.submit(Request{ID: id, Pool: "p", Client: "c", Spec: "x", CacheHint: h}) })
		if i%1000 == 999 { // churn: one worker leaves, a fresh one joins
			gone, fresh := fmt.Sprint("w", r.IntN(nWorkers)), fmt.Sprint("n", i)
			s.at(t, func() {
				if s.c.workers[gone] != nil {
					_ = s.c.forget(gone)
				}
				delete(caches, gone)
				s.join(fresh, 2)
				if err := s.c.invariants(); err != nil {
					panic(err)
				}
			})
		}
	}
	s.run(t.Add(100 * time.Hour))
	var sum time.Duration
	n := 0
	for id, sub := range submitted {
		if j := s.c.jobs[id]; j != nil && j.Result != nil {
			sum += j.Started.Add(time.Duration(j.Result.Duration)).Sub(sub)
			n++
		}
	}
	if n != nJobs {
		panic(fmt.Sprintf("only %d of %d jobs finished", n, nJobs))
	}
	if err := s.c.invariants(); err != nil {
		panic(err)
	}
	if q := s.c.pools["p"].queued; q != 0 {
		panic(fmt.Sprintf("queue length %d after every job finished", q))
	}
	return float64(hits) / float64(total), sum / time.Duration(n)
}

func TestAffinityBeatsLeastLoaded(t *testing.T) {
	p := DefaultPolicy()
	hit, turn := affinityReplay(p, 1)
	p.AffinityTTL = time.Nanosecond // affinity off: least-loaded only
	hit0, turn0 := affinityReplay(p, 1)
	t.Logf("affinity: hit rate %.1f%%, mean turnaround %s; least-loaded only: %.1f%%, %s", 100*hit, turn.Round(time.Second), 100*hit0, turn0.Round(time.Second))
	if hit <= hit0 {
		t.Fatalf("affinity hit rate %.3f not above the least-loaded baseline %.3f", hit, hit0)
	}
}

// BenchmarkAffinityReplay reports the cache hit rate of a replayed workload with workers
// joining and leaving, with affinity and with least-loaded placement only.
func BenchmarkAffinityReplay(b *testing.B) {
	var hit, hit0 float64
	var turn, turn0 time.Duration
	for b.Loop() {
		p := DefaultPolicy()
		hit, turn = affinityReplay(p, 1)
		p.AffinityTTL = time.Nanosecond
		hit0, turn0 = affinityReplay(p, 1)
	}
	b.ReportMetric(100*hit, "hit%")
	b.ReportMetric(100*hit0, "baseline-hit%")
	b.ReportMetric(turn.Seconds(), "turnaround-s")
	b.ReportMetric(turn0.Seconds(), "baseline-turnaround-s")
}
