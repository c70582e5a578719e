package current

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

var (
	errSuperseded  = errors.New("cancelled: superseded by a newer input")
	errNotNeeded   = errors.New("cancelled: no longer needed by any pipeline")
	errByOperator  = errors.New("cancelled by an operator")
	errEngineStops = errors.New("interrupted: the engine is stopping")
	errJobOver     = errors.New("the job is over")
)

// Cancelled reports whether a job's context ended because its result is no longer
// wanted (superseded, not needed by any pipeline, or cancelled by an operator), rather
// than because the engine is stopping. Work a job started elsewhere (a fleet job) should
// be cancelled in the first case and left to be resumed in the second.
func Cancelled(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return errors.Is(cause, errNotNeeded) || errors.Is(cause, errSuperseded) || errors.Is(cause, errByOperator)
}

// Job is the handle an operation's Run function gets: its identity and its log.
type Job struct{ r *runningJob }

// ID is the job's identifier.
func (j *Job) ID() string { return j.r.id }

// Awoken reports whether Run runs again after it returned Await (the wait is over, or
// the job's context ended).
func (j *Job) Awoken() bool { return j.r.awoken }

// Build is the job's build number for its key (1 for the first).
func (j *Job) Build() int { return j.r.row.Build }

// Write appends p to the job's log.
func (j *Job) Write(p []byte) (int, error) { return j.r.log.Write(p) }

// Logf appends a formatted line to the job's log.
func (j *Job) Logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if len(s) == 0 || s[len(s)-1] != '\n' {
		s += "\n"
	}
	j.r.log.Write([]byte(s))
}

// Command is a host command whose output goes to the job's log and which runs in its
// own process group, so cancelling ctx kills it and everything it started.
func (j *Job) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := Command(ctx, name, args...)
	c.Stdout, c.Stderr = j, j
	return c
}

// runningJob is a job of this process that has not finished.
type runningJob struct {
	e      *Engine
	ent    *entry
	def    *opDef
	id     string
	row    jobRow
	input  any
	idig   string
	resume bool
	// awoken is set while Run runs again after an Await.
	awoken bool
	log    *liveLog
	ctx    context.Context
	stop   context.CancelCauseFunc
	kick   chan struct{}

	// Guarded by e.jmu.
	state     ActiveState
	confirmed bool
	startNow  bool
	pool      *pool
	waiter    *waiter
	retryAt   time.Time
	// recordErr is why the job's result could not be stored yet (see record).
	recordErr string
	// A parked job (see Await) waits without a goroutine until unparked.
	parked     bool
	parkReason string
	unpark     func() bool
}

func (e *Engine) newJob(ent *entry, row *jobRow, resume bool) *runningJob {
	j := &runningJob{
		e: e, ent: ent, def: ent.def, id: strconv.FormatInt(row.ID, 10), row: *row,
		input: ent.input, idig: ent.idig, resume: resume, kick: make(chan struct{}, 1),
	}
	if j.input != nil {
		// The store keeps the key and the encoded input; the job runs on the value.
		j.row.Key, j.row.Input = "", nil
	}
	j.ctx, j.stop = context.WithCancelCause(e.runContext())
	lg, err := openLiveLog(e.logs, row.ID)
	if err != nil {
		lg = discardLog()
		e.log.Error("open job log", "job", j.id, "err", err)
	}
	j.log = lg
	e.jmu.Lock()
	e.jobs[j.id] = j
	e.jmu.Unlock()
	return j
}

func (e *Engine) runContext() context.Context {
	if e.runCtx != nil {
		return e.runCtx
	}
	return e.bgCtx
}

func (j *runningJob) cancel(cause error) { j.stop(cause) }

func (j *runningJob) activeState() ActiveState {
	j.e.jmu.Lock()
	defer j.e.jmu.Unlock()
	return j.state
}

func (j *runningJob) setState(s ActiveState) {
	j.e.jmu.Lock()
	j.state = s
	j.e.jmu.Unlock()
	ent := j.ent
	j.e.post(func() { ent.touch() })
}

// reason says what the job is doing or waiting for.
func (j *runningJob) reason() string {
	e := j.e
	e.jmu.Lock()
	state, p, w, retry, parked, rec := j.state, j.pool, j.waiter, j.retryAt, j.parkReason, j.recordErr
	level := e.confirmLevel
	e.jmu.Unlock()
	switch {
	case rec != "":
		return fmt.Sprintf("recording the result failed (%s); trying again at %s", rec, retry.Format(time.RFC3339))
	case parked != "":
		return parked
	case state == ActiveWaitingForConfirmation:
		return fmt.Sprintf("waiting for confirmation: level %s is above the confirm level %s", j.def.level, level)
	case state == ActiveRunning:
		return "running"
	case !retry.IsZero():
		return fmt.Sprintf("retrying after an infrastructure failure at %s", retry.Format(time.RFC3339))
	case p != nil && w != nil:
		if s := p.describe(w); s != "" {
			return s
		}
	}
	return "ready"
}

// logPath is job id's log file, "" when logs are kept in the database.
func (e *Engine) logPath(id int64) string {
	if e.logs.shared() {
		return ""
	}
	return e.logs.where(id)
}

func (j *runningJob) waitConfirm() error {
	e := j.e
	for {
		e.jmu.Lock()
		if j.confirmed || j.def.level <= e.confirmLevel {
			j.state = ActiveReady
			e.jmu.Unlock()
			return nil
		}
		first := j.state != ActiveWaitingForConfirmation
		j.state = ActiveWaitingForConfirmation
		ch := e.levelChanged
		e.jmu.Unlock()
		if first {
			j.setState(ActiveWaitingForConfirmation)
			fmt.Fprintf(j.log, "--- kiln: waiting for confirmation (level %s) ---\n", j.def.level)
		}
		select {
		case <-ch:
		case <-j.kick:
		case <-j.ctx.Done():
			return context.Cause(j.ctx)
		}
	}
}

func (j *runningJob) acquire() error {
	e := j.e
	p := e.pool(j.def.pool)
	w := &waiter{lane: j.row.Lane}
	if w.lane == "" {
		w.lane = LaneUrgent
	}
	e.jmu.Lock()
	j.pool, j.waiter = p, w
	now := j.startNow
	e.jmu.Unlock()
	if now {
		p.mu.Lock()
		p.used++
		w.granted = true
		p.mu.Unlock()
		return nil
	}
	return p.acquire(j.ctx, w)
}

func (j *runningJob) releaseSlot() {
	e := j.e
	e.jmu.Lock()
	p, w := j.pool, j.waiter
	j.pool, j.waiter = nil, nil
	e.jmu.Unlock()
	if p != nil {
		p.release(w)
	}
}

func (j *runningJob) execute() (out any, err error) {
	ctx := j.ctx
	if j.def.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, j.def.timeout, Infra(FailTimeout, fmt.Errorf("timed out after %s", j.def.timeout)))
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	out, err = j.def.run(ctx, &Job{j}, j.input)
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil && j.ctx.Err() == nil {
			err = cause
		}
	}
	return out, err
}

func (e *Engine) runJob(j *runningJob) {
	parked := false
	defer func() {
		if !parked {
			// Release the job's context (and whatever waits on it) now that it is over.
			j.stop(errJobOver)
			e.jobWG.Done()
		}
	}()
	e.jmu.Lock()
	rr := j.row
	e.jmu.Unlock()
	r := &rr
	lg := j.log
	var err error
	if !j.awoken {
		if j.resume {
			fmt.Fprintf(lg, "--- kiln: the process running this job stopped; running it again ---\n")
		}
		fmt.Fprintf(lg, "--- kiln: job %s: %s %s (build %d, %s lane) ---\n", j.id, r.Op, r.Label, r.Build, r.Lane)
		if j.input == nil && r.Input != nil {
			j.input, err = j.def.decodeIn(r.Input)
		}
	}
	var out any
	var kind FailureKind
	if err == nil {
		for {
			if err = j.waitConfirm(); err != nil {
				break
			}
			if err = j.acquire(); err != nil {
				break
			}
			// A job awoken from an Await goes on with the attempt it was in.
			if !j.awoken {
				r.Attempts++
				now := time.Now()
				r.RunningAt = now.UnixNano()
				e.jmu.Lock()
				j.retryAt = time.Time{}
				j.row.Attempts, j.row.RunningAt = r.Attempts, r.RunningAt
				e.jmu.Unlock()
				if err := e.db.setRunning(r.ID, now.UnixNano(), r.Attempts); err != nil {
					e.log.Error("record running job", "job", j.id, "err", err)
				}
			}
			j.setState(ActiveRunning)
			e.metrics.running.Inc()
			out, err = j.execute()
			e.metrics.running.Dec()
			j.awoken = false
			j.releaseSlot()
			if err == nil {
				break
			}
			var aw *AwaitError
			if errors.As(err, &aw) && j.ctx.Err() == nil {
				parked = true
				j.park(aw)
				return
			}
			kind = j.classify(err)
			if !kind.retryable() || kind == FailInterrupted || j.def.noRetry || r.Attempts > e.cfg.MaxRetries {
				break
			}
			delay := e.retryDelay(r.Attempts)
			fmt.Fprintf(lg, "--- kiln: infrastructure failure (%s): %v; retry %d of %d in %s ---\n", kind, err, r.Attempts, e.cfg.MaxRetries, delay)
			e.metrics.retries.WithLabelValues(r.Op, string(kind)).Inc()
			e.jmu.Lock()
			j.retryAt = time.Now().Add(delay)
			e.jmu.Unlock()
			j.setState(ActiveReady)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-j.kick: // start now
				t.Stop()
			case <-j.ctx.Done():
				t.Stop()
			}
			if j.ctx.Err() != nil {
				err = context.Cause(j.ctx)
				break
			}
		}
	}
	j.releaseSlot()
	if err != nil {
		kind = j.classify(err)
	}
	if kind == FailInterrupted {
		fmt.Fprintf(lg, "--- kiln: interrupted (%v); the job runs again when next wanted ---\n", err)
		lg.finish()
		if err := e.db.setState(r.ID, "interrupted"); err != nil {
			e.log.Error("record interrupted job", "job", j.id, "err", err)
		}
		e.jmu.Lock()
		delete(e.jobs, j.id)
		e.jmu.Unlock()
		row := *r
		row.State = "interrupted"
		ent := j.ent
		e.post(func() { ent.finished(j, &row) })
		return
	}
	now := time.Now()
	r.FinishedAt = now.UnixNano()
	if err == nil {
		b, merr := json.Marshal(out)
		if merr != nil {
			err, kind = fmt.Errorf("encode result: %w", merr), FailWork
		} else {
			r.State, r.Output, r.Message, r.FailureKind, r.FailingLines = "ok", b, "", "", nil
		}
	}
	if err != nil {
		r.State, r.Output, r.FailureKind = "failed", nil, kind
		r.Message, r.FailingLines = err.Error(), LinesOf(err)
		if kind == FailCancelled && j.ctx.Err() != nil {
			r.Message = context.Cause(j.ctx).Error()
		}
		if kind == FailWork {
			if expl := e.explain(r.ID); expl != "" {
				r.Message = expl
			}
		}
		r.Rebuild = errors.Is(context.Cause(j.ctx), errNotNeeded) || errors.Is(context.Cause(j.ctx), errSuperseded)
	}
	r.ExpiresAt = expiry(now, j.def.validFor, j.def.jitter)
	if r.State == "ok" {
		fmt.Fprintf(lg, "--- kiln: job succeeded in %s ---\n", now.Sub(time.Unix(0, r.RunningAt)).Round(time.Millisecond))
	} else {
		fmt.Fprintf(lg, "--- kiln: job failed (%s): %s ---\n", r.FailureKind, r.Message)
	}
	r.LogSize = lg.finish()
	j.record(r)
	e.metrics.jobsFinished.WithLabelValues(r.Op, r.State, string(r.FailureKind)).Inc()
	e.jmu.Lock()
	delete(e.jobs, j.id)
	e.jmu.Unlock()
	final := *r
	ent := j.ent
	e.post(func() { ent.finished(j, &final) })
}

// retryDelay is the backoff before retry n (from 1): RetryBackoff, doubling, at most a minute.
func (e *Engine) retryDelay(n int) time.Duration {
	d := e.cfg.RetryBackoff << min(n-1, 30)
	if d > time.Minute || d <= 0 {
		d = time.Minute
	}
	return d
}

// record stores the job's final row, trying again with backoff while the store cannot
// be written (a full disk), so that no row stays running once space returns. When the
// engine stops first, the row stays unfinished and the next start runs the job again.
func (j *runningJob) record(r *jobRow) {
	e := j.e
	for n := 1; ; n++ {
		err := e.db.finish(r)
		if err == nil {
			break
		}
		delay := e.retryDelay(n)
		e.log.Error("record job result; trying again", "job", j.id, "kind", KindOf(err), "in", delay, "err", err)
		e.jmu.Lock()
		j.recordErr, j.retryAt = err.Error(), time.Now().Add(delay)
		e.jmu.Unlock()
		if n == 1 {
			j.setState(ActiveReady) // the work is over; only its record waits
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
			continue
		case <-e.runContext().Done():
		case <-e.bgCtx.Done():
		}
		t.Stop()
		e.log.Warn("engine stopping before the job's result could be recorded; it runs again at the next start", "job", j.id)
		break
	}
	e.jmu.Lock()
	j.recordErr, j.retryAt = "", time.Time{}
	e.jmu.Unlock()
}

// classify gives the failure kind of err, taking the job's cancellation cause into account.
func (j *runningJob) classify(err error) FailureKind {
	if j.ctx.Err() != nil {
		if j.e.stopping() {
			return FailInterrupted
		}
		cause := context.Cause(j.ctx)
		if errors.Is(cause, errNotNeeded) || errors.Is(cause, errSuperseded) || errors.Is(cause, errByOperator) {
			return FailCancelled
		}
	}
	return KindOf(err)
}

func (e *Engine) stopping() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runCtx != nil && e.runCtx.Err() != nil
}

// liveLog is a job's append-only log, followed by any number of readers. The latest
// part of the log is also kept in memory, so followers keeping up with a live log read
// it without touching the store.
type liveLog struct {
	store logStore // nil: discarded
	id    int64
	mu    sync.RWMutex
	f     io.WriteCloser
	size  int64
	done  bool
	ch    chan struct{}
	tail  []byte // the bytes from size-len(tail) to size
}

// tailMax bounds the in-memory tail of a live log.
const tailMax = 256 << 10

func openLiveLog(store logStore, id int64) (*liveLog, error) {
	f, size, err := store.appender(id)
	if err != nil {
		return nil, err
	}
	return &liveLog{store: store, id: id, f: f, size: size, ch: make(chan struct{})}, nil
}

func discardLog() *liveLog { return &liveLog{ch: make(chan struct{})} }

func (l *liveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return 0, errors.New("job log is closed")
	}
	if l.f == nil && l.store != nil {
		f, _, err := l.store.appender(l.id)
		if err != nil {
			return 0, fmt.Errorf("reopen job log: %w", err)
		}
		l.f = f
	}
	n := len(p)
	var err error
	if l.f != nil {
		n, err = l.f.Write(p)
	}
	l.size += int64(n)
	if len(l.tail)+n > tailMax {
		keep := max(0, tailMax/2-n)
		keep = min(keep, len(l.tail))
		l.tail = append(make([]byte, 0, tailMax), l.tail[len(l.tail)-keep:]...)
	}
	if n <= tailMax/2 {
		l.tail = append(l.tail, p[:n]...)
	} else {
		l.tail = l.tail[:0]
	}
	close(l.ch)
	l.ch = make(chan struct{})
	return n, err
}

// suspend closes the log's file (if any) and drops its in-memory tail while the job is put aside
// (see Await): a parked job holds no file descriptor. The next Write opens it again.
func (l *liveLog) suspend() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || l.store == nil || l.f == nil {
		return
	}
	l.f.Close()
	l.f, l.tail = nil, nil
}

func (l *liveLog) finish() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.done = true
		if l.f != nil {
			l.f.Close()
		}
		close(l.ch)
		l.tail = nil
	}
	return l.size
}

func (l *liveLog) state() (int64, bool, <-chan struct{}) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size, l.done, l.ch
}

// readTail copies bytes from offset into p if they are still in memory.
func (l *liveLog) readTail(p []byte, offset int64) (int, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	start := l.size - int64(len(l.tail))
	if l.done || offset < start || offset >= l.size {
		return 0, false
	}
	return copy(p, l.tail[offset-start:]), true
}

// logFollower reads a log from an offset, waiting for more while the job runs.
type logFollower struct {
	ctx   context.Context
	f     logReader
	where string
	live  *liveLog
	// poll, for a job running in another engine sharing the store, reads the log's
	// stored size and whether the job has finished.
	poll   func() (int64, bool, error)
	size   int64
	offset int64
}

// pollEvery is how often a follower of a job running in another engine looks for more.
const pollEvery = 250 * time.Millisecond

func (r *logFollower) Read(p []byte) (int, error) {
	for {
		size, done := r.size, true
		var ch <-chan struct{}
		if r.live != nil {
			if n, ok := r.live.readTail(p, r.offset); ok {
				r.offset += int64(n)
				return n, nil
			}
			size, done, ch = r.live.state()
		}
		if r.poll != nil {
			var err error
			if size, done, err = r.poll(); err != nil {
				return 0, err
			}
			r.size = size
		}
		if r.offset < size {
			if int64(len(p)) > size-r.offset {
				p = p[:size-r.offset]
			}
			n, err := r.f.ReadAt(p, r.offset)
			r.offset += int64(n)
			if n > 0 {
				return n, nil
			}
			if err != nil && err != io.EOF {
				return 0, fmt.Errorf("read log %s: %w", r.where, err)
			}
			return 0, fmt.Errorf("log %s is shorter than recorded (%d < %d bytes): truncated", r.where, r.offset, size)
		}
		if done {
			return 0, io.EOF
		}
		if ch == nil {
			t := time.NewTimer(pollEvery)
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
				return 0, r.ctx.Err()
			}
			continue
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *logFollower) Close() error { return r.f.Close() }
