package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// Runner runs a benchmark job: on this host (HostRunner) or in the builder's sandbox
// (Sandbox).
type Runner interface {
	Run(ctx context.Context, job Job, log io.Writer) Outcome
}

// HostRunner runs jobs on this host with Run.
type HostRunner struct{}

// Run runs job with the package's Run.
func (HostRunner) Run(ctx context.Context, job Job, log io.Writer) Outcome { return Run(ctx, job, log) }

// Task is one benchmark to run: a ref's commit and, for a pull request, the head of
// the branch it targets, run interleaved with it.
type Task struct {
	Ref  forge.Ref `json:"ref"`
	Base string    `json:"base,omitempty"`
}

// key is the task's job key: a PR's labels are in it, so that a label added or removed
// runs the PR's benchmark again (or for the first time, with pull-requests: label).
func (t Task) key() string {
	k := t.Ref.Repo.String() + " " + t.Ref.Commit + " " + t.Base
	if len(t.Ref.Labels) > 0 {
		k += " labels=" + strings.Join(slices.Sorted(slices.Values(t.Ref.Labels)), ",")
	}
	return k
}

// Pipeline benchmarks the refs of the forges followed: each branch head and pull
// request of a repository whose .kiln.yml opts in, as its bench section says.
type Pipeline struct {
	Forges  *forges.Set
	Mirrors *git.Mirrors
	API     *API
	Runner  Runner
	WorkDir string
	// Target is the branch pull requests are run against (default main).
	Target string
	// CPUs is the benchmark slot of the jobs run here ("" for none).
	CPUs string
	// Fleet, when set, runs the jobs on the fleet pool each repository's bench.pool
	// names instead of Runner.
	Fleet *FleetRunner
	// Logs, when set, reads the engine's job logs (the *current.Engine running the
	// pipeline), so that a run records where its output is in its job's log.
	Logs JobLogs
	// Hunt, when set, bisects each significant regression of a branch run to its first
	// bad commit and alerts (its Store, Alert, BaseURL and Options are used).
	Hunt *Hunt

	op   *current.Op[Task, int64]
	slot sync.Mutex // one benchmark at a time on this server: none disturbs another

	schedMu   sync.Mutex
	schedules map[string]*scheduled // by ref key
}

// JobLogs reads engine job logs (a *current.Engine).
type JobLogs interface {
	ReadLog(id string, offset int64, max int) (current.LogChunk, error)
}

// logLines counts the complete lines of job j's log so far.
func (p *Pipeline) logLines(j *current.Job) (int, error) {
	n := 0
	var off int64
	for {
		ch, err := p.Logs.ReadLog(j.ID(), off, 1<<20)
		if err != nil {
			return 0, fmt.Errorf("count the lines of the log of job %s: %w", j.ID(), err)
		}
		n += bytes.Count(ch.Data, []byte{'\n'})
		if len(ch.Data) == 0 || ch.Next == off {
			return n, nil
		}
		off = ch.Next
	}
}

// placeLog records in run where o's output is in job j's log: from the line after
// before (the log's lines when the runner started), or, for a fleet job whose log was
// copied into j's log, counted back from the end.
func (p *Pipeline) placeLog(j *current.Job, run *store.Run, o Outcome, before int) error {
	if p.Fleet != nil {
		after, err := p.logLines(j)
		if err != nil {
			return err
		}
		before = after - o.logLines - o.logTail
	}
	for _, s := range o.Log {
		s.LogLine += before
		run.Log = append(run.Log, s)
	}
	return nil
}

// Tasks are the benchmarks refs ask for: every ref, a PR paired with the head of the
// target branch of its repository (none when that branch is not followed).
func Tasks(refs []forge.Ref, target string) []Task {
	heads := map[forge.RepoID]string{}
	for _, r := range refs {
		if r.PR == 0 && r.Name == "refs/heads/"+target {
			heads[r.Repo] = r.Commit
		}
	}
	var out []Task
	for _, r := range refs {
		t := Task{Ref: r}
		if r.PR > 0 {
			t.Base = heads[r.Repo]
		}
		out = append(out, t)
	}
	return out
}

func (p *Pipeline) makeOp() {
	if p.Target == "" {
		p.Target = "main"
	}
	p.op = &current.Op[Task, int64]{
		Name:  "bench-run",
		Key:   Task.key,
		Label: func(t Task) string { return "benchmark " + t.Ref.Repo.Name + " " + short(t.Ref.Commit) },
		Run:   p.run,
	}
}

// Term is the pipeline.
func (p *Pipeline) Term() current.Term[current.Unit] {
	if p.op == nil {
		p.makeOp()
	}
	var all []current.AnyTerm
	for _, src := range p.Forges.Sources() {
		tasks := current.Map(src.Refs(), func(refs []forge.Ref) []Task { return Tasks(refs, p.Target) })
		all = append(all, current.ListIter(tasks, Task.key, func(t current.Term[Task]) current.Term[current.Unit] {
			return current.All(current.Do(p.op, t))
		}))
	}
	return current.All(all...)
}

// Rerun runs the benchmarks of commit of repo again (a cancelled or failed run, or
// "re-run" asked on the forge). It returns how many were started.
func (p *Pipeline) Rerun(e *current.Engine, repo forge.RepoID, commit string) (int, error) {
	if p.op == nil {
		p.makeOp()
	}
	return p.op.Rebuild(e, func(t Task) bool { return t.Ref.Repo == repo && t.Ref.Commit == commit })
}

// errNotBenchmarked ends a task that its repository's configuration does not ask for.
var errNotBenchmarked = errors.New("not benchmarked")

func (p *Pipeline) checkout(ctx context.Context, j *current.Job, r forge.Ref, commit string) (string, error) {
	repo, err := p.Mirrors.FetchCommit(ctx, r.Remote, commit, r.Name)
	if err != nil {
		return "", current.Infra(current.FailNetwork, fmt.Errorf("fetch %s: %w", short(commit), err))
	}
	dir := filepath.Join(p.WorkDir, "src", j.ID(), commit)
	os.RemoveAll(dir)
	if err := repo.Checkout(ctx, commit, dir); err != nil {
		return "", fmt.Errorf("check out %s: %w", short(commit), err)
	}
	return dir, nil
}

func (p *Pipeline) run(ctx context.Context, j *current.Job, t Task) (int64, error) {
	r := t.Ref
	defer os.RemoveAll(filepath.Join(p.WorkDir, "src", j.ID()))
	dir, err := p.checkout(ctx, j, r, r.Commit)
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil && !os.IsNotExist(err) {
		return 0, err
	}
	cfg, ok, err := ParseConfig(data)
	if err != nil {
		return 0, err
	}
	branch := strings.TrimPrefix(r.Name, "refs/heads/")
	if why := notBenchmarked(cfg, ok, r); why != "" {
		j.Logf("%s: %v", why, errNotBenchmarked)
		return 0, nil
	}
	if r.PR == 0 {
		p.noteSchedule(r, cfg, time.Now())
	}
	job := Job{Dir: dir, Command: cfg.Command, Env: cfg.Env, Repeats: cfg.Repeats, Timeout: time.Duration(cfg.Timeout), CPUs: p.CPUs}
	run := store.Run{Repo: r.Repo.String(), Commit: r.Commit, Env: cfg.Pool, Job: j.ID(), CommitTime: time.Now()}
	if r.PR > 0 {
		run.PR, run.Base = int64(r.PR), t.Base
		if t.Base == "" {
			j.Logf("the head of %s is not known: the PR is compared with %s's history", p.Target, p.Target)
		} else if job.BaseDir, err = p.checkout(ctx, j, r, t.Base); err != nil {
			return 0, err
		}
	} else {
		run.Branch = branch
	}
	if repo, err := p.Mirrors.Repo(ctx, r.Remote); err == nil {
		if out, err := repoDir(repo.Dir).git(ctx, "show", "-s", "--format=%cI", r.Commit); err == nil {
			if when, err := time.Parse(time.RFC3339, strings.TrimSpace(out)); err == nil {
				run.CommitTime = when
			}
		}
	}
	j.Logf("benchmarking %s: %s, %d repeats%s", short(r.Commit), cfg.Command, cfg.Repeats, map[bool]string{true: ", interleaved with " + short(t.Base)}[job.BaseDir != ""])
	o, resp, err := p.benchmark(ctx, j, run, job, cfg.Pool)
	if err != nil {
		return 0, err
	}
	if p.Hunt != nil && run.Branch != "" && resp.Comparison != nil {
		if reg, _ := resp.Comparison.Significant(); reg > 0 {
			p.slot.Lock()
			p.hunt(ctx, j, r, cfg.Pool, job, *resp.Comparison)
			p.slot.Unlock()
		}
	}
	if o.Err != nil {
		return resp.Run, fmt.Errorf("run %d: %w", resp.Run, o.Err)
	}
	return resp.Run, nil
}

// benchmark runs job for engine job j (on the fleet pool with Fleet) and records it as
// run, with where its output is in j's log.
func (p *Pipeline) benchmark(ctx context.Context, j *current.Job, run store.Run, job Job, pool string) (Outcome, *SubmitResponse, error) {
	before := -1
	if p.Logs != nil {
		var err error
		if before, err = p.logLines(j); err != nil {
			j.Logf("the metrics will not link to this log: %v", err)
			before = -1
		}
	}
	var o Outcome
	if p.Fleet != nil {
		o = p.Fleet.RunJob(ctx, j, pool, run.PR > 0, job)
		var wait *current.AwaitError
		if errors.As(o.Err, &wait) {
			return o, nil, o.Err // queued on the fleet: the engine runs this again once it starts
		}
	} else {
		p.slot.Lock()
		o = p.Runner.Run(ctx, job, j)
		p.slot.Unlock()
	}
	if ctx.Err() != nil {
		return o, nil, ctx.Err()
	}
	if before >= 0 {
		if err := p.placeLog(j, &run, o, before); err != nil {
			j.Logf("the metrics will not link to this log: %v", err)
		}
	}
	resp, err := p.API.Record(ctx, run, o)
	if err != nil {
		return o, nil, current.Infra(current.FailDiskFull, err)
	}
	return o, resp, nil
}

// notBenchmarked says why ref r is not benchmarked by the bench section cfg (ok: there
// is one); "" when it is.
func notBenchmarked(cfg Config, ok bool, r forge.Ref) string {
	switch branch := r.Branch(); {
	case !ok:
		return ConfigFile + " has no bench section"
	case r.PR == 0 && !cfg.OnBranch(branch):
		return fmt.Sprintf("branch %s is not in bench.branches %v", branch, cfg.Branches)
	case r.PR > 0 && !cfg.Wants(r.Labels):
		return fmt.Sprintf("pull requests are benchmarked %s (label %q; this one has %q)", cfg.PullRequests, cfg.Label, r.Labels)
	}
	return ""
}

// hunt bisects a branch regression in the repository's mirror, logging the outcome;
// with the fleet, the probes run on pool.
func (p *Pipeline) hunt(ctx context.Context, j *current.Job, r forge.Ref, pool string, job Job, c Comparison) {
	runner := p.Runner
	if p.Fleet != nil {
		runner = &fleetProbes{f: *p.Fleet, j: j, pool: pool}
	}
	repo, err := p.Mirrors.Repo(ctx, r.Remote)
	if err != nil {
		j.Logf("no bisection: %v", err)
		return
	}
	h := *p.Hunt
	h.GitDir, h.Job, h.Runner = repo.Dir, job, runner
	h.Job.Dir, h.Job.BaseDir = "", ""
	j.Logf("a significant regression: bisecting it from the last good run")
	found, err := h.OnBranch(ctx, c)
	switch {
	case err != nil:
		j.Logf("bisection: %v", err)
	case found != nil:
		j.Logf("first bad commit %s (last good %s), %d commits probed", found.FirstBad, found.LastGood, len(found.Probed))
	}
}
