package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// FleetRunner runs benchmark jobs on a fleet pool of benchmark slots (workers started
// with kiln worker --bench-cpus): the sandbox's spec, as a fleet job of the engine job.
type FleetRunner struct {
	Fleet fleetjob.Fleet
	Image string
	// Deps, when set, installs the opam dependencies first, as Sandbox.Deps.
	Deps *Deps
}

// RunJob runs job on pool for engine job j. The worker's log is followed into j;
// once the fleet job has ended its log is read again and parsed, also when it failed:
// the results printed before the failure are kept.
func (f FleetRunner) RunJob(ctx context.Context, j *current.Job, pool string, urgent bool, job Job) Outcome {
	return f.run(ctx, j, pool, urgent, "bench", job)
}

// run runs job as the fleet job of j named by ticket.
func (f FleetRunner) run(ctx context.Context, j *current.Job, pool string, urgent bool, ticket string, job Job) Outcome {
	if job.Repeats <= 0 {
		job.Repeats = 1
	}
	if job.Timeout <= 0 {
		job.Timeout = defaultTimeout
	}
	demux := newArmDemux(job, store.Machine{CountersNote: notCountedInSandbox})
	dir, sp, err := Sandbox{Image: f.Image, Deps: f.Deps}.prepare(ctx, job, j)
	if err != nil {
		return demux.outcome(err)
	}
	defer os.RemoveAll(dir)
	res, err := fleetjob.Run(ctx, f.Fleet, j, fleetjob.Request{Ticket: ticket, Pool: pool, Client: "bench", Spec: sp.String(),
		SourceDir: dir, Urgent: urgent, Timeout: job.total()})
	if err != nil {
		err = fmt.Errorf("benchmark on the fleet pool %s: %w", pool, err)
	}
	if res.JobID != "" {
		if _, lerr := f.Fleet.Log(ctx, res.JobID, 0, false, io.Writer(demux)); lerr != nil && err == nil {
			err = fmt.Errorf("read the log of fleet job %s: %w", res.JobID, lerr)
		}
	}
	o := demux.outcome(err)
	o.Machine.Worker = res.Worker
	if res.Attempts > 1 {
		o.logTail = 1 // fleetjob's line saying the job was retried
	}
	return o
}

// fleetProbes runs the probes of a hunt on a fleet pool from within engine job j, each
// a fleet job of its own (bench-probe1, bench-probe2, …), waited for in place: the
// job's own run is recorded already, so the job is not put aside while a probe queues.
type fleetProbes struct {
	f    FleetRunner
	j    *current.Job
	pool string
	n    int
}

// Run runs one probe.
func (p *fleetProbes) Run(ctx context.Context, job Job, _ io.Writer) Outcome {
	p.n++
	f := p.f
	f.Fleet = waitInPlace{f.Fleet}
	return f.run(ctx, p.j, p.pool, false, fmt.Sprintf("bench-probe%d", p.n), job)
}

// waitInPlace is a fleet that cannot notify, so that fleetjob.Run waits for a queued
// job instead of putting the engine job aside.
type waitInPlace struct{ fleetjob.Fleet }

func (waitInPlace) Notify(context.Context, string, func(*cluster.Job) bool, func()) (func(), error) {
	return nil, errors.New("a probe waits in place")
}
