package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// SchedulerOptions configure a scheduler.
type SchedulerOptions struct {
	Pools       []string // pool names jobs may be submitted to
	WorkerToken string   // when set, workers must present it
	Policy      Policy   // zero fields take DefaultPolicy's values
	Logger      *slog.Logger
	Registry    prometheus.Registerer // metrics go here when set
	// Replicas is how many NATS nodes keep each of the fleet's streams and buckets:
	// 1 (the default) on a single node, 3 on a 3-node cluster.
	Replicas int
	// LeaderLease is how long a scheduler of StartHA leads without renewing its lease
	// (default 10s); a standby takes over at most this long after the leader dies.
	LeaderLease time.Duration
	// ID names this scheduler in the leader lease (default host name and process id).
	ID string

	metrics *schedMetrics // kept across the terms of a StartHA scheduler
}

// Scheduler queues jobs per pool and places them on workers. Its state lives in JetStream,
// so a restarted scheduler carries on where the last one stopped.
type Scheduler struct {
	opts SchedulerOptions
	nc   *nats.Conn
	js   jetstream.JetStream
	jobs jetstream.KeyValue
	kv   jetstream.KeyValue
	log  *slog.Logger
	c    *core

	ops     chan func()
	ctl     chan func()
	dirty   map[string]*Job
	pending map[string][]chan error // job id -> waiters for its record to be stored
	subs    []*nats.Subscription
	stopMu  sync.Mutex // guards subs: Stop may be called from two goroutines
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	m       *schedMetrics
	sem     chan struct{}
	stopped chan struct{}
	stop1   sync.Once
	doneIDs []string
}

func (o *SchedulerOptions) fill() {
	d := DefaultPolicy()
	p := &o.Policy
	if p.LeaseTTL <= 0 {
		p.LeaseTTL = d.LeaseTTL
	}
	if p.WorkerTTL <= 0 {
		p.WorkerTTL = p.LeaseTTL
	}
	if p.AffinityTTL <= 0 {
		p.AffinityTTL = d.AffinityTTL
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.DefaultCost <= 0 {
		p.DefaultCost = d.DefaultCost
	}
	if p.AffinityWait <= 0 {
		p.AffinityWait = d.AffinityWait
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.LeaderLease <= 0 {
		o.LeaderLease = 10 * time.Second
	}
}

// ensureStreams opens the fleet's JetStream streams and buckets, making those missing.
// Existing ones are opened, not updated: an update needs the cluster's meta leader, and
// a standby taking over after a node's loss must not wait for that leader's election
// (its requests go unanswered meanwhile).
func ensureStreams(ctx context.Context, js jetstream.JetStream, replicas int) (jobs, state jetstream.KeyValue, err error) {
	jobs, err = openOrMake(ctx, "bucket "+bucketJobs, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, bucketJobs) },
		func(ctx context.Context) (jetstream.KeyValue, error) {
			return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketJobs, History: 1, TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: replicas})
		})
	if err != nil {
		return nil, nil, err
	}
	state, err = openOrMake(ctx, "bucket "+bucketState, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, bucketState) },
		func(ctx context.Context) (jetstream.KeyValue, error) {
			return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketState, History: 1, Storage: jetstream.FileStorage, Replicas: replicas})
		})
	if err != nil {
		return nil, nil, err
	}
	if _, err = openOrMake(ctx, "stream "+streamLogs, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, streamLogs) },
		func(ctx context.Context) (jetstream.Stream, error) {
			return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: streamLogs, Subjects: []string{subjLog + "*"},
				MaxAge: 14 * 24 * time.Hour, Storage: jetstream.FileStorage, MaxMsgSize: maxMessageSize, Replicas: replicas})
		}); err != nil {
		return nil, nil, err
	}
	if _, err = openOrMake(ctx, "object store "+bucketSources, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.ObjectStore(ctx, bucketSources) },
		func(ctx context.Context) (jetstream.ObjectStore, error) {
			return js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucketSources, MaxBytes: -1, TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: replicas})
		}); err != nil {
		return nil, nil, err
	}
	return jobs, state, nil
}

// apiTimeout bounds one JetStream API request: one that no server answers (while the
// cluster elects a leader) is not waited for longer.
const apiTimeout = 5 * time.Second

// openOrMake opens what open finds, or makes it when it is missing.
func openOrMake[T any](ctx context.Context, what string, open, make func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	v, err := open(cctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		v, err = make(cctx)
	}
	if err != nil {
		return v, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// StartScheduler loads the fleet's state from JetStream and starts serving on nc until
// ctx ends or Stop is called.
func StartScheduler(ctx context.Context, nc *nats.Conn, opts SchedulerOptions) (*Scheduler, error) {
	opts.fill()
	if len(opts.Pools) == 0 {
		return nil, errors.New("scheduler: no pools configured")
	}
	for _, p := range opts.Pools {
		if !validName(p) {
			return nil, fmt.Errorf("scheduler: %q is not a pool name", p)
		}
	}
	if opts.metrics == nil {
		opts.metrics = newSchedMetrics(opts.Registry)
	}
	if m, err := nc.Request(subjAPI+"pools", []byte("{}"), time.Second); err == nil && len(m.Data) > 0 {
		return nil, errors.New("scheduler: another scheduler already serves this NATS account")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	jobs, state, err := ensureStreams(ctx, js, opts.Replicas)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{opts: opts, nc: nc, js: js, jobs: jobs, kv: state, log: opts.Logger.With("part", "scheduler"),
		ops: make(chan func(), 1024), ctl: make(chan func(), 1024), dirty: map[string]*Job{}, pending: map[string][]chan error{}, m: opts.metrics, sem: make(chan struct{}, 8192), stopped: make(chan struct{})}
	s.c = newCore(opts.Policy, opts.Pools, time.Now, hooks{
		assign:   s.sendAssign,
		cancel:   s.sendCancel,
		changed:  func(j *Job) { s.dirty[j.ID] = j },
		finished: s.finished,
		note:     func(j *Job, line string) { s.publishLog(j.ID, j.Attempt, []byte(line), false) },
		worker:   s.saveWorker,
	})
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	handlers := map[string]func([]byte) ([]byte, error){
		subjHello: s.onHello, subjBeat: s.onBeat, subjDone: s.onDone,
		subjAPI + "submit": s.onSubmit, subjAPI + "cancel": s.onCancel, subjAPI + "pools": s.onPools,
		subjAPI + "workers": s.onWorkers, subjAPI + "queue": s.onQueue, subjAPI + "pause": s.onPause(true),
		subjAPI + "unpause": s.onPause(false), subjAPI + "forget": s.onForget, subjAPI + "set-rate": s.onRate,
		subjAPI + "restart": s.onRestart, subjAPI + "job": s.onJob,
	}
	for subj, h := range handlers {
		sub, err := nc.QueueSubscribe(subj, "kiln-scheduler", s.serve(subj, h))
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("subscribe %s: %w", subj, err)
		}
		sub.SetPendingLimits(-1, -1)
		s.subs = append(s.subs, sub)
	}
	s.wg.Add(1)
	go s.run(rctx)
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-rctx.Done():
		}
	}()
	s.log.Info("scheduler started", "pools", opts.Pools, "jobs", len(s.c.jobs))
	return s, nil
}

// loadStall bounds the wait for the next stored job at start-up: a damaged store can
// announce records it never delivers.
var loadStall = 30 * time.Second

// load reads back jobs, worker pauses and client rates.
func (s *Scheduler) load(ctx context.Context) error {
	lister, err := s.jobs.ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return fmt.Errorf("list jobs: %w", err)
	}
	var js []*Job
	if lister != nil {
		w, err := s.jobs.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			return fmt.Errorf("read jobs: %w", err)
		}
		defer func() { _ = w.Stop(); _ = lister.Stop() }()
		stall := time.NewTimer(loadStall)
		defer stall.Stop()
	read:
		for n := 0; ; n++ {
			var e jetstream.KeyValueEntry
			select {
			case e = <-w.Updates():
			case <-stall.C:
				return fmt.Errorf("read jobs: bucket %s delivered nothing for %s after %d records; its JetStream store may be damaged", bucketJobs, loadStall, n)
			case <-ctx.Done():
				return fmt.Errorf("read jobs: %w", ctx.Err())
			}
			if e == nil {
				break read
			}
			stall.Reset(loadStall)
			var j Job
			if err := json.Unmarshal(e.Value(), &j); err != nil {
				s.log.Error("stored job unreadable; skipped", "key", e.Key(), "err", err)
				continue
			}
			if j.State != StateDone {
				js = append(js, &j)
			}
		}
	}
	s.c.restore(js)
	keys, err := s.kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return fmt.Errorf("read fleet state: %w", err)
	}
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		if name, ok := strings.CutPrefix(k, "paused."); ok {
			s.c.paused[name] = true
		} else if client, ok := strings.CutPrefix(k, "rate."); ok {
			var r float64
			if _, err := fmt.Sscan(string(e.Value()), &r); err == nil && r > 0 {
				s.c.rates[client] = r
			}
		}
	}
	s.flush()
	return nil
}

// Stop stops serving; queued and running jobs stay in JetStream for the next scheduler.
func (s *Scheduler) Stop() {
	s.stopMu.Lock()
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
	s.stopMu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.stop1.Do(func() { close(s.stopped) })
}

func (s *Scheduler) run(ctx context.Context) {
	defer s.wg.Done()
	tick := time.NewTicker(max(s.opts.Policy.LeaseTTL/10, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flush()
			return
		case f := <-s.ctl:
			f()
			s.drain()
		case f := <-s.ops:
			f()
			s.drain()
		case <-tick.C:
			s.c.tick()
			s.flush()
			s.m.observe(s.c)
		}
	}
}

// drain runs what is waiting (requests before completions), then stores the changes.
func (s *Scheduler) drain() {
	for range 512 {
		select {
		case f := <-s.ctl:
			f()
			continue
		default:
		}
		select {
		case f := <-s.ctl:
			f()
		case f := <-s.ops:
			f()
		default:
			s.flush()
			return
		}
	}
	s.flush()
}

// do runs f on the scheduler's goroutine and waits for it; it goes before completions.
func (s *Scheduler) do(f func()) error { return s.enqueue(s.ctl, f) }

// doBulk is do for completions, the bulk of the traffic.
func (s *Scheduler) doBulk(f func()) error { return s.enqueue(s.ops, f) }

func (s *Scheduler) enqueue(ch chan func(), f func()) error {
	done := make(chan struct{})
	select {
	case ch <- func() { f(); close(done) }:
	case <-s.stopped:
		return errors.New("scheduler stopped")
	}
	select {
	case <-done:
		return nil
	case <-s.stopped:
		return errors.New("scheduler stopped")
	}
}

// storeWindow is how long a record's write is sent again while its stream has no leader:
// a NATS node lost without handing over its streams' leadership (killed, or its machine
// died) is replaced by an election after 4 to 9 s.
const storeWindow = 30 * time.Second

var storeRetries = []jetstream.PublishOpt{jetstream.WithRetryWait(250 * time.Millisecond), jetstream.WithRetryAttempts(int(storeWindow / (250 * time.Millisecond)))}

// flush stores the records changed since the last flush.
func (s *Scheduler) flush() {
	for id, j := range s.dirty {
		b, err := json.Marshal(j)
		if err != nil {
			s.log.Error("encode job", "job", id, "err", err)
			continue
		}
		f, err := s.js.PublishAsync("$KV."+bucketJobs+"."+id, b, storeRetries...)
		waiters := s.pending[id]
		delete(s.pending, id)
		if err != nil {
			s.log.Error("store job", "job", id, "err", err)
			for _, w := range waiters {
				w <- err
			}
			continue
		}
		if len(waiters) > 0 {
			go func() {
				var err error
				select {
				case <-f.Ok():
				case err = <-f.Err():
				case <-time.After(storeWindow + 10*time.Second):
					err = errors.New("store: no acknowledgement")
				}
				for _, w := range waiters {
					w <- err
				}
			}()
		}
	}
	clear(s.dirty)
	for id, ws := range s.pending {
		for _, w := range ws {
			w <- nil
		}
		delete(s.pending, id)
	}
}

// stored waits until the record of job id, as changed by the current operation, is stored.
func (s *Scheduler) stored(id string) chan error {
	ch := make(chan error, 1)
	s.pending[id] = append(s.pending[id], ch)
	return ch
}

func (s *Scheduler) serve(subj string, h func([]byte) ([]byte, error)) nats.MsgHandler {
	return func(m *nats.Msg) {
		s.sem <- struct{}{}
		go func() {
			defer func() { <-s.sem }()
			s.handle(subj, h, m)
		}()
	}
}

func (s *Scheduler) handle(subj string, h func([]byte) ([]byte, error), m *nats.Msg) {
	out, err := h(m.Data)
	select {
	case <-s.stopped:
		return // answers made while stopping may be incomplete; the caller retries
	default:
	}
	if err != nil {
		s.log.Warn("request refused", "subject", subj, "reason", err)
		s.m.refused.WithLabelValues(strings.TrimPrefix(strings.TrimPrefix(subj, subjAPI), "kiln.fleet.")).Inc()
		out = errReply(err)
	}
	if m.Reply != "" {
		_ = m.Respond(out)
	}
}

func (s *Scheduler) sendAssign(w *worker, j *Job) {
	b, _ := json.Marshal(j)
	if err := s.nc.Publish(subjToWorker+w.Name+".job", b); err != nil {
		s.log.Warn("send job", "worker", w.Name, "job", j.ID, "err", err)
	}
	s.m.dispatched.WithLabelValues(j.Pool).Inc()
	s.m.wait.WithLabelValues(j.Pool).Observe(j.Started.Sub(j.Submitted).Seconds())
}

func (s *Scheduler) sendCancel(w *worker, j *Job) {
	b, _ := json.Marshal(cancelMsg{JobRef{ID: j.ID, Attempt: j.Attempt}})
	_ = s.nc.Publish(subjToWorker+w.Name+".cancel", b)
}

func (s *Scheduler) finished(j *Job) {
	s.publishLog(j.ID, j.Attempt, nil, true)
	s.m.finished.WithLabelValues(j.Pool, string(j.Result.Outcome)).Inc()
	// finished jobs stay in memory a while (to recognise late completions), then only in JetStream
	s.doneIDs = append(s.doneIDs, j.ID)
	if len(s.doneIDs) > 20000 {
		for _, id := range s.doneIDs[:10000] {
			if o := s.c.jobs[id]; o != nil && o.State == StateDone {
				delete(s.c.jobs, id)
			}
		}
		s.doneIDs = append(s.doneIDs[:0], s.doneIDs[10000:]...)
	}
}

func (s *Scheduler) publishLog(id string, attempt int, data []byte, end bool) {
	m := nats.NewMsg(subjLog + id)
	m.Data = data
	m.Header.Set(hdrAttempt, fmt.Sprint(attempt))
	if end {
		m.Header.Set(hdrEnd, "1")
	}
	if _, err := s.js.PublishMsgAsync(m); err != nil {
		s.log.Warn("publish log", "job", id, "err", err)
	}
}

func (s *Scheduler) saveWorker(name string, paused bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.c.paused[name] {
		_, _ = s.kv.Put(ctx, "paused."+name, []byte("1"))
	} else {
		_ = s.kv.Delete(ctx, "paused."+name)
	}
}

func (s *Scheduler) onSubmit(b []byte) ([]byte, error) {
	var r Request
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	var j *Job
	var err error
	var wait chan error
	if e := s.do(func() {
		j, err = s.c.submit(r)
		if err == nil {
			cp := *j
			j = &cp
			wait = s.stored(j.ID)
		}
	}); e != nil {
		return nil, e
	}
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	if err := <-wait; err != nil {
		return nil, fmt.Errorf("submit %s: store: %w", j.ID, err)
	}
	s.m.submitted.WithLabelValues(j.Pool).Inc()
	return okReply(j), nil
}

func (s *Scheduler) onCancel(b []byte) ([]byte, error) {
	var m nameMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, err
	}
	var err error
	var st JobState
	_ = s.do(func() {
		var j *Job
		if j, err = s.c.cancel(m.Name); err == nil {
			st = j.State
		}
	})
	if err != nil {
		return nil, fmt.Errorf("cancel: %w", err)
	}
	return okReply(st), nil
}

func (s *Scheduler) onJob(b []byte) ([]byte, error) {
	var m nameMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, err
	}
	var out []byte
	var err error
	_ = s.do(func() {
		if j := s.c.jobs[m.Name]; j != nil {
			out = okReply(j)
		} else {
			err = fmt.Errorf("%w %q", errUnknownJob, m.Name)
		}
	})
	return out, err
}

func (s *Scheduler) onPools([]byte) ([]byte, error) {
	var out []PoolInfo
	_ = s.do(func() { out = s.c.poolInfos() })
	return okReply(out), nil
}

func (s *Scheduler) onWorkers([]byte) ([]byte, error) {
	var out []WorkerInfo
	_ = s.do(func() { out = s.c.workerInfos() })
	return okReply(out), nil
}

func (s *Scheduler) onQueue(b []byte) ([]byte, error) {
	var m queueMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, err
	}
	if m.Limit <= 0 || m.Limit > 100000 {
		m.Limit = 1000
	}
	var out QueueInfo
	var err error
	_ = s.do(func() { out, err = s.c.queue(m.Pool, m.Limit) })
	if err != nil {
		return nil, err
	}
	return okReply(out), nil
}

func (s *Scheduler) onPause(paused bool) func([]byte) ([]byte, error) {
	return func(b []byte) ([]byte, error) {
		var m nameMsg
		if err := decodeStrict(b, &m); err != nil {
			return nil, err
		}
		var err error
		_ = s.do(func() { err = s.c.setPaused(m.Name, paused) })
		if err != nil {
			return nil, err
		}
		s.log.Info("worker paused by operator", "worker", m.Name, "paused", paused)
		return okReply(true), nil
	}
}

func (s *Scheduler) onForget(b []byte) ([]byte, error) {
	var m nameMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, err
	}
	var err error
	_ = s.do(func() { err = s.c.forget(m.Name) })
	if err != nil {
		return nil, err
	}
	return okReply(true), nil
}

func (s *Scheduler) onRestart(b []byte) ([]byte, error) {
	var m nameMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, err
	}
	var err error
	_ = s.do(func() { err = s.c.requestRestart(m.Name) })
	if err != nil {
		return nil, err
	}
	return okReply(true), nil
}

func (s *Scheduler) onRate(b []byte) ([]byte, error) {
	var m rateMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, err
	}
	if !validName(m.Client) {
		return nil, fmt.Errorf("field client: %q is not a client name", m.Client)
	}
	if !(m.Rate > 0 && m.Rate < 1e9) {
		return nil, fmt.Errorf("field rate: %v is not a positive number", m.Rate)
	}
	_ = s.do(func() { s.c.rates[m.Client] = m.Rate })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.kv.Put(ctx, "rate."+m.Client, []byte(fmt.Sprint(m.Rate))); err != nil {
		return nil, fmt.Errorf("store rate: %w", err)
	}
	return okReply(true), nil
}

func (s *Scheduler) onHello(b []byte) ([]byte, error) {
	var m helloMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("worker hello: %w", err)
	}
	if s.opts.WorkerToken != "" && subtle.ConstantTimeCompare([]byte(m.Token), []byte(s.opts.WorkerToken)) != 1 {
		return nil, fmt.Errorf("worker %q refused: wrong token", m.Name)
	}
	var ses string
	var err error
	_ = s.do(func() { ses, err = s.c.hello(m.WorkerSpec, m.Running) })
	if err != nil {
		return nil, fmt.Errorf("worker %q refused: %w", m.Name, err)
	}
	s.log.Info("worker joined", "worker", m.Name, "pool", m.Pool, "capacity", m.Capacity, "running", len(m.Running))
	return okReply(helloReply{Session: ses, LeaseTTL: Duration(s.opts.Policy.LeaseTTL)}), nil
}

func (s *Scheduler) onBeat(b []byte) ([]byte, error) {
	var m beat
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	var rep beatReply
	_ = s.do(func() { rep = s.c.heartbeat(m) })
	return okReply(rep), nil
}

func (s *Scheduler) onDone(b []byte) ([]byte, error) {
	var m doneMsg
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("completion: %w", err)
	}
	switch m.Result.Outcome {
	case OutcomeOK, OutcomeFailed, OutcomeInfrastructure, OutcomeCancelled:
	default:
		return nil, fmt.Errorf("completion: field result.outcome: %q is not an outcome", m.Result.Outcome)
	}
	var ok bool
	var why string
	var wait chan error
	if err := s.doBulk(func() {
		ok, why = s.c.complete(m.Name, m.Session, m.JobRef, m.Result)
		if _, known := s.c.jobs[m.ID]; known {
			wait = s.stored(m.ID)
		}
	}); err != nil {
		return nil, err
	}
	if wait != nil {
		if err := <-wait; err != nil {
			return nil, fmt.Errorf("completion of %s: store: %w", m.ID, err)
		}
	}
	if !ok {
		s.log.Warn("completion ignored", "worker", m.Name, "job", m.ID, "attempt", m.Attempt, "reason", why)
		s.m.ignored.Inc()
	}
	return okReply(doneReply{Accepted: ok, Why: why}), nil
}
