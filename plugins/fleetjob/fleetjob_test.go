package fleetjob

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// uploadCounter counts the source uploads asked for with a context already ended.
type uploadCounter struct {
	Fleet
	cancelled atomic.Int64
}

func (u *uploadCounter) PutSource(ctx context.Context, dir string) (string, error) {
	if ctx.Err() != nil {
		u.cancelled.Add(1)
	}
	return u.Fleet.PutSource(ctx, dir)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A queued build waits without a goroutine, runs when a worker comes, and reports a
// failed build with its failing lines; a build no longer wanted is cancelled on the fleet.
func TestQueuedBuildsAwaitTheFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Pools: []string{"linux-x86_64"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "README"), []byte("source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	uploads := &uploadCounter{Fleet: fleet.Client}
	op := &current.Op[string, Result]{Name: "fleet-build", Pool: Pool, Run: func(ctx context.Context, j *current.Job, script string) (Result, error) {
		return Run(ctx, uploads, j, Request{Ticket: "test", Pool: "linux-x86_64", Client: "t", Spec: script, SourceDir: src, Timeout: time.Minute})
	}}
	e, err := current.Open(current.Config{StateDir: t.TempDir(), Pools: EnginePools(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const n = 30
	var builds []current.AnyTerm
	for i := 0; i < n; i++ {
		builds = append(builds, current.Catch(current.Do(op, current.Return(fmt.Sprintf("echo build %d", i)))))
	}
	failing := current.Observe(current.Do(op, current.Return("echo compiling; echo 'Error: Unbound value x'; exit 2")))
	var failed current.Observed[Result]
	failedCh := make(chan current.Observed[Result], 16)
	unwanted := current.NewVar("unwanted", "sleep 600 # unwanted")
	root := current.All(current.All(builds...), current.Map(failing, func(o current.Observed[Result]) current.Unit {
		failedCh <- o
		return current.Unit{}
	}), current.Catch(current.Do(op, unwanted.Term())))
	before := runtime.NumGoroutine()
	runDone := make(chan struct{})
	go func() { defer close(runDone); e.Run(ctx, root) }()
	defer func() { cancel(); <-runDone }()

	waitUntil(t, "every build queued and put aside", func() bool {
		jobs := e.Jobs()
		queued := 0
		for _, j := range jobs {
			if strings.HasPrefix(j.WaitReason, "queued in fleet pool linux-x86_64") {
				queued++
			}
		}
		return queued == n+2
	})
	// The fleet's own goroutines aside, a queued build holds none.
	if grown := runtime.NumGoroutine() - before; grown > n {
		t.Errorf("%d goroutines more with %d builds queued: a queued build should hold none", grown, n+2)
	}

	// The unwanted build's input changes: its fleet job is cancelled, not left queued.
	var unwantedID string
	for _, j := range e.Jobs() {
		if strings.Contains(j.Key, "unwanted") {
			unwantedID = j.ID
		}
	}
	unwanted.Set("echo wanted")
	waitUntil(t, "the superseded fleet job cancelled", func() bool {
		j, err := fleet.Client.Job(ctx, "test-"+ticketDigest("linux-x86_64", unwantedID)+"-0")
		return err == nil && j.State == cluster.StateDone && j.Result != nil && j.Result.Outcome == cluster.OutcomeCancelled
	})
	waitUntil(t, "the superseded build over", func() bool {
		r, _ := e.Query(current.Query{KeyContains: "unwanted", States: []current.JobState{current.JobFailed}, Limit: 1})
		return len(r) == 1
	})
	if n := uploads.cancelled.Load(); n != 0 {
		t.Errorf("%d source uploads tried after the build was cancelled", n)
	}

	nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: fleet.URL, Name: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "w1", Pool: "linux-x86_64", Capacity: 4, StateDir: t.TempDir(),
		Runner: &cluster.ShellRunner{WorkDir: t.TempDir()}, HealthEvery: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); w.Run(wctx) }()
	defer func() { stopWorker(); <-workerDone }()

	waitUntil(t, "every build done", func() bool {
		r, _ := e.Query(current.Query{Op: "fleet-build", States: []current.JobState{current.JobOK}, Limit: 1000})
		return len(r) == n+1 // and the build that replaced the unwanted one
	})
	r, _ := e.Query(current.Query{Op: "fleet-build", States: []current.JobState{current.JobOK}, Limit: 1})
	if r[0].Attempts != 1 {
		t.Errorf("a build that waited in the queue counts %d attempts, want 1", r[0].Attempts)
	}
	for {
		select {
		case failed = <-failedCh:
		case <-time.After(time.Minute):
			t.Fatalf("the failing build never failed: last seen %+v", failed)
		}
		if failed.State == current.StateFailed {
			break
		}
	}
	if failed.Kind != current.FailWork || !slices.Contains(failed.Lines, "Error: Unbound value x") {
		t.Errorf("failed build: kind %q lines %q (%s), want the work's failure with its error line", failed.Kind, failed.Lines, failed.Message)
	}
}
