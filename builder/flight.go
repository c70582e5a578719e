package builder

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// flights runs each step id at most once at a time: later callers asking for the same
// id wait for the running one and follow its log. The run is cancelled only when every
// caller waiting for it has gone.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	mu   sync.Mutex
	cond *sync.Cond
	log  []byte
	done bool
	// truncated is set once the log reached maxStepLog.
	truncated bool
	err       error
	waiters   int
	// abandoned is set once every waiter has gone and the run was cancelled; new
	// callers start a fresh run.
	abandoned bool
	cancel    context.CancelFunc
}

// maxStepLog bounds the output of one step kept in memory and in the store; past it
// the output is dropped, once marked.
const maxStepLog = 256 << 20

func (f *flight) Write(p []byte) (int, error) {
	f.mu.Lock()
	switch {
	case len(f.log)+len(p) <= maxStepLog:
		f.log = append(f.log, p...)
	case !f.truncated:
		f.truncated = true
		f.log = append(f.log, fmt.Sprintf("\n[kiln: log truncated at %d MiB]\n", maxStepLog>>20)...)
	}
	f.mu.Unlock()
	f.cond.Broadcast()
	return len(p), nil
}

// do runs fn for id unless a run of id is under way, in which case it joins it. Either
// way the run's output is copied to log as it comes. fn gets a context that is
// cancelled once every caller's ctx is; its output writer also records the log.
func (fs *flights) do(ctx context.Context, id string, log io.Writer, fn func(ctx context.Context, out io.Writer) error) error {
	fs.mu.Lock()
	if fs.m == nil {
		fs.m = map[string]*flight{}
	}
	f, running := fs.m[id]
	if running {
		f.mu.Lock()
		running = !f.abandoned
		f.mu.Unlock()
	}
	if !running {
		runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{cancel: cancel}
		f.cond = sync.NewCond(&f.mu)
		fs.m[id] = f
		go func() {
			err := fn(runCtx, f)
			fs.mu.Lock()
			if fs.m[id] == f {
				delete(fs.m, id)
			}
			fs.mu.Unlock()
			f.mu.Lock()
			f.done, f.err = true, err
			f.mu.Unlock()
			f.cond.Broadcast()
			cancel()
		}()
	}
	f.mu.Lock()
	f.waiters++
	f.mu.Unlock()
	fs.mu.Unlock()

	// Wake the follower below when this caller's context ends.
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.mu.Unlock()
		f.cond.Broadcast()
	})
	defer stop()
	sent := 0
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if sent < len(f.log) {
			chunk := f.log[sent:]
			sent = len(f.log)
			f.mu.Unlock()
			log.Write(chunk)
			f.mu.Lock()
			continue
		}
		if f.done {
			return f.err
		}
		if ctx.Err() != nil {
			f.waiters--
			if f.waiters == 0 {
				f.abandoned = true
				f.cancel()
			}
			return ctx.Err()
		}
		f.cond.Wait()
	}
}
