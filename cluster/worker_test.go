package cluster

import (
	"context"
	"io"
	"strings"
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
