package cluster

import "container/heap"

// entry is one place in a queue; it is stale once its job was re-queued or left.
type entry struct {
	j   *Job
	seq uint64
}

func (e entry) live() bool { return e.j.State == StateQueued && e.j.seq == e.seq && e.j.reserved == "" }

// share is one client's queue in one lane, with its stride-scheduling pass value.
type share struct {
	client string
	pass   float64
	q      []entry
	head   int
	index  int // in the lane heap, -1 when idle
}

func (s *share) front() *entry {
	for s.head < len(s.q) {
		if s.q[s.head].live() {
			return &s.q[s.head]
		}
		s.q[s.head] = entry{}
		s.head++
	}
	return nil
}

func (s *share) compact() {
	if s.head > 64 && s.head > len(s.q)/2 {
		n := copy(s.q, s.q[s.head:])
		clear(s.q[n:])
		s.q = s.q[:n]
		s.head = 0
	}
}

// lane is one priority lane of a pool: a fair queue between clients, weighted by their
// rates (stride scheduling over estimated cost).
type lane struct {
	shares map[string]*share
	active shareHeap
	vt     float64 // pass of the last job taken
}

type shareHeap []*share

func (h shareHeap) Len() int { return len(h) }
func (h shareHeap) Less(a, b int) bool {
	if h[a].pass != h[b].pass {
		return h[a].pass < h[b].pass
	}
	fa, fb := h[a].front(), h[b].front()
	if fa == nil || fb == nil {
		return fa != nil
	}
	return fa.seq < fb.seq
}
func (h shareHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].index, h[b].index = a, b
}
func (h *shareHeap) Push(x any) { s := x.(*share); s.index = len(*h); *h = append(*h, s) }
func (h *shareHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.index = -1
	return s
}

func (l *lane) share(client string) *share {
	if l.shares == nil {
		l.shares = map[string]*share{}
	}
	s := l.shares[client]
	if s == nil {
		s = &share{client: client, index: -1}
		l.shares[client] = s
	}
	return s
}

// push queues j at the back of its client's queue, or at the front when first is set
// (a retried job keeps its place).
func (l *lane) push(j *Job, first bool) {
	s := l.share(j.Client)
	e := entry{j: j, seq: j.seq}
	if first {
		if s.head > 0 {
			s.head--
			s.q[s.head] = e
		} else {
			s.q = append([]entry{e}, s.q...)
		}
	} else {
		s.q = append(s.q, e)
	}
	if s.index < 0 {
		if s.pass < l.vt {
			s.pass = l.vt
		}
		heap.Push(&l.active, s)
	} else {
		heap.Fix(&l.active, s.index)
	}
}

// peek returns the job the lane would give next, or nil.
func (l *lane) peek() *Job {
	for len(l.active) > 0 {
		s := l.active[0]
		if e := s.front(); e != nil {
			return e.j
		}
		heap.Pop(&l.active)
		s.q, s.head = s.q[:0], 0
	}
	return nil
}

// take removes the job peek returned and charges its client cost/rate.
func (l *lane) take(rate float64) *Job {
	j := l.peek()
	if j == nil {
		return nil
	}
	s := l.active[0]
	s.q[s.head] = entry{}
	s.head++
	s.compact()
	l.vt = s.pass
	if rate <= 0 {
		rate = 1
	}
	s.pass += j.cost.Seconds() / rate
	heap.Fix(&l.active, 0)
	return j
}

// order lists the live jobs of the lane in the order take would give them, given rates.
func (l *lane) order(rate func(string) float64, limit int) []*Job {
	type cur struct {
		s    *share
		pass float64
		i    int
	}
	var cs []*cur
	for _, s := range l.active {
		cs = append(cs, &cur{s: s, pass: s.pass, i: s.head})
	}
	var out []*Job
	for len(out) < limit {
		var best *cur
		for _, c := range cs {
			for c.i < len(c.s.q) && !c.s.q[c.i].live() {
				c.i++
			}
			if c.i >= len(c.s.q) {
				continue
			}
			if best == nil || c.pass < best.pass || c.pass == best.pass && c.s.q[c.i].seq < best.s.q[best.i].seq {
				best = c
			}
		}
		if best == nil {
			break
		}
		j := best.s.q[best.i].j
		out = append(out, j)
		best.i++
		r := rate(best.s.client)
		if r <= 0 {
			r = 1
		}
		best.pass += j.cost.Seconds() / r
	}
	return out
}
