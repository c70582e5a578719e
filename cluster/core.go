package cluster

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Policy holds the scheduler's tunables.
type Policy struct {
	LeaseTTL     time.Duration // a running job's lease; a worker renews it with each heartbeat
	WorkerTTL    time.Duration // a worker silent this long is lost and its jobs re-queued
	AffinityTTL  time.Duration // how long a worker counts as holding a cache hint
	MaxAttempts  int           // runs of one job before an infrastructure failure
	DefaultCost  time.Duration // cost estimate for a pool before any job finished
	AffinityWait float64       // wait for a busy affinity worker while the wait is at most this × the job's cost
}

// DefaultPolicy is the policy of a production scheduler.
func DefaultPolicy() Policy {
	return Policy{
		LeaseTTL:     30 * time.Second,
		WorkerTTL:    30 * time.Second,
		AffinityTTL:  time.Hour,
		MaxAttempts:  3,
		DefaultCost:  time.Minute,
		AffinityWait: 1,
	}
}

// JobRef names one run of a job: the job and its attempt (the fence token).
type JobRef struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
}

// WorkerSpec is what a worker says about itself when it connects.
type WorkerSpec struct {
	Name     string            `json:"name"`
	Pool     string            `json:"pool"`
	Capacity int               `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
}

type worker struct {
	WorkerSpec
	session      string
	running      map[string]*Job
	reserved     []*Job
	reservedCost time.Duration
	lastSeen     time.Time
	gone         bool
	adminPaused  bool
	healthErr    string
	restart      bool
}

func (w *worker) free() int { return w.Capacity - len(w.running) }
func (w *worker) usable() bool {
	return !w.gone && !w.adminPaused && w.healthErr == "" && !w.restart
}
func (w *worker) load() float64 {
	if w.Capacity <= 0 {
		return 1
	}
	return float64(len(w.running)) / float64(w.Capacity)
}

type affinity struct {
	worker string
	at     time.Time
}

// ewma is an exponentially weighted moving average of durations.
type ewma struct {
	v float64
	n int
}

func (e *ewma) add(d time.Duration) {
	x := d.Seconds()
	if e.n == 0 {
		e.v = x
	} else {
		e.v = 0.7*e.v + 0.3*x
	}
	e.n++
}

type pool struct {
	name     string
	urgent   lane
	bg       lane
	workers  map[string]*worker
	affinity map[string]affinity
	costs    map[string]*ewma
	avg      ewma
	queued   int

	hits, placements int // affinity hits among placements of hinted jobs
}

// hooks are the core's effects on the world.
type hooks struct {
	assign   func(w *worker, j *Job)
	cancel   func(w *worker, j *Job)
	changed  func(j *Job)
	finished func(j *Job)
	note     func(j *Job, line string) // a line for the job's log
	worker   func(name string, paused bool)
}

// core is the scheduler's state machine: queues, placement, leases. It is not safe for
// concurrent use; the scheduler drives it from one goroutine.
type core struct {
	policy  Policy
	now     func() time.Time
	h       hooks
	pools   map[string]*pool
	jobs    map[string]*Job
	workers map[string]*worker
	rates   map[string]float64
	paused  map[string]bool // admin pauses, kept across restarts and reconnections
	seq     uint64
}

func newCore(p Policy, pools []string, now func() time.Time, h hooks) *core {
	c := &core{policy: p, now: now, h: h, pools: map[string]*pool{}, jobs: map[string]*Job{},
		workers: map[string]*worker{}, rates: map[string]float64{}, paused: map[string]bool{}}
	for _, name := range pools {
		c.addPool(name)
	}
	return c
}

func (c *core) addPool(name string) *pool {
	p := c.pools[name]
	if p == nil {
		p = &pool{name: name, workers: map[string]*worker{}, affinity: map[string]affinity{}, costs: map[string]*ewma{}}
		c.pools[name] = p
	}
	return p
}

func (c *core) rate(client string) float64 {
	if r, ok := c.rates[client]; ok && r > 0 {
		return r
	}
	return 1
}

// estimate is the expected duration of j, learned from recent runs with its cache hint.
func (p *pool) estimate(pol Policy, hint string) time.Duration {
	if e := p.costs[hint]; hint != "" && e != nil {
		return time.Duration(e.v * float64(time.Second))
	}
	if p.avg.n > 0 {
		return time.Duration(p.avg.v * float64(time.Second))
	}
	return pol.DefaultCost
}

// errors the core returns to callers
var (
	errUnknownPool   = errors.New("unknown pool")
	errUnknownJob    = errors.New("unknown job")
	errUnknownWorker = errors.New("unknown worker")
)

func (c *core) poolNames() []string { return slices.Sorted(maps.Keys(c.pools)) }

// submit queues a new job, or returns the existing one for a known ticket.
func (c *core) submit(r Request) (*Job, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if j := c.jobs[r.ID]; r.ID != "" && j != nil {
		return j, nil
	}
	p := c.pools[r.Pool]
	if p == nil {
		return nil, fmt.Errorf("%w %q (known pools: %s)", errUnknownPool, r.Pool, strings.Join(c.poolNames(), ", "))
	}
	now := c.now()
	if r.ID == "" {
		r.ID = newID()
	}
	j := &Job{Request: r, State: StateQueued, Submitted: now}
	j.event(now, "submitted to pool %s by %s", r.Pool, r.Client)
	c.jobs[j.ID] = j
	c.enqueue(p, j, false)
	c.changed(j)
	c.dispatch(p)
	return j, nil
}

func (c *core) changed(j *Job) {
	if c.h.changed != nil {
		c.h.changed(j)
	}
}

func (c *core) note(j *Job, line string) {
	if c.h.note != nil {
		c.h.note(j, line)
	}
}

func (c *core) enqueue(p *pool, j *Job, first bool) {
	c.seq++
	j.seq = c.seq
	j.State = StateQueued
	j.Worker = ""
	j.reserved = ""
	j.cost = p.estimate(c.policy, j.CacheHint)
	p.queued++
	if j.Urgent {
		p.urgent.push(j, first)
	} else {
		p.bg.push(j, first)
	}
}

// dispatch places queued jobs on workers with free slots until none is free or nothing fits.
func (c *core) dispatch(p *pool) {
	if p == nil {
		return
	}
	now := c.now()
	for {
		var free []*worker
		for _, w := range p.workers {
			if w.usable() && w.free() > 0 {
				free = append(free, w)
			}
		}
		if len(free) == 0 {
			return
		}
		// workers first take the jobs held for them by affinity, unless an urgent job waits
		urgentWaits := p.urgent.peek() != nil
		progressed := false
		for _, w := range free {
			for w.free() > 0 && len(w.reserved) > 0 && (w.reserved[0].Urgent || !urgentWaits) {
				j := w.reserved[0]
				w.reserved = w.reserved[1:]
				w.reservedCost -= j.cost
				j.reserved = ""
				p.queued--
				c.start(p, w, j, true)
				progressed = true
			}
		}
		if progressed {
			continue
		}
		var j *Job
		if j = p.urgent.take(c.rate(p.urgent.peekClient())); j == nil {
			j = p.bg.take(c.rate(p.bg.peekClient()))
		}
		if j == nil {
			c.steal(p, free)
			return
		}
		p.queued--
		if a, ok := p.affinity[j.CacheHint]; j.CacheHint != "" && ok && now.Sub(a.at) < c.policy.AffinityTTL {
			if w := p.workers[a.worker]; w != nil && w.usable() && !slices.Contains(j.Avoid, w.Name) {
				if w.free() > 0 {
					c.start(p, w, j, true)
					continue
				}
				if c.waitFor(w, j) {
					j.reserved = w.Name
					w.reserved = append(w.reserved, j)
					w.reservedCost += j.cost
					p.queued++
					continue
				}
			}
		}
		c.start(p, leastLoaded(free, j), j, false)
	}
}

// waitFor reports whether j should wait for the busy worker w that holds its cache.
func (c *core) waitFor(w *worker, j *Job) bool {
	if w.Capacity <= 0 {
		return false
	}
	now := c.now()
	soonest := time.Duration(1<<62 - 1)
	for _, r := range w.running {
		left := r.cost - now.Sub(r.Started)
		if left < 0 {
			left = 0
		}
		soonest = min(soonest, left)
	}
	wait := soonest + (w.reservedCost+j.cost)/time.Duration(w.Capacity)
	return wait.Seconds() <= c.policy.AffinityWait*j.cost.Seconds()
}

// steal gives idle workers jobs held for busy ones, oldest first.
func (c *core) steal(p *pool, free []*worker) {
	for _, w := range free {
		for w.free() > 0 {
			var victim *worker
			for _, v := range p.workers {
				if len(v.reserved) > 0 && (victim == nil || len(v.reserved) > len(victim.reserved)) {
					victim = v
				}
			}
			if victim == nil {
				return
			}
			j := victim.reserved[len(victim.reserved)-1]
			victim.reserved = victim.reserved[:len(victim.reserved)-1]
			victim.reservedCost -= j.cost
			j.reserved = ""
			p.queued--
			c.start(p, w, j, false)
		}
	}
}

func leastLoaded(free []*worker, j *Job) *worker {
	var best *worker
	for _, w := range free {
		if best != nil && slices.Contains(j.Avoid, w.Name) && !slices.Contains(j.Avoid, best.Name) {
			continue
		}
		if best == nil || slices.Contains(j.Avoid, best.Name) && !slices.Contains(j.Avoid, w.Name) ||
			w.load() < best.load() || w.load() == best.load() && (w.free() > best.free() || w.free() == best.free() && w.Name < best.Name) {
			best = w
		}
	}
	return best
}

func (l *lane) peekClient() string {
	if j := l.peek(); j != nil {
		return j.Client
	}
	return ""
}

// start runs j on w.
func (c *core) start(p *pool, w *worker, j *Job, hit bool) {
	now := c.now()
	if j.reserved != "" {
		p.queued--
		j.reserved = ""
	}
	j.State = StateRunning
	j.Attempt++
	j.Worker = w.Name
	j.Started = now
	j.LeaseUntil = now.Add(c.policy.LeaseTTL)
	w.running[j.ID] = j
	if j.CacheHint != "" {
		p.placements++
		if hit {
			p.hits++
		}
		p.affinity[j.CacheHint] = affinity{worker: w.Name, at: now}
	}
	j.event(now, "started on worker %s (attempt %d)", w.Name, j.Attempt)
	c.changed(j)
	if c.h.assign != nil {
		c.h.assign(w, j)
	}
}

// finish records j's result.
func (c *core) finish(j *Job, r Result) {
	now := c.now()
	if w := c.workers[j.Worker]; w != nil {
		delete(w.running, j.ID)
	}
	r.Attempts = j.Attempt
	if r.Worker == "" {
		r.Worker = j.Worker
	}
	if !j.Started.IsZero() && r.Duration == 0 && j.State == StateRunning {
		r.Duration = Duration(now.Sub(j.Started))
	}
	if j.State == StateQueued {
		c.unqueue(j)
	}
	j.State = StateDone
	j.Result = &r
	j.LeaseUntil = time.Time{}
	j.event(now, "%s%s", r.Outcome, prefixed(": ", r.Message))
	c.changed(j)
	if c.h.finished != nil {
		c.h.finished(j)
	}
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// unqueue removes a queued job from wherever it waits.
func (c *core) unqueue(j *Job) {
	p := c.pools[j.Pool]
	if p == nil {
		return
	}
	p.queued--
	if j.reserved != "" {
		if w := c.workers[j.reserved]; w != nil {
			if i := slices.Index(w.reserved, j); i >= 0 {
				w.reserved = slices.Delete(w.reserved, i, i+1)
				w.reservedCost -= j.cost
			}
		}
		j.reserved = ""
	}
	j.seq = 0 // its queue entry is now stale
}

// retry re-queues a job whose run was lost, or fails it when it ran out of attempts.
func (c *core) retry(j *Job, why string) {
	now := c.now()
	p := c.pools[j.Pool]
	if w := c.workers[j.Worker]; w != nil {
		delete(w.running, j.ID)
	}
	if j.Cancel {
		c.finish(j, Result{Outcome: OutcomeCancelled, Message: "cancelled; " + why})
		return
	}
	if j.Attempt >= c.policy.MaxAttempts || p == nil {
		c.finish(j, Result{Outcome: OutcomeInfrastructure, Message: fmt.Sprintf("%s; gave up after %d attempts", why, j.Attempt)})
		return
	}
	j.event(now, "%s, retried", why)
	c.note(j, fmt.Sprintf("--- %s, retried (attempt %d of %d) ---\n", why, j.Attempt+1, c.policy.MaxAttempts))
	c.enqueue(p, j, true)
	c.changed(j)
}

// cancel stops a job: a queued one ends at once, a running one is told to stop.
func (c *core) cancel(id string) (*Job, error) {
	j := c.jobs[id]
	if j == nil {
		return nil, fmt.Errorf("%w %q", errUnknownJob, id)
	}
	switch j.State {
	case StateQueued:
		c.finish(j, Result{Outcome: OutcomeCancelled, Message: "cancelled while queued"})
	case StateRunning:
		if !j.Cancel {
			j.Cancel = true
			j.event(c.now(), "cancel requested")
			c.changed(j)
		}
		if w := c.workers[j.Worker]; w != nil && c.h.cancel != nil {
			c.h.cancel(w, j)
		}
	}
	return j, nil
}

// hello registers a worker's session; running lists the runs it still has.
func (c *core) hello(s WorkerSpec, running []JobRef) (string, error) {
	if !validName(s.Name) {
		return "", fmt.Errorf("field name: %q is not a worker name", s.Name)
	}
	p := c.pools[s.Pool]
	if p == nil {
		return "", fmt.Errorf("%w %q (known pools: %s)", errUnknownPool, s.Pool, strings.Join(c.poolNames(), ", "))
	}
	if s.Capacity < 1 || s.Capacity > 1024 {
		return "", fmt.Errorf("field capacity: %d is not in 1..1024", s.Capacity)
	}
	now := c.now()
	ses := newSecret()
	old := c.workers[s.Name]
	w := &worker{WorkerSpec: s, session: ses, running: map[string]*Job{}, lastSeen: now, adminPaused: c.paused[s.Name]}
	if old != nil {
		if op := c.pools[old.Pool]; op != nil {
			delete(op.workers, old.Name)
			c.releaseReserved(op, old)
		}
		w.running = old.running
	}
	c.workers[s.Name] = w
	p.workers[s.Name] = w
	keep := map[string]bool{}
	for _, r := range running {
		keep[r.ID] = true
		c.adopt(w, r)
	}
	for id, j := range w.running {
		if !keep[id] {
			c.retry(j, fmt.Sprintf("worker %s restarted", s.Name))
		}
	}
	c.dispatch(p)
	return ses, nil
}

// adopt takes a run a worker reports that the scheduler had not recorded as running there
// (its record was written before a restart); a run that belongs elsewhere is ignored.
func (c *core) adopt(w *worker, r JobRef) {
	j := c.jobs[r.ID]
	if j == nil || j.State == StateDone {
		return
	}
	if j.State == StateRunning && j.Worker == w.Name && j.Attempt == r.Attempt {
		w.running[j.ID] = j
		j.LeaseUntil = c.now().Add(c.policy.LeaseTTL)
		return
	}
	if j.State == StateQueued && j.Attempt < r.Attempt && j.Pool == w.Pool {
		c.unqueue(j)
		j.State = StateRunning
		j.Attempt = r.Attempt
		j.Worker = w.Name
		j.Started = c.now()
		j.LeaseUntil = c.now().Add(c.policy.LeaseTTL)
		w.running[j.ID] = j
		j.event(c.now(), "running on worker %s (attempt %d), found after a scheduler restart", w.Name, j.Attempt)
		c.changed(j)
	}
}

func (c *core) releaseReserved(p *pool, w *worker) {
	for _, j := range w.reserved {
		j.reserved = ""
		p.queued--
		c.enqueue(p, j, true)
	}
	w.reserved, w.reservedCost = nil, 0
}

// beat is a worker's heartbeat; it returns the runs the worker should keep.
type beat struct {
	Name    string   `json:"name"`
	Session string   `json:"session"`
	Running []JobRef `json:"running"`
	Health  string   `json:"health,omitempty"` // empty: healthy; else why not
}

type beatReply struct {
	Unknown bool     `json:"unknown,omitempty"` // say hello again
	Keep    []JobRef `json:"keep"`
	Cancel  []JobRef `json:"cancel,omitempty"`
	Paused  bool     `json:"paused,omitempty"`
	Restart bool     `json:"restart,omitempty"`
}

func (c *core) heartbeat(b beat) beatReply {
	w := c.workers[b.Name]
	if w == nil || w.session != b.Session || w.gone {
		return beatReply{Unknown: true}
	}
	now := c.now()
	w.lastSeen = now
	p := c.pools[w.Pool]
	wasUsable := w.usable()
	if b.Health != w.healthErr {
		w.healthErr = b.Health
		if c.h.worker != nil {
			c.h.worker(w.Name, !w.usable())
		}
	}
	var rep beatReply
	for _, r := range b.Running {
		if j := w.running[r.ID]; j != nil && j.Attempt == r.Attempt {
			j.LeaseUntil = now.Add(c.policy.LeaseTTL)
			rep.Keep = append(rep.Keep, r)
			if j.Cancel {
				rep.Cancel = append(rep.Cancel, r)
			}
			continue
		}
		c.adopt(w, r)
		if j := w.running[r.ID]; j != nil && j.Attempt == r.Attempt {
			rep.Keep = append(rep.Keep, r)
		}
	}
	if !w.usable() && wasUsable {
		c.releaseReserved(p, w)
	}
	rep.Paused = !w.usable()
	rep.Restart = w.restart
	if w.usable() && !wasUsable || w.usable() && w.free() > 0 {
		c.dispatch(p)
	}
	return rep
}

// complete records a run's end as reported by its worker; a late or duplicate report is
// ignored, and the reason returned.
func (c *core) complete(name, session string, r JobRef, res Result) (accepted bool, why string) {
	j := c.jobs[r.ID]
	w := c.workers[name]
	if w == nil || w.session != session {
		// a worker that was cut off reports after reconnecting under a new session
		if w == nil {
			return false, fmt.Sprintf("unknown worker %q", name)
		}
	}
	if j == nil {
		return false, fmt.Sprintf("unknown job %q", r.ID)
	}
	if j.State != StateRunning || j.Worker != name || j.Attempt != r.Attempt {
		j.event(c.now(), "late completion of attempt %d from worker %s ignored", r.Attempt, name)
		c.changed(j)
		return false, fmt.Sprintf("job %s attempt %d is not running on %s (state %s, attempt %d on %q)", r.ID, r.Attempt, name, j.State, j.Attempt, j.Worker)
	}
	p := c.pools[j.Pool]
	now := c.now()
	if res.Outcome == OutcomeOK || res.Outcome == OutcomeFailed {
		d := now.Sub(j.Started)
		if res.Duration > 0 {
			d = time.Duration(res.Duration)
		}
		if j.CacheHint != "" {
			e := p.costs[j.CacheHint]
			if e == nil {
				e = &ewma{}
				p.costs[j.CacheHint] = e
			}
			e.add(d)
		}
		p.avg.add(d)
	}
	switch {
	case j.Cancel:
		res.Outcome = OutcomeCancelled
		c.finish(j, res)
	case res.Outcome == OutcomeInfrastructure && !res.Final && j.Attempt < c.policy.MaxAttempts:
		j.Avoid = append(j.Avoid, name)
		c.retry(j, fmt.Sprintf("infrastructure failure on worker %s (%s)", name, res.Message))
	default:
		c.finish(j, res)
	}
	c.dispatch(p)
	return true, ""
}

// tick expires leases and lost workers.
func (c *core) tick() {
	now := c.now()
	touched := map[*pool]bool{}
	for _, w := range c.workers {
		if w.gone || now.Sub(w.lastSeen) <= c.policy.WorkerTTL {
			continue
		}
		w.gone = true
		p := c.pools[w.Pool]
		touched[p] = true
		c.releaseReserved(p, w)
		for _, j := range sortedJobs(w.running) {
			c.retry(j, fmt.Sprintf("worker %s lost", w.Name))
		}
	}
	for _, w := range c.workers {
		for _, j := range sortedJobs(w.running) {
			if now.After(j.LeaseUntil) {
				touched[c.pools[w.Pool]] = true
				if c.h.cancel != nil && !w.gone {
					c.h.cancel(w, j)
				}
				c.retry(j, fmt.Sprintf("lease of worker %s expired", w.Name))
			}
		}
	}
	for p := range touched {
		if p != nil {
			c.dispatch(p)
		}
	}
}

func sortedJobs(m map[string]*Job) []*Job {
	js := slices.Collect(maps.Values(m))
	sort.Slice(js, func(a, b int) bool { return js[a].ID < js[b].ID })
	return js
}

// restore loads jobs read back from the store after a restart.
func (c *core) restore(js []*Job) {
	sort.Slice(js, func(a, b int) bool { return js[a].Submitted.Before(js[b].Submitted) })
	now := c.now()
	for _, j := range js {
		c.jobs[j.ID] = j
		p := c.pools[j.Pool]
		switch j.State {
		case StateQueued:
			if p == nil {
				c.finish(j, Result{Outcome: OutcomeInfrastructure, Message: fmt.Sprintf("pool %q no longer exists", j.Pool)})
				continue
			}
			c.enqueue(p, j, false)
		case StateRunning:
			if p == nil {
				c.finish(j, Result{Outcome: OutcomeInfrastructure, Message: fmt.Sprintf("pool %q no longer exists", j.Pool)})
				continue
			}
			// owned by a worker we have not heard from yet: it renews or the lease expires
			w := c.workers[j.Worker]
			if w == nil {
				w = &worker{WorkerSpec: WorkerSpec{Name: j.Worker, Pool: j.Pool}, running: map[string]*Job{}, lastSeen: now}
				c.workers[j.Worker] = w
			}
			w.running[j.ID] = j
			j.LeaseUntil = now.Add(c.policy.LeaseTTL)
			j.cost = p.estimate(c.policy, j.CacheHint)
		}
	}
}

// setPaused pauses or unpauses a worker by an operator's order.
func (c *core) setPaused(name string, paused bool) error {
	w := c.workers[name]
	if w == nil {
		return fmt.Errorf("%w %q", errUnknownWorker, name)
	}
	w.adminPaused = paused
	if !paused {
		w.restart = false
	}
	if paused {
		c.paused[name] = true
		c.releaseReserved(c.pools[w.Pool], w)
	} else {
		delete(c.paused, name)
	}
	if c.h.worker != nil {
		c.h.worker(name, paused)
	}
	c.dispatch(c.pools[w.Pool])
	return nil
}

// forget drops a worker from the records; its running jobs are re-queued.
func (c *core) forget(name string) error {
	w := c.workers[name]
	if w == nil {
		return fmt.Errorf("%w %q", errUnknownWorker, name)
	}
	p := c.pools[w.Pool]
	delete(c.workers, name)
	delete(c.paused, name)
	if p != nil {
		delete(p.workers, name)
		c.releaseReserved(p, w)
	}
	for _, j := range sortedJobs(w.running) {
		c.retry(j, fmt.Sprintf("worker %s forgotten", name))
	}
	if c.h.worker != nil {
		c.h.worker(name, false)
	}
	if p != nil {
		c.dispatch(p)
	}
	return nil
}

// requestRestart drains a worker and asks it to restart itself once idle.
func (c *core) requestRestart(name string) error {
	w := c.workers[name]
	if w == nil || w.gone {
		return fmt.Errorf("%w %q", errUnknownWorker, name)
	}
	w.restart = true
	c.releaseReserved(c.pools[w.Pool], w)
	return nil
}
