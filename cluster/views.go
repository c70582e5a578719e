package cluster

import (
	"container/heap"
	"fmt"
	"maps"
	"slices"
	"time"
)

// PoolInfo summarises one pool.
type PoolInfo struct {
	Name        string  `json:"name"`
	Workers     int     `json:"workers"`
	Active      int     `json:"active"`
	Capacity    int     `json:"capacity"`
	Running     int     `json:"running"`
	Queued      int     `json:"queued"`
	AffinityHit float64 `json:"affinity_hit_rate"` // share of hinted jobs placed on a worker holding the hint
}

// WorkerInfo describes one worker.
type WorkerInfo struct {
	Name     string            `json:"name"`
	Pool     string            `json:"pool"`
	State    string            `json:"state"` // active, paused, draining, updating, unhealthy, gone
	Reason   string            `json:"reason,omitempty"`
	Capacity int               `json:"capacity"`
	Load     float64           `json:"load"`
	Running  []string          `json:"running"`
	Reserved int               `json:"reserved"`
	LastSeen time.Time         `json:"last_seen"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Instance names the worker's current session without revealing it; it changes
	// each time the worker joins.
	Instance string `json:"instance"`
}

// QueueEntry is one waiting job with its place, estimated start and reason.
type QueueEntry struct {
	Position       int       `json:"position"`
	ID             string    `json:"id"`
	Client         string    `json:"client"`
	Urgent         bool      `json:"urgent"`
	CacheHint      string    `json:"cache_hint,omitempty"`
	Submitted      time.Time `json:"submitted"`
	EstimatedCost  Duration  `json:"estimated_cost"`
	EstimatedStart time.Time `json:"estimated_start,omitzero"`
	Why            string    `json:"why"`
}

// RunningEntry is one running job of a pool.
type RunningEntry struct {
	ID         string    `json:"id"`
	Client     string    `json:"client"`
	Worker     string    `json:"worker"`
	Attempt    int       `json:"attempt"`
	Started    time.Time `json:"started"`
	LeaseUntil time.Time `json:"lease_until"`
}

// QueueInfo is a pool's queue as the console shows it.
type QueueInfo struct {
	Pool    string         `json:"pool"`
	Running []RunningEntry `json:"running"`
	Queued  []QueueEntry   `json:"queued"`
	Total   int            `json:"total_queued"`
}

func (c *core) poolInfos() []PoolInfo {
	var out []PoolInfo
	for _, name := range c.poolNames() {
		p := c.pools[name]
		pi := PoolInfo{Name: name, Queued: p.queued}
		for _, w := range p.workers {
			if w.gone {
				continue
			}
			pi.Workers++
			if w.usable() {
				pi.Active++
				pi.Capacity += w.Capacity
			}
			pi.Running += len(w.running)
		}
		if p.placements > 0 {
			pi.AffinityHit = float64(p.hits) / float64(p.placements)
		}
		out = append(out, pi)
	}
	return out
}

func (w *worker) state() (string, string) {
	switch {
	case w.gone:
		return "gone", "no heartbeat since " + w.lastSeen.UTC().Format(time.RFC3339)
	case w.restart:
		return "updating", "draining before a restart"
	case w.healthErr != "":
		return "unhealthy", w.healthErr
	case w.adminPaused && len(w.running) > 0:
		return "draining", "paused by an operator"
	case w.adminPaused:
		return "paused", "paused by an operator"
	}
	return "active", ""
}

func (c *core) workerInfos() []WorkerInfo {
	var out []WorkerInfo
	for _, name := range slices.Sorted(maps.Keys(c.workers)) {
		w := c.workers[name]
		st, why := w.state()
		out = append(out, WorkerInfo{Name: name, Pool: w.Pool, State: st, Reason: why, Capacity: w.Capacity, Load: w.load(),
			Running: slices.Sorted(maps.Keys(w.running)), Reserved: len(w.reserved), LastSeen: w.lastSeen, Labels: w.Labels, Instance: publicID(w.session)})
	}
	return out
}

type slotHeap []time.Time

func (h slotHeap) Len() int           { return len(h) }
func (h slotHeap) Less(a, b int) bool { return h[a].Before(h[b]) }
func (h slotHeap) Swap(a, b int)      { h[a], h[b] = h[b], h[a] }
func (h *slotHeap) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *slotHeap) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

// queue lists a pool's queue in dispatch order, at most limit entries.
func (c *core) queue(name string, limit int) (QueueInfo, error) {
	p := c.pools[name]
	if p == nil {
		return QueueInfo{}, fmt.Errorf("%w %q", errUnknownPool, name)
	}
	now := c.now()
	qi := QueueInfo{Pool: name, Total: p.queued, Running: []RunningEntry{}, Queued: []QueueEntry{}}
	var slots slotHeap
	usable, total := 0, 0
	for _, w := range p.workers {
		if w.gone {
			continue
		}
		total++
		for _, j := range w.running {
			qi.Running = append(qi.Running, RunningEntry{ID: j.ID, Client: j.Client, Worker: w.Name, Attempt: j.Attempt, Started: j.Started, LeaseUntil: j.LeaseUntil})
		}
		if !w.usable() {
			continue
		}
		usable++
		for _, j := range w.running {
			slots = append(slots, maxTime(now, j.Started.Add(j.cost)))
		}
		for range w.free() {
			slots = append(slots, now)
		}
	}
	slices.SortFunc(qi.Running, func(a, b RunningEntry) int { return a.Started.Compare(b.Started) })
	heap.Init(&slots)
	var order []*Job
	for _, w := range slices.Sorted(maps.Keys(p.workers)) {
		order = append(order, p.workers[w].reserved...)
	}
	urgent := p.urgent.order(c.rate, limit)
	order = append(order, urgent...)
	order = append(order, p.bg.order(c.rate, limit)...)
	var maxSeq uint64
	for i, j := range order {
		if i >= limit {
			break
		}
		e := QueueEntry{Position: i + 1, ID: j.ID, Client: j.Client, Urgent: j.Urgent, CacheHint: j.CacheHint, Submitted: j.Submitted, EstimatedCost: Duration(j.cost)}
		if len(slots) > 0 {
			t := heap.Pop(&slots).(time.Time)
			e.EstimatedStart = t
			heap.Push(&slots, t.Add(j.cost))
		}
		switch {
		case total == 0:
			e.Why = "no worker has joined pool " + name
		case usable == 0:
			e.Why = fmt.Sprintf("all %d workers of pool %s are paused or unhealthy", total, name)
		case j.reserved != "":
			e.Why = fmt.Sprintf("waiting for worker %s, which holds cache hint %q", j.reserved, j.CacheHint)
		case !j.Urgent && len(urgent) > 0 && i >= len(urgent):
			e.Why = fmt.Sprintf("%d urgent jobs go first; %d jobs ahead, all slots busy", len(urgent), i)
		case maxSeq > j.seq:
			e.Why = fmt.Sprintf("%d jobs ahead; client %s is over its fair share (rate %g)", i, j.Client, c.rate(j.Client))
		default:
			e.Why = fmt.Sprintf("%d jobs ahead, all slots busy", i)
		}
		if j.reserved == "" {
			maxSeq = max(maxSeq, j.seq)
		}
		qi.Queued = append(qi.Queued, e)
	}
	return qi, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
