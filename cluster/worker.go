package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// ErrRestart is returned by Worker.Run when the scheduler asked the worker to restart
// (a rolling update); the caller re-executes the worker's binary.
var ErrRestart = errors.New("restart requested by the scheduler")

// ErrRefused is returned by Worker.Run when the scheduler refuses the worker (wrong token,
// unknown pool, bad capacity).
var ErrRefused = errors.New("refused by the scheduler")

// WorkerOptions configure a worker.
type WorkerOptions struct {
	Name          string
	Pool          string
	Capacity      int
	Labels        map[string]string
	Token         string // the scheduler's worker token
	StateDir      string // source cache and work directories
	SecretsDir    string // a secret reference NAME is the file SecretsDir/NAME
	Runner        Runner
	HealthEvery   time.Duration // default 1m
	HealthCommand string        // extra health check, run with /bin/sh -c; failing pauses the worker
	PruneEvery    time.Duration // default 1h
	SourceCache   int           // source trees kept (default 64)
	Logger        *slog.Logger
	Registry      prometheus.Registerer
}

// Worker connects out to the scheduler, takes jobs for its pool and runs them.
type Worker struct {
	o   WorkerOptions
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	m   *workerMetrics

	mu        sync.Mutex
	session   string
	leaseTTL  time.Duration
	runs      map[string]*run
	done      []doneMsg // completions not yet acknowledged
	health    string
	restart   bool
	lastRenew time.Time
	wg        sync.WaitGroup
	wake      chan struct{}
	// fetches makes each source tree's fetch once however many jobs ask for it at once.
	fetches singleflight.Group
	// objects opens the object store of source trees (the fleet's, by default).
	objects func(ctx context.Context) (objectGetter, error)
}

type run struct {
	ref    JobRef
	cancel context.CancelCauseFunc
}

var (
	errCancelled = errors.New("cancelled")
	errLeaseLost = errors.New("lease lost: the scheduler could not be reached")
	errStopping  = errors.New("the worker is stopping")
)

// NewWorker makes a worker on a NATS connection.
func NewWorker(nc *nats.Conn, o WorkerOptions) (*Worker, error) {
	if !validName(o.Name) {
		return nil, fmt.Errorf("worker name %q: letters, digits, - _ . only", o.Name)
	}
	if !validName(o.Pool) {
		return nil, fmt.Errorf("pool %q: letters, digits, - _ . only", o.Pool)
	}
	if o.Capacity < 1 {
		return nil, fmt.Errorf("capacity %d: at least 1", o.Capacity)
	}
	if o.Runner == nil {
		return nil, errors.New("worker: no runner")
	}
	if o.HealthEvery <= 0 {
		o.HealthEvery = time.Minute
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = time.Hour
	}
	if o.SourceCache <= 0 {
		o.SourceCache = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(o.StateDir, "sources"), 0o755); err != nil {
		return nil, fmt.Errorf("worker state: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(o.StateDir, "work"), 0o755); err != nil {
		return nil, fmt.Errorf("worker state: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Worker{o: o, nc: nc, js: js, log: o.Logger.With("worker", o.Name), m: newWorkerMetrics(o.Registry, o.Name),
		runs: map[string]*run{}, wake: make(chan struct{}, 1)}, nil
}

// Run serves until ctx ends (running jobs are stopped), the scheduler refuses the worker
// (ErrRefused) or asks it to restart once drained (ErrRestart).
func (w *Worker) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		w.mu.Lock()
		for _, r := range w.runs {
			r.cancel(errStopping)
		}
		w.mu.Unlock()
		w.wg.Wait()
		// report the stopped runs so they are retried elsewhere without waiting for the lease
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		w.sendDone(dctx)
	}()
	sub, err := w.nc.Subscribe(subjToWorker+w.o.Name+".*", func(m *nats.Msg) { w.onMessage(ctx, m) })
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	w.checkHealth(ctx)
	if err := w.hello(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	beatEvery := max(w.leaseTTL/5, 20*time.Millisecond)
	beat := time.NewTicker(beatEvery)
	defer beat.Stop()
	health := time.NewTicker(w.o.HealthEvery)
	defer health.Stop()
	prune := time.NewTicker(w.o.PruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			if err := w.heartbeat(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		case <-w.wake:
			w.sendDone(ctx)
		case <-health.C:
			w.checkHealth(ctx)
		case <-prune.C:
			w.prune(ctx)
		}
		w.sendDone(ctx)
		w.mu.Lock()
		restart := w.restart && len(w.runs) == 0 && len(w.done) == 0
		w.mu.Unlock()
		if restart {
			w.log.Info("drained; restarting as the scheduler asked")
			return ErrRestart
		}
	}
}

func (w *Worker) running() []JobRef { return w.refs(false) }

// held is running plus the runs whose completion the scheduler has not taken yet: a new
// scheduler told of them keeps them here until the completion arrives, instead of
// running them again.
func (w *Worker) held() []JobRef { return w.refs(true) }

func (w *Worker) refs(withDone bool) []JobRef {
	w.mu.Lock()
	defer w.mu.Unlock()
	refs := make([]JobRef, 0, len(w.runs))
	for _, r := range w.runs {
		refs = append(refs, r.ref)
	}
	if withDone {
		for _, d := range w.done {
			refs = append(refs, d.JobRef)
		}
	}
	sort.Slice(refs, func(a, b int) bool { return refs[a].ID < refs[b].ID })
	return refs
}

func (w *Worker) request(ctx context.Context, subj string, v any, timeout time.Duration, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := w.nc.RequestWithContext(rctx, subj, b)
	if err != nil {
		return err
	}
	return decodeReply(m.Data, out)
}

// hello registers with the scheduler, retrying until it answers.
func (w *Worker) hello(ctx context.Context) error {
	for {
		var rep helloReply
		sent := time.Now()
		err := w.request(ctx, subjHello, helloMsg{WorkerSpec: WorkerSpec{Name: w.o.Name, Pool: w.o.Pool, Capacity: w.o.Capacity, Labels: w.o.Labels},
			Token: w.o.Token, Running: w.held()}, 5*time.Second, &rep)
		if err == nil {
			w.mu.Lock()
			w.session, w.leaseTTL, w.lastRenew = rep.Session, time.Duration(rep.LeaseTTL), sent
			w.mu.Unlock()
			w.log.Info("joined the fleet", "pool", w.o.Pool, "capacity", w.o.Capacity, "lease", w.leaseTTL)
			return nil
		}
		var re *RemoteError
		if errors.As(err, &re) {
			w.log.Error("scheduler refused the worker", "reason", re.Msg)
			return fmt.Errorf("%w: %s", ErrRefused, re.Msg)
		}
		w.log.Debug("no scheduler yet", "err", err)
		w.fence()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// fence stops every run once the leases may have expired at the scheduler, so a job
// re-queued there never runs twice at once.
func (w *Worker) fence() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leaseTTL == 0 || time.Since(w.lastRenew) < w.leaseTTL*4/5 {
		return
	}
	for _, r := range w.runs {
		r.cancel(errLeaseLost)
	}
}

func (w *Worker) heartbeat(ctx context.Context) error {
	w.mu.Lock()
	ses, health, ttl := w.session, w.health, w.leaseTTL
	w.mu.Unlock()
	sent := time.Now()
	refs := w.running()
	var rep beatReply
	err := w.request(ctx, subjBeat, beat{Name: w.o.Name, Session: ses, Running: refs, Health: health}, max(ttl/4, 100*time.Millisecond), &rep)
	if err != nil {
		w.m.beatFailures.Inc()
		w.fence()
		return nil
	}
	if rep.Unknown {
		w.log.Info("scheduler does not know this session; joining again")
		return w.hello(ctx)
	}
	keep := map[JobRef]bool{}
	for _, r := range rep.Keep {
		keep[r] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastRenew = sent
	w.restart = rep.Restart
	for _, ref := range refs {
		if r := w.runs[ref.ID]; r != nil && r.ref == ref && !keep[ref] {
			w.log.Warn("scheduler no longer assigns this run here; stopping it", "job", ref.ID, "attempt", ref.Attempt)
			r.cancel(errLeaseLost)
		}
	}
	for _, ref := range rep.Cancel {
		if r := w.runs[ref.ID]; r != nil && r.ref == ref {
			r.cancel(errCancelled)
		}
	}
	return nil
}

func (w *Worker) onMessage(ctx context.Context, m *nats.Msg) {
	switch m.Subject[len(m.Subject)-len(".cancel"):] {
	case ".cancel":
		var c cancelMsg
		if err := decodeStrict(m.Data, &c); err != nil {
			w.log.Warn("malformed cancel ignored", "err", err)
			return
		}
		w.mu.Lock()
		if r := w.runs[c.ID]; r != nil && r.ref == c.JobRef {
			w.log.Info("cancelling", "job", c.ID, "attempt", c.Attempt)
			r.cancel(errCancelled)
		}
		w.mu.Unlock()
		return
	}
	if len(m.Subject) < 4 || m.Subject[len(m.Subject)-4:] != ".job" {
		return
	}
	var j Job
	if err := json.Unmarshal(m.Data, &j); err != nil || j.Request.Validate() != nil || j.Attempt < 1 {
		w.log.Warn("malformed job ignored", "err", err)
		return
	}
	ref := JobRef{ID: j.ID, Attempt: j.Attempt}
	w.mu.Lock()
	if r := w.runs[j.ID]; r != nil {
		w.mu.Unlock()
		if r.ref != ref {
			w.log.Warn("job already running here under another attempt; ignored", "job", j.ID)
		}
		return
	}
	if len(w.runs) >= w.o.Capacity {
		w.mu.Unlock()
		w.log.Warn("job beyond capacity ignored; its lease will expire", "job", j.ID)
		return
	}
	rctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	w.runs[j.ID] = &run{ref: ref, cancel: cancel}
	w.wg.Add(1)
	w.mu.Unlock()
	w.m.running.Inc()
	go w.execute(rctx, cancel, &j)
}

// execute runs one job and queues its completion.
func (w *Worker) execute(ctx context.Context, cancel context.CancelCauseFunc, j *Job) {
	defer w.wg.Done()
	start := time.Now()
	lw := newLogWriter(w.js, j.ID, j.Attempt, w.log)
	fmt.Fprintf(lw, "--- worker %s: job %s attempt %d ---\n", w.o.Name, j.ID, j.Attempt)
	w.log.Info("job started", "job", j.ID, "attempt", j.Attempt, "client", j.Client)
	rctx := ctx
	if j.Timeout > 0 {
		var c context.CancelFunc
		rctx, c = context.WithTimeout(ctx, time.Duration(j.Timeout))
		defer c()
	}
	snap, out, err := w.runOne(rctx, j, lw)
	res := Result{Outcome: OutcomeOK, Snapshot: snap, Output: out, Worker: w.o.Name, Duration: Duration(time.Since(start))}
	switch {
	case context.Cause(ctx) != nil && ctx.Err() != nil:
		cause := context.Cause(ctx)
		res.Message = cause.Error()
		res.Outcome = OutcomeCancelled
		if !errors.Is(cause, errCancelled) {
			res.Outcome = OutcomeInfrastructure // lease lost, or the worker stops
		}
	case rctx.Err() == context.DeadlineExceeded:
		res.Outcome, res.Message, res.Final = OutcomeInfrastructure, fmt.Sprintf("timed out after %s", time.Duration(j.Timeout)), true
	case err != nil && IsInfrastructure(err):
		res.Outcome, res.Message = OutcomeInfrastructure, err.Error()
	case err != nil:
		res.Outcome, res.Message = OutcomeFailed, err.Error()
	}
	fmt.Fprintf(lw, "--- %s%s ---\n", res.Outcome, prefixed(": ", res.Message))
	lw.Close()
	cancel(nil)
	w.log.Info("job ended", "job", j.ID, "attempt", j.Attempt, "outcome", res.Outcome, "msg", res.Message)
	w.m.finished.WithLabelValues(string(res.Outcome)).Inc()
	w.m.duration.Observe(time.Since(start).Seconds())
	w.m.running.Dec()
	w.mu.Lock()
	delete(w.runs, j.ID)
	w.done = append(w.done, doneMsg{Name: w.o.Name, JobRef: JobRef{ID: j.ID, Attempt: j.Attempt}, Result: res})
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Worker) runOne(ctx context.Context, j *Job, log io.Writer) (string, json.RawMessage, error) {
	t := Task{ID: j.ID, Attempt: j.Attempt, Pool: j.Pool, Spec: j.Spec, CacheHint: j.CacheHint}
	if j.Source != "" {
		dir, err := w.source(ctx, j.Source)
		if err != nil {
			return "", nil, Infrastructure(err)
		}
		t.Context = dir
	}
	if len(j.Secrets) > 0 {
		t.Secrets = map[string][]byte{}
		for _, name := range j.Secrets {
			if w.o.SecretsDir == "" {
				return "", nil, Infrastructure(fmt.Errorf("secret %q: this worker has no secrets folder", name))
			}
			b, err := os.ReadFile(filepath.Join(w.o.SecretsDir, name))
			if err != nil {
				return "", nil, Infrastructure(fmt.Errorf("secret %q: %w", name, err))
			}
			t.Secrets[name] = b
		}
	}
	if or, ok := w.o.Runner.(OutputRunner); ok {
		return or.RunOutput(ctx, t, log)
	}
	snap, err := w.o.Runner.Run(ctx, t, log)
	return snap, nil, err
}

// sourceStall is how long a read of a source tree from the object store may go without
// receiving anything before it is abandoned and made again (up to sourceAttempts
// times): a flow-controlled object read can stall for good under load (seen with
// contexts of a few MB).
var sourceStall = 30 * time.Second

const sourceAttempts = 3

// objectGetter is the part of the object store getSource uses.
type objectGetter interface {
	Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error)
}

// getSource reads a source tree from the object store, making the read again when it
// stalls.
func getSource(ctx context.Context, store objectGetter, digest string) ([]byte, error) {
	var err error
	for range sourceAttempts {
		var data []byte
		if data, err = readSource(ctx, store, digest); err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("fetch source %s: %w", digest, err)
}

// readSource makes one read, abandoned when nothing arrives for sourceStall (the
// object's reads return empty every few seconds while they wait).
func readSource(ctx context.Context, store objectGetter, digest string) ([]byte, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := store.Get(actx, digest)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	chunk := make([]byte, 256<<10)
	last := time.Now()
	for {
		n, err := r.Read(chunk)
		buf.Write(chunk[:n])
		switch {
		case errors.Is(err, io.EOF):
			return buf.Bytes(), nil
		case err != nil:
			return nil, err
		case n > 0:
			last = time.Now()
		case time.Since(last) > sourceStall:
			return nil, fmt.Errorf("read stalled: nothing for %s after %d bytes", sourceStall, buf.Len())
		}
	}
}

// source returns the directory of a source tree, fetching it once into the cache.
func (w *Worker) source(ctx context.Context, digest string) (string, error) {
	if !validDigest(digest) {
		return "", fmt.Errorf("source %q: not a digest", digest)
	}
	dir := filepath.Join(w.o.StateDir, "sources", digest)
	if _, err := os.Stat(dir); err == nil {
		now := time.Now()
		_ = os.Chtimes(dir, now, now)
		w.m.sourceCache.WithLabelValues("hit").Inc()
		return dir, nil
	}
	w.m.sourceCache.WithLabelValues("miss").Inc()
	// Jobs starting together share one fetch: two reads of one object at once are what
	// stalled. The fetch is not the first caller's to cancel; it ends by itself (a
	// stalled read is abandoned after sourceStall).
	ch := w.fetches.DoChan(digest, func() (any, error) {
		return w.fetchSource(context.WithoutCancel(ctx), digest, dir)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return dir, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// fetchSource reads a source tree from the object store and unpacks it at dir.
func (w *Worker) fetchSource(ctx context.Context, digest, dir string) (any, error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, nil // fetched by a fetch that just ended
	}
	objects := w.objects
	if objects == nil {
		objects = func(ctx context.Context) (objectGetter, error) { return w.js.ObjectStore(ctx, bucketSources) }
	}
	store, err := objects(ctx)
	if err != nil {
		return nil, fmt.Errorf("source store: %w", err)
	}
	data, err := getSource(ctx, store, digest)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Join(w.o.StateDir, "sources"), ".fetch-")
	if err != nil {
		return nil, err
	}
	if err := unpackSource(bytes.NewReader(data), tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("source %s: %w", digest, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil {
			return nil, nil // fetched by another process sharing the state dir
		}
		return nil, err
	}
	return nil, nil
}

func (w *Worker) sendDone(ctx context.Context) {
	w.mu.Lock()
	pending := append([]doneMsg(nil), w.done...)
	ses := w.session
	w.mu.Unlock()
	for _, d := range pending {
		d.Session = ses
		var rep doneReply
		err := w.request(ctx, subjDone, d, 5*time.Second, &rep)
		var re *RemoteError
		if err != nil && !errors.As(err, &re) {
			return // try again later
		}
		if err == nil && !rep.Accepted {
			w.log.Warn("scheduler ignored a completion", "job", d.ID, "attempt", d.Attempt, "why", rep.Why)
		}
		w.mu.Lock()
		for i := range w.done {
			if w.done[i].JobRef == d.JobRef {
				w.done = append(w.done[:i], w.done[i+1:]...)
				break
			}
		}
		w.mu.Unlock()
	}
}

func (w *Worker) checkHealth(ctx context.Context) {
	var problem string
	if hc, ok := w.o.Runner.(HealthChecker); ok {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		if err := hc.Health(hctx); err != nil {
			problem = "health check failed: " + err.Error()
		}
		cancel()
	}
	if problem == "" && w.o.HealthCommand != "" {
		hctx, cancel := context.WithTimeout(ctx, time.Minute)
		if out, err := exec.CommandContext(hctx, "/bin/sh", "-c", w.o.HealthCommand).CombinedOutput(); err != nil {
			problem = fmt.Sprintf("health command failed: %v %s", err, bytes.TrimSpace(out))
		}
		cancel()
	}
	w.mu.Lock()
	changed := problem != w.health
	w.health = problem
	w.mu.Unlock()
	if changed {
		if problem != "" {
			w.log.Warn("pausing", "reason", problem)
			w.m.healthy.Set(0)
		} else {
			w.log.Info("healthy again; taking jobs")
			w.m.healthy.Set(1)
		}
	} else if problem == "" {
		w.m.healthy.Set(1)
	}
}

// prune trims the runner's store and the source cache (least recently used first).
func (w *Worker) prune(ctx context.Context) {
	if p, ok := w.o.Runner.(Pruner); ok {
		if err := p.Prune(ctx); err != nil {
			w.log.Warn("prune builder store", "err", err)
		}
	}
	dir := filepath.Join(w.o.StateDir, "sources")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type aged struct {
		name string
		t    time.Time
	}
	var all []aged
	for _, e := range ents {
		if info, err := e.Info(); err == nil && e.IsDir() && validDigest(e.Name()) {
			all = append(all, aged{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a].t.After(all[b].t) })
	for i := w.o.SourceCache; i < len(all); i++ {
		_ = os.RemoveAll(filepath.Join(dir, all[i].name))
		w.m.pruned.Inc()
	}
}

// logWriter streams a run's output to the job's log subject in chunks.
type logWriter struct {
	js      jetstream.JetStream
	id      string
	attempt int
	mu      sync.Mutex
	buf     []byte
	timer   *time.Timer
	seq     int
	log     *slog.Logger
}

func newLogWriter(js jetstream.JetStream, id string, attempt int, log *slog.Logger) *logWriter {
	return &logWriter{js: js, id: id, attempt: attempt, log: log}
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) >= 32<<10 {
		l.flushLocked()
	} else if l.timer == nil {
		l.timer = time.AfterFunc(200*time.Millisecond, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.flushLocked()
		})
	}
	return len(p), nil
}

// logStoreWait bounds how long a chunk of log is retried while JetStream cannot store it
// (a NATS node lost, a stream leader being elected).
var logStoreWait = 30 * time.Second

// flushLocked stores the buffered log and waits for JetStream's acknowledgement, sending
// again until it comes: chunks stay in order, and the message id makes a chunk that was
// stored but not acknowledged count once.
func (l *logWriter) flushLocked() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if len(l.buf) == 0 {
		return
	}
	m := nats.NewMsg(subjLog + l.id)
	m.Data = l.buf
	m.Header.Set(hdrAttempt, itoa(l.attempt))
	l.buf = nil
	l.seq++
	msgID := fmt.Sprintf("%s.%d.%d", l.id, l.attempt, l.seq)
	ctx, cancel := context.WithTimeout(context.Background(), logStoreWait)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.js.PublishMsg(pctx, m, jetstream.WithMsgID(msgID))
		pcancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			l.log.Warn("job log not stored; part of it is lost", "job", l.id, "attempt", l.attempt, "err", err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close sends what is buffered and waits until it is stored.
func (l *logWriter) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}
