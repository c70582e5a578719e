package current

import (
	"context"
	"fmt"
	"sync"
)

// Lane is a pool's queue a job waits in.
type Lane string

// The lanes: urgent jobs have nothing to show yet for their key; background jobs refresh
// an older result. Urgent jobs always start first.
const (
	LaneUrgent     Lane = "urgent"
	LaneBackground Lane = "background"
)

type pool struct {
	name  string
	slots int

	mu         sync.Mutex
	used       int
	urgent     []*waiter
	background []*waiter
}

type waiter struct {
	lane    Lane
	ch      chan struct{}
	granted bool
}

func newPool(name string, slots int) *pool {
	if slots < 1 {
		slots = 1
	}
	return &pool{name: name, slots: slots}
}

func (p *pool) queue(l Lane) *[]*waiter {
	if l == LaneUrgent {
		return &p.urgent
	}
	return &p.background
}

// acquire takes a slot, waiting in lane w.lane.
func (p *pool) acquire(ctx context.Context, w *waiter) error {
	p.mu.Lock()
	if p.used < p.slots && len(p.urgent) == 0 && (w.lane == LaneUrgent || len(p.background) == 0) {
		p.used++
		w.granted = true
		p.mu.Unlock()
		return nil
	}
	w.ch = make(chan struct{})
	q := p.queue(w.lane)
	*q = append(*q, w)
	p.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		if w.granted {
			p.used--
			p.grantLocked()
			w.granted = false
		} else {
			p.removeLocked(w)
		}
		return context.Cause(ctx)
	}
}

func (p *pool) removeLocked(w *waiter) bool {
	q := p.queue(w.lane)
	for i, x := range *q {
		if x == w {
			*q = append((*q)[:i], (*q)[i+1:]...)
			return true
		}
	}
	return false
}

func (p *pool) release(w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !w.granted {
		return
	}
	w.granted = false
	p.used--
	p.grantLocked()
}

func (p *pool) grantLocked() {
	for p.used < p.slots {
		var w *waiter
		switch {
		case len(p.urgent) > 0:
			w, p.urgent = p.urgent[0], p.urgent[1:]
		case len(p.background) > 0:
			w, p.background = p.background[0], p.background[1:]
		default:
			return
		}
		p.used++
		w.granted = true
		close(w.ch)
	}
}

// bypass starts a waiting job now, beyond the pool's slots ("start now").
func (p *pool) bypass(w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.granted || !p.removeLocked(w) {
		return false
	}
	p.used++
	w.granted = true
	close(w.ch)
	return true
}

// describe says why w waits.
func (p *pool) describe(w *waiter) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := *p.queue(w.lane)
	for i, x := range q {
		if x == w {
			s := fmt.Sprintf("pool %s full (%d/%d slots in use), %s lane position %d of %d", p.name, p.used, p.slots, w.lane, i+1, len(q))
			if w.lane == LaneBackground && len(p.urgent) > 0 {
				s += fmt.Sprintf(", behind %d urgent", len(p.urgent))
			}
			return s
		}
	}
	return ""
}

// PoolStatus describes one pool.
type PoolStatus struct {
	Name       string `json:"name"`
	Slots      int    `json:"slots"`
	InUse      int    `json:"in_use"`
	Urgent     int    `json:"urgent_waiting"`
	Background int    `json:"background_waiting"`
}

func (p *pool) status() PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStatus{Name: p.name, Slots: p.slots, InUse: p.used, Urgent: len(p.urgent), Background: len(p.background)}
}

func (e *Engine) pool(name string) *pool {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	if name == "" {
		name = "default"
	}
	p := e.pools[name]
	if p == nil {
		p = newPool(name, e.cfg.DefaultPoolSlots)
		e.pools[name] = p
	}
	return p
}
