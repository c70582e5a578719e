package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// simWorker speaks the worker protocol over NATS; it "runs" each job for 0.5 to 1.5 ×
// *hold (zero: completes it at once).
type simWorker struct {
	name    string
	nc      *nats.Conn
	session string
	hold    *atomic.Int64
	started func(j *Job)
}

func (w *simWorker) start(t testing.TB, capacity int) {
	_, err := w.nc.Subscribe(subjToWorker+w.name+".job", func(m *nats.Msg) {
		var j Job
		if err := json.Unmarshal(m.Data, &j); err != nil {
			return
		}
		if w.started != nil {
			w.started(&j)
		}
		b, _ := json.Marshal(doneMsg{Name: w.name, Session: w.session, JobRef: JobRef{j.ID, j.Attempt}, Result: Result{Outcome: OutcomeOK}})
		finish := func() { _ = w.nc.PublishRequest(subjDone, "_INBOX.ignored", b) }
		if d := time.Duration(w.hold.Load()); d > 0 {
			time.AfterFunc(d/2+rand.N(d), finish) // spread, so completions do not come in waves
		} else {
			finish()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(helloMsg{WorkerSpec: WorkerSpec{Name: w.name, Pool: "linux-x86_64", Capacity: capacity}})
	m, err := w.nc.Request(subjHello, b, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep helloReply
	if err := decodeReply(m.Data, &rep); err != nil {
		t.Fatal(err)
	}
	w.session = rep.Session
}

// BenchmarkDispatch runs the real scheduler with its JetStream state over NATS, with
// 200 simulated workers (capacity 2) and a backlog of 100,000 queued jobs:
//
//  1. latency: workers hold each job for about 1 s (so the fleet is busy but the scheduler is
//     not saturated) while urgent jobs are submitted every 20 ms; reported is their
//     submit-to-start time (start = the worker received the job), p50 and p99;
//  2. throughput: workers then complete jobs at once and the rest of the backlog drains;
//     reported is the dispatch rate and the CPU time of the whole system (NATS server,
//     scheduler, workers, clients: one process) per job.
//
// KILN_BENCH_JOBS and KILN_BENCH_WORKERS scale it. It runs on the single embedded node
// and on a 3-node NATS cluster with every stream and bucket replicated 3 times.
func BenchmarkDispatch(b *testing.B) {
	policy := Policy{LeaseTTL: 5 * time.Minute, DefaultCost: time.Second}
	pools := []string{"linux-x86_64"}
	b.Run("embedded", func(b *testing.B) {
		benchDispatch(b, func(ctx context.Context) benchFleet {
			f, err := StartEmbedded(ctx, Options{StateDir: b.TempDir(), Listen: "127.0.0.1:0", Pools: pools, Policy: policy})
			if err != nil {
				b.Fatal(err)
			}
			return benchFleet{client: f.Client, conn: ConnOptions{URL: f.URL}, close: f.Close}
		})
	})
	b.Run("cluster-3", func(b *testing.B) {
		benchDispatch(b, func(ctx context.Context) benchFleet {
			c := startNATSCluster(b, 3)
			h, err := StartHA(ctx, c.connect("scheduler"), SchedulerOptions{Pools: pools, Policy: policy, Replicas: 3})
			if err != nil {
				b.Fatal(err)
			}
			for !h.Leading() {
				time.Sleep(10 * time.Millisecond)
			}
			cl, err := NewClient(c.connect("client"))
			if err != nil {
				b.Fatal(err)
			}
			return benchFleet{client: cl, conn: ConnOptions{URL: c.urls(), Token: c.token}, close: func() { cl.Close(); h.Stop() }}
		})
	})
}

// benchFleet is a running fleet to benchmark: a client, how simulated workers connect, and
// how to stop it.
type benchFleet struct {
	client *Client
	conn   ConnOptions
	close  func()
}

func benchDispatch(b *testing.B, start func(context.Context) benchFleet) {
	nJobs := benchEnvInt("KILN_BENCH_JOBS", 100000)
	nWorkers := benchEnvInt("KILN_BENCH_WORKERS", 200)
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		f := start(ctx)
		t0 := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(nJobs) {
						return
					}
					r := Request{ID: fmt.Sprintf("bg-%07d", i), Pool: "linux-x86_64", Client: fmt.Sprint("c", i%4), Spec: "true", CacheHint: fmt.Sprint("h", i%500)}
					if _, err := f.client.Submit(ctx, r); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		submitRate := float64(nJobs) / time.Since(t0).Seconds()

		var done atomic.Int64
		probeSent := sync.Map{}
		var lmu sync.Mutex
		var lat []time.Duration
		started := func(j *Job) {
			if v, ok := probeSent.Load(j.ID); ok {
				lmu.Lock()
				lat = append(lat, time.Since(v.(time.Time)))
				lmu.Unlock()
			} else {
				done.Add(1)
			}
		}
		var conns []*nats.Conn
		for i := range 8 {
			o := f.conn
			o.Name = fmt.Sprint("sim", i)
			nc, err := Connect(ctx, o)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, nc)
		}
		var hold atomic.Int64
		hold.Store(int64(time.Second))
		for i := range nWorkers {
			w := &simWorker{name: fmt.Sprint("sim", i), nc: conns[i%len(conns)], hold: &hold, started: started}
			w.start(b, 2)
		}
		// phase 1: latency of urgent jobs while the busy fleet works through the backlog
		time.Sleep(3 * time.Second) // all workers started together: let their completions spread out
		for i := range 500 {
			id := fmt.Sprintf("probe-%06d", i)
			probeSent.Store(id, time.Now())
			if _, err := f.client.Submit(ctx, Request{ID: id, Pool: "linux-x86_64", Client: "probe", Spec: "true", Urgent: true}); err != nil {
				b.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second)
		// phase 2: throughput
		hold.Store(0)
		cpu0, t1, done1 := cpuTime(), time.Now(), done.Load()
		for done.Load() < int64(nJobs) {
			if time.Since(t1) > 15*time.Minute {
				b.Fatalf("only %d of %d jobs started", done.Load(), nJobs)
			}
			time.Sleep(10 * time.Millisecond)
		}
		drained := done.Load() - done1
		elapsed := time.Since(t1)
		cpuPerJob := (cpuTime() - cpu0) / time.Duration(drained)
		lmu.Lock()
		slices.Sort(lat)
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(len(lat)), "probes")
		}
		lmu.Unlock()
		b.ReportMetric(float64(drained)/elapsed.Seconds(), "dispatch-jobs/s")
		b.ReportMetric(submitRate, "submit-jobs/s")
		b.ReportMetric(float64(cpuPerJob.Microseconds()), "cpu-µs/job")
		for _, nc := range conns {
			nc.Close()
		}
		f.close()
		cancel()
	}
}

// cpuTime is the CPU time (user and system) the test process used so far; it includes
// the embedded NATS server and the simulated workers.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCoreDispatch measures the placement algorithm alone (no NATS, no storage):
// 100,000 queued jobs drained by 200 workers.
func BenchmarkCoreDispatch(b *testing.B) {
	const nJobs, nWorkers = 100000, 200
	for b.Loop() {
		b.StopTimer()
		clk := newClock()
		var free []JobRef
		var names []string
		c := newCore(DefaultPolicy(), []string{"p"}, clk.now, hooks{assign: func(w *worker, j *Job) {
			free = append(free, JobRef{j.ID, j.Attempt})
			names = append(names, w.Name)
		}})
		for i := range nJobs {
			c.submit(Request{ID: fmt.Sprint("j", i), Pool: "p", Client: fmt.Sprint("c", i%4), Spec: "x", CacheHint: fmt.Sprint("h", i%500)})
		}
		ses := map[string]string{}
		b.StartTimer()
		t0 := time.Now()
		for i := range nWorkers {
			n := fmt.Sprint("w", i)
			ses[n], _ = c.hello(WorkerSpec{Name: n, Pool: "p", Capacity: 2}, nil)
		}
		for len(free) > 0 {
			r, n := free[0], names[0]
			free, names = free[1:], names[1:]
			c.complete(n, ses[n], r, Result{Outcome: OutcomeOK})
		}
		b.ReportMetric(float64(nJobs)/time.Since(t0).Seconds(), "jobs/s")
	}
}
