package current

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startForBench activates root on e without the Run loop, so passes are driven by the
// benchmark itself.
func startForBench(b *testing.B, e *Engine, root AnyTerm) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running = true
	e.runCtx = context.Background()
	e.root = root.termNode()
	e.activate(e.root)
	e.passLocked()
}

// cpuTime is the CPU time the process has used: benchmarks report it per operation
// besides wall time, which on a loaded machine mostly measures waiting.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e6, "cpu-ms/op")
}

func pass(e *Engine) {
	e.mu.Lock()
	e.passLocked()
	e.mu.Unlock()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkReevaluateListMap10000: a ListMap of 10,000 items, each its own stage; one
// item changes per iteration.
func BenchmarkReevaluateListMap10000(b *testing.B) {
	const n = 10000
	e := testEngine(b, Config{})
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	base := heapInUse()
	src := NewVar("src", items)
	var calls atomic.Int64
	root := ListMap(src.Term(), func(i int) string { return strconv.Itoa(i % n) }, func(t Term[int]) Term[int] {
		return Map(t, func(x int) int { calls.Add(1); return x * 2 })
	})
	startForBench(b, e, root)
	used := heapInUse() - base
	if calls.Load() != n {
		b.Fatalf("first pass ran %d stages", calls.Load())
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		next := make([]int, n)
		copy(next, items)
		next[i%n] += n * (i + 1) // same key, new value
		items = next
		src.Set(next)
		pass(e)
	}
	b.StopTimer()
	if got := calls.Load() - n; got != int64(b.N) {
		b.Fatalf("%d stage runs for %d changes", got, b.N)
	}
	b.ReportMetric(float64(used)/n, "B/stage")
	reportCPU(b, cpu0)
}

// BenchmarkReevaluateStages10000: 10,000 stages, each fed by its own input, all
// combined; one input changes per iteration.
func BenchmarkReevaluateStages10000(b *testing.B) {
	const n = 10000
	e := testEngine(b, Config{})
	base := heapInUse()
	vars := make([]*Var[int], n)
	stages := make([]AnyTerm, n)
	for i := range vars {
		vars[i] = NewVar("v"+strconv.Itoa(i), i)
		stages[i] = Map(vars[i].Term(), func(x int) int { return x + 1 })
	}
	root := All(stages...)
	startForBench(b, e, root)
	used := heapInUse() - base
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		vars[i%n].Set(-i - 1)
		pass(e)
	}
	b.StopTimer()
	b.ReportMetric(float64(used)/n, "B/stage")
	reportCPU(b, cpu0)
}

func fillStore(b *testing.B, dir string, n int) {
	e := testEngine(b, Config{StateDir: dir})
	tx, err := e.db.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	st, err := tx.Prepare(`INSERT INTO results (op, digest, key, label, build, input_digest, input, state, output, ready_at, running_at, finished_at, log_size)
		VALUES ('cached', ?, ?, ?, 1, ?, ?, 'ok', ?, ?, ?, ?, 100)`)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixNano()
	for i := 0; i < n; i++ {
		k := strconv.Itoa(i)
		if _, err := st.Exec(digestOf("cached", k), k, k, digestOf(k), k, k, now, now, now); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	e.Close()
}

// BenchmarkStartup100kWant10k: as BenchmarkStartup100k, with a first pass wanting
// 10,000 of the cached results (each read from the store on demand).
func BenchmarkStartup100kWant10k(b *testing.B) {
	dir := b.TempDir()
	fillStore(b, dir, 100000)
	op := &Op[int, int]{Name: "cached", Run: func(ctx context.Context, j *Job, in int) (int, error) {
		return 0, fmt.Errorf("should be cached")
	}}
	terms := make([]AnyTerm, 10000)
	for i := range terms {
		terms[i] = Do(op, Return(i*10))
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		e, err := Open(Config{StateDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		root := All(terms...)
		startForBench(b, e, root)
		if s := root.n.out.state; s != StateOk {
			b.Fatalf("cached results not used: %v %q", s, root.n.out.msg)
		}
		e.mu.Lock()
		e.release(e.root)
		e.passLocked()
		e.mu.Unlock()
		e.Close()
	}
	reportCPU(b, cpu0)
}

// BenchmarkGraphSnapshot10000: the console's snapshot of a 10,000-item ListMap.
func BenchmarkGraphSnapshot10000(b *testing.B) {
	e := testEngine(b, Config{})
	items := make([]int, 10000)
	for i := range items {
		items[i] = i
	}
	root := ListMap(Return(items), func(i int) string { return strconv.Itoa(i) }, func(t Term[int]) Term[int] {
		return Map(t, func(x int) int { return x })
	})
	startForBench(b, e, root)
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if g := e.Graph(); len(g.Nodes) < 20000 {
			b.Fatalf("%d nodes", len(g.Nodes))
		}
	}
	reportCPU(b, cpu0)
}

// BenchmarkStartup100k opens an engine whose store holds 100,000 results and evaluates a
// pipeline wanting a few of them.
func BenchmarkStartup100k(b *testing.B) {
	dir := b.TempDir()
	const n = 100000
	op := &Op[int, int]{Name: "cached", Run: func(ctx context.Context, j *Job, in int) (int, error) {
		return 0, fmt.Errorf("should be cached")
	}}
	fillStore(b, dir, n)
	terms := make([]AnyTerm, 10)
	for i := range terms {
		terms[i] = Do(op, Return(i*1000))
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		e, err := Open(Config{StateDir: dir, DBPath: filepath.Join(dir, "kiln.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		root := All(terms...)
		startForBench(b, e, root)
		if s := root.n.out.state; s != StateOk {
			b.Fatalf("cached results not used: %v %q", s, root.n.out.msg)
		}
		e.mu.Lock()
		e.release(e.root)
		e.passLocked()
		e.mu.Unlock()
		e.Close()
	}
	reportCPU(b, cpu0)
}

// BenchmarkFollowers200: 200 followers of one live log; one op is one line reaching all.
func BenchmarkFollowers200(b *testing.B) {
	const followers = 200
	e := testEngine(b, Config{})
	lines := make(chan []byte)
	op := &Op[string, string]{Name: "chatty", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		for l := range lines {
			j.Write(l)
		}
		return "", nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, Do(op, Return("x"))) }()
	var id string
	for id == "" {
		for _, j := range e.Jobs() {
			if j.State == JobRunning {
				id = j.ID
			}
		}
		time.Sleep(time.Millisecond)
	}
	start, _ := e.ReadLog(id, 0, 0)
	var total atomic.Int64
	finished := make(chan struct{}, followers)
	for i := 0; i < followers; i++ {
		r, err := e.FollowLog(ctx, id, start.Next)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			defer r.Close()
			buf := make([]byte, 4096)
			for {
				n, err := r.Read(buf)
				total.Add(int64(n))
				if err != nil {
					finished <- struct{}{}
					return
				}
			}
		}()
	}
	line := []byte("a line of build output, about as long as a compiler's typical message\n")
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		lines <- line
		want := int64(followers * len(line) * (i + 1))
		for total.Load() < want {
			runtime.Gosched()
		}
	}
	b.StopTimer()
	close(lines)
	for i := 0; i < followers; i++ {
		<-finished
	}
	cancel()
	<-done
	reportCPU(b, cpu0)
}
