package current

import (
	"context"
	"sync"
	"time"
)

// Monitor is an input watching something outside the pipeline. Any number of terms may
// watch one Monitor: it is started when the first becomes active and stopped when the
// last is released. Refreshes arriving while a read runs are coalesced into one more read.
type Monitor[T any] struct {
	// Name labels the monitor's nodes.
	Name string
	// Read reads the current value.
	Read func(ctx context.Context) (T, error)
	// Watch, if set, runs while the monitor is active and calls refresh whenever the
	// value may have changed; it returns when ctx ends.
	Watch func(ctx context.Context, refresh func()) error

	once sync.Once
	core *monitorCore
}

type monitorCore struct {
	name  string
	read  func(ctx context.Context) (any, error)
	watch func(ctx context.Context, refresh func()) error

	mu      sync.Mutex
	e       *Engine
	refs    int
	cancel  context.CancelFunc
	ctx     context.Context
	reading bool
	again   bool
	reads   int
	out     output
	nodes   map[*node]struct{}
}

func (m *Monitor[T]) c() *monitorCore {
	m.once.Do(func() {
		m.core = &monitorCore{
			name:  m.Name,
			read:  func(ctx context.Context) (any, error) { return m.Read(ctx) },
			watch: m.Watch,
			out:   activeOut(ActiveRunning),
			nodes: map[*node]struct{}{},
		}
	})
	return m.core
}

// Term is the monitor's current value as a pipeline input.
func (m *Monitor[T]) Term() Term[T] {
	return Term[T]{newNode("monitor", m.Name, &monitorImpl{m.c()})}
}

// Refresh asks for a new read (a webhook arrived, for example).
func (m *Monitor[T]) Refresh() { m.c().refresh() }

// Reads is the number of reads done so far.
func (m *Monitor[T]) Reads() int {
	c := m.c()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

type monitorImpl struct{ c *monitorCore }

func (mi *monitorImpl) compute(*node) output {
	mi.c.mu.Lock()
	defer mi.c.mu.Unlock()
	return mi.c.out
}

func (mi *monitorImpl) start(n *node) {
	c := mi.c
	c.mu.Lock()
	c.nodes[n] = struct{}{}
	c.refs++
	first := c.refs == 1
	if first {
		c.e = n.e
		c.ctx, c.cancel = context.WithCancel(n.e.runContext())
	}
	c.mu.Unlock()
	if !first {
		return
	}
	e := n.e
	if c.watch != nil {
		e.jobWG.Add(1)
		go func(ctx context.Context) {
			defer e.jobWG.Done()
			_, err := call(func() (any, error) { return nil, c.watch(ctx, c.refresh) })
			if err != nil && ctx.Err() == nil {
				e.log.Warn("monitor watch stopped", "monitor", c.name, "err", err)
				c.set(e, failOut(c.name+": "+err.Error()))
			}
		}(c.ctx)
	}
	c.refresh()
}

func (mi *monitorImpl) stop(n *node) {
	c := mi.c
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, n)
	c.refs--
	if c.refs == 0 {
		c.cancel()
		c.out = activeOut(ActiveRunning)
	}
}

func (c *monitorCore) refresh() {
	c.mu.Lock()
	if c.refs == 0 {
		c.mu.Unlock()
		return
	}
	if c.reading {
		c.again = true
		c.mu.Unlock()
		return
	}
	c.reading = true
	ctx, e := c.ctx, c.e
	c.mu.Unlock()
	e.jobWG.Add(1)
	go func() {
		defer e.jobWG.Done()
		for {
			c.mu.Lock()
			c.reads++
			c.mu.Unlock()
			v, err := call(func() (any, error) { return c.read(ctx) })
			if ctx.Err() != nil {
				c.mu.Lock()
				break
			}
			if err != nil {
				c.set(e, failOut(c.name+": "+err.Error()))
			} else {
				c.set(e, okOut(v))
			}
			c.mu.Lock()
			if !c.again {
				break
			}
			c.again = false
			c.mu.Unlock()
		}
		c.reading = false
		c.mu.Unlock()
	}()
}

func (c *monitorCore) set(e *Engine, out output) {
	e.post(func() {
		c.mu.Lock()
		c.out = out
		ns := make([]*node, 0, len(c.nodes))
		for n := range c.nodes {
			ns = append(ns, n)
		}
		c.mu.Unlock()
		for _, n := range ns {
			e.markDirty(n)
		}
	})
}

// Poll is a monitor reading read every interval.
func Poll[T any](name string, every time.Duration, read func(ctx context.Context) (T, error)) *Monitor[T] {
	return &Monitor[T]{
		Name: name,
		Read: read,
		Watch: func(ctx context.Context, refresh func()) error {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					refresh()
				}
			}
		},
	}
}

// Var is an input the program sets.
type Var[T any] struct{ c *varCore }

type varCore struct {
	mu  sync.Mutex
	out output
	e   *Engine
	n   *node
}

// NewVar is a variable holding v.
func NewVar[T any](name string, v T) *Var[T] {
	c := &varCore{out: okOut(v)}
	c.n = newNode("var", name, &varImpl{c})
	return &Var[T]{c}
}

// NewEmptyVar is a variable with no value yet (its term is active until Set).
func NewEmptyVar[T any](name string) *Var[T] {
	v := NewVar[T](name, *new(T))
	v.c.out = activeOut(ActiveReady)
	return v
}

// Term is the variable as a pipeline input. Every call returns the same term.
func (v *Var[T]) Term() Term[T] { return Term[T]{v.c.n} }

// Set gives the variable a new value.
func (v *Var[T]) Set(x T) { v.c.update(okOut(x)) }

// SetError makes the variable's term fail with msg.
func (v *Var[T]) SetError(msg string) { v.c.update(failOut(msg)) }

// Get is the current value, if the variable has one.
func (v *Var[T]) Get() (T, bool) {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	return as[T](v.c.out.value), v.c.out.state == StateOk
}

func (c *varCore) update(out output) {
	c.mu.Lock()
	c.out = out
	e := c.e
	c.mu.Unlock()
	if e != nil {
		e.post(func() { e.markDirty(c.n) })
	}
}

type varImpl struct{ c *varCore }

func (vi *varImpl) compute(*node) output {
	vi.c.mu.Lock()
	defer vi.c.mu.Unlock()
	return vi.c.out
}

func (vi *varImpl) start(n *node) {
	vi.c.mu.Lock()
	vi.c.e = n.e
	vi.c.mu.Unlock()
}

func (vi *varImpl) stop(n *node) {
	vi.c.mu.Lock()
	vi.c.e = nil
	vi.c.mu.Unlock()
}
