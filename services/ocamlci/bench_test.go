package ocamlci

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// The benchmarks of the service at scale. Run them with, for example,
//
//	go test ./services/ocamlci -run '^$' -bench 'Track|PushToFirstJob' -benchtime 5x -v
//
// KILN_BENCH_REPOS (default 500) and KILN_BENCH_REFS (refs per repository, default 5)
// size the first; KILN_BENCH_IDLE (default 75s: the host returns memory kept from a burst
// after a minute idle) is its idle window. KILN_BENCH_STOCK_NATS=1 keeps NATS's default
// limit of 1,000 consumers per stream (the fleet then fails jobs beyond about 1,000 in
// flight). KILN_BENCH_SHARED_WATCH=1 makes the service wait for its
// fleet jobs through one shared watch and follow their logs only once they run.
// KILN_BENCH_HEAPPROFILE=FILE writes a heap profile at rest, KILN_BENCH_CPUPROFILE=FILE a
// CPU profile of the pushes; KILN_BENCH_SETTLE (default 10m) bounds the set-up.

// benchRefNames are the refs of every repository: branches of its remote.
var benchRefNames = []string{"main", "dev", "feature-a", "feature-b", "feature-c", "feature-d", "feature-e", "feature-f"}

// benchFleetVariants is how many fleet jobs a ref of a bench project makes on the
// default matrix: a build per platform and (lint-doc). (lint-opam) runs in the service;
// there is no (lint-fmt), which installs ocamlformat from an opam repository and the
// benchmark configures none.
const benchFleetVariants = 3

func envInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration", name, s)
	}
	return d
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// benchFleet is an embedded fleet: NATS, a scheduler and a client.
type benchFleet struct {
	URL    string
	Client *cluster.Client
}

// startUnlimitedFleet is cluster.StartEmbedded with NATS's default per-stream consumer
// limit lifted (JetStreamLimits.DefaultMaxConsumers = -1).
func startUnlimitedFleet(tb testing.TB, ctx context.Context, dir string) *benchFleet {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{
		ServerName: "kiln", Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: filepath.Join(dir, "nats"), JetStreamMaxMemory: 256 << 20,
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
		MaxPayload:      8 << 20, NoSigs: true, NoLog: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		tb.Fatal("embedded NATS did not start")
	}
	tb.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: srv.ClientURL(), Name: "kiln-scheduler", Logger: quietLog})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	sch, err := cluster.StartScheduler(ctx, nc, cluster.SchedulerOptions{Pools: cluster.DefaultPools, Logger: quietLog})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sch.Stop)
	c, err := cluster.NewClient(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return &benchFleet{URL: srv.ClientURL(), Client: c}
}

// benchServer is one ocaml-ci server: engine, embedded fleet, index and mirrors.
type benchServer struct {
	tb     testing.TB
	ctx    context.Context
	engine *current.Engine
	fleet  *benchFleet
	rec    *recordingFleet
	svc    *Service
	src    *varSource
}

type serverOptions struct {
	platforms []matrix.Platform
	// unlimitedConsumers lifts NATS's default limit of 1,000 consumers per stream,
	// which the fleet client meets with more than 1,000 jobs in flight (one KV watch
	// and one log consumer per job).
	unlimitedConsumers bool
	// sharedWatch waits for fleet jobs through one shared watch and follows a job's
	// log only once it runs (see jobWatch).
	sharedWatch bool
	buildSlots  int // engine slots of the build op's pool
	slots       int // engine slots of the other pools
}

func startBenchServer(tb testing.TB, state string, refs []forge.Ref, o serverOptions) *benchServer {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	var fleet *benchFleet
	if o.unlimitedConsumers {
		fleet = startUnlimitedFleet(tb, ctx, filepath.Join(state, "fleet"))
	} else {
		f, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(state, "fleet"), Listen: "127.0.0.1:0", Logger: quietLog})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(f.Close)
		fleet = &benchFleet{URL: f.URL, Client: f.Client}
	}
	idx, err := results.OpenIndex(filepath.Join(state, "ocamlci.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { idx.Close() })
	rec := newRecordingFleet(fleet.Client)
	if o.sharedWatch {
		rec.watch = startJobWatch(tb, ctx, fleet.Client)
	}
	src := newVarSource(refs)
	svc := &Service{
		Forges:    forgeSet("git", src),
		Fleet:     rec,
		Mirrors:   git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{Logger: quietLog}),
		WorkDir:   filepath.Join(state, "work"),
		Platforms: o.platforms,
		Index:     idx,
		BaseURL:   "http://ci.test",
		Logger:    quietLog,
	}
	return &benchServer{tb: tb, ctx: ctx, fleet: fleet, rec: rec, svc: svc, src: src}
}

// run starts the engine on the service's pipeline.
func (s *benchServer) run(state string, o serverOptions) {
	s.tb.Helper()
	e, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), DefaultPoolSlots: o.slots,
		Pools: map[string]int{fleetjob.Pool: o.buildSlots}, Logger: quietLog})
	if err != nil {
		s.tb.Fatal(err)
	}
	s.engine = e
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx, s.svc.Pipeline()) }()
	// Memory kept from a burst goes back to the system as kiln serve's host does it.
	mdone := make(chan struct{})
	m := &host.MemoryReturner{Engine: e, Logger: quietLog}
	go func() { defer close(mdone); m.Run(ctx) }()
	s.tb.Cleanup(func() { cancel(); <-done; <-mdone; e.Close() })
}

// quiet reports whether the engine has nothing to do but wait for the fleet: every
// active job is a build whose fleet job was submitted (running, or put aside while
// the fleet job is queued).
func (s *benchServer) quiet(wantSubmitted int) bool {
	st := s.engine.Status()
	build := 0
	for _, p := range st.Pools {
		if p.Urgent+p.Background > 0 {
			return false
		}
		if p.Name == fleetjob.Pool {
			build = p.InUse
		} else if p.InUse > 0 {
			return false
		}
	}
	if s.rec.count() < wantSubmitted {
		return false
	}
	// Builds queued on the fleet wait put aside, without a slot.
	return st.ActiveJobs == build+st.ParkedJobs
}

// settle waits until the engine is quiet and has made no pass for calm.
func (s *benchServer) settle(wantSubmitted int, calm, timeout time.Duration) {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	lastPass, since := uint64(0), time.Now()
	for time.Now().Before(deadline) {
		p := s.engine.Status().Pass
		if p != lastPass {
			lastPass, since = p, time.Now()
		}
		if s.quiet(wantSubmitted) && time.Since(since) >= calm {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.fail(fmt.Sprintf("not settled after %s: %d fleet jobs submitted of %d", timeout, s.rec.count(), wantSubmitted))
}

// fail stops the benchmark, showing the engine's pools and its failed jobs by
// operation and message.
func (s *benchServer) fail(msg string) {
	s.tb.Helper()
	failed, _ := s.engine.Query(current.Query{States: []current.JobState{current.JobFailed}, Limit: 10000})
	counts := map[string]int{}
	for _, j := range failed {
		m := j.Message
		if len(m) > 1000 {
			m = m[:1000]
		}
		counts[j.Op+": "+m]++
	}
	var b strings.Builder
	for k, n := range counts {
		fmt.Fprintf(&b, "\n  %5d failed %s", n, k)
	}
	s.tb.Fatalf("%s\nengine: %+v%s", msg, s.engine.Status(), b.String())
}

// passSeconds is the sum and count of the engine's pass durations so far.
func (s *benchServer) passSeconds() (float64, uint64) {
	mfs, err := s.engine.Registry().Gather()
	if err != nil {
		s.tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "kiln_engine_pass_duration_seconds" && len(mf.GetMetric()) == 1 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), h.GetSampleCount()
		}
	}
	s.tb.Fatal("no kiln_engine_pass_duration_seconds metric")
	return 0, 0
}

// retries sums the engine's retries of infrastructure failures by operation and kind.
func (s *benchServer) retries() string {
	mfs, err := s.engine.Registry().Gather()
	if err != nil {
		s.tb.Fatal(err)
	}
	var parts []string
	for _, mf := range mfs {
		if mf.GetName() != "kiln_engine_job_retries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			parts = append(parts, fmt.Sprintf("%s=%.0f", strings.Join(labels, "/"), m.GetCounter().GetValue()))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// logRetried shows the logs of up to n build jobs that ran more than once.
func (s *benchServer) logRetried(n int) {
	jobs, _ := s.engine.Query(current.Query{Op: "ocamlci-build", Limit: 10000})
	for _, j := range jobs {
		if j.Attempts <= 1 || n == 0 {
			continue
		}
		n--
		chunk, err := s.engine.ReadLog(j.ID, 0, 4000)
		if err == nil {
			s.tb.Logf("build %s (%s, %d attempts):\n%s", j.ID, j.Label, j.Attempts, chunk.Data)
		}
	}
}

// waitPass waits until the engine has finished a pass numbered above p.
func (s *benchServer) waitPass(ch <-chan struct{}, p uint64, timeout time.Duration) {
	s.tb.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for s.engine.Status().Pass <= p {
		select {
		case <-ch:
		case <-t.C:
			s.fail("no evaluation pass after the push")
		}
	}
}

// waitSubmitted waits until n more fleet jobs than before were submitted, and returns
// them.
func (s *benchServer) waitSubmitted(before, n int, timeout time.Duration) []submission {
	s.tb.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		subs, _ := s.rec.since(before)
		if len(subs) >= n {
			return subs
		}
		select {
		case <-s.rec.changed:
		case <-time.After(50 * time.Millisecond):
		case <-t.C:
			s.fail(fmt.Sprintf("only %d of %d fleet jobs submitted after the push", len(subs), n))
		}
	}
}

func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
}

// startCPUProfile profiles the CPU into path until the returned function is called.
func startCPUProfile(tb testing.TB, path string) (stop func()) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func heapAfterGC() (heapAlloc, heapSys uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.HeapSys, runtime.NumGoroutine()
}

// goResident is the memory the Go runtime has mapped and not returned to the system:
// what of the RSS is Go's (the rest is the binary's pages, SQLite's own allocator and
// its memory-mapped database).
func goResident() uint64 {
	ss := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(ss)
	return ss[0].Value.Uint64() - ss[1].Value.Uint64()
}

// goClasses breaks the Go runtime's resident memory down by class, in MB.
func goClasses() string {
	classes := []struct{ name, metric string }{
		{"objects", "/memory/classes/heap/objects:bytes"}, {"unused in spans", "/memory/classes/heap/unused:bytes"},
		{"free", "/memory/classes/heap/free:bytes"}, {"stacks", "/memory/classes/heap/stacks:bytes"},
		{"metadata", "/memory/classes/metadata/other:bytes"}, {"spans", "/memory/classes/metadata/mspan/inuse:bytes"},
		{"other", "/memory/classes/other:bytes"},
	}
	ss := make([]metrics.Sample, len(classes))
	for i, c := range classes {
		ss[i].Name = c.metric
	}
	metrics.Read(ss)
	parts := make([]string, len(classes))
	for i, c := range classes {
		parts[i] = fmt.Sprintf("%s %.1f", c.name, float64(ss[i].Value.Uint64())/1e6)
	}
	return strings.Join(parts, ", ")
}

// rssBytes is the process's resident set size.
func rssBytes(tb testing.TB) uint64 { return procStatus(tb, "VmRSS") }

// procStatus is one size field of /proc/self/status (VmRSS, RssAnon, RssFile), in bytes.
func procStatus(tb testing.TB, field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("%s %q: %v", field, rest, err)
			}
			return kb * 1024
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// cpuTime is the CPU time used by this process (user and system) and, separately, by
// its waited-for children (git).
func cpuTime(tb testing.TB) (self, children time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		tb.Fatal(err)
	}
	return self, time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkTrack500Repos5Refs: one server tracks 500 repositories of 5 refs each (2,500
// refs, each on its own commit). Every commit is fetched from a real git repository and
// analysed; its builds go to an embedded fleet with no worker, so they stay queued, as
// on a busy server. Once everything has settled it reports the memory (heap after GC,
// RSS) and the CPU used over an idle window; then each iteration pushes a new commit to
// one ref and times the evaluation pass that takes it in, and the time until the new
// commit's fleet jobs are submitted (fetch, analysis and build ops in between).
func BenchmarkTrack500Repos5Refs(b *testing.B) {
	testenv.Short(b, "tracks thousands of refs with real git and an embedded fleet")
	testenv.RequireCommand(b, "git")
	nRepos := envInt(b, "KILN_BENCH_REPOS", 500)
	nRefs := envInt(b, "KILN_BENCH_REFS", 5)
	idle := envDuration(b, "KILN_BENCH_IDLE", host.DefaultMemoryIdle+15*time.Second)
	if nRefs > len(benchRefNames) {
		b.Fatalf("KILN_BENCH_REFS=%d: at most %d", nRefs, len(benchRefNames))
	}
	const nRemotes = 5
	setupStart := time.Now()
	state := b.TempDir()

	// A few real git repositories, one branch per ref name, each on its own commit.
	type remote struct {
		dir   string
		heads map[string]string
	}
	remotes := make([]remote, nRemotes)
	for i := range remotes {
		dir := filepath.Join(state, "remotes", fmt.Sprintf("proj%d", i))
		remotes[i] = remote{dir: dir, heads: benchRemote(b, dir, fmt.Sprintf("proj%d", i), benchRefNames[:nRefs], false)}
	}
	// nRepos repositories on the "git" forge, spread over owners, each served by one of
	// the remotes: every (repository, ref) pair is a distinct ref with its own fetch,
	// analysis, builds and status.
	var refs []forge.Ref
	for r := 0; r < nRepos; r++ {
		rm := remotes[r%nRemotes]
		id := forge.RepoID{Forge: "git", Owner: fmt.Sprintf("org%02d", r%50), Name: fmt.Sprintf("repo%03d", r)}
		for _, name := range benchRefNames[:nRefs] {
			refs = append(refs, forge.Ref{Repo: id, Name: "refs/heads/" + name, Commit: rm.heads[name], Remote: rm.dir})
		}
	}
	opts := serverOptions{platforms: matrix.Default(), unlimitedConsumers: os.Getenv("KILN_BENCH_STOCK_NATS") == "",
		sharedWatch: os.Getenv("KILN_BENCH_SHARED_WATCH") != "", buildSlots: len(refs)*(benchFleetVariants+1) + 16, slots: 8}
	srv := startBenchServer(b, state, refs, opts)
	heap0, _, gr0 := heapAfterGC()
	rss0 := rssBytes(b)

	srv.run(state, opts)
	want := len(refs) * benchFleetVariants
	srv.settle(want, 3*time.Second, envDuration(b, "KILN_BENCH_SETTLE", 10*time.Minute))
	setup := time.Since(setupStart)
	submitted := srv.rec.count()
	if submitted < want {
		srv.fail(fmt.Sprintf("%d fleet jobs submitted, want %d (%d refs × %d)", submitted, want, len(refs), benchFleetVariants))
	}
	if submitted > want {
		b.Logf("WARNING: %d fleet jobs submitted for %d builds; engine retries: %s", submitted, want, srv.retries())
		srv.logRetried(3)
	}
	queued := 0
	for _, pool := range []string{"linux-x86_64", "linux-arm64"} {
		q, err := srv.fleet.Client.Queue(srv.ctx, pool, 1)
		if err != nil {
			b.Fatal(err)
		}
		queued += q.Total
	}

	// At rest: memory, and CPU over an idle window.
	heap, heapSys, gr := heapAfterGC()
	rss := rssBytes(b)
	if path := os.Getenv("KILN_BENCH_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	pass0 := srv.engine.Status().Pass
	cpu0, child0 := cpuTime(b)
	t0 := time.Now()
	time.Sleep(idle)
	cpu1, child1 := cpuTime(b)
	window := time.Since(t0)
	idlePasses := srv.engine.Status().Pass - pass0
	idleCPU := float64(cpu1-cpu0) / float64(window) * 100
	// The set-up's peak goes back to the system once the engine is idle (see
	// host.MemoryReturner): RSS again after the idle window.
	rssIdle := rssBytes(b)

	b.Logf("machine: %d CPUs, GOMAXPROCS %d, load average %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), loadAverage())
	b.Logf("tracking %d refs (%d repositories × %d refs, %d remotes); set-up until settled %s", len(refs), nRepos, nRefs, nRemotes, setup.Round(time.Second))
	failedBuilds, _ := srv.engine.Query(current.Query{Op: "ocamlci-build", States: []current.JobState{current.JobFailed}, LatestOnly: true, Limit: 10000})
	b.Logf("fleet: %d jobs submitted, %d queued (no worker); engine: %d builds waiting for the fleet (want %d), %d failed, %d passes",
		submitted, queued, srv.engine.Status().ActiveJobs, want, len(failedBuilds), pass0)
	b.Logf("%-34s %12s %12s", "at rest", "total", "pipeline")
	b.Logf("%-34s %10.1f MB %10.1f MB", "heap after GC", float64(heap)/1e6, (float64(heap)-float64(heap0))/1e6)
	b.Logf("%-34s %10.1f MB %10.1f MB", "RSS", float64(rss)/1e6, (float64(rss)-float64(rss0))/1e6)
	b.Logf("%-34s %10.1f MB %10.1f MB", "RSS after the idle window", float64(rssIdle)/1e6, (float64(rssIdle)-float64(rss0))/1e6)
	b.Logf("%-34s %10.1f MB %10.1f MB", "  of which anonymous / file-backed", float64(procStatus(b, "RssAnon"))/1e6, float64(procStatus(b, "RssFile"))/1e6)
	b.Logf("%-34s %10.1f MB (%s)", "  of which the Go runtime's", float64(goResident())/1e6, goClasses())
	b.Logf("%-34s %10.1f MB", "heap reserved (HeapSys)", float64(heapSys)/1e6)
	b.Logf("%-34s %12d %12d", "goroutines", gr, gr-gr0)
	b.Logf("%-34s %10.2f %% of a core over %s (%d passes; git children %s)", "CPU at rest", idleCPU, window.Round(time.Second), idlePasses, child1-child0)

	// Pushes: one ref of one repository gets a new commit per iteration.
	ch, unsub := srv.engine.Subscribe()
	defer unsub()
	var evals, passes, submits []time.Duration
	var lastCommit string
	var lastStart time.Time
	if path := os.Getenv("KILN_BENCH_CPUPROFILE"); path != "" {
		stop := startCPUProfile(b, path)
		defer stop()
	}
	cancelsBefore := 0
	i := 0
	for b.Loop() {
		b.StopTimer()
		r := (i*211 + 97) % nRepos
		k := i % nRefs
		ri := r*nRefs + k
		ref := refs[ri]
		rm := remotes[r%nRemotes]
		name := benchRefNames[k]
		commit := benchCommit(b, rm.dir, name, benchProject(fmt.Sprintf("proj%d", r%nRemotes), fmt.Sprintf("push %d to %s %s", i, ref.Repo, name), false), "push")
		srv.settle(0, 500*time.Millisecond, time.Minute)
		before := srv.rec.count()
		_, cancelsBefore = srv.rec.since(before)
		sum0, n0 := srv.passSeconds()
		p0 := srv.engine.Status().Pass
		b.StartTimer()

		start := time.Now()
		srv.src.push(ri, commit)
		srv.waitPass(ch, p0, time.Minute)
		evals = append(evals, time.Since(start))
		sum1, n1 := srv.passSeconds()
		if n1 > n0 {
			passes = append(passes, time.Duration((sum1-sum0)/float64(n1-n0)*float64(time.Second)))
		}
		subs := srv.waitSubmitted(before, benchFleetVariants, 5*time.Minute)
		submits = append(submits, subs[benchFleetVariants-1].at.Sub(start))
		lastCommit, lastStart = commit, start

		b.StopTimer()
		for _, s := range subs[1:] {
			if s.source != subs[0].source {
				b.Fatalf("push %d: fleet jobs of different sources submitted: %+v", i, subs)
			}
		}
		// The old commit's fleet jobs still waited for are cancelled.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, c := srv.rec.since(0)
			if c-cancelsBefore >= benchFleetVariants {
				break
			}
			if time.Now().After(deadline) {
				b.Logf("push %d: %d of the old commit's %d fleet jobs cancelled (the others were not waited for)", i, c-cancelsBefore, benchFleetVariants)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		i++
		b.StartTimer()
	}
	b.StopTimer()
	b.Logf("%d pushes: push → pass done p50 %.1f ms (max %.1f); pass itself p50 %.2f ms; push → %d fleet jobs submitted p50 %.0f ms (max %.0f)",
		len(evals), ms(percentile(evals, 0.5)), ms(percentile(evals, 1)), ms(percentile(passes, 0.5)),
		benchFleetVariants, ms(percentile(submits, 0.5)), ms(percentile(submits, 1)))
	if lastCommit != "" {
		logTimeline(b, srv.engine, lastCommit, lastStart)
		srv.rec.logSince(b, lastStart)
	}
	b.ReportMetric(float64(heap)/1e6, "heap-MB")
	b.ReportMetric(float64(rss)/1e6, "rss-MB")
	b.ReportMetric(float64(rssIdle)/1e6, "rss-idle-MB")
	b.ReportMetric(idleCPU, "idle-cpu-%")
	b.ReportMetric(ms(percentile(evals, 0.5)), "eval-p50-ms")
	b.ReportMetric(ms(percentile(passes, 0.5)), "pass-p50-ms")
	b.ReportMetric(ms(percentile(submits, 0.5)), "submitted-p50-ms")
}

// logTimeline logs when the jobs of a pushed commit were ready, started and finished,
// counted from the push.
func logTimeline(tb testing.TB, e *current.Engine, commit string, push time.Time) {
	jobs, err := e.Query(current.Query{KeyContains: commit, Since: push, Limit: 100})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].Ready.Before(jobs[j].Ready) })
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.1f", ms(t.Sub(push)))
	}
	tb.Logf("the last push's jobs (ms after the push): %-20s %8s %8s %8s", "op", "ready", "running", "finished")
	for _, j := range jobs {
		tb.Logf("%42s %-20s %8s %8s %8s", "", j.Op, at(j.Ready), at(j.Running), at(j.Finished))
	}
}

// logSince logs the source uploads and fleet submissions since t, counted from t.
func (f *recordingFleet) logSince(tb testing.TB, t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.uploads {
		if u.start.After(t) {
			tb.Logf("%42s %-20s %8.1f %8s %8.1f", "", "source upload", ms(u.start.Sub(t)), "", ms(u.end.Sub(t)))
		}
	}
	for _, s := range f.submitted {
		if s.called.After(t) {
			tb.Logf("%42s %-20s %8.1f %8s %8.1f", "", "fleet submit", ms(s.called.Sub(t)), "", ms(s.at.Sub(t)))
		}
	}
}

// BenchmarkPushToFirstJob: one repository on an idle fleet with one worker building
// with the real builder (runc). Each iteration pushes a new commit and times it until
// the fleet starts the commit's first job (the fleet's own start time); the builds are
// then let finish, untimed, so the next push meets an idle fleet again.
func BenchmarkPushToFirstJob(b *testing.B) {
	testenv.Short(b, "builds a dune project in sandboxes")
	testenv.RequireRoot(b)
	testenv.RequireCommand(b, "runc", "git", "mmdebstrap")
	state := b.TempDir()
	platforms := []matrix.Platform{matrix.Debian("amd64")}
	for i := range platforms {
		platforms[i].Image = imagetest.DebianWith(b, *platforms[i].Debian).Ref
	}
	remoteDir := filepath.Join(state, "remote")
	heads := benchRemote(b, remoteDir, "hello", []string{"main"}, true)
	ref := forge.Ref{Repo: forge.RepoID{Forge: "git", Owner: "local", Name: "hello"}, Name: "refs/heads/main", Commit: heads["main"], Remote: remoteDir}
	opts := serverOptions{platforms: platforms, buildSlots: 16, slots: 4}
	srv := startBenchServer(b, state, []forge.Ref{ref}, opts)

	bld, err := builder.New(builder.Options{Root: filepath.Join(state, "builder"), Images: imagetest.Store(b)})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := cluster.Connect(srv.ctx, cluster.ConnOptions{URL: srv.fleet.URL, Name: "worker", Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "w1", Pool: platforms[0].Pool, Capacity: 2,
		StateDir: filepath.Join(state, "worker"), Runner: benchRunner{bld}, HealthEvery: time.Hour, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(srv.ctx)
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.Run(wctx) }()
	b.Cleanup(func() { stopWorker(); <-wdone; nc.Close() })

	srv.run(state, opts)
	// The first commit builds the dependency layers; pushes then meet a warm cache, as
	// a repository's pushes usually do.
	const fleetJobs = 2 // amd64 build and (lint-doc); no .ocamlformat, so no (lint-fmt)
	srv.waitSubmitted(0, fleetJobs, 10*time.Minute)
	waitFleetDone(b, srv, 0, 15*time.Minute)

	var lat []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		commit := benchCommit(b, remoteDir, "main", benchProject("hello", fmt.Sprintf("push %d", i), true), "push")
		srv.settle(0, 500*time.Millisecond, time.Minute)
		before := srv.rec.count()
		b.StartTimer()

		start := time.Now()
		srv.src.push(0, commit)
		first := waitFirstStarted(b, srv, before, fleetJobs, 5*time.Minute)
		b.StopTimer()
		lat = append(lat, first.Sub(start))
		waitFleetDone(b, srv, before, 15*time.Minute)
		i++
		b.StartTimer()
	}
	b.StopTimer()
	b.Logf("machine: %d CPUs, load average %s; %d pushes: push → first fleet job started p50 %.0f ms, min %.0f, max %.0f",
		runtime.NumCPU(), loadAverage(), len(lat), ms(percentile(lat, 0.5)), ms(percentile(lat, 0)), ms(percentile(lat, 1)))
	b.ReportMetric(ms(percentile(lat, 0.5)), "first-job-p50-ms")
}

// waitFirstStarted waits until one of the fleet jobs submitted after index before has
// started, and returns the fleet's start time of the earliest.
func waitFirstStarted(b *testing.B, srv *benchServer, before, n int, timeout time.Duration) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		subs, _ := srv.rec.since(before)
		var first time.Time
		for _, s := range subs {
			j, err := srv.fleet.Client.Job(srv.ctx, s.id)
			if err != nil {
				b.Fatal(err)
			}
			if !j.Started.IsZero() && (first.IsZero() || j.Started.Before(first)) {
				first = j.Started
			}
		}
		if !first.IsZero() {
			return first
		}
		select {
		case <-srv.rec.changed:
		case <-time.After(5 * time.Millisecond):
		}
	}
	srv.fail("no fleet job started after the push")
	return time.Time{}
}

// waitFleetDone waits until every fleet job submitted after index before is done.
func waitFleetDone(b *testing.B, srv *benchServer, before int, timeout time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(srv.ctx, timeout)
	defer cancel()
	subs, _ := srv.rec.since(before)
	for _, s := range subs {
		j, err := srv.fleet.Client.Wait(ctx, s.id)
		if err != nil {
			srv.fail(fmt.Sprintf("fleet job %s: %v", s.id, err))
		}
		if j.Result == nil || j.Result.Outcome != cluster.OutcomeOK {
			srv.fail(fmt.Sprintf("fleet job %s (%s) did not pass: %+v", s.id, s.pool, j.Result))
		}
	}
}
