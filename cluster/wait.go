package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// watchHub shares one watch of the job records between every waiter of a Client, so a
// client waiting on ten thousand queued jobs holds one NATS consumer, not ten thousand.
type watchHub struct {
	mu      sync.Mutex
	w       jetstream.KeyWatcher
	dead    chan struct{} // closed when the current watch ends
	waiters map[string]map[*jobWaiter]struct{}
	done    chan struct{} // closed by Close
	closed  bool
	wg      sync.WaitGroup
}

type jobWaiter struct {
	cond func(*Job) bool
	ch   chan *Job // buffered: the first record that meets cond
	fn   func()    // for a notification (Notify), instead of ch
}

// ensure starts the shared watch unless it runs, returning the channel closed when it
// ends.
func (h *watchHub) ensure(kv jetstream.KeyValue) (<-chan struct{}, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("fleet client closed")
	}
	if h.w != nil {
		return h.dead, nil
	}
	if h.done == nil {
		h.done = make(chan struct{})
		h.waiters = map[string]map[*jobWaiter]struct{}{}
	}
	w, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch job records: %w", err)
	}
	h.w, h.dead = w, make(chan struct{})
	h.wg.Add(1)
	go h.run(w, h.dead)
	return h.dead, nil
}

func (h *watchHub) run(w jetstream.KeyWatcher, dead chan struct{}) {
	defer h.wg.Done()
	defer func() {
		_ = w.Stop()
		h.mu.Lock()
		if h.w == w {
			h.w = nil
		}
		// Notifications would wait for a watch that no longer runs: tell them, so their
		// owners look again.
		var fns []func()
		for id, ws := range h.waiters {
			for wt := range ws {
				if wt.fn != nil {
					fns = append(fns, wt.fn)
					delete(ws, wt)
				}
			}
			if len(ws) == 0 {
				delete(h.waiters, id)
			}
		}
		h.mu.Unlock()
		close(dead)
		for _, f := range fns {
			f()
		}
	}()
	for {
		select {
		case <-h.done:
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var j Job
			if json.Unmarshal(e.Value(), &j) != nil {
				continue
			}
			h.deliver(e.Key(), &j)
		}
	}
}

func (h *watchHub) deliver(id string, j *Job) {
	var fns []func()
	h.mu.Lock()
	for wt := range h.waiters[id] {
		if wt.cond(j) {
			if wt.fn != nil {
				fns = append(fns, wt.fn)
			} else {
				wt.ch <- j
			}
			delete(h.waiters[id], wt)
		}
	}
	if len(h.waiters[id]) == 0 {
		delete(h.waiters, id)
	}
	h.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

func (h *watchHub) add(id string, wt *jobWaiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters[id] == nil {
		h.waiters[id] = map[*jobWaiter]struct{}{}
	}
	h.waiters[id][wt] = struct{}{}
}

func (h *watchHub) remove(id string, wt *jobWaiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiters[id], wt)
	if len(h.waiters[id]) == 0 {
		delete(h.waiters, id)
	}
}

func (h *watchHub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	if h.done != nil {
		close(h.done)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// WaitFor waits until job id's record meets cond and returns it. Every waiter of the
// client shares one watch of the job records.
func (c *Client) WaitFor(ctx context.Context, id string, cond func(*Job) bool) (*Job, error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	for {
		dead, err := c.hub.ensure(kv)
		if err != nil {
			return nil, fmt.Errorf("wait for %s: %w", id, err)
		}
		wt := &jobWaiter{cond: cond, ch: make(chan *Job, 1)}
		c.hub.add(id, wt)
		// The record may have met cond before the waiter was added.
		if e, err := kv.Get(ctx, id); err == nil {
			var j Job
			if json.Unmarshal(e.Value(), &j) == nil && cond(&j) {
				c.hub.remove(id, wt)
				return &j, nil
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			c.hub.remove(id, wt)
			return nil, fmt.Errorf("wait for %s: %w", id, err)
		}
		select {
		case j := <-wt.ch:
			return j, nil
		case <-ctx.Done():
			c.hub.remove(id, wt)
			return nil, fmt.Errorf("wait for %s: %w", id, ctx.Err())
		case <-dead:
			c.hub.remove(id, wt) // the watch ended (reconnect): start another and look again
		}
	}
}

// Notify calls f once when job id's record meets cond, or when the client's watch of the
// records ends (a lost connection, Close), so that its owner looks again. f runs on
// the watch's goroutine and must not block. Notifications share the client's one watch
// and hold no goroutine while they wait; cancel withdraws one that has not fired.
func (c *Client) Notify(ctx context.Context, id string, cond func(*Job) bool, f func()) (cancel func(), err error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := c.hub.ensure(kv); err != nil {
		return nil, fmt.Errorf("notify of %s: %w", id, err)
	}
	var once sync.Once
	fire := func() { once.Do(f) }
	wt := &jobWaiter{cond: cond, fn: fire}
	c.hub.add(id, wt)
	cancel = func() { c.hub.remove(id, wt) }
	// The record may have met cond before the notification was added.
	e, err := kv.Get(ctx, id)
	switch {
	case err == nil:
		var j Job
		if json.Unmarshal(e.Value(), &j) == nil && cond(&j) {
			cancel()
			fire()
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		cancel()
		return nil, fmt.Errorf("notify of %s: %w", id, err)
	}
	return cancel, nil
}

// Wait waits until job id is done and returns its record.
func (c *Client) Wait(ctx context.Context, id string) (*Job, error) {
	return c.WaitFor(ctx, id, func(j *Job) bool { return j.State == StateDone })
}

// WaitStarted waits until job id runs or is done.
func (c *Client) WaitStarted(ctx context.Context, id string) (*Job, error) {
	return c.WaitFor(ctx, id, func(j *Job) bool { return j.State != StateQueued })
}

// Close stops the client's shared watch; waiters return an error. The NATS connection
// stays open.
func (c *Client) Close() { c.hub.close() }
