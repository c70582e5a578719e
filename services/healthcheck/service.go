package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/internal/baseimages"
	"github.com/kiln-ci/kiln/services/internal/logarchive"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// RunFunc runs one build on the fleet for engine job j, writing the build's log to
// log as it streams (besides j); Service.Run replaces fleetjob.Run with it in tests.
type RunFunc func(ctx context.Context, j *current.Job, req fleetjob.Request, log io.Writer) (fleetjob.Result, error)

// Notifier sends a message about a run (services/internal/notify's Notifier).
type Notifier interface {
	Send(n Notice) bool
}

// Notice is what a finished run says to the webhooks: its counts and what changed
// against the run it is compared with.
type Notice struct {
	Run  *Run
	Diff *Diff
	URL  string
}

// Service is the health check: its runs, planned and built on the fleet, their
// results and logs stored.
type Service struct {
	Store *Store
	// Logs keeps each build's log, compressed, by run and LogKey.
	Logs     *logarchive.Archive
	Archives *opamenv.Archives
	// Mirrors fetch the followed repository when its URL is not a local path.
	Mirrors *git.Mirrors
	Fleet   fleetjob.Fleet
	Run     RunFunc
	// WorkDir holds the prepared layers and the builds' contexts.
	WorkDir string
	// Images, when set, is the builder's image store folder: the platform's Debian
	// base image is made there before the first build needs it.
	Images string
	// ConfigPath, when set, is where changes of the configuration (switches,
	// settings) are saved.
	ConfigPath string
	Notify     Notifier
	// BaseURL and Prefix make the links of notifications.
	BaseURL, Prefix string
	Metrics         *Metrics
	Logger          *slog.Logger

	baseReady current.Term[current.Unit]
	mu        sync.Mutex
	cfg       *Config
	runs      *current.Var[[]RunRef]
	indexes   map[string]*repository.Repo // by commit
	layers    map[string]*Layers          // by run and switch
	tries     map[string]int              // tries of the builds going on, by run and job
	sem       chan struct{}
	ops       struct {
		plan   *current.Op[RunRef, Planned]
		build  *current.Op[BuildInput, Built]
		finish *current.Op[RunRef, current.Unit]
	}
}

// RunRef names a run the pipeline works on.
type RunRef struct {
	ID     int64  `json:"id"`
	Commit string `json:"commit"`
}

// Planned is a run's plan as the pipeline keeps it.
type Planned struct {
	Run    int64  `json:"run"`
	Commit string `json:"commit"`
	GitDir string `json:"git_dir"`
	Jobs   []Job  `json:"jobs"`
	// Extra are the switches' extra repositories at the commits the run took.
	Extra map[string][]ExtraRepo `json:"extra,omitempty"`
}

// ExtraRepo is an opam repository a switch adds to the followed one, at a commit.
type ExtraRepo struct {
	Name   string `json:"name"`
	GitDir string `json:"git_dir"`
	Commit string `json:"commit"`
}

// BuildInput is one build of a run.
type BuildInput struct {
	Run    int64       `json:"run"`
	Commit string      `json:"commit"`
	GitDir string      `json:"git_dir"`
	Extra  []ExtraRepo `json:"extra,omitempty"`
	Job    Job         `json:"job"`
}

// Built is what a build ended as.
type Built struct {
	State State `json:"state"`
	Kind  Kind  `json:"kind,omitempty"`
}

// NewService makes the service over its configuration; fields are set by the
// caller before Pipeline.
func NewService(cfg *Config) *Service {
	return &Service{cfg: cfg}
}

// Config returns the configuration in force (a copy).
func (s *Service) Config() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *s.cfg
	c.Switches = append([]Switch(nil), s.cfg.Switches...)
	return &c
}

func (s *Service) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Pipeline builds the runs not finished: each planned, its builds on the fleet,
// then finished (compared, notified, old runs pruned).
func (s *Service) Pipeline(ctx context.Context) (current.Term[current.Unit], error) {
	if s.Metrics == nil {
		s.Metrics = NewMetrics(nil)
	}
	cfg := s.Config()
	s.sem = make(chan struct{}, cfg.Parallelism)
	s.baseReady = current.Return(current.Unit{})
	if plat, err := cfg.platform(); err == nil && s.Images != "" && plat.Debian != nil {
		s.baseReady = baseimages.Ready(baseimages.Op("healthcheck-base-image", s.Images), []matrix.Platform{plat})
	}
	s.runs = current.NewVar[[]RunRef]("health-check runs", nil)
	if err := s.refresh(ctx); err != nil {
		return current.Term[current.Unit]{}, err
	}
	s.ops.plan = &current.Op[RunRef, Planned]{
		Name:    "healthcheck-plan",
		Key:     func(r RunRef) string { return strconv.FormatInt(r.ID, 10) },
		Label:   func(r RunRef) string { return fmt.Sprintf("plan run %d (%.12s)", r.ID, r.Commit) },
		Timeout: 2 * time.Hour,
		Run:     s.plan,
	}
	s.ops.build = &current.Op[BuildInput, Built]{
		Name: "healthcheck-build",
		Key:  func(in BuildInput) string { return fmt.Sprintf("%d %s", in.Run, in.Job.Key()) },
		Label: func(in BuildInput) string {
			return fmt.Sprintf("%s on %s (run %d)", in.Job.Package, in.Job.Switch, in.Run)
		},
		Run:  s.build,
		Pool: fleetjob.Pool,
	}
	s.ops.finish = &current.Op[RunRef, current.Unit]{
		Name:  "healthcheck-finish",
		Key:   func(r RunRef) string { return strconv.FormatInt(r.ID, 10) },
		Label: func(r RunRef) string { return fmt.Sprintf("finish run %d", r.ID) },
		Run:   s.finish,
	}
	return current.ListIter(s.runs.Term(), func(r RunRef) string { return strconv.FormatInt(r.ID, 10) }, s.runPipeline), nil
}

func (s *Service) runPipeline(run current.Term[RunRef]) current.Term[current.Unit] {
	planned := current.Do(s.ops.plan, run)
	inputs := current.Map(planned, func(p Planned) []BuildInput {
		out := make([]BuildInput, len(p.Jobs))
		for i, j := range p.Jobs {
			out[i] = BuildInput{Run: p.Run, Commit: p.Commit, GitDir: p.GitDir, Extra: p.Extra[j.Switch], Job: j}
		}
		return out
	})
	built := current.ListMap(inputs, func(in BuildInput) string { return in.Job.Key() }, func(in current.Term[BuildInput]) current.Term[current.Result[Built]] {
		return current.Catch(current.Do(s.ops.build, in))
	})
	return current.Do(s.ops.finish, current.Map2(run, built, func(r RunRef, _ []current.Result[Built]) RunRef { return r }))
}

// refresh gives the pipeline the runs not finished.
func (s *Service) refresh(ctx context.Context) error {
	runs, err := s.Store.Current(ctx)
	if err != nil {
		return err
	}
	refs := make([]RunRef, len(runs))
	for i, r := range runs {
		refs[i] = RunRef{ID: r.ID, Commit: r.Commit}
		s.Metrics.runProgress(&runs[i])
	}
	s.runs.Set(refs)
	return nil
}

// gitDir is the local git repository of the followed opam repository, fetched
// first when it is remote.
func (s *Service) gitDir(ctx context.Context, cfg *Config) (string, error) {
	return s.localGit(ctx, cfg.Repository.URL)
}

// localGit is a local git repository of u: u itself when it is a path, else its
// mirror, fetched.
func (s *Service) localGit(ctx context.Context, u string) (string, error) {
	if p, ok := strings.CutPrefix(u, "file://"); ok {
		u = p
	}
	if strings.HasPrefix(u, "/") || strings.HasPrefix(u, ".") {
		if st, err := os.Stat(filepath.Join(u, ".git")); err == nil && st.IsDir() {
			return filepath.Join(u, ".git"), nil
		}
		return u, nil
	}
	if s.Mirrors == nil {
		return "", fmt.Errorf("repository %s is remote and the service has no git mirrors", u)
	}
	r, err := s.Mirrors.Fetch(ctx, u)
	if err != nil {
		if errors.Is(err, git.ErrNetwork) {
			return "", current.Infra(current.FailNetwork, err)
		}
		return "", err
	}
	return r.Dir, nil
}

// RunOptions say what a new run checks.
type RunOptions struct {
	// Candidate, when set, makes a candidate run compared with the latest baseline.
	Candidate *CandidateRequest `json:"candidate,omitempty"`
}

// CandidateRequest is a candidate to check: a branch of the repository (Ref), and/or
// switches replacing the configuration's (a compiler release), limited to the
// packages its changes can affect (Scope "revdeps", the default) or not ("all").
type CandidateRequest struct {
	Name     string   `json:"name"`
	Ref      string   `json:"ref,omitempty"`
	Scope    string   `json:"scope,omitempty"`
	Switches []Switch `json:"switches,omitempty"`
}

// StartRun records a new run at the head of the followed branch (or of the
// candidate's ref) and gives it to the pipeline.
func (s *Service) StartRun(ctx context.Context, o RunOptions) (*Run, error) {
	cfg := s.Config()
	gitDir, err := s.gitDir(ctx, cfg)
	if err != nil {
		return nil, err
	}
	head, err := repository.ResolveCommit(ctx, gitDir, cfg.Repository.Branch)
	if err != nil {
		return nil, fmt.Errorf("repository %s: branch %s: %w", cfg.Repository.URL, cfg.Repository.Branch, err)
	}
	r := &Run{Kind: Baseline, Repository: cfg.Repository.URL, Commit: head, Switches: cfg.Switches, AllVersions: cfg.Versions == "all"}
	if c := o.Candidate; c != nil {
		if err := s.candidate(ctx, cfg, gitDir, c, r); err != nil {
			return nil, err
		}
	}
	if _, err := s.Store.CreateRun(ctx, r); err != nil {
		return nil, err
	}
	s.log().Info("health-check: run started", "run", r.ID, "kind", r.Kind, "commit", r.Commit, "switches", len(r.Switches))
	if err := s.refresh(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *Service) candidate(ctx context.Context, cfg *Config, gitDir string, c *CandidateRequest, r *Run) error {
	base, err := s.Store.Latest(ctx)
	if err != nil {
		return err
	}
	if base == nil {
		return errors.New("a candidate run is compared with the latest baseline run, and no baseline run has finished yet")
	}
	if c.Name == "" {
		c.Name = c.Ref
	}
	if c.Name == "" {
		return errors.New("a candidate run needs a name or a ref")
	}
	switch c.Scope {
	case "":
		c.Scope = "revdeps"
	case "revdeps", "all":
	default:
		return fmt.Errorf("candidate scope %q: want revdeps or all", c.Scope)
	}
	info := &CandidateInfo{Name: c.Name, Baseline: base.ID, Scope: c.Scope, Ref: c.Ref}
	r.Kind, r.Candidate, r.Commit, r.Switches = Candidate, info, base.Commit, base.Switches
	if len(c.Switches) > 0 {
		check := *cfg
		check.Switches = c.Switches
		if err := check.Check(); err != nil {
			return fmt.Errorf("candidate switches: %w", err)
		}
		r.Switches = check.Switches
		if c.Ref == "" {
			info.Scope = "all" // a new compiler can affect every package
		}
	}
	if c.Ref != "" {
		commit, err := repository.ResolveCommit(ctx, gitDir, c.Ref)
		if err != nil {
			return fmt.Errorf("candidate %s: %w", c.Ref, err)
		}
		r.Commit, info.Commit = commit, commit
		if info.Changed, err = changedPackages(ctx, gitDir, base.Commit, commit); err != nil {
			return err
		}
	}
	return nil
}

// changedPackages lists the package versions whose files differ between two commits.
func changedPackages(ctx context.Context, gitDir, from, to string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "git", "--git-dir", gitDir, "diff", "--name-only", from, to, "--", "packages/").Output()
	if err != nil {
		return nil, fmt.Errorf("changes from %.12s to %.12s: %w", from, to, err)
	}
	seen := map[string]bool{}
	var changed []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(l, "/")
		if len(parts) >= 4 && !seen[parts[2]] {
			seen[parts[2]] = true
			changed = append(changed, parts[2])
		}
	}
	return changed, nil
}

// affected are the package versions of repo a change of changed can affect: those
// of the changed names and of every name depending on them, recursively.
func affected(repo *repository.Repo, changed []string) map[string]bool {
	users := map[opam.PackageName][]opam.PackageName{}
	repo.All(func(p *repository.Package) bool {
		for _, n := range depNames(p) {
			users[n] = append(users[n], p.Name)
		}
		return true
	})
	names := map[opam.PackageName]bool{}
	var queue []opam.PackageName
	for _, c := range changed {
		if p, ok := opam.ParsePackage(c); ok && !names[p.Name] {
			names[p.Name] = true
			queue = append(queue, p.Name)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, u := range users[n] {
			if !names[u] {
				names[u] = true
				queue = append(queue, u)
			}
		}
	}
	out := map[string]bool{}
	repo.All(func(p *repository.Package) bool {
		if names[p.Name] {
			out[p.Package.String()] = true
		}
		return true
	})
	return out
}

// index is the repository's index at commit, kept for the runs that use it.
func (s *Service) index(ctx context.Context, gitDir, commit string) (*repository.Repo, error) {
	s.mu.Lock()
	r := s.indexes[commit]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := repository.LoadGit(ctx, gitDir, commit)
	if err != nil {
		return nil, fmt.Errorf("opam repository at %.12s: %w", commit, err)
	}
	s.mu.Lock()
	if s.indexes == nil || len(s.indexes) > 4 {
		s.indexes = map[string]*repository.Repo{}
	}
	s.indexes[commit] = r
	s.mu.Unlock()
	return r, nil
}

// plan solves a run's packages and records them: the jobs pending, the packages
// with no solution not available.
func (s *Service) plan(ctx context.Context, j *current.Job, ref RunRef) (Planned, error) {
	r, err := s.Store.Run(ctx, ref.ID)
	if err != nil {
		return Planned{}, err
	}
	cfg := s.Config()
	cfg.Switches = r.Switches
	gitDir, err := s.gitDir(ctx, cfg)
	if err != nil {
		return Planned{}, err
	}
	repo, err := s.index(ctx, gitDir, r.Commit)
	if err != nil {
		return Planned{}, s.fail(ctx, r.ID, err)
	}
	extra := map[string][]ExtraRepo{}
	for _, sw := range r.Switches {
		for _, spec := range sw.Repositories {
			name, u, _ := strings.Cut(spec, "=")
			dir, err := s.localGit(ctx, u)
			if err != nil {
				return Planned{}, s.fail(ctx, r.ID, fmt.Errorf("switch %s: repository %s: %w", sw.Name, name, err))
			}
			commit, err := repository.ResolveCommit(ctx, dir, "HEAD")
			if err != nil {
				return Planned{}, s.fail(ctx, r.ID, fmt.Errorf("switch %s: repository %s: %w", sw.Name, name, err))
			}
			extra[sw.Name] = append(extra[sw.Name], ExtraRepo{Name: name, GitDir: dir, Commit: commit})
			j.Logf("switch %s: repository %s at %.12s", sw.Name, name, commit)
		}
	}
	pkgs := Select(repo, r.AllVersions)
	start := time.Now()
	pl := &Planner{Config: cfg, Progress: func(sw string, done, total int) { j.Logf("%s: %d of %d solved", sw, done, total) },
		Repos: func(sw Switch) (*repository.Repo, error) {
			merged, _, err := s.merged(ctx, repo, extra[sw.Name])
			return merged, err
		}}
	if c := r.Candidate; c != nil && c.Scope == "revdeps" {
		pl.Changed = append([]string{}, c.Changed...)
		j.Logf("candidate %s changes %s: only they and what depends on them are built", c.Name, strings.Join(c.Changed, ", "))
	}
	p, err := pl.Plan(ctx, r.ID, repo, pkgs)
	if err != nil {
		return Planned{}, s.fail(ctx, r.ID, err)
	}
	j.Logf("planned in %s: %d builds, %d not available", time.Since(start).Round(time.Millisecond), len(p.Jobs), len(p.Results)-len(p.Jobs))
	if err := s.Store.PutResults(ctx, p.Results); err != nil {
		return Planned{}, current.Infra(current.FailDiskFull, err)
	}
	if err := s.Store.SetRunStatus(ctx, r.ID, RunRunning, ""); err != nil {
		return Planned{}, current.Infra(current.FailDiskFull, err)
	}
	return Planned{Run: r.ID, Commit: r.Commit, GitDir: gitDir, Jobs: p.Jobs, Extra: extra}, nil
}

// fail records that a run cannot go on and takes it out of the pipeline.
func (s *Service) fail(ctx context.Context, id int64, err error) error {
	if current.KindOf(err).Infrastructure() {
		return err // retried
	}
	ctx = context.WithoutCancel(ctx)
	if serr := s.Store.SetRunStatus(ctx, id, RunFailed, err.Error()); serr != nil {
		s.log().Error("health-check: cannot record a failed run", "run", id, "err", serr)
	}
	s.log().Warn("health-check: run failed", "run", id, "err", err)
	if rerr := s.refresh(ctx); rerr != nil {
		s.log().Error("health-check: cannot list the runs", "err", rerr)
	}
	return err
}

// layersFor are the prepared package layers of a run's switch.
func (s *Service) layersFor(ctx context.Context, in BuildInput) (*Layers, error) {
	key := fmt.Sprintf("%d/%s", in.Run, in.Job.Switch)
	s.mu.Lock()
	l := s.layers[key]
	s.mu.Unlock()
	if l != nil {
		return l, nil
	}
	repo, err := s.index(ctx, in.GitDir, in.Commit)
	if err != nil {
		return nil, err
	}
	repo, origin, err := s.merged(ctx, repo, in.Extra)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.layers[key]; l != nil {
		return l, nil // made meanwhile by another build
	}
	if s.layers == nil {
		s.layers = map[string]*Layers{}
	}
	l = &Layers{Archives: s.Archives, Dir: filepath.Join(s.WorkDir, "layers"), GitDir: in.GitDir, Commit: in.Commit, Repo: repo, Origin: origin}
	s.layers[key] = l
	return l, nil
}

// merged is repo with the packages of a switch's extra repositories, the first
// repository's taking precedence, and where each of those comes from.
func (s *Service) merged(ctx context.Context, repo *repository.Repo, extra []ExtraRepo) (*repository.Repo, map[opam.Package]ExtraRepo, error) {
	if len(extra) == 0 {
		return repo, nil, nil
	}
	origin := map[opam.Package]ExtraRepo{}
	for i := len(extra) - 1; i >= 0; i-- {
		e := extra[i]
		x, err := s.index(ctx, e.GitDir, e.Commit)
		if err != nil {
			return nil, nil, fmt.Errorf("repository %s: %w", e.Name, err)
		}
		pkgs := x.Packages()
		repo = repo.WithPackages(pkgs...)
		for _, p := range pkgs {
			origin[p.Package] = e
		}
	}
	return repo, origin, nil
}

// captureFleet is the fleet of one build, its log copied to a writer as it streams.
type captureFleet struct {
	fleetjob.Fleet
	w io.Writer
}

func (f captureFleet) Log(ctx context.Context, id string, offset int64, follow bool, w io.Writer) (int64, error) {
	return f.Fleet.Log(ctx, id, offset, follow, io.MultiWriter(w, f.w))
}

// Queue passes the fleet's queue through, for the reason a queued build gives.
func (f captureFleet) Queue(ctx context.Context, pool string, limit int) (*cluster.QueueInfo, error) {
	q, ok := f.Fleet.(interface {
		Queue(ctx context.Context, pool string, limit int) (*cluster.QueueInfo, error)
	})
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return q.Queue(ctx, pool, limit)
}

// build runs one job, trying again when the infrastructure fails, and records its
// result and log.
func (s *Service) build(ctx context.Context, j *current.Job, in BuildInput) (Built, error) {
	cfg := s.Config()
	r, err := s.Store.Run(ctx, in.Run)
	if err != nil {
		return Built{}, err
	}
	sw, ok := switchOf(r.Switches, in.Job.Switch)
	if !ok {
		return Built{}, fmt.Errorf("run %d has no switch %q", in.Run, in.Job.Switch)
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return Built{}, ctx.Err()
	}
	started := time.Now()
	res := Result{Run: in.Run, Package: in.Job.Package, Switch: in.Job.Switch, Started: started,
		Log: LogRef{Key: in.Job.Key(), JobID: j.ID()}}
	v, logData, attempts, err := s.attempts(ctx, j, cfg, sw, in)
	if err != nil {
		return Built{}, err
	}
	if ctx.Err() != nil && current.Cancelled(ctx) {
		return Built{}, ctx.Err()
	}
	res.State, res.Kind, res.Message, res.Attempts = v.verdict.State, v.verdict.Kind, v.verdict.Message, attempts
	res.Lines, res.Duration = v.lines, time.Since(started)
	if err := s.keepLog(in.Run, in.Job.Key(), logData); err != nil {
		s.log().Warn("health-check: log not kept", "run", in.Run, "key", in.Job.Key(), "err", err)
		j.Logf("the log could not be kept in the run's archive: %v", err)
	}
	wctx := context.WithoutCancel(ctx)
	if err := s.Store.SetOutcome(wctx, res); err != nil {
		return Built{}, current.Infra(current.FailDiskFull, err)
	}
	s.Metrics.built(sw.Name, v.verdict)
	if run, err := s.Store.Run(wctx, in.Run); err == nil {
		s.Metrics.runProgress(run)
	}
	j.Logf("%s on %s: %s %s", in.Job.Package, sw.Name, res.State, res.Kind)
	out := Built{State: res.State, Kind: res.Kind}
	if res.State == Good {
		return out, nil
	}
	return out, current.WithLines(fmt.Errorf("%s: %s", res.State, res.Message), res.Lines)
}

type attempt struct {
	verdict Verdict
	lines   []string
}

// attempts builds a job until it does not fail on the infrastructure, or the
// retries run out; it returns the last verdict and log. A build queued on the fleet
// returns current.Await's error, to be called again once it runs; the tries made so
// far are kept meanwhile.
func (s *Service) attempts(ctx context.Context, j *current.Job, cfg *Config, sw Switch, in BuildInput) (attempt, []byte, int, error) {
	key := fmt.Sprintf("%d %s", in.Run, in.Job.Key())
	for {
		cap := &capture{}
		err := s.once(ctx, j, cfg, sw, in, cap)
		var aw *current.AwaitError
		if errors.As(err, &aw) {
			return attempt{}, nil, 0, err
		}
		scan, data, _ := cap.Result()
		s.Metrics.stepsOf(scan)
		last := attempt{verdict: Classify(in.Job.Package, err, scan), lines: current.LinesOf(err)}
		s.mu.Lock()
		if s.tries == nil {
			s.tries = map[string]int{}
		}
		s.tries[key]++
		n := s.tries[key]
		if !last.verdict.Retry() || n > cfg.Retries || ctx.Err() != nil {
			delete(s.tries, key)
		}
		s.mu.Unlock()
		if !last.verdict.Retry() || n > cfg.Retries || ctx.Err() != nil {
			return last, data, n, nil
		}
		s.Metrics.retried(last.verdict.Kind)
		j.Logf("--- %s (%s): trying again (%d of %d) ---", last.verdict.Kind, last.verdict.Message, n, cfg.Retries)
	}
}

// once prepares a job's context and runs it on the fleet.
func (s *Service) once(ctx context.Context, j *current.Job, cfg *Config, sw Switch, in BuildInput, cap *capture) error {
	plat, err := cfg.platform()
	if err != nil {
		return err
	}
	layers, err := s.layersFor(ctx, in)
	if err != nil {
		return current.Infra(current.FailDiskFull, err)
	}
	dir, err := os.MkdirTemp(s.WorkDir, "context-")
	if err != nil {
		return current.Infra(current.FailDiskFull, err)
	}
	defer os.RemoveAll(dir)
	ls, err := layers.Context(ctx, in.Job, dir)
	if err != nil {
		// A source whose checksum does not match is the package's fault, or its
		// dependency's: the build fails there, as opam would.
		var le *LayerError
		if errors.As(err, &le) && errors.Is(err, opamenv.ErrChecksum) {
			kind := stepDependency
			if le.Package == in.Job.Package {
				kind = stepBuild
			}
			fmt.Fprintf(cap, "%v\n%s%s %s (exit 31)\n", err, markerPrefix, kind, le.Package)
			return err
		}
		return current.Infra(current.FailNetwork, err)
	}
	sp, err := Spec(cfg, plat.Image, sw, in.Job, ls)
	if err != nil {
		return err
	}
	req := fleetjob.Request{Ticket: "healthcheck", Pool: plat.Pool, Client: "health-check", Spec: sp.String(),
		SourceDir: dir, CacheHint: sw.Name + "-" + strings.Join(in.Job.Packages()[:min(3, len(in.Job.Deps))], ","),
		Urgent: false, Timeout: time.Duration(cfg.JobTimeout)}
	if s.Run != nil {
		_, err = s.Run(ctx, j, req, cap)
		return err
	}
	_, err = fleetjob.Run(ctx, captureFleet{Fleet: s.Fleet, w: cap}, j, req)
	return err
}

func switchOf(sws []Switch, name string) (Switch, bool) {
	for _, s := range sws {
		if s.Name == name {
			return s, true
		}
	}
	return Switch{}, false
}

// keepLog stores a build's log in the run's archive.
func (s *Service) keepLog(run int64, key string, data []byte) error {
	if s.Logs == nil {
		return nil
	}
	w, err := s.Logs.Create(strconv.FormatInt(run, 10), key)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// finish ends a run once every build did: it is marked done, compared with the run
// before it (a candidate with its baseline), notified, and old runs pruned.
func (s *Service) finish(ctx context.Context, j *current.Job, ref RunRef) (current.Unit, error) {
	r, err := s.Store.Run(ctx, ref.ID)
	if err != nil {
		return current.Unit{}, err
	}
	d, err := s.diffOf(ctx, r)
	if err != nil {
		return current.Unit{}, err
	}
	if d != nil {
		j.Logf("against run %d: %v", d.Old, d.Count())
	}
	// Told before the run is marked done, so that a run seen done has been told.
	if s.Notify != nil {
		done := *r
		done.Status, done.Finished = RunDone, time.Now().UTC()
		s.Notify.Send(Notice{Run: &done, Diff: d, URL: strings.TrimRight(s.BaseURL, "/") + s.Prefix + "/run/" + strconv.FormatInt(r.ID, 10)})
	}
	if err := s.Store.SetRunStatus(ctx, r.ID, RunDone, ""); err != nil {
		return current.Unit{}, current.Infra(current.FailDiskFull, err)
	}
	if r, err = s.Store.Run(ctx, ref.ID); err != nil {
		return current.Unit{}, err
	}
	s.Metrics.runProgress(r)
	s.mu.Lock()
	for k := range s.layers {
		if strings.HasPrefix(k, strconv.FormatInt(r.ID, 10)+"/") {
			delete(s.layers, k)
		}
	}
	s.mu.Unlock()
	j.Logf("run %d done: %v", r.ID, r.Counts)
	if err := s.prune(ctx, j); err != nil {
		j.Logf("pruning old runs: %v", err)
	}
	return current.Unit{}, s.refresh(ctx)
}

// DiffOf compares a run with its baseline (a candidate) or the baseline run before
// it; nil when there is none.
func (s *Service) diffOf(ctx context.Context, r *Run) (*Diff, error) {
	var base *Run
	var err error
	scope := WholeRuns
	if r.Candidate != nil {
		base, err = s.Store.Run(ctx, r.Candidate.Baseline)
		scope = NewRunOnly
	} else {
		base, err = s.Store.Previous(ctx, r.ID)
	}
	if err != nil || base == nil {
		return nil, err
	}
	old, err := s.Store.Results(ctx, base.ID, ResultQuery{})
	if err != nil {
		return nil, err
	}
	cur, err := s.Store.Results(ctx, r.ID, ResultQuery{})
	if err != nil {
		return nil, err
	}
	d := Compare(base.ID, r.ID, old, cur, scope)
	return &d, nil
}

// prune removes the runs beyond the retention, with their logs.
func (s *Service) prune(ctx context.Context, j *current.Job) error {
	ids, err := s.Store.Prune(ctx, s.Config().Retention)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if s.Logs != nil {
			if err := s.Logs.Remove(strconv.FormatInt(id, 10)); err != nil {
				return err
			}
		}
		j.Logf("run %d pruned", id)
	}
	return nil
}
