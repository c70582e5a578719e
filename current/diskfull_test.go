package current

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size bytes on a fresh folder for the test.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs that can be filled")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes path until the file system holding it is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{64 << 10, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", path, err)
				}
				break
			}
		}
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// diskFullPipeline builds each item, writing an artifact into dir; builds of items other
// than "a" wait for gate first.
type diskFullPipeline struct {
	dir  string
	gate chan struct{}
	runs sync32
	mu   sync.Mutex
	seen map[string]Observed[string] // the latest state of each item's build
	full map[string]bool             // items whose build was seen failing for a full disk
}

func (p *diskFullPipeline) term(items *Var[[]string]) AnyTerm {
	build := &Op[string, string]{Name: "build", Run: func(ctx context.Context, j *Job, in string) (string, error) {
		p.runs.inc(in)
		if in != "a" {
			select {
			case <-p.gate:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		j.Logf("building %s", in)
		if err := os.WriteFile(filepath.Join(p.dir, "artifact-"+in), make([]byte, 32<<10), 0o644); err != nil {
			return "", fmt.Errorf("write artifact: %w", err)
		}
		return in, nil
	}}
	return ListIter(items.Term(), func(s string) string { return s }, func(item Term[string]) Term[Unit] {
		return Map(Pair(item, Observe(Do(build, item))), func(v Tuple[string, Observed[string]]) Unit {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.seen[v.First] = v.Second
			if v.Second.State == StateFailed && v.Second.Kind == FailDiskFull {
				p.full[v.First] = true
			}
			return Unit{}
		})
	})
}

func (p *diskFullPipeline) allOK(items []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, it := range items {
		if o := p.seen[it]; o.State != StateOk || o.Value != it {
			return false
		}
	}
	return true
}

// sawFull reports whether every item's build was seen failing for a full disk, or waits
// to record its result because the database is full.
func (p *diskFullPipeline) sawFull(e *Engine, items []string) bool {
	for _, j := range e.Jobs() {
		if strings.Contains(j.WaitReason, "recording the result failed") && strings.Contains(j.WaitReason, "full") {
			p.mu.Lock()
			p.full[strings.Trim(j.Key, `"`)] = true
			p.mu.Unlock()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, it := range items {
		if !p.full[it] {
			return false
		}
	}
	return true
}

// checkStore checks the database is sound and that no job is recorded as ready or
// running without a live job, and returns the number of builds per item.
func checkStore(t *testing.T, e *Engine, items []string) map[string]int {
	t.Helper()
	if err := e.db.checkIntegrity(e.cfg.DBPath); err != nil {
		t.Fatal(err)
	}
	rows, err := e.Query(Query{Op: "build", Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, j := range e.Jobs() {
		live[j.ID] = true
	}
	builds := map[string]int{}
	for _, r := range rows {
		if (r.State == JobReady || r.State == JobRunning || r.State == JobWaiting) && !live[r.ID] {
			t.Errorf("job %s (%s) is recorded as %s but no job is live", r.ID, r.Key, r.State)
		}
		if r.State == JobInterrupted {
			t.Errorf("job %s (%s) was left unfinished: %s", r.ID, r.Key, r.State)
		}
		builds[strings.Trim(r.Key, `"`)]++
	}
	latest, err := e.Query(Query{Op: "build", LatestOnly: true, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range latest {
		if r.State != JobOK {
			t.Errorf("latest build of %s is %s (%s: %s), want ok", r.Key, r.State, r.FailureKind, r.Message)
		}
	}
	if len(latest) != len(items) {
		t.Errorf("%d keys recorded, want %d", len(latest), len(items))
	}
	return builds
}

func TestDiskFullRecovers(t *testing.T) {
	items := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name string
		// jobsStarted fills the disk once the jobs of b and c run (their work and the
		// record of their result meet the full disk); otherwise before b and c are
		// wanted (recording their new jobs fails).
		jobsStarted bool
	}{
		{name: "new jobs wanted while full"},
		{name: "running jobs meet a full disk", jobsStarted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := mountTmpfs(t, 2<<20)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			p := &diskFullPipeline{dir: dir, gate: make(chan struct{}), seen: map[string]Observed[string]{}, full: map[string]bool{}}
			// A full disk is met by SQLite and the log files.
			cfg := fileLogsOnly(t, Config{StateDir: filepath.Join(dir, "state"), MaxRetries: 1, RetryBackoff: 20 * time.Millisecond})
			e := testEngine(t, cfg)
			vars := NewVar("items", []string{"a"})
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- e.Run(runCtx, p.term(vars)) }()
			waitFor(ctx, t, "a built", func() bool { return p.allOK(items[:1]) })

			if tc.jobsStarted {
				vars.Set(items)
				waitFor(ctx, t, "b and c running", func() bool { return p.runs.get("b") == 1 && p.runs.get("c") == 1 })
			}
			// Nothing left in the WAL to reuse: every database write needs new space.
			if _, err := e.db.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				t.Fatal(err)
			}
			filler := filepath.Join(dir, "filler")
			fill(t, filler)
			close(p.gate)
			if !tc.jobsStarted {
				vars.Set(items)
			}
			waitFor(ctx, t, "b and c failing for the full disk", func() bool { return p.sawFull(e, items[1:]) })

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "recovery once space returns", func() bool { return p.allOK(items) })
			waitFor(ctx, t, "no live jobs", func() bool { return len(e.Jobs()) == 0 })
			before := checkStore(t, e, items)
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			// A restart finds every result recorded: nothing interrupted, nothing built again.
			runsBefore := p.runs.snapshot()
			p.seen = map[string]Observed[string]{}
			e2 := testEngine(t, cfg)
			running(t, e2, p.term(vars))
			waitFor(ctx, t, "results after restart", func() bool { return p.allOK(items) })
			after := checkStore(t, e2, items)
			for _, it := range items {
				if after[it] != before[it] || p.runs.get(it) != runsBefore[it] {
					t.Errorf("%s: %d builds and %d runs after the restart, want %d and %d", it, after[it], p.runs.get(it), before[it], runsBefore[it])
				}
			}
		})
	}
}
