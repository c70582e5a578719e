package host

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
)

var garbage [][]byte

// makeSpare leaves about n bytes the runtime holds but no longer uses.
func makeSpare(n int) {
	for i := 0; i < n>>20; i++ {
		b := make([]byte, 1<<20)
		b[0] = 1
		garbage = append(garbage, b)
	}
	garbage = nil
	runtime.GC()
}

// Memory held beyond the live heap goes back to the system once per idle spell of the
// engine: not while passes go on, not again until the engine has worked again.
func TestMemoryReturnedWhenIdle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := current.Open(current.Config{StateDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	v := current.NewVar("input", 0)
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		eng.Run(ctx, current.Map(v.Term(), func(int) current.Unit { return current.Unit{} }))
	}()
	defer func() { cancel(); <-runDone }()

	reg := prometheus.NewRegistry()
	const idle = 200 * time.Millisecond
	m := &MemoryReturner{Engine: eng, Idle: idle, Logger: quiet, Register: reg}
	mdone := make(chan struct{})
	go func() { defer close(mdone); m.Run(ctx) }()
	defer func() { cancel(); <-mdone }()
	returned := func() float64 {
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 {
			t.Fatalf("gather: %v (%d families)", err, len(mfs))
		}
		return mfs[0].GetMetric()[0].GetCounter().GetValue()
	}

	// Busy: a pass every few milliseconds; nothing is returned meanwhile.
	makeSpare(128 << 20)
	for i := 1; i <= 40; i++ {
		v.Set(i)
		time.Sleep(idle / 20)
	}
	if got := returned(); got != 0 {
		t.Errorf("%.0f bytes returned while the engine worked", got)
	}
	deadline := time.Now().Add(time.Minute)
	for returned() < 64<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %.0f bytes returned after the engine went idle", returned())
		}
		time.Sleep(idle / 4)
	}
	if held := spare(); held > 64<<20 {
		t.Errorf("%d bytes still held beyond the live heap after returning", held)
	}

	// Idle still: memory freed now stays until the engine has worked again.
	first := returned()
	makeSpare(128 << 20)
	time.Sleep(5 * idle)
	if got := returned(); got != first {
		t.Errorf("returned again in the same idle spell: %.0f bytes, then %.0f", first, got)
	}
	v.Set(-1)
	deadline = time.Now().Add(time.Minute)
	for returned() < first+64<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("nothing returned in the idle spell after a pass (%.0f bytes in all)", returned())
		}
		time.Sleep(idle / 4)
	}
}
