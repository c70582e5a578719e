// Package ocamlci is CI for OCaml repositories: for every branch and pull request of the
// repositories it follows (on GitHub, Gitea, Forgejo or plain git) it analyses the
// commit, builds and tests it on every platform of a matrix on the fleet, runs the lints,
// reports one status per commit to the forge, and keeps an index the web UI shows.
package ocamlci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Publisher shows a commit's status on its forge.
type Publisher interface {
	Publish(ctx context.Context, ref Ref, st forge.Status, variants []forge.Variant) error
}

// Fleet is what the service needs of the build fleet (a *cluster.Client).
type Fleet interface {
	PutSource(ctx context.Context, dir string) (string, error)
	Submit(ctx context.Context, r cluster.Request) (*cluster.Job, error)
	Log(ctx context.Context, id string, offset int64, follow bool, w io.Writer) (int64, error)
	Wait(ctx context.Context, id string) (*cluster.Job, error)
	WaitStarted(ctx context.Context, id string) (*cluster.Job, error)
	Cancel(ctx context.Context, id string) error
}

// Service is the ocaml-ci pipeline and its state.
type Service struct {
	Sources []Source
	// Publishers by forge name ("github", "gitea"); a forge without one is shown only
	// in the web UI.
	Publishers map[string]Publisher
	Fleet      Fleet
	Mirrors    *git.Mirrors
	// WorkDir holds checkouts of commits.
	WorkDir   string
	Platforms []Platform
	// Opam is the opam repository commits are solved against. Nil: local packages may
	// depend only on the platform's system packages (SystemSolve).
	Opam  *OpamRepository
	Index *Index
	// Images, when set, is the builder's image store folder: the platforms' Debian base
	// images are made there (one job each, with its log) before the first build needs
	// them. Workers elsewhere must have the images in their own stores.
	Images string
	// BaseURL is the web UI's address, for links in statuses.
	BaseURL string
	// StepTimeout bounds one build on the fleet (default 1 hour).
	StepTimeout time.Duration
	Logger      *slog.Logger

	opsOnce sync.Once
	ops     struct {
		fetch   *current.Op[Ref, Checkout]
		analyse *current.Op[AnalysisInput, Plan]
		build   *current.Op[BuildInput, BuildResult]
		status  *current.Op[StatusInput, current.Unit]
		base    *current.Op[image.DebianOptions, string]
	}
	basesReady current.Term[current.Unit]
	seenMu     sync.Mutex
	seen       map[string]string // commit+variant → first spec digest built, to tell re-tests
}

// Checkout is a commit checked out on disk.
type Checkout struct {
	Repo   RepoID `json:"repo"`
	Commit string `json:"commit"`
	Dir    string `json:"dir"`
}

// AnalysisInput is a checked-out commit and the opam repository commit to solve against.
type AnalysisInput struct {
	Checkout   Checkout `json:"checkout"`
	OpamCommit string   `json:"opam_commit,omitempty"`
}

// Plan is the outcome of analysing a commit: what to build.
type Plan struct {
	Analysis *Analysis `json:"analysis"`
	Variants []Variant `json:"variants"`
	// Findings of the opam lint, reported by the (lint-opam) variant.
	Findings []lint.Finding `json:"findings,omitempty"`
}

// BuildInput is one variant of one commit.
type BuildInput struct {
	Ref      Ref            `json:"ref"`
	Checkout Checkout       `json:"checkout"`
	Variant  Variant        `json:"variant"`
	Spec     string         `json:"spec,omitempty"`
	Findings []lint.Finding `json:"findings,omitempty"`
	// CacheHint names the dependency layer (platform, opam files, packages installed), so
	// the fleet prefers a worker that built it recently.
	CacheHint string `json:"cache_hint,omitempty"`
}

// BuildResult is a successful variant.
type BuildResult struct {
	Snapshot string `json:"snapshot,omitempty"`
}

// StatusInput is what the status of one commit is made of.
type StatusInput struct {
	Ref      Ref             `json:"ref"`
	Variants []forge.Variant `json:"variants"`
	State    forge.State     `json:"state"`
}

func (s *Service) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Pipeline is the whole service: every ref of every source, analysed, built and
// reported.
func (s *Service) Pipeline() current.Term[current.Unit] {
	s.opsOnce.Do(s.makeOps)
	s.basesReady = current.Return(current.Unit{})
	if s.Images != "" {
		var bases []current.AnyTerm
		for _, p := range s.Platforms {
			if p.Debian != nil {
				bases = append(bases, current.Do(s.ops.base, current.Return(*p.Debian)))
			}
		}
		s.basesReady = current.All(bases...).Named("base images")
	}
	var all []current.AnyTerm
	for _, src := range s.Sources {
		all = append(all, current.ListIter(src.Refs(), Ref.Key, s.pipelineOf))
	}
	return current.All(all...)
}

func (s *Service) pipelineOf(ref current.Term[Ref]) current.Term[current.Unit] {
	src := current.Do(s.ops.fetch, ref)
	opamHead := current.Return("")
	if s.Opam != nil {
		opamHead = s.Opam.Head()
	}
	plan := current.Do(s.ops.analyse, current.Map(current.Pair(src, opamHead), func(t current.Tuple[Checkout, string]) AnalysisInput {
		return AnalysisInput{Checkout: t.First, OpamCommit: t.Second}
	}))
	inputs := current.Gate(current.Map(current.Pair(current.Pair(ref, src), plan), func(t current.Tuple[current.Tuple[Ref, Checkout], Plan]) []BuildInput {
		return s.buildInputs(t.First.First, t.First.Second, t.Second)
	}), s.basesReady)
	builds := current.ListMap(inputs, func(b BuildInput) string { return b.Variant.Name }, func(b current.Term[BuildInput]) current.Term[forge.Variant] {
		result := current.Observe(current.Do(s.ops.build, b))
		return current.Map(current.Pair(b, result), func(t current.Tuple[BuildInput, current.Observed[BuildResult]]) forge.Variant {
			return s.variantStatus(t.First, t.Second)
		})
	})
	analysis := current.Observe(plan)
	status := current.Map(current.Pair(current.Pair(ref, analysis), current.Observe(builds)), func(t current.Tuple[current.Tuple[Ref, current.Observed[Plan]], current.Observed[[]forge.Variant]]) StatusInput {
		r, a, b := t.First.First, t.First.Second, t.Second
		in := StatusInput{Ref: r}
		switch {
		case a.State == current.StateFailed:
			in.Variants = []forge.Variant{{Name: AnalysisVariant, State: forge.Failed, Message: a.Message}}
		case a.State != current.StateOk:
			in.Variants = []forge.Variant{{Name: AnalysisVariant, State: forge.Running}}
		case b.State == current.StateOk:
			in.Variants = b.Value
		default:
			// Variants are not all known yet: show what the plan says, as queued.
			for _, v := range a.Value.Variants {
				in.Variants = append(in.Variants, forge.Variant{Name: v.Name, State: forge.Queued, Experimental: v.Experimental})
			}
		}
		in.State = forge.Summarise(in.Variants).State
		return in
	})
	return current.Do(s.ops.status, status)
}

// buildInputs turns a plan into one input per variant, with its spec.
func (s *Service) buildInputs(ref Ref, co Checkout, p Plan) []BuildInput {
	var out []BuildInput
	for _, v := range p.Variants {
		in := BuildInput{Ref: ref, Checkout: co, Variant: v, CacheHint: dependencyLayer(p.Analysis, v)}
		if v.Kind == KindLintOpam {
			in.Findings = p.Findings
		} else if sp, err := v.Spec(p.Analysis); err == nil {
			in.Spec = sp.String()
		} else {
			in.Spec = "; " + err.Error()
		}
		out = append(out, in)
	}
	return out
}

func (s *Service) variantStatus(b BuildInput, o current.Observed[BuildResult]) forge.Variant {
	v := forge.Variant{Name: b.Variant.Name, Experimental: b.Variant.Experimental}
	rec, _ := s.Index.Variant(context.Background(), b.Ref.Repo, b.Checkout.Commit, b.Variant.Name)
	if rec != nil {
		v.URL = s.variantURL(b.Ref.Repo, b.Checkout.Commit, b.Variant.Name)
		if !rec.Finished.IsZero() && !rec.Started.IsZero() {
			v.Duration = rec.Finished.Sub(rec.Started)
		}
	}
	switch o.State {
	case current.StateOk:
		v.State = forge.Passed
	case current.StateFailed:
		v.State = forge.Failed
		v.Message, v.FailingLines = splitFailure(o.Message)
		if strings.HasPrefix(o.Message, infraPrefix) {
			v.State = forge.Error
		}
	case current.StateActive:
		v.State = forge.Queued
		if o.Active == current.ActiveRunning {
			v.State = forge.Running
		}
	default:
		v.State = forge.Queued
	}
	return v
}

// BuildPool is the engine pool of the build jobs. They wait on the fleet, which does the
// queueing, so give it as many slots as builds may be in flight.
const BuildPool = "ocamlci-build"

// AnalysisVariant names the analysis in a commit's status until the variants are known.
const AnalysisVariant = "(analysis)"

// infraPrefix starts the message of a failure that is not the commit's fault.
const infraPrefix = "infrastructure: "

// failureSep separates a failure's one-line message from its failing log lines.
const failureSep = "\n--- failing lines ---\n"

func splitFailure(msg string) (string, []string) {
	head, lines, ok := strings.Cut(msg, failureSep)
	if !ok {
		return msg, nil
	}
	return head, strings.Split(strings.TrimRight(lines, "\n"), "\n")
}

func (s *Service) variantURL(r RepoID, commit, variant string) string {
	return fmt.Sprintf("%s/%s/%s/%s/commit/%s/variant/%s", strings.TrimRight(s.BaseURL, "/"), r.Forge, r.Owner, r.Name, commit, variant)
}

func (s *Service) makeOps() {
	if s.seen == nil {
		s.seen = map[string]string{}
	}
	s.ops.fetch = &current.Op[Ref, Checkout]{
		Name:    "ocamlci-fetch",
		Key:     func(r Ref) string { return r.Repo.String() + " " + r.Commit },
		Label:   func(r Ref) string { return "fetch " + r.Repo.Owner + "/" + r.Repo.Name + " " + short(r.Commit) },
		Timeout: 10 * time.Minute,
		Run:     s.fetch,
	}
	s.ops.analyse = &current.Op[AnalysisInput, Plan]{
		Name: "ocamlci-analysis",
		Key: func(in AnalysisInput) string {
			return in.Checkout.Repo.String() + " " + in.Checkout.Commit + " " + in.OpamCommit + " " + platformsDigest(s.Platforms)
		},
		Label:   func(in AnalysisInput) string { return "analysis " + short(in.Checkout.Commit) },
		Timeout: 10 * time.Minute,
		Run:     s.analyse,
	}
	s.ops.build = &current.Op[BuildInput, BuildResult]{
		Name: "ocamlci-build",
		Key: func(b BuildInput) string {
			return b.Checkout.Repo.String() + " " + b.Checkout.Commit + " " + b.Variant.Name + " " + digest(b.Spec)
		},
		Label: func(b BuildInput) string { return b.Variant.Name + " " + short(b.Checkout.Commit) },
		Run:   s.build,
		Pool:  BuildPool,
	}
	s.ops.base = &current.Op[image.DebianOptions, string]{
		Name: "ocamlci-base-image",
		Key: func(o image.DebianOptions) string {
			name, _ := o.LocalName()
			return name
		},
		Label: func(o image.DebianOptions) string { return "base image " + o.Suite + " " + o.Arch },
		Run:   s.makeBase,
	}
	s.ops.status = &current.Op[StatusInput, current.Unit]{
		Name:    "ocamlci-status",
		Publish: true,
		Key:     func(in StatusInput) string { return in.Ref.Repo.String() + " " + in.Ref.Commit },
		Label:   func(in StatusInput) string { return "status " + short(in.Ref.Commit) },
		Run:     s.publish,
	}
}

// makeBase makes a platform's Debian base image in the builder's image store, unless
// it is there already.
func (s *Service) makeBase(ctx context.Context, j *current.Job, o image.DebianOptions) (string, error) {
	st, err := image.Open(s.Images)
	if err != nil {
		return "", current.Infra(current.FailDiskFull, err)
	}
	st.Progress = image.NewProgress(j)
	name, err := o.LocalName()
	if err != nil {
		return "", err
	}
	if b, err := st.Resolve(ctx, name); err == nil {
		j.Logf("%s is in the store (%s)", name, b.ID)
		return name, nil
	}
	j.Logf("making %s with mmdebstrap (%s)", name, o.Recipe())
	b, err := st.EnsureDebian(ctx, o)
	if err != nil {
		return "", current.Infra(current.FailNetwork, fmt.Errorf("make base image %s: %w", name, err))
	}
	j.Logf("made %s (%s, %d MB)", name, b.ID, b.Size>>20)
	return name, nil
}

func (s *Service) fetch(ctx context.Context, j *current.Job, r Ref) (Checkout, error) {
	dir := filepath.Join(s.WorkDir, "checkouts", r.Repo.Forge, r.Repo.Owner, r.Repo.Name, r.Commit)
	co := Checkout{Repo: r.Repo, Commit: r.Commit, Dir: dir}
	if _, err := os.Stat(filepath.Join(dir, ".kiln-checkout")); err == nil {
		j.Logf("%s is already checked out", short(r.Commit))
		return co, nil
	}
	j.Logf("fetching %s from %s", r.Commit, git.Redact(r.Remote))
	repo, err := s.Mirrors.FetchCommit(ctx, r.Remote, r.Commit, r.Name)
	if err != nil {
		return co, fetchError(err)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := repo.Checkout(ctx, r.Commit, tmp); err != nil {
		return co, fmt.Errorf("check out %s: %w", short(r.Commit), err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".kiln-checkout"), []byte(r.Commit+"\n"), 0o644); err != nil {
		return co, current.Infra(current.FailDiskFull, err)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return co, err
	}
	j.Logf("checked out into %s", dir)
	return co, nil
}

// fetchError marks network failures as the infrastructure's; authentication and
// missing repositories are the user's to fix and are not retried.
func fetchError(err error) error {
	if errors.Is(err, git.ErrNetwork) {
		return current.Infra(current.FailNetwork, err)
	}
	return err
}

func (s *Service) analyse(ctx context.Context, j *current.Job, in AnalysisInput) (Plan, error) {
	return s.plan(ctx, in, j.Logf)
}

// plan analyses a checked-out commit and decides its variants, logging to logf.
func (s *Service) plan(ctx context.Context, in AnalysisInput, logf func(string, ...any)) (Plan, error) {
	a, err := Analyse(in.Checkout.Dir)
	if err != nil {
		return Plan{}, err
	}
	logf("opam files: %d (%s)", len(a.OpamFiles), strings.Join(a.Packages, ", "))
	if a.OCamlFormat != "" {
		logf("ocamlformat version: %s", a.OCamlFormat)
	}
	if len(a.MonorepoLocks) > 0 {
		logf("opam-monorepo lock files: %s", strings.Join(a.MonorepoLocks, ", "))
	}
	if len(a.OpamFiles) == 0 {
		return Plan{}, errors.New("no opam files found (looked for *.opam and */opam up to two folders down, skipping test* folders)")
	}
	platforms, err := Select(s.Platforms, a.Config.Platforms)
	if err != nil {
		return Plan{}, err
	}
	solve := SystemSolve
	var extra []*repository.Package
	if len(a.Config.OpamRepositories) > 0 {
		if s.Opam == nil || in.OpamCommit == "" {
			return Plan{}, fmt.Errorf("%s: opam-repositories need the server to solve against an opam repository (kiln serve --opam-repository)", ConfigFile)
		}
		if extra, err = extraPackages(ctx, s.Mirrors, a.Config.OpamRepositories, logf); err != nil {
			return Plan{}, err
		}
	}
	var pinned []*repository.Package
	if len(a.PinDepends) > 0 {
		if s.Opam == nil || in.OpamCommit == "" {
			return Plan{}, errors.New("pin-depends need the server to solve against an opam repository (kiln serve --opam-repository)")
		}
		if pinned, err = pinnedPackages(ctx, s.Mirrors, a.PinDepends); err != nil {
			return Plan{}, err
		}
		for _, p := range pinned {
			logf("pinned %s (%s)", p.Package, p.Path)
		}
	}
	if s.Opam != nil && in.OpamCommit != "" {
		logf("solving against opam-repository %s", short(in.OpamCommit))
		solve = s.Opam.Solver(in.OpamCommit, false, extra, pinned)
	}
	install := map[string][]string{}
	var solved []Platform
	var failures []string
	for _, p := range platforms {
		pkgs, err := solve(ctx, a, p)
		if err != nil {
			logf("%s: %v", p.Name, err)
			failures = append(failures, fmt.Sprintf("%s: %v", p.Name, err))
			continue
		}
		logf("%s: solved; to install with opam: %s", p.Name, orNone(pkgs))
		install[p.Name] = pkgs
		solved = append(solved, p)
	}
	if len(solved) == 0 {
		return Plan{}, fmt.Errorf("no platform can install the packages:\n%s", strings.Join(failures, "\n"))
	}
	plan := Plan{Analysis: a, Variants: Variants(a, solved, install)}
	if s.Opam != nil && in.OpamCommit != "" && a.Config.Lint.LowerBoundEnabled() {
		p := solved[0]
		lower, err := s.Opam.Solver(in.OpamCommit, true, extra, pinned)(ctx, a, p)
		switch {
		case err != nil:
			logf("%s: no lower-bounds solution: %v", p.Name, err)
		case strings.Join(lower, " ") == strings.Join(install[p.Name], " "):
			logf("%s: the lower bounds are the newest versions; no (lower-bound) job", p.Name)
		default:
			logf("%s (lower-bound): to install with opam: %s", p.Name, orNone(lower))
			plan.Variants = append(plan.Variants, Variant{Name: p.Name + " (lower-bound)", Kind: KindLowerBound, Platform: p, Install: lower})
		}
	}
	for rel, data := range a.OpamFiles {
		name := opam.PackageName(packageNameOf(rel))
		pkg := opam.Package{Name: name, Version: "dev"}
		plan.Findings = append(plan.Findings, lint.LintFile(rel, data, pkg, lint.DefaultContext())...)
	}
	for _, v := range plan.Variants {
		logf("variant %s", v.Name)
	}
	return plan, nil
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "(none)"
	}
	return strings.Join(xs, " ")
}

// SystemSolve accepts a commit whose local packages depend only on each other and on
// the packages the platform's image provides, with nothing to install.
func SystemSolve(_ context.Context, a *Analysis, p Platform) ([]string, error) {
	have := map[opam.PackageName]opam.Version{}
	for _, s := range p.System {
		pkg, ok := opam.ParsePackage(s)
		if !ok {
			return nil, fmt.Errorf("platform %s: system package %q is not name.version", p.Name, s)
		}
		have[pkg.Name] = pkg.Version
	}
	for rel := range a.OpamFiles {
		have[opam.PackageName(packageNameOf(rel))] = "dev"
	}
	installed := func(n opam.PackageName) (opam.Version, bool) { v, ok := have[n]; return v, ok }
	var problems []string
	for _, rel := range sortedKeys(a.OpamFiles) {
		f, err := opam.Parse(rel, a.OpamFiles[rel])
		if err != nil {
			return nil, err
		}
		deps, err := f.Depends()
		if err != nil {
			return nil, fmt.Errorf("%s: depends: %w", rel, err)
		}
		self := opam.Package{Name: opam.PackageName(packageNameOf(rel)), Version: "dev"}
		env := opam.DepsEnv{Build: true, WithTest: true, Dev: true, Self: self, Vars: opam.MapEnv(p.Vars)}
		resolved := env.Resolve(deps)
		if !opam.Satisfied(resolved, installed) {
			var unmet []string
			for _, atom := range resolved.Atoms() {
				if v, ok := have[atom.Name]; !ok {
					unmet = append(unmet, string(atom.Name)+" (not provided)")
				} else if !atom.MatchesVersion(v) {
					unmet = append(unmet, fmt.Sprintf("%s (the platform has %s)", atom, v))
				}
			}
			problems = append(problems, fmt.Sprintf("%s needs %s", self.Name, strings.Join(unmet, ", ")))
		}
		if avail, err := f.Available(); err == nil && !avail.EvalBool(env.Env(), true) {
			problems = append(problems, fmt.Sprintf("%s is not available (available: %s)", self.Name, avail))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s; the platform provides only %s and no opam repository is configured", strings.Join(problems, "; "), strings.Join(p.System, ", "))
	}
	return nil, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (s *Service) build(ctx context.Context, j *current.Job, b BuildInput) (BuildResult, error) {
	idx := s.Index
	started := time.Now()
	idx.SetVariant(ctx, VariantRecord{Repo: b.Checkout.Repo, Commit: b.Checkout.Commit, Name: b.Variant.Name,
		JobID: j.ID(), State: forge.Running, Started: started, Experimental: b.Variant.Experimental})
	res, err := s.runVariant(ctx, j, b)
	rec := VariantRecord{Repo: b.Checkout.Repo, Commit: b.Checkout.Commit, Name: b.Variant.Name, JobID: j.ID(),
		State: forge.Passed, Started: started, Finished: time.Now(), Experimental: b.Variant.Experimental}
	if err != nil {
		rec.State = forge.Failed
		rec.Message = err.Error()
		if current.KindOf(err) != current.FailWork {
			rec.State = forge.Error
		}
	}
	idx.SetVariant(context.WithoutCancel(ctx), rec)
	return res, err
}

func (s *Service) runVariant(ctx context.Context, j *current.Job, b BuildInput) (BuildResult, error) {
	if b.Variant.Kind == KindLintOpam {
		return BuildResult{}, lintOpam(j, b.Findings)
	}
	if strings.HasPrefix(b.Spec, "; ") {
		return BuildResult{}, errors.New(strings.TrimPrefix(b.Spec, "; "))
	}
	digestSrc, err := s.Fleet.PutSource(ctx, b.Checkout.Dir)
	if err != nil {
		return BuildResult{}, current.Infra(current.FailNetwork, fmt.Errorf("upload source: %w", err))
	}
	timeout := s.StepTimeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	req := cluster.Request{
		Pool:      b.Variant.Platform.Pool,
		Client:    b.Ref.Repo.Owner,
		Spec:      b.Spec,
		Source:    digestSrc,
		CacheHint: b.CacheHint,
		Urgent:    s.firstBuild(b),
		Timeout:   cluster.Duration(timeout),
	}
	job, err := s.submit(ctx, j, req)
	if err != nil {
		return BuildResult{}, err
	}
	// A queued job has no log yet: follow it once it runs.
	tail := &tailWriter{max: 200}
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		if _, err := s.Fleet.WaitStarted(logCtx, job.ID); err != nil {
			return
		}
		s.Fleet.Log(logCtx, job.ID, 0, true, io.MultiWriter(j, tail))
	}()
	finished, err := s.wait(ctx, job.ID)
	if err != nil {
		stopLog()
		<-logDone
		if ctx.Err() != nil && current.Cancelled(ctx) {
			// No longer wanted: stop the fleet job too. When the engine is stopping, the
			// fleet job stays queued and the job attaches to it again after a restart.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			s.Fleet.Cancel(cctx, job.ID)
			cancel()
		}
		return BuildResult{}, err
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
		return BuildResult{}, current.Infra(current.FailWorkerLost, fmt.Errorf("fleet job %s finished without a result", job.ID))
	}
	if r.Attempts > 1 {
		j.Logf("ran %d times: worker lost, retried", r.Attempts)
	}
	switch r.Outcome {
	case cluster.OutcomeOK:
		return BuildResult{Snapshot: r.Snapshot}, nil
	case cluster.OutcomeFailed:
		return BuildResult{}, fmt.Errorf("%s%s%s", r.Message, failureSep, strings.Join(failingLines(tail.lines()), "\n"))
	case cluster.OutcomeCancelled:
		return BuildResult{}, current.Infra(current.FailCancelled, fmt.Errorf("cancelled on the fleet: %s", r.Message))
	default:
		return BuildResult{}, current.Infra(current.FailWorkerLost, fmt.Errorf("%s%s", infraPrefix, r.Message))
	}
}

// submit hands the build to the fleet under a ticket derived from the engine's job, so
// that the job attaches to its fleet job again after a restart of the engine. A ticket
// whose fleet job already ended with an infrastructure failure (an earlier attempt of
// this job) is passed over for the next.
func (s *Service) submit(ctx context.Context, j *current.Job, req cluster.Request) (*cluster.Job, error) {
	base := "ocamlci-" + digest(req.Pool+" "+j.ID())
	for n := 0; n < 8; n++ {
		req.ID = fmt.Sprintf("%s-%d", base, n)
		job, err := s.Fleet.Submit(ctx, req)
		if err != nil {
			return nil, current.Infra(current.FailNetwork, fmt.Errorf("submit to pool %s: %w", req.Pool, err))
		}
		if job.State == cluster.StateDone && job.Result != nil && job.Result.Outcome == cluster.OutcomeInfrastructure {
			continue
		}
		lane := map[bool]string{true: "urgent", false: "background"}[req.Urgent]
		if job.Submitted.Before(time.Now().Add(-time.Minute)) {
			j.Logf("attached again to fleet job %s in pool %s", job.ID, req.Pool)
		} else {
			j.Logf("submitted to pool %s as fleet job %s (%s lane)", req.Pool, job.ID, lane)
		}
		return job, nil
	}
	return nil, current.Infra(current.FailWorkerLost, fmt.Errorf("pool %s: every attempt failed on the infrastructure", req.Pool))
}

// wait waits for a fleet job to end, riding out a few failures of the connection
// rather than submitting the job again.
func (s *Service) wait(ctx context.Context, id string) (*cluster.Job, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var job *cluster.Job
		if job, err = s.Fleet.Wait(ctx, id); err == nil {
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

// firstBuild reports whether this is the first build of the variant of this commit:
// such builds are urgent (someone waits for them); rebuilds because opam-repository
// moved on go in the background lane.
func (s *Service) firstBuild(b BuildInput) bool {
	k := b.Checkout.Repo.String() + " " + b.Checkout.Commit + " " + b.Variant.Name
	d := digest(b.Spec)
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	first, ok := s.seen[k]
	if !ok {
		if len(s.seen) >= maxSeen {
			clear(s.seen) // forgetting only costs a re-test the urgent lane
		}
		s.seen[k] = d
		return true
	}
	return first == d
}

// dependencyLayer names what a variant's dependency layer is made of.
func dependencyLayer(a *Analysis, v Variant) string {
	var b strings.Builder
	for _, rel := range sortedKeys(a.OpamFiles) {
		fmt.Fprintf(&b, "%s %s\n", rel, digest(string(a.OpamFiles[rel])))
	}
	fmt.Fprintf(&b, "%v %v", v.Install, a.PinDepends)
	return v.Platform.Name + " " + digest(b.String())
}

// maxSeen bounds the memory of first builds (about 100 bytes each).
const maxSeen = 200_000

func lintOpam(j *current.Job, findings []lint.Finding) error {
	j.Logf("# to reproduce locally: opam lint *.opam")
	var errs []string
	for _, f := range findings {
		j.Logf("%s", f.String())
		if f.Severity == lint.Error {
			errs = append(errs, f.String())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("opam lint found %d error(s)%s%s", len(errs), failureSep, strings.Join(errs, "\n"))
	}
	j.Logf("opam lint: no errors (%d warnings)", len(findings))
	return nil
}

func (s *Service) publish(ctx context.Context, j *current.Job, in StatusInput) (current.Unit, error) {
	st := forge.Summarise(in.Variants)
	if err := s.Index.SetCommit(ctx, in.Ref, st, in.Variants); err != nil {
		return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
	}
	j.Logf("%s: %s", short(in.Ref.Commit), st.Title)
	p := s.Publishers[in.Ref.Repo.Forge]
	if p == nil {
		return current.Unit{}, nil
	}
	if err := p.Publish(ctx, in.Ref, st, in.Variants); err != nil {
		return current.Unit{}, current.Infra(current.FailNetwork, fmt.Errorf("publish status to %s: %w", in.Ref.Repo.Forge, err))
	}
	return current.Unit{}, nil
}

// failingLines picks the lines of a failed log that explain it: those that look like
// errors and their neighbours, or else the last lines.
func failingLines(lines []string) []string {
	var keep []string
	for i, l := range lines {
		low := strings.ToLower(l)
		if strings.Contains(low, "error") || strings.Contains(low, "fail") || strings.Contains(low, "exception") {
			from := max(0, i-2)
			for _, k := range lines[from : i+1] {
				if len(keep) == 0 || keep[len(keep)-1] != k {
					keep = append(keep, k)
				}
			}
		}
	}
	if len(keep) == 0 {
		keep = lines
	}
	if len(keep) > 20 {
		keep = keep[len(keep)-20:]
	}
	return keep
}

// tailWriter keeps the last max lines written to it.
type tailWriter struct {
	mu      sync.Mutex
	max     int
	partial []byte
	buf     []string
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := append(t.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.buf = append(t.buf, stripANSI(string(data[:i])))
		data = data[i+1:]
	}
	if len(t.buf) > t.max {
		t.buf = append([]string(nil), t.buf[len(t.buf)-t.max:]...)
	}
	t.partial = append([]byte(nil), data...)
	return len(p), nil
}

func (t *tailWriter) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.buf...)
	if len(t.partial) > 0 {
		out = append(out, stripANSI(string(t.partial)))
	}
	if len(out) > t.max {
		out = out[len(out)-t.max:]
	}
	return out
}

func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func platformsDigest(ps []Platform) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s %s %s %v;", p.Name, p.Image, p.Pool, p.System)
	}
	return digest(b.String())
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
