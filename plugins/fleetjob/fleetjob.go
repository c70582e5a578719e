// Package fleetjob runs builds on the fleet as part of engine jobs: it submits a builder
// spec to a pool under a ticket derived from the engine's job (so a restarted engine
// attaches to the same fleet job again), follows the fleet job's log into the engine
// job's log once it runs, cancels it when the engine no longer wants it, and returns
// a typed result: a build failure carries its failing log lines, an infrastructure
// failure (a lost worker, a fleet that cannot be reached) its kind, so the engine
// retries it and a status can say it was not the commit's fault.
package fleetjob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
)

// Pool is the engine pool of jobs that wait on the fleet. The fleet does the queueing,
// with priorities and fair share, so the host gives the pool as many slots as builds
// may be in flight (see EnginePools).
const Pool = "fleet"

// EnginePools is the engine configuration (current.Config.Pools) fleet jobs need.
func EnginePools() map[string]int { return map[string]int{Pool: 1 << 20} }

// Fleet is what a fleet job needs of the build fleet (a *cluster.Client).
type Fleet interface {
	PutSource(ctx context.Context, dir string) (string, error)
	Submit(ctx context.Context, r cluster.Request) (*cluster.Job, error)
	Log(ctx context.Context, id string, offset int64, follow bool, w io.Writer) (int64, error)
	Wait(ctx context.Context, id string) (*cluster.Job, error)
	WaitStarted(ctx context.Context, id string) (*cluster.Job, error)
	Cancel(ctx context.Context, id string) error
	// Notify calls f once when job id's record meets cond (or when the fleet can no
	// longer tell): how a queued job waits without a goroutine.
	Notify(ctx context.Context, id string, cond func(*cluster.Job) bool, f func()) (cancel func(), err error)
}

// Request is one build to run on the fleet.
type Request struct {
	// Ticket names the fleet jobs of this request's engine job, with the engine job's
	// id ("ocamlci" gives tickets ocamlci-<digest>-<n>).
	Ticket string
	Pool   string // the fleet pool, e.g. linux-x86_64
	Client string // who the build is for, for the fleet's fair share
	Spec   string // the builder spec
	// SourceDir, when set, is uploaded as the build's context.
	SourceDir string
	// CacheHint names what the build shares with others (a dependency layer), so the
	// fleet prefers a worker that built it recently.
	CacheHint string
	// Urgent builds go in the fleet's urgent lane (someone waits for them); others in
	// the background lane.
	Urgent bool
	// Timeout bounds the build on the worker (default 1 hour).
	Timeout time.Duration
}

// Result is a successful fleet job.
type Result struct {
	JobID    string    `json:"job_id"`
	Snapshot string    `json:"snapshot,omitempty"` // the builder's snapshot of the last step
	Worker   string    `json:"worker,omitempty"`
	Attempts int       `json:"attempts"`
	Queued   time.Time `json:"queued"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished"`
	// Output is the runner's typed result (cluster.Result.Output), of failed builds too.
	Output json.RawMessage `json:"output,omitempty"`
}

// Run runs req on the fleet for engine job j, writing the build's log to j. A failed
// build returns an error carrying its failing lines (current.LinesOf), with a Result
// naming the fleet job and its worker; a failure of the infrastructure one of kind
// current.FailWorkerLost, FailNetwork or FailCancelled.
func Run(ctx context.Context, fleet Fleet, j *current.Job, req Request) (Result, error) {
	if err := ctx.Err(); err != nil {
		// Woken because the job ended while its fleet job was queued: the wait set up
		// by awaitStart cancels that, and there is nothing to upload or submit.
		return Result{}, err
	}
	var src string
	if req.SourceDir != "" {
		var err error
		if src, err = fleet.PutSource(ctx, req.SourceDir); err != nil {
			return Result{}, current.Infra(current.FailNetwork, fmt.Errorf("upload source: %w", err))
		}
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	creq := cluster.Request{
		Pool: req.Pool, Client: req.Client, Spec: req.Spec, Source: src,
		CacheHint: req.CacheHint, Urgent: req.Urgent, Timeout: cluster.Duration(timeout),
	}
	job, err := submit(ctx, fleet, j, req.Ticket, creq)
	if err != nil {
		return Result{}, err
	}
	if job.State == cluster.StateQueued {
		if err := awaitStart(ctx, fleet, job.ID, req.Pool); err != nil {
			return Result{}, err
		}
	}
	// A queued job has no log yet: follow it once it runs.
	tail := &tailWriter{max: 1000}
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		if _, err := fleet.WaitStarted(logCtx, job.ID); err != nil {
			return
		}
		fleet.Log(logCtx, job.ID, 0, true, io.MultiWriter(j, tail))
	}()
	finished, err := wait(ctx, fleet, job.ID)
	if err != nil {
		stopLog()
		<-logDone
		if ctx.Err() != nil && current.Cancelled(ctx) {
			// No longer wanted: stop the fleet job too. When the engine is stopping, the
			// fleet job stays queued and the job attaches to it again after a restart.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			fleet.Cancel(cctx, job.ID)
			cancel()
		}
		return Result{}, err
	}
	// Let the log reach its end before judging the result.
	select {
	case <-logDone:
	case <-time.After(5 * time.Second):
		stopLog()
		<-logDone
	}
	r := finished.Result
	if r == nil {
		return Result{}, current.Infra(current.FailWorkerLost, fmt.Errorf("fleet job %s finished without a result", job.ID))
	}
	if r.Attempts > 1 {
		j.Logf("ran %d times: worker lost, retried", r.Attempts)
	}
	switch r.Outcome {
	case cluster.OutcomeOK:
		res := Result{JobID: job.ID, Snapshot: r.Snapshot, Worker: r.Worker, Attempts: r.Attempts,
			Queued: finished.Submitted, Started: finished.Started, Finished: time.Now(), Output: r.Output}
		return res, nil
	case cluster.OutcomeFailed:
		// The fleet job is named, so that its log can be read again.
		return Result{JobID: job.ID, Worker: r.Worker, Attempts: r.Attempts, Output: r.Output}, current.WithLines(errors.New(r.Message), FailingLines(tail.lines()))
	case cluster.OutcomeCancelled:
		return Result{}, current.Infra(current.FailCancelled, fmt.Errorf("cancelled on the fleet: %s", r.Message))
	default:
		return Result{}, current.Infra(current.FailWorkerLost, errors.New(r.Message))
	}
}

// awaitStart returns a current.Await that resumes the engine job once fleet job id
// leaves the queue, so a queued build costs a record, not a goroutine. The engine job
// that is cancelled meanwhile cancels the fleet job. It returns nil when the fleet
// cannot notify; the job then waits in Run.
func awaitStart(ctx context.Context, fleet Fleet, id, pool string) error {
	w := &wakeup{}
	stop, err := fleet.Notify(ctx, id, func(cj *cluster.Job) bool { return cj.State != cluster.StateQueued }, w.fire)
	if err != nil {
		return nil
	}
	reason := fmt.Sprintf("queued in fleet pool %s as job %s", pool, id)
	if why := queuedWhy(ctx, fleet, pool, id); why != "" {
		reason += ": " + why
	}
	return current.Await(reason, func(jctx context.Context, resume func()) {
		w.arm(resume)
		context.AfterFunc(jctx, func() {
			stop()
			if current.Cancelled(jctx) {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(jctx), 10*time.Second)
				fleet.Cancel(cctx, id)
				cancel()
			}
		})
	})
}

// queuedWhy says where a queued fleet job stands and why it waits, when the fleet can
// tell ("" otherwise).
func queuedWhy(ctx context.Context, fleet Fleet, pool, id string) string {
	q, ok := fleet.(interface {
		Queue(ctx context.Context, pool string, limit int) (*cluster.QueueInfo, error)
	})
	if !ok {
		return ""
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := q.Queue(qctx, pool, 1000)
	if err != nil {
		return ""
	}
	for _, e := range info.Queued {
		if e.ID == id {
			return fmt.Sprintf("position %d of %d, %s", e.Position, info.Total, e.Why)
		}
	}
	return ""
}

// wakeup passes a notification that may come before the engine hands over the function
// that resumes the job.
type wakeup struct {
	mu     sync.Mutex
	fired  bool
	resume func()
}

func (w *wakeup) fire() {
	w.mu.Lock()
	w.fired = true
	r := w.resume
	w.mu.Unlock()
	if r != nil {
		r()
	}
}

func (w *wakeup) arm(resume func()) {
	w.mu.Lock()
	w.resume = resume
	fired := w.fired
	w.mu.Unlock()
	if fired {
		resume()
	}
}

// submit hands the build to the fleet under a ticket derived from the engine's job, so
// that the job attaches to its fleet job again after a restart of the engine. A ticket
// whose fleet job already ended with an infrastructure failure (an earlier attempt of
// this job) is passed over for the next.
func submit(ctx context.Context, fleet Fleet, j *current.Job, ticket string, req cluster.Request) (*cluster.Job, error) {
	if ticket == "" {
		ticket = "kiln"
	}
	base := ticket + "-" + ticketDigest(req.Pool, j.ID())
	for n := 0; n < 8; n++ {
		req.ID = fmt.Sprintf("%s-%d", base, n)
		job, err := fleet.Submit(ctx, req)
		if err != nil {
			return nil, current.Infra(current.FailNetwork, fmt.Errorf("submit to pool %s: %w", req.Pool, err))
		}
		if job.State == cluster.StateDone && job.Result != nil && job.Result.Outcome == cluster.OutcomeInfrastructure {
			continue
		}
		lane := map[bool]string{true: "urgent", false: "background"}[req.Urgent]
		switch {
		case j.Awoken() && job.State == cluster.StateRunning:
			j.Logf("fleet job %s runs on worker %s", job.ID, job.Worker)
		case j.Awoken():
		case job.Submitted.Before(time.Now().Add(-time.Minute)):
			j.Logf("attached again to fleet job %s in pool %s", job.ID, req.Pool)
		default:
			j.Logf("submitted to pool %s as fleet job %s (%s lane)", req.Pool, job.ID, lane)
		}
		return job, nil
	}
	return nil, current.Infra(current.FailWorkerLost, fmt.Errorf("pool %s: every attempt failed on the infrastructure", req.Pool))
}

// ticketDigest names the fleet jobs of an engine job in a pool.
func ticketDigest(pool, engineJob string) string {
	h := sha256.Sum256([]byte(pool + " " + engineJob))
	return hex.EncodeToString(h[:8])
}

// wait waits for a fleet job to end, riding out a few failures of the connection
// rather than submitting the job again.
func wait(ctx context.Context, fleet Fleet, id string) (*cluster.Job, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var job *cluster.Job
		if job, err = fleet.Wait(ctx, id); err == nil {
			return job, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	return nil, current.Infra(current.FailNetwork, fmt.Errorf("wait for fleet job %s: %w", id, err))
}
