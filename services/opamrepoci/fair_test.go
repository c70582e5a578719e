package opamrepoci

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/opam"
)

// sleepRunner is a worker's runner whose every build takes d.
type sleepRunner struct{ d time.Duration }

func (r sleepRunner) Run(ctx context.Context, _ cluster.Task, _ io.Writer) (string, error) {
	select {
	case <-time.After(r.d):
		return "", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// fairFleet is an embedded fleet (NATS and the scheduler) with n in-process workers
// of capacity 1 on pool, each build taking jobLen.
func fairFleet(tb testing.TB, pool string, n int, jobLen time.Duration) *cluster.Fleet {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f, err := cluster.StartEmbedded(context.Background(), cluster.Options{StateDir: tb.TempDir(), Listen: "127.0.0.1:0",
		Pools: []string{pool}, Logger: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan error, n)
	var conns []interface{ Close() }
	tb.Cleanup(func() {
		cancel()
		for range n {
			<-done
		}
		for _, c := range conns {
			c.Close()
		}
		f.Close()
	})
	for i := range n {
		nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: f.URL})
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, nc)
		w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: fmt.Sprint("w", i), Pool: pool, Capacity: 1,
			StateDir: tb.TempDir(), Runner: sleepRunner{jobLen}, Logger: log, Registry: prometheus.NewRegistry()})
		if err != nil {
			tb.Fatal(err)
		}
		go func() { done <- w.Run(ctx) }()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pools, err := f.Client.Pools(ctx)
		if err == nil && len(pools) == 1 && pools[0].Workers == n {
			return f
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the %d workers did not join: %v %+v", n, err, pools)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prJobs makes the jobs of a pull request releasing n packages, each with build,
// tests and lower bounds on one platform, and revdeps reverse dependencies each.
func prJobs(cfg *Config, prefix string, n, revdeps int) []Job {
	p := &Plan{}
	var revdepJobs []int
	for i := range n {
		pkg := opam.Package{Name: opam.PackageName(fmt.Sprintf("%s%d", prefix, i)), Version: "1.0"}
		at := []string{pkg.String(), string(Compilers), "4.13"}
		for _, k := range []Kind{Build, Tests, LowerBounds} {
			p.Jobs = append(p.Jobs, Job{Path: append(slices.Clip(at), string(k)), Package: pkg, Group: Compilers, Label: "4.13", Platform: cfg.Compilers[0].Platform, Kind: k})
		}
		for r := range revdeps {
			rd := opam.Package{Name: opam.PackageName(fmt.Sprintf("user%d", r)), Version: "1"}
			revdepJobs = append(revdepJobs, len(p.Jobs))
			p.Jobs = append(p.Jobs, Job{Path: append(slices.Clip(at), string(Revdep), rd.String()), Package: pkg, Group: Compilers, Label: "4.13", Platform: cfg.Compilers[0].Platform, Kind: Revdep, Revdep: rd})
		}
	}
	if len(revdepJobs) > cfg.backgroundRevdeps() {
		for _, i := range revdepJobs {
			p.Jobs[i].Background = true
		}
	}
	return p.Jobs
}

// fairness is what one run of the fairness scenario measured.
type fairness struct {
	// smallWait is the longest wait of the small pull request's jobs, in job lengths.
	smallWait float64
	// bigBetween counts the big pull request's jobs started after the small one's
	// submission and before the small one's last job started.
	bigBetween int
	// revdepsFirst counts the big pull request's reverse-dependency jobs started
	// after it was all submitted and before the last of its own builds (while its
	// builds were queued). (While it is being submitted, the idle workers take any
	// job.)
	revdepsFirst int
}

// fairRun submits a 150-package pull request (3 jobs and 3 reverse dependencies
// each) to a fleet of 10 workers, waits until it fills them, then submits a
// one-package pull request (3 jobs, 2 reverse dependencies), and measures. With
// perPR each pull request is its own fleet client (FleetClient); otherwise they share
// one.
func fairRun(tb testing.TB, perPR bool) fairness {
	const workers = 10
	jobLen := 100 * time.Millisecond
	cfg := Default()
	specs := &Specs{Config: cfg}
	pool := cfg.platforms[cfg.Compilers[0].Platform].Pool
	f := fairFleet(tb, pool, workers, jobLen)
	ctx := context.Background()
	submit := func(jobs []Job, client string) []string {
		var ids []string
		for _, j := range jobs {
			r, err := specs.Request(j, client)
			if err != nil {
				tb.Fatal(err)
			}
			cj, err := f.Client.Submit(ctx, cluster.Request{Pool: r.Pool, Client: r.Client, Spec: r.Spec, CacheHint: r.CacheHint, Urgent: r.Urgent})
			if err != nil {
				tb.Fatal(err)
			}
			ids = append(ids, cj.ID)
		}
		return ids
	}
	bigClient, smallClient := FleetClient("github", "ocaml/opam-repository", "1"), FleetClient("github", "ocaml/opam-repository", "2")
	if !perPR {
		smallClient = bigClient
	}
	bigJobs := prJobs(cfg, "big", 150, 3)
	big := submit(bigJobs, bigClient)
	bigSubmitted := time.Now()
	time.Sleep(3 * jobLen)
	submitted := time.Now()
	small := submit(prJobs(cfg, "small", 1, 2), smallClient)
	deadline := time.Now().Add(2 * time.Minute)
	started := func(ids []string) []time.Time {
		out := make([]time.Time, len(ids))
		for i, id := range ids {
			for {
				if time.Now().After(deadline) {
					tb.Fatalf("job %s did not start in 2 minutes", id)
				}
				j, err := f.Client.Job(ctx, id)
				if err != nil {
					tb.Fatal(err)
				}
				if !j.Started.IsZero() {
					out[i] = j.Started
					break
				}
				time.Sleep(jobLen / 4)
			}
		}
		return out
	}
	smallStarts := started(small)
	last := slices.MaxFunc(smallStarts, func(a, b time.Time) int { return a.Compare(b) })
	var m fairness
	m.smallWait = last.Sub(submitted).Seconds() / jobLen.Seconds()
	var ownIDs, revdepIDs []string
	for i, j := range bigJobs {
		if j.Kind == Revdep {
			revdepIDs = append(revdepIDs, big[i])
		} else {
			ownIDs = append(ownIDs, big[i])
		}
	}
	ownStarts := started(ownIDs)
	for _, s := range ownStarts {
		if s.After(submitted) && s.Before(last) {
			m.bigBetween++
		}
	}
	lastOwn := slices.MaxFunc(ownStarts, func(a, b time.Time) int { return a.Compare(b) })
	for _, id := range revdepIDs {
		j, err := f.Client.Job(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		if !j.Started.IsZero() && j.Started.After(bigSubmitted) && j.Started.Before(lastOwn) {
			m.revdepsFirst++
		}
	}
	return m
}

// TestFairLanes runs a 150-package and a 1-package pull request on 10 workers of the
// real scheduler. Each pull request its own client, the small one's five jobs start
// within one round of the workers (at most 10 of the big one's jobs start in
// between), where sharing one client puts them behind the big one's hundreds; the big
// one's 450 reverse dependencies (background lane) wait for its own 450 builds.
func TestFairLanes(t *testing.T) {
	tests := []struct {
		name  string
		perPR bool
		check func(t *testing.T, m fairness)
	}{
		{"a client per pull request", true, func(t *testing.T, m fairness) {
			if m.bigBetween > 10 {
				t.Errorf("%d of the big pull request's jobs started before the small one's last", m.bigBetween)
			}
		}},
		{"one client for both", false, func(t *testing.T, m fairness) {
			if m.bigBetween < 100 {
				t.Errorf("only %d of the big pull request's jobs started before the small one's last: the scenario does not load the fleet", m.bigBetween)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := fairRun(t, tc.perPR)
			t.Logf("small pull request's longest wait: %.2f job lengths; %d big jobs started meanwhile; %d big revdeps started while its builds were queued",
				m.smallWait, m.bigBetween, m.revdepsFirst)
			tc.check(t, m)
			if m.revdepsFirst > 0 {
				t.Errorf("%d of the big pull request's reverse dependencies started while its own builds were queued", m.revdepsFirst)
			}
		})
	}
}

// BenchmarkFairLanes reports the small pull request's longest wait in job lengths
// (100 ms jobs) behind a 150-package one on 10 workers, each its own fleet client.
func BenchmarkFairLanes(b *testing.B) {
	var m fairness
	for b.Loop() {
		m = fairRun(b, true)
	}
	b.ReportMetric(m.smallWait, "small-wait-joblens")
	b.ReportMetric(float64(m.bigBetween), "big-jobs-between")
}
