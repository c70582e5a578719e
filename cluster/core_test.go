package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock               { return &fakeClock{t: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)} }
func testPolicy() Policy {
	p := DefaultPolicy()
	p.LeaseTTL, p.WorkerTTL = 10*time.Second, 10*time.Second
	return p
}
func req(client, hint string, urgent bool) Request {
	return Request{Pool: "p", Client: client, Spec: "true", CacheHint: hint, Urgent: urgent}
}

type recorder struct {
	assigned []string // job@worker
	cancels  []string
}

func newTestCore(t *testing.T, clk *fakeClock) (*core, *recorder) {
	rec := &recorder{}
	c := newCore(testPolicy(), []string{"p"}, clk.now, hooks{
		assign: func(w *worker, j *Job) { rec.assigned = append(rec.assigned, j.ID+"@"+w.Name) },
		cancel: func(w *worker, j *Job) { rec.cancels = append(rec.cancels, j.ID+"@"+w.Name) },
	})
	return c, rec
}

func mustHello(t *testing.T, c *core, name string, capacity int) string {
	t.Helper()
	s, err := c.hello(WorkerSpec{Name: name, Pool: "p", Capacity: capacity}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUrgentBeforeBackground(t *testing.T) {
	clk := newClock()
	c, rec := newTestCore(t, clk)
	for i := range 3 {
		r := req("a", "", false)
		r.ID = fmt.Sprint("bg", i)
		c.submit(r)
	}
	u := req("b", "", true)
	u.ID = "urgent"
	c.submit(u)
	mustHello(t, c, "w1", 1)
	if len(rec.assigned) != 1 || rec.assigned[0] != "urgent@w1" {
		t.Fatalf("first placement %v, want urgent@w1", rec.assigned)
	}
}

func TestFairShareSmallClientNotStarved(t *testing.T) {
	clk := newClock()
	c, rec := newTestCore(t, clk)
	ses := mustHello(t, c, "w1", 1)
	for i := range 100 {
		r := req("big", "", false)
		r.ID = fmt.Sprint("big", i)
		c.submit(r)
	}
	small := req("small", "", false)
	small.ID = "small0"
	c.submit(small)
	// the running big job finishes; the next start must be the small client's job
	j := c.jobs[strings.Split(rec.assigned[0], "@")[0]]
	clk.add(time.Second)
	if ok, why := c.complete("w1", ses, JobRef{j.ID, j.Attempt}, Result{Outcome: OutcomeOK}); !ok {
		t.Fatal(why)
	}
	if got := rec.assigned[len(rec.assigned)-1]; got != "small0@w1" {
		t.Fatalf("after one big job the next start is %s, want small0@w1", got)
	}
}

func TestAffinityAndLeastLoaded(t *testing.T) {
	clk := newClock()
	c, rec := newTestCore(t, clk)
	s1 := mustHello(t, c, "w1", 2)
	mustHello(t, c, "w2", 2)
	a := req("x", "hintA", false)
	a.ID = "a1"
	c.submit(a)
	b := req("x", "hintB", false)
	b.ID = "b1"
	c.submit(b)
	if rec.assigned[0][3:] == rec.assigned[1][3:] {
		t.Fatalf("two jobs on one worker while another is idle: %v", rec.assigned)
	}
	wa := strings.Split(rec.assigned[0], "@")[1]
	clk.add(time.Second)
	sA := s1
	if wa != "w1" {
		sA = c.workers["w2"].session
	}
	c.complete(wa, sA, JobRef{"a1", 1}, Result{Outcome: OutcomeOK})
	a2 := req("x", "hintA", false)
	a2.ID = "a2"
	c.submit(a2)
	if got := rec.assigned[2]; got != "a2@"+wa {
		t.Fatalf("hinted job placed %s, want on %s which built hintA", got, wa)
	}
}

func TestLostWorkerRequeuesBoundedAndIgnoresLateCompletion(t *testing.T) {
	clk := newClock()
	c, rec := newTestCore(t, clk)
	s1 := mustHello(t, c, "w1", 1)
	r := req("x", "", false)
	r.ID = "j"
	c.submit(r)
	if rec.assigned[0] != "j@w1" {
		t.Fatal(rec.assigned)
	}
	s2 := mustHello(t, c, "w2", 1)
	for range 2 {
		clk.add(5 * time.Second)
		c.heartbeat(beat{Name: "w2", Session: s2})
	}
	clk.add(time.Second)
	c.tick() // w1 silent for 11 s: lost
	j := c.jobs["j"]
	if j.State != StateRunning || j.Worker != "w2" || j.Attempt != 2 {
		t.Fatalf("after w1 was lost: state %s worker %s attempt %d", j.State, j.Worker, j.Attempt)
	}
	if !strings.Contains(j.History[len(j.History)-2].What, "worker w1 lost, retried") {
		t.Fatalf("history %+v", j.History)
	}
	if ok, _ := c.complete("w1", s1, JobRef{"j", 1}, Result{Outcome: OutcomeOK}); ok {
		t.Fatal("late completion of attempt 1 accepted")
	}
	if ok, why := c.complete("w2", s2, JobRef{"j", 2}, Result{Outcome: OutcomeOK}); !ok {
		t.Fatal(why)
	}
	if ok, _ := c.complete("w2", s2, JobRef{"j", 2}, Result{Outcome: OutcomeOK}); ok {
		t.Fatal("duplicate completion accepted")
	}
	if err := c.invariants(); err != nil {
		t.Fatal(err)
	}
	// bounded retries
	r2 := req("x", "", false)
	r2.ID = "k"
	c.submit(r2)
	for i := range 3 {
		ses := mustHello(t, c, fmt.Sprint("v", i), 1)
		_ = ses
		c.pools["p"].workers["w2"].adminPaused = true
		clk.add(11 * time.Second)
		c.tick()
	}
	if k := c.jobs["k"]; k.State != StateDone || k.Result.Outcome != OutcomeInfrastructure {
		t.Fatalf("job k after 3 lost workers: %s %+v", k.State, k.Result)
	}
}

func TestCancelQueuedAndRunning(t *testing.T) {
	clk := newClock()
	c, rec := newTestCore(t, clk)
	ses := mustHello(t, c, "w1", 1)
	for _, id := range []string{"r", "q"} {
		r := req("x", "", false)
		r.ID = id
		c.submit(r)
	}
	c.cancel("q")
	if c.jobs["q"].Result == nil || c.jobs["q"].Result.Outcome != OutcomeCancelled {
		t.Fatal("queued job not cancelled")
	}
	c.cancel("r")
	if len(rec.cancels) != 1 {
		t.Fatalf("cancel not sent to the worker: %v", rec.cancels)
	}
	c.complete("w1", ses, JobRef{"r", 1}, Result{Outcome: OutcomeFailed})
	if c.jobs["r"].Result.Outcome != OutcomeCancelled {
		t.Fatalf("cancelled run ended %s", c.jobs["r"].Result.Outcome)
	}
	if c.pools["p"].queued != 0 {
		t.Fatalf("queued count %d", c.pools["p"].queued)
	}
}

func TestQueueViewExplains(t *testing.T) {
	clk := newClock()
	c, _ := newTestCore(t, clk)
	for i := range 5 {
		r := req("x", "", false)
		r.ID = fmt.Sprint("j", i)
		c.submit(r)
	}
	q, err := c.queue("p", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Queued) != 5 || !strings.Contains(q.Queued[0].Why, "no worker") {
		t.Fatalf("queue %+v", q)
	}
	mustHello(t, c, "w1", 1)
	q, _ = c.queue("p", 10)
	if len(q.Queued) != 4 || q.Queued[1].Position != 2 || !q.Queued[1].EstimatedStart.After(clk.now()) {
		t.Fatalf("queue %+v", q)
	}
	if _, err := c.queue("nope", 1); err == nil {
		t.Fatal("unknown pool accepted")
	}
	if _, err := c.submit(Request{Pool: "nope", Client: "x", Spec: "s"}); err == nil || !strings.Contains(err.Error(), "unknown pool") {
		t.Fatalf("unknown pool: %v", err)
	}
}

func TestSecondSchedulerRefused(t *testing.T) {
	tf := newTestFleet(t, Options{})
	if _, err := StartScheduler(tf.ctx, tf.f.nc, SchedulerOptions{Pools: DefaultPools}); err == nil || !strings.Contains(err.Error(), "another scheduler") {
		t.Fatalf("second scheduler: %v", err)
	}
}

func TestFairShareFollowsRates(t *testing.T) {
	s := newSim(DefaultPolicy())
	s.dur = func(string, *Job) time.Duration { return time.Minute }
	s.c.rates["heavy"] = 3
	for i := range 400 {
		s.c.submit(Request{ID: fmt.Sprint("h", i), Pool: "p", Client: "heavy", Spec: "x"})
		s.c.submit(Request{ID: fmt.Sprint("l", i), Pool: "p", Client: "light", Spec: "x"})
	}
	for i := range 10 {
		s.join(fmt.Sprint("w", i), 1)
	}
	s.run(s.clk.now().Add(20 * time.Minute))
	heavy, light := 0, 0
	for id := range s.started {
		if id[0] == 'h' {
			heavy++
		} else {
			light++
		}
	}
	ratio := float64(heavy) / float64(light)
	t.Logf("started: heavy (rate 3) %d, light (rate 1) %d", heavy, light)
	if ratio < 2.5 || ratio > 3.5 {
		t.Fatalf("share ratio %.2f, want about 3", ratio)
	}
}

func TestCostLearnedPerHint(t *testing.T) {
	s := newSim(DefaultPolicy())
	s.dur = func(_ string, j *Job) time.Duration {
		if j.CacheHint == "slow" {
			return 10 * time.Minute
		}
		return 20 * time.Second
	}
	s.join("w", 1)
	for i := range 3 {
		s.c.submit(Request{ID: fmt.Sprint("s", i), Pool: "p", Client: "c", Spec: "x", CacheHint: "slow"})
		s.c.submit(Request{ID: fmt.Sprint("f", i), Pool: "p", Client: "c", Spec: "x", CacheHint: "fast"})
	}
	s.run(s.clk.now().Add(24 * time.Hour))
	s.c.setPaused("w", true)
	s.c.submit(Request{ID: "next-slow", Pool: "p", Client: "c", Spec: "x", CacheHint: "slow"})
	s.c.submit(Request{ID: "next-fast", Pool: "p", Client: "c", Spec: "x", CacheHint: "fast"})
	q, _ := s.c.queue("p", 10)
	got := map[string]time.Duration{}
	for _, e := range q.Queued {
		got[e.ID] = time.Duration(e.EstimatedCost)
	}
	if got["next-slow"] != 10*time.Minute || got["next-fast"] != 20*time.Second {
		t.Fatalf("estimates %v, want 10m0s and 20s learned from history", got)
	}
}

// TestEmbeddedCloseAfterCancel stops an embedded fleet both ways at once (its context
// ends while Close runs), as kiln serve does on a signal; run with -race.
func TestEmbeddedCloseAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f, err := StartEmbedded(ctx, Options{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Pools: []string{"linux-x86_64"}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	f.Close()
}

// TestWaitSharesOneWatch waits on many jobs at once through one client: all finish,
// including one that was done before its waiter came, and the waiters leave no trace.
func TestWaitSharesOneWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := StartEmbedded(context.Background(), Options{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Pools: []string{"linux-x86_64"}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nc, err := Connect(ctx, ConnOptions{URL: f.URL, Name: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w, err := NewWorker(nc, WorkerOptions{Name: "w1", Pool: "linux-x86_64", Capacity: 4, StateDir: t.TempDir(),
		Runner: &ShellRunner{WorkDir: t.TempDir()}, HealthEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); w.Run(wctx) }()
	defer func() { stopWorker(); <-workerDone }()

	first, err := f.Client.Submit(ctx, Request{Pool: "linux-x86_64", Client: "t", Spec: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Client.Wait(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	// Done already: a new waiter sees it at once.
	if j, err := f.Client.Wait(ctx, first.ID); err != nil || j.State != StateDone {
		t.Fatalf("wait on a finished job: %v, %v", j, err)
	}
	const n = 40
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		job, err := f.Client.Submit(ctx, Request{Pool: "linux-x86_64", Client: "t", Spec: fmt.Sprintf("sleep 0.%d", i%5)})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if _, err := f.Client.WaitStarted(ctx, job.ID); err != nil {
				errs <- err
				return
			}
			j, err := f.Client.Wait(ctx, job.ID)
			if err == nil && (j.Result == nil || j.Result.Outcome != OutcomeOK) {
				err = fmt.Errorf("job %s ended %+v", job.ID, j.Result)
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.Client.hub.mu.Lock()
	left := len(f.Client.hub.waiters)
	f.Client.hub.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d jobs still have waiters", left)
	}
}
