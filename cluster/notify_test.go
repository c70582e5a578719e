package cluster

import (
	"context"
	"testing"
	"time"
)

// TestNotify is told of jobs done, before and after it asked, of jobs withdrawn, and of
// a watch that ends.
func TestNotify(t *testing.T) {
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
	done := func(j *Job) bool { return j.State == StateDone }
	notified := func(id string, cond func(*Job) bool) (chan struct{}, func()) {
		ch := make(chan struct{}, 2)
		stop, err := f.Client.Notify(ctx, id, cond, func() { ch <- struct{}{} })
		if err != nil {
			t.Fatal(err)
		}
		return ch, stop
	}
	within := func(what string, ch chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("no notification: %s", what)
		}
	}

	queued, err := f.Client.Submit(ctx, Request{Pool: "linux-x86_64", Client: "t", Spec: "true"})
	if err != nil {
		t.Fatal(err)
	}
	started, _ := notified(queued.ID, func(j *Job) bool { return j.State != StateQueued })
	finished, _ := notified(queued.ID, done)
	withdrawn, stop := notified(queued.ID, done)
	stop()
	select {
	case <-started:
		t.Fatal("notified of a start with no worker")
	case <-time.After(300 * time.Millisecond):
	}

	w, err := NewWorker(nc, WorkerOptions{Name: "w1", Pool: "linux-x86_64", Capacity: 1, StateDir: t.TempDir(),
		Runner: &ShellRunner{WorkDir: t.TempDir()}, HealthEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); w.Run(wctx) }()
	defer func() { stopWorker(); <-workerDone }()
	within("the job started", started)
	within("the job finished", finished)
	select {
	case <-withdrawn:
		t.Error("a withdrawn notification fired")
	case <-time.After(200 * time.Millisecond):
	}
	// Already done: told at once.
	again, _ := notified(queued.ID, done)
	within("a job done before the notification", again)
	select {
	case <-again:
		t.Error("notified twice")
	case <-time.After(200 * time.Millisecond):
	}

	// A notification still waiting when the watch ends is told, so its owner looks again.
	never, _ := notified("no-such-job", done)
	f.Client.Close()
	within("the watch ended", never)
	f.Client.hub.mu.Lock()
	left := len(f.Client.hub.waiters)
	f.Client.hub.mu.Unlock()
	if left != 0 {
		t.Errorf("%d jobs still have waiters", left)
	}
}
