package current

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// A run cancelled just after a monitor's read gave its value stops: the read's goroutine
// must not lock the monitor twice on its way out.
func TestMonitorStopsWhenCancelledAfterARead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		readErr error
	}{
		{"read gave a value", nil},
		{"read failed", context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not closed when the run hangs: Close would wait for the stuck read too.
			e, err := Open(Config{StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			started, release := make(chan struct{}, 1), make(chan struct{})
			m := &Monitor[int]{Name: "held", Read: func(ctx context.Context) (int, error) {
				started <- struct{}{}
				<-release
				return 1, tc.readErr
			}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx, m.Term()) }()
			<-started
			// The read's value waits on the engine's queue while the run is cancelled.
			e.qmu.Lock()
			close(release)
			eventually(t, "the read to post its value", func() bool {
				c := m.c()
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.reads == 1
			})
			time.Sleep(10 * time.Millisecond) // the read is posting: it waits for qmu
			cancel()
			e.qmu.Unlock()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				e.Close()
			case <-time.After(20 * time.Second):
				t.Fatal("the run did not stop: the monitor's read never ended")
			}
		})
	}
}
