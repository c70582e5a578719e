package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// TestWorkerInProcess runs a worker in the test process (so the race detector sees the
// worker and the scheduler together): jobs, a cancel, a pause, a stop.
func TestWorkerInProcess(t *testing.T) {
	tf := newTestFleet(t, Options{})
	nc, err := Connect(tf.ctx, ConnOptions{URL: tf.f.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w, err := NewWorker(nc, WorkerOptions{Name: "inproc", Pool: "linux-x86_64", Capacity: 2, StateDir: t.TempDir(),
		Runner: &ShellRunner{}, HealthEvery: 100 * time.Millisecond, PruneEvery: 100 * time.Millisecond, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(tf.ctx)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	tf.waitWorkers(1)
	ok := tf.submit(Request{Spec: "echo one"})
	long := tf.submit(Request{Spec: "sleep 30"})
	if r := tf.wait(ok.ID).Result; r.Outcome != OutcomeOK {
		t.Fatalf("%+v", r)
	}
	tf.waitFor("long job running", 10*time.Second, func() bool { return tf.job(long.ID).State == StateRunning })
	if err := tf.f.Client.Cancel(tf.ctx, long.ID); err != nil {
		t.Fatal(err)
	}
	if r := tf.wait(long.ID).Result; r.Outcome != OutcomeCancelled {
		t.Fatalf("%+v", r)
	}
	if err := tf.f.Client.Pause(tf.ctx, "inproc"); err != nil {
		t.Fatal(err)
	}
	wi, _ := tf.f.Client.Worker(tf.ctx, "inproc")
	if wi.State != "paused" {
		t.Fatalf("state %s", wi.State)
	}
	stop()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
	if _, err := NewWorker(nc, WorkerOptions{Name: "bad name", Pool: "p", Capacity: 1, Runner: &ShellRunner{}}); err == nil || !strings.Contains(err.Error(), "worker name") {
		t.Fatalf("bad name accepted: %v", err)
	}
}

// stallingStore is an object store whose first reads stall: after some bytes they
// return nothing, as a waiting object read does every few seconds.
type stallingStore struct {
	stalls int
	calls  int
	data   []byte
}

func (s *stallingStore) Get(ctx context.Context, name string, _ ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	s.calls++
	return &stallingResult{data: s.data, stall: s.calls <= s.stalls}, nil
}

type stallingResult struct {
	jetstream.ObjectResult
	data  []byte
	stall bool
	phase int // 0: the first half to send, 1: the rest (or a stall), 2: the end
}

func (r *stallingResult) Read(p []byte) (int, error) {
	half := len(r.data) / 2
	switch {
	case r.phase == 0:
		r.phase = 1
		return copy(p, r.data[:half]), nil
	case r.phase == 1 && r.stall:
		time.Sleep(time.Millisecond)
		return 0, nil
	case r.phase == 1:
		r.phase = 2
		return copy(p, r.data[half:]), nil
	default:
		return 0, io.EOF
	}
}

func (r *stallingResult) Close() error { return nil }

func TestGetSourceAbandonsAStalledRead(t *testing.T) {
	old := sourceStall
	sourceStall = 20 * time.Millisecond
	t.Cleanup(func() { sourceStall = old })
	cases := []struct {
		name    string
		stalls  int
		wantErr bool
	}{
		{"first read ends", 0, false},
		{"one stalled read", 1, false},
		{"every read stalls", sourceAttempts, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := &stallingStore{stalls: c.stalls, data: []byte("source tree")}
			data, err := getSource(context.Background(), st, "sha256-x")
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), "sha256-x") || !strings.Contains(err.Error(), "stalled") {
					t.Fatalf("getSource = %q, %v; want an error naming the source and the stall", data, err)
				}
				return
			}
			if err != nil || string(data) != "source tree" || st.calls != c.stalls+1 {
				t.Fatalf("getSource = %q, %v after %d reads; want the tree after %d", data, err, st.calls, c.stalls+1)
			}
		})
	}
}

// countingStore serves one source tree, counting reads, each held until release closes.
type countingStore struct {
	mu      sync.Mutex
	gets    int
	data    []byte
	release chan struct{}
}

func (s *countingStore) Get(ctx context.Context, name string, _ ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	s.mu.Lock()
	s.gets++
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &stallingResult{data: s.data}, nil
}

// TestSourceFetchedOnceForJobsStartingTogether starts jobs needing one source tree at
// once: the worker reads the object once, and every job gets the tree.
func TestSourceFetchedOnceForJobsStartingTogether(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, digest, err := PackSource(src)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		jobs int
	}{{"one job", 1}, {"two jobs", 2}, {"eight jobs", 8}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			if err := os.MkdirAll(filepath.Join(state, "sources"), 0o755); err != nil {
				t.Fatal(err)
			}
			store := &countingStore{data: data, release: make(chan struct{})}
			w := &Worker{o: WorkerOptions{StateDir: state}, m: newWorkerMetrics(prometheus.NewRegistry(), "w"),
				objects: func(context.Context) (objectGetter, error) { return store, nil }}
			var wg sync.WaitGroup
			errs := make(chan error, c.jobs)
			for range c.jobs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					dir, err := w.source(context.Background(), digest)
					if err == nil {
						var b []byte
						if b, err = os.ReadFile(filepath.Join(dir, "f")); err == nil && string(b) != "content" {
							err = fmt.Errorf("read %q", b)
						}
					}
					errs <- err
				}()
			}
			// Let every job reach the store (or the fetch it shares) before the read ends.
			for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				store.mu.Lock()
				n := store.gets
				store.mu.Unlock()
				if n >= c.jobs {
					break
				}
			}
			close(store.release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if store.gets != 1 {
				t.Fatalf("%d reads of the object for %d jobs, want 1", store.gets, c.jobs)
			}
		})
	}
}
