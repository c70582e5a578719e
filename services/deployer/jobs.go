package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
)

// The engine operations of the deployer's steps.
const (
	OpBuild     = "deployer-build"      // a commit built for deployability
	OpBuildArch = "deployer-build-arch" // a spec built for one architecture, on its pool
	OpPush      = "deployer-push"       // a release's image pushed to the registry
	OpDeploy    = "deployer-deploy"     // a digest deployed to a stage and health-checked
	OpRollback  = "deployer-rollback"   // an admin's rollback to an earlier digest
	OpHealth    = "deployer-health"     // a periodic health check of a live stage
	OpPromote   = "deployer-promote"    // a promotion waiting for the engine's confirmation
)

// Step is one step of the deployer run as an engine job.
type Step struct {
	Op      string `json:"op"`
	Service string `json:"service"`
	Label   string `json:"label"`
	// Seq makes every step a job of its own; it starts at the process's start time,
	// so a step of an earlier run is never mistaken for a new one.
	Seq int64 `json:"seq"`
}

// stepRun is a step waiting for its engine job, and then its outcome.
type stepRun struct {
	ctx  context.Context
	fn   func(ctx context.Context, log io.Writer) error
	done chan struct{}

	mu      sync.Mutex
	running bool // fn runs now
	over    bool // done is closed
	job     string
	err     error
}

// finish ends the step with err, unless it ended already, and reports whether it did.
func (r *stepRun) finish(job string, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.over {
		return false
	}
	r.over, r.job, r.err = true, job, err
	close(r.done)
	return true
}

// steps hands the deployer's steps to the engine: while the engine runs the deployer's
// pipeline, each step is an item of a variable the pipeline maps to a job, and the
// caller waits for that job to have run it.
type steps struct {
	v       *current.Var[[]Step]
	mu      sync.Mutex
	on      bool
	seq     int64
	list    []Step
	waiting map[int64]*stepRun
}

func newSteps() *steps {
	return &steps{v: current.NewVar[[]Step]("deployer-steps", nil), seq: time.Now().UnixNano(), waiting: map[int64]*stepRun{}}
}

type jobKey struct{}

// jobLog is the engine job an operation runs in.
type jobLog struct {
	id string
	w  io.Writer
}

// withJob gives ctx the engine job an operation runs in.
func withJob(ctx context.Context, id string, w io.Writer) context.Context {
	return context.WithValue(ctx, jobKey{}, &jobLog{id: id, w: w})
}

// jobOf is the engine job ctx runs in, or nil.
func jobOf(ctx context.Context) *jobLog {
	j, _ := ctx.Value(jobKey{}).(*jobLog)
	return j
}

// jobLogf writes a line to the log of the engine job ctx runs in, if any.
func jobLogf(ctx context.Context, format string, args ...any) {
	if j := jobOf(ctx); j != nil {
		fmt.Fprintf(j.w, format+"\n", args...)
	}
}

// inJob runs fn as the engine job of a step and returns the job's id with fn's error.
// Without an engine running the pipeline, or within another job of the deployer (a
// promotion's deploy), fn runs at once, in the caller's job if any.
func (d *Deployer) inJob(ctx context.Context, op, service, label string, fn func(ctx context.Context, log io.Writer) error) (string, error) {
	return d.runInJob(ctx, op, service, label, false, fn)
}

// runInJob is inJob; with own, fn gets a job of its own even within another job (a
// fleet build needs the engine job it runs in).
func (d *Deployer) runInJob(ctx context.Context, op, service, label string, own bool, fn func(ctx context.Context, log io.Writer) error) (string, error) {
	st := d.steps
	st.mu.Lock()
	if j := jobOf(ctx); j != nil && !own || !st.on {
		st.mu.Unlock()
		if j != nil {
			fmt.Fprintf(j.w, "--- %s ---\n", label)
			return j.id, fn(ctx, j.w)
		}
		return "", fn(ctx, io.Discard)
	}
	st.seq++
	s := Step{Op: op, Service: service, Label: label, Seq: st.seq}
	r := &stepRun{ctx: ctx, fn: fn, done: make(chan struct{})}
	st.waiting[s.Seq] = r
	st.list = append(st.list, s)
	st.v.Set(slices.Clone(st.list))
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.waiting, s.Seq)
		st.list = slices.DeleteFunc(st.list, func(x Step) bool { return x.Seq == s.Seq })
		st.v.Set(slices.Clone(st.list))
		st.mu.Unlock()
	}()
	select {
	case <-r.done:
		return r.job, r.err
	case <-ctx.Done():
	}
	// Not running: it never will be. Running: fn sees ctx end; wait for it.
	r.mu.Lock()
	if !r.running && !r.over {
		r.over, r.err = true, ctx.Err()
		close(r.done)
	}
	r.mu.Unlock()
	<-r.done
	return r.job, r.err
}

// runStep is the body of a step's engine job: it runs the waiting caller's function
// with the job's log. The job's failure says whose fault it was (jobError).
func (d *Deployer) runStep(ctx context.Context, j *current.Job, s Step) (string, error) {
	st := d.steps
	st.mu.Lock()
	r := st.waiting[s.Seq]
	st.mu.Unlock()
	if r == nil {
		return "", errors.New("nothing waits for this step any more: a new commit, a promotion or a rollback deploys again")
	}
	r.mu.Lock()
	if r.over || r.running {
		r.mu.Unlock()
		return "", errors.New("this step already ran or was given up")
	}
	r.running = true
	r.mu.Unlock()
	err := d.runFn(ctx, j, r)
	var aw *current.AwaitError
	if errors.As(err, &aw) {
		// The job is put aside (a fleet build waits in the queue); the engine runs it
		// again, and fn goes on, when it is resumed.
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
		return "", err
	}
	if err != nil {
		j.Logf("failed: %v", err)
	}
	r.finish(j.ID(), err)
	if err != nil {
		return "", jobError(err)
	}
	return "done", nil
}

// runFn runs a step's function in job j, cancelled when the caller gives up.
func (d *Deployer) runFn(ctx context.Context, j *current.Job, r *stepRun) error {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.ctx, cancel)
	defer func() { stop(); cancel() }()
	return r.fn(withJob(ctx, j.ID(), j), j)
}

// jobError gives an engine job's error the kind of an infrastructure failure, so the
// console shows whose fault it was. The deployer retries those itself (Op.NoRetry).
func jobError(err error) error {
	if kind := infrastructure(err); kind != "" {
		return current.Infra(current.FailureKind(kind), err)
	}
	return err
}

// stepsPipeline maps the waiting steps of each operation to its jobs.
func (d *Deployer) stepsPipeline() current.Term[current.Unit] {
	var terms []current.AnyTerm
	for _, name := range []string{OpBuild, OpBuildArch, OpPush, OpDeploy, OpRollback, OpHealth} {
		pool := "deployer"
		if name == OpBuildArch {
			pool = "deployer-arch" // a build job waits for these: they must not wait for its slot
		}
		op := &current.Op[Step, string]{
			Name:    name,
			Pool:    pool,
			NoRetry: true,
			Key:     func(s Step) string { return fmt.Sprintf("%s %d", s.Service, s.Seq) },
			Label:   func(s Step) string { return s.Label },
			Run:     d.runStep,
		}
		mine := current.Map(d.steps.v.Term(), func(all []Step) []Step {
			return slices.DeleteFunc(slices.Clone(all), func(s Step) bool { return s.Op != name })
		})
		terms = append(terms, current.ListIter(mine, func(s Step) string { return fmt.Sprint(s.Seq) },
			func(s current.Term[Step]) current.Term[current.Unit] {
				return current.Map(current.Do(op, s), func(string) current.Unit { return current.Unit{} })
			}))
	}
	return current.All(terms...)
}
