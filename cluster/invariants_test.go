package cluster

import "fmt"

// invariants checks the core's bookkeeping: queue counts, running maps, capacity.
func (c *core) invariants() error {
	for name, p := range c.pools {
		live := map[*Job]bool{}
		for _, l := range []*lane{&p.urgent, &p.bg} {
			for _, s := range l.shares {
				for _, e := range s.q[s.head:] {
					if e.j != nil && e.live() {
						if live[e.j] {
							return fmt.Errorf("pool %s: job %s queued twice", name, e.j.ID)
						}
						live[e.j] = true
					}
				}
			}
		}
		for _, w := range p.workers {
			for _, j := range w.reserved {
				if j.State != StateQueued || j.reserved != w.Name {
					return fmt.Errorf("pool %s: job %s held for %s is %s (reserved %q)", name, j.ID, w.Name, j.State, j.reserved)
				}
				live[j] = true
			}
			if len(w.running) > w.Capacity && w.Capacity > 0 {
				return fmt.Errorf("worker %s runs %d jobs, capacity %d", w.Name, len(w.running), w.Capacity)
			}
		}
		if len(live) != p.queued {
			return fmt.Errorf("pool %s: queue count %d, but %d jobs wait", name, p.queued, len(live))
		}
		for _, j := range c.jobs {
			if j.Pool == name && j.State == StateQueued && !live[j] {
				return fmt.Errorf("pool %s: queued job %s is in no queue", name, j.ID)
			}
		}
	}
	for _, w := range c.workers {
		for id, j := range w.running {
			if j.ID != id || j.State != StateRunning || j.Worker != w.Name {
				return fmt.Errorf("worker %s lists job %s which is %s on %q", w.Name, id, j.State, j.Worker)
			}
		}
	}
	for _, j := range c.jobs {
		if j.State == StateRunning {
			if w := c.workers[j.Worker]; w == nil || w.running[j.ID] != j {
				return fmt.Errorf("running job %s not on its worker %s", j.ID, j.Worker)
			}
		}
	}
	return nil
}
