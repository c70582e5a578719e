package opamrepoci

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/baseimages"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// Service is the opam-repo-ci pipeline and its state: every pull request of the
// repositories followed, analysed, linted, planned, built on the fleet, each failure
// compared with the base branch, and reported as two statuses and one comment.
type Service struct {
	// Forges are the forges followed; their pull requests (on plain git, every branch
	// but the base) are tested.
	Forges  *forges.Set
	Mirrors *git.Mirrors
	// Repos, when not empty, limits the repositories tested ("gitea/owner/name").
	Repos []forge.RepoID
	// BaseBranch is the branch pull requests merge into (default "master").
	BaseBranch string
	Config     *Config
	// Archives is the source-archive cache the builds' opam layers take their sources
	// from (nil: one in WorkDir/opam-archives).
	Archives *opamenv.Archives
	// Fleet runs the builds; Run, when set, runs them instead (tests).
	Fleet fleetjob.Fleet
	Run   func(ctx context.Context, j *current.Job, req fleetjob.Request) (fleetjob.Result, error)
	Index *results.Index
	// Images, when set, is the builder's image store folder: the platforms' Debian
	// base images are made there (one job each) before the first build needs them.
	Images string
	// WorkDir holds the builds' contexts (the opam layers, and the merged trees of
	// platforms without compiler packages), the archive cache, and the latched bases.
	WorkDir string
	// BaseURL is the web UI's address, Prefix the path of the service's pages in it.
	BaseURL, Prefix string
	// StepTimeout bounds one build on the fleet (default 1 hour).
	StepTimeout time.Duration
	Metrics     *Metrics
	Logger      *slog.Logger

	opsOnce    sync.Once
	planner    *Planner
	archives   func() (*opamenv.Archives, error)
	bases      trees // indexes of base commits
	merged     trees // analyses of pull requests
	layerSlots chan struct{}
	layers     layerUses
	latch      *latches
	basesReady current.Term[current.Unit]
	ops        struct {
		base    *current.Op[image.DebianOptions, string]
		head    *current.Op[forge.Ref, current.Unit]
		fetch   *current.Op[PR, Fetched]
		analyse *current.Op[Fetched, Planned]
		build   *current.Op[JobInput, current.Unit]
		report  *current.Op[Report, current.Unit]
		ended   *current.Op[results.Live, current.Unit]
	}
}

// PR is a pull request's head to test and the base commit it merges into, latched
// for the head: a new base commit does not restart the head's builds.
type PR struct {
	Repo forge.RepoID `json:"repo"`
	// Ref is refs/pull/N/head (refs/heads/BRANCH on plain git), BaseRef the base
	// branch's.
	Ref     string `json:"ref"`
	BaseRef string `json:"base_ref"`
	Number  int    `json:"number,omitempty"`
	Title   string `json:"title,omitempty"`
	Head    string `json:"head"`
	Base    string `json:"base"`
	Remote  string `json:"remote"`
}

func (p PR) key() string { return p.Repo.String() + " " + p.Ref }

// forgeRef is the head as the forges know it.
func (p PR) forgeRef() forge.Ref {
	return forge.Ref{Repo: p.Repo, Name: p.Ref, PR: p.Number, Title: p.Title, Commit: p.Head, Remote: p.Remote}
}

// client is the pull request's fleet client.
func (p PR) client() string {
	n := strings.TrimPrefix(p.Ref, "refs/heads/")
	if p.Number > 0 {
		n = strconv.Itoa(p.Number)
	}
	return FleetClient(p.Repo.Forge, p.Repo.Owner+"/"+p.Repo.Name, n)
}

// Fetched is a pull request whose head and base are in a local git repository.
type Fetched struct {
	PR     PR     `json:"pr"`
	GitDir string `json:"git_dir"`
}

// Planned is a pull request's plan, with the trees its jobs build: the merge of head
// into base, and the base.
type Planned struct {
	PR   PR    `json:"pr"`
	Plan *Plan `json:"plan"`
	// GitDir is the git repository the analysis read, where the builds' opam layers
	// are solved.
	GitDir string `json:"git_dir,omitempty"`
	// Merged and BaseDir are folders holding the merged tree and the base's, for the
	// builds on platforms without compiler packages (opam init over the tree).
	Merged  string `json:"merged,omitempty"`
	BaseDir string `json:"base_dir,omitempty"`
	// Kinds are the pull request's changes by package (name.version).
	Kinds map[string]prdiff.Kind `json:"kinds,omitempty"`
}

// JobInput is one build: a job of a pull request's plan, on its merged tree, or its
// counterpart on the base branch.
type JobInput struct {
	PR  PR  `json:"pr"`
	Job Job `json:"job"`
	// OnBase is set for the build of a job against the base branch alone.
	OnBase bool `json:"on_base,omitempty"`
	// GitDir is the git repository of the analysis, where the build's opam layer is
	// solved; Dir the tree a build without a layer takes.
	GitDir string `json:"git_dir,omitempty"`
	Dir    string `json:"dir"`
}

func (in JobInput) key() string {
	if in.OnBase {
		return "base " + in.PR.Repo.String() + " " + in.PR.Base + " " + in.Job.ID()
	}
	return in.PR.Repo.String() + " " + in.PR.Head + " " + in.PR.Base + " " + in.Job.ID()
}

func (s *Service) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Service) baseBranch() string {
	if s.BaseBranch == "" {
		return "master"
	}
	return s.BaseBranch
}

// Pipeline is the whole service: every pull request of every source, tested and
// reported.
func (s *Service) Pipeline() current.Term[current.Unit] {
	s.opsOnce.Do(s.makeOps)
	s.basesReady = current.Return(current.Unit{})
	if s.Images != "" {
		var ps []matrix.Platform
		for _, n := range s.Config.platformNames() {
			ps = append(ps, s.Config.platforms[n])
		}
		s.basesReady = baseimages.Ready(s.ops.base, ps)
	}
	var all []current.AnyTerm
	for _, src := range s.Forges.Sources() {
		prs := current.Map(current.Map(src.Refs(), s.followed), s.pullRequests)
		// Only the pull requests' heads are recorded: the base branch is not tested.
		heads := current.ListIter(current.Map(prs, forgeRefs), forge.Ref.Key, func(r current.Term[forge.Ref]) current.Term[current.Unit] {
			return current.Do(s.ops.head, r)
		})
		// A head no pull request points at any more ends: its unfinished jobs cancelled.
		ended := current.Do(s.ops.ended, current.Map(prs, liveHeads))
		all = append(all, heads, current.ListIter(prs, PR.key, s.pipelineOf), ended)
	}
	return current.All(all...)
}

// liveHeads is the set of the heads the pull requests point at.
func liveHeads(prs []PR) results.Live {
	repos := make([]forge.RepoID, len(prs))
	heads := make([]string, len(prs))
	for i, p := range prs {
		repos[i], heads[i] = p.Repo, p.Head
	}
	return results.LiveOf(repos, heads)
}

// supersededMessage is why the jobs of a head no pull request points at are cancelled.
const supersededMessage = "cancelled: superseded (no pull request points at this commit any more)"

// endSuperseded gives each unfinished head of the source's forges that no pull
// request points at any more its final status: its queued and running jobs cancelled,
// and the opam-ci status says so, so that the forge is not left with a pending one.
func (s *Service) endSuperseded(ctx context.Context, j *current.Job, live results.Live) (current.Unit, error) {
	superseded, err := s.Index.Superseded(ctx, live)
	if err != nil {
		return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
	}
	for _, c := range superseded {
		recs, err := s.Index.CancelUnfinished(ctx, c.Repo, c.Commit, supersededMessage)
		if err != nil {
			return current.Unit{}, current.Infra(current.FailDiskFull, err)
		}
		vs := make([]forge.Variant, 0, len(recs))
		for _, r := range recs {
			vs = append(vs, forge.Variant{Name: r.Name, State: r.State, Experimental: r.Experimental, Message: r.Message})
		}
		st := forge.Status{State: forge.Cancelled, Title: supersededMessage}
		if err := s.Index.SetCommit(ctx, c.Repo, c.Commit, st, vs); err != nil {
			return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
		}
		j.Logf("%s %s is superseded: its unfinished jobs cancelled", c.Repo, short(c.Commit))
		url := s.commitURL(PR{Repo: c.Repo, Head: c.Commit})
		if err := s.Forges.PublishCheck(ctx, forge.Ref{Repo: c.Repo, Commit: c.Commit}, forge.Check{Name: StatusContext, URL: url}, st, nil); err != nil {
			return current.Unit{}, current.Infra(current.FailNetwork, err)
		}
	}
	return current.Unit{}, nil
}

func forgeRefs(prs []PR) []forge.Ref {
	out := make([]forge.Ref, len(prs))
	for i, p := range prs {
		out[i] = p.forgeRef()
	}
	return out
}

// followed keeps the refs of the repositories tested.
func (s *Service) followed(refs []forge.Ref) []forge.Ref {
	if len(s.Repos) == 0 {
		return refs
	}
	var out []forge.Ref
	for _, r := range refs {
		for _, want := range s.Repos {
			if r.Repo == want {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// pullRequests are the pull requests among refs (on plain git, the branches but the
// base), each with its latched base; a repository without the base branch has none.
func (s *Service) pullRequests(refs []forge.Ref) []PR {
	baseRef := "refs/heads/" + s.baseBranch()
	bases := map[forge.RepoID]string{}
	for _, r := range refs {
		if r.Name == baseRef {
			bases[r.Repo] = r.Commit
		}
	}
	var out []PR
	for _, r := range refs {
		base, ok := bases[r.Repo]
		isPR := r.PR > 0 || (r.Repo.Forge == "git" && r.Name != baseRef && strings.HasPrefix(r.Name, "refs/heads/"))
		if !ok || !isPR {
			continue
		}
		p := PR{Repo: r.Repo, Ref: r.Name, BaseRef: baseRef, Number: r.PR, Title: r.Title, Head: r.Commit, Remote: r.Remote}
		p.Base = s.latch.base(p.key()+" "+p.Head, base)
		out = append(out, p)
	}
	keep := make([]string, len(out))
	for i, p := range out {
		keep[i] = p.key() + " " + p.Head
	}
	if err := s.latch.keep(keep); err != nil {
		s.log().Warn("opam-repo-ci: cannot save the latched bases; a restart may test pull requests against a newer base", "err", err)
	}
	s.Metrics.keepPRs(out)
	return out
}

// pipelineOf tests one pull request.
func (s *Service) pipelineOf(pr current.Term[PR]) current.Term[current.Unit] {
	// What is built does not change with the pull request's title.
	fetched := current.Do(s.ops.fetch, current.Map(pr, func(p PR) PR { p.Title = ""; return p }))
	planned := current.Do(s.ops.analyse, fetched)
	jobs := current.Gate(current.Map(planned, jobInputs), s.basesReady)
	outcomes := current.ListMap(jobs, func(in JobInput) string { return in.Job.ID() }, func(in current.Term[JobInput]) current.Term[Outcome] {
		built := current.Observe(current.Do(s.ops.build, in))
		onBase := current.Map3(planned, in, built, func(p Planned, in JobInput, o current.Observed[current.Unit]) current.Option[JobInput] {
			if o.State != current.StateFailed || o.Kind.Infrastructure() || in.Job.AcceptFailure {
				return current.None[JobInput]() // an accepted failure counts either way
			}
			b, ok := BaseJob(in.Job, p.Kinds)
			if !ok {
				return current.None[JobInput]()
			}
			return current.Some(JobInput{PR: in.PR, Job: b, OnBase: true, GitDir: p.GitDir, Dir: p.BaseDir})
		})
		base := current.OptionMap(onBase, func(b current.Term[JobInput]) current.Term[current.Observed[current.Unit]] {
			return current.Observe(current.Do(s.ops.build, b))
		})
		return current.Map3(in, built, base, s.outcome)
	})
	report := current.Map3(pr, current.Observe(planned), current.Observe(outcomes), s.report)
	return current.Do(s.ops.report, report)
}

// jobInputs are the plan's jobs on the merged tree.
func jobInputs(p Planned) []JobInput {
	out := make([]JobInput, 0, len(p.Plan.Jobs))
	for _, j := range p.Plan.Jobs {
		out = append(out, JobInput{PR: p.PR, Job: j, GitDir: p.GitDir, Dir: p.Merged})
	}
	return out
}

// outcome is what became of a job, with the verdict of a failure.
func (s *Service) outcome(in JobInput, o current.Observed[current.Unit], base current.Option[current.Observed[current.Unit]]) Outcome {
	out := Outcome{Job: in.Job, State: observedState(o), URL: s.variantURL(in.PR, in.Job.ID())}
	if out.State != forge.Failed {
		if out.State == forge.Error || out.State == forge.Cancelled {
			out.Message = o.Message
		}
		return out
	}
	out.Message, out.Lines = o.Message, o.Lines
	switch {
	case !base.Some:
		out.Verdict = NewFailure // no counterpart on the base branch
	case base.Value.State == current.StateOk:
		out.Verdict = NewFailure
	case base.Value.State == current.StateFailed && !base.Value.Kind.Infrastructure():
		out.Verdict = BaseFailure
	case base.Value.State == current.StateFailed:
		out.Verdict = NewFailure // the base could not be built: the failure stays the pull request's
	default:
		out.Verdict = Comparing
	}
	return out
}

// observedState maps an engine outcome to a forge state.
func observedState(o current.Observed[current.Unit]) forge.State {
	switch o.State {
	case current.StateOk:
		return forge.Passed
	case current.StateFailed:
		switch {
		case o.Kind == current.FailCancelled:
			return forge.Cancelled
		case o.Kind.Infrastructure():
			return forge.Error
		}
		return forge.Failed
	case current.StateActive:
		if o.Active == current.ActiveRunning {
			return forge.Running
		}
	}
	return forge.Queued
}

// report gathers a pull request's plan and outcomes.
func (s *Service) report(pr PR, planned current.Observed[Planned], outs current.Observed[[]Outcome]) Report {
	r := Report{PR: pr, URL: s.commitURL(pr)}
	switch {
	case planned.State == current.StateFailed:
		st := forge.Failed
		if planned.Kind.Infrastructure() {
			st = forge.Error
		}
		r.Analysis = &Outcome{State: st, Message: planned.Message, Lines: planned.Lines}
	case planned.State != current.StateOk:
		r.Analysis = &Outcome{State: forge.Running}
	case planned.Value.Plan.Failed():
		r.Plan = planned.Value.Plan
		var lines []string
		for _, p := range r.Plan.Analysis.Problems {
			lines = append(lines, p.String())
		}
		r.Analysis = &Outcome{State: forge.Failed, Message: "the pull request cannot be tested as it stands", Lines: lines}
	default:
		r.Plan = planned.Value.Plan
		switch outs.State {
		case current.StateOk:
			r.Outcomes = outs.Value
		case current.StateFailed: // the base images could not be made
			for _, j := range r.Plan.Jobs {
				r.Outcomes = append(r.Outcomes, Outcome{Job: j, State: forge.Error, Message: outs.Message, URL: s.variantURL(pr, j.ID())})
			}
		default:
			for _, j := range r.Plan.Jobs {
				r.Outcomes = append(r.Outcomes, Outcome{Job: j, State: forge.Queued, URL: s.variantURL(pr, j.ID())})
			}
		}
	}
	return r
}

func (s *Service) commitURL(pr PR) string {
	return fmt.Sprintf("%s%s/%s/%s/%s/commit/%s", strings.TrimRight(s.BaseURL, "/"), s.Prefix, pr.Repo.Forge, pr.Repo.Owner, pr.Repo.Name, pr.Head)
}

func (s *Service) variantURL(pr PR, id string) string {
	return s.commitURL(pr) + "/variant/" + id
}

func (s *Service) makeOps() {
	s.planner = &Planner{Config: s.Config}
	s.layerSlots = layerSlotsOf()
	// The layers of builds a previous run left: each build prepares its own again.
	os.RemoveAll(filepath.Join(s.WorkDir, "layers"))
	s.archives = sync.OnceValues(s.openArchives)
	s.latch = &latches{path: filepath.Join(s.WorkDir, "bases.json")}
	if s.Metrics == nil {
		s.Metrics = NewMetrics(nil)
	}
	s.ops.head = results.HeadOp("opamrepoci-head", s.Index)
	s.ops.base = baseimages.Op("opamrepoci-base-image", s.Images)
	s.ops.fetch = &current.Op[PR, Fetched]{
		Name:    "opamrepoci-fetch",
		Key:     func(p PR) string { return p.Repo.String() + " " + p.Head + " " + p.Base },
		Label:   func(p PR) string { return "fetch " + p.Repo.Name + " " + short(p.Head) + " onto " + short(p.Base) },
		Timeout: 10 * time.Minute,
		Run:     s.fetch,
	}
	s.ops.analyse = &current.Op[Fetched, Planned]{
		Name:    "opamrepoci-analysis",
		Key:     func(f Fetched) string { return f.PR.Repo.String() + " " + f.PR.Head + " " + f.PR.Base },
		Label:   func(f Fetched) string { return "analyse " + short(f.PR.Head) + " onto " + short(f.PR.Base) },
		Timeout: 10 * time.Minute,
		Run:     s.analyse,
	}
	s.ops.build = &current.Op[JobInput, current.Unit]{
		Name: "opamrepoci-build",
		Key:  JobInput.key,
		Label: func(in JobInput) string {
			if in.OnBase {
				return in.Job.ID() + " on " + s.baseBranch() + " " + short(in.PR.Base)
			}
			return in.Job.ID() + " " + short(in.PR.Head)
		},
		Run:  s.build,
		Pool: fleetjob.Pool,
	}
	s.ops.ended = &current.Op[results.Live, current.Unit]{
		Name:  "opamrepoci-superseded",
		Key:   func(l results.Live) string { return "superseded " + strings.Join(l.Forges, ",") },
		Label: func(results.Live) string { return "end superseded heads" },
		Run:   s.endSuperseded,
	}
	s.ops.report = &current.Op[Report, current.Unit]{
		Name:    "opamrepoci-status",
		Publish: true,
		Key:     func(r Report) string { return r.PR.Repo.String() + " " + r.PR.Ref + " " + r.PR.Head },
		Label:   func(r Report) string { return "status " + short(r.PR.Head) },
		Run:     s.publish,
	}
}

// fetch brings the head and base commits into the repository's mirror.
func (s *Service) fetch(ctx context.Context, j *current.Job, p PR) (Fetched, error) {
	j.Logf("fetching %s (%s) and %s (%s) from %s", short(p.Head), p.Ref, short(p.Base), p.BaseRef, git.Redact(p.Remote))
	if _, err := s.Mirrors.FetchCommit(ctx, p.Remote, p.Base, p.BaseRef); err != nil {
		return Fetched{}, fetchError(err)
	}
	repo, err := s.Mirrors.FetchCommit(ctx, p.Remote, p.Head, p.Ref)
	if err != nil {
		return Fetched{}, fetchError(err)
	}
	return Fetched{PR: p, GitDir: repo.Dir}, nil
}

// fetchError marks network failures as the infrastructure's.
func fetchError(err error) error {
	if errors.Is(err, git.ErrNetwork) {
		return current.Infra(current.FailNetwork, err)
	}
	return err
}

// analyse merges, classifies, lints and plans the pull request, and writes the trees
// its builds take.
func (s *Service) analyse(ctx context.Context, j *current.Job, f Fetched) (Planned, error) {
	p := f.PR
	base, err := s.baseIndex(ctx, f.GitDir, p.Base)
	if err != nil {
		return Planned{}, err
	}
	res, err := Analyse(ctx, f.GitDir, p.Base, p.Head, base.Repo)
	if err != nil {
		return Planned{}, err
	}
	s.merged.put(f.GitDir+" "+p.Base+" "+p.Head, res)
	plan, err := s.planner.Plan(ctx, res)
	if err != nil {
		return Planned{}, err
	}
	out := Planned{PR: p, Plan: plan, GitDir: f.GitDir, Kinds: map[string]prdiff.Kind{}}
	for _, c := range res.Changes {
		out.Kinds[c.Package.String()] = c.Kind
		j.Logf("%-14s %s", c.Kind, c.Package)
	}
	for _, pr := range res.Problems {
		j.Logf("FAILED %s", pr)
	}
	j.Logf("lint: %s", plan.Lint.Summary())
	if plan.Failed() {
		return out, nil
	}
	j.Logf("%d jobs planned, %d skipped", len(plan.Jobs), len(plan.Skipped))
	if !slices.ContainsFunc(plan.Jobs, s.withoutLayer) {
		return out, nil // every build takes an opam layer of its own, not the trees
	}
	if out.Merged, err = s.tree(ctx, f.GitDir, res.Merged); err != nil {
		return Planned{}, err
	}
	if out.BaseDir, err = s.tree(ctx, f.GitDir, p.Base+"^{tree}"); err != nil {
		return Planned{}, err
	}
	return out, nil
}

// tree writes a tree of the git repository to a folder of its own (once) and
// returns the folder.
func (s *Service) tree(ctx context.Context, gitDir, treeish string) (string, error) {
	id, err := gitOutput(ctx, gitDir, "rev-parse", "--verify", treeish)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.WorkDir, "trees", id)
	if _, err := os.Stat(filepath.Join(dir, ".kiln-tree")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.WorkDir), "tree-")
	if err != nil {
		if err := os.MkdirAll(s.WorkDir, 0o755); err != nil {
			return "", current.Infra(current.FailDiskFull, err)
		}
		if tmp, err = os.MkdirTemp(s.WorkDir, "tree-"); err != nil {
			return "", current.Infra(current.FailDiskFull, err)
		}
	}
	defer os.RemoveAll(tmp)
	index := filepath.Join(tmp, "index")
	work := filepath.Join(tmp, "tree")
	if err := os.Mkdir(work, 0o755); err != nil {
		return "", current.Infra(current.FailDiskFull, err)
	}
	if _, err := gitOutputEnv(ctx, gitDir, []string{"GIT_INDEX_FILE=" + index}, "--work-tree="+work, "-c", "core.bare=false", "read-tree", "--reset", "-u", id); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(work, ".kiln-tree"), []byte(id+"\n"), 0o644); err != nil {
		return "", current.Infra(current.FailDiskFull, err)
	}
	os.MkdirAll(filepath.Dir(dir), 0o755)
	if err := os.Rename(work, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, ".kiln-tree")); serr == nil {
			return dir, nil // written meanwhile
		}
		return "", current.Infra(current.FailDiskFull, err)
	}
	return dir, nil
}

func gitOutput(ctx context.Context, gitDir string, args ...string) (string, error) {
	return gitOutputEnv(ctx, gitDir, nil, args...)
}

func gitOutputEnv(ctx context.Context, gitDir string, env []string, args ...string) (string, error) {
	cmd := current.Command(ctx, "git", append([]string{"--git-dir", gitDir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		msg := ""
		if errors.As(err, &ee) {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("git %s in %s: %w %s", strings.Join(args, " "), gitDir, err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

// build runs one job on the fleet, its log starting with the commands that reproduce
// it, and records it in the index (builds of the base branch are not the head's).
func (s *Service) build(ctx context.Context, j *current.Job, in JobInput) (current.Unit, error) {
	started := time.Now()
	rec := results.VariantRecord{Repo: in.PR.Repo, Commit: in.PR.Head, Name: in.Job.ID(), JobID: j.ID(), State: forge.Running,
		Started: started, Experimental: in.Job.AcceptFailure}
	if !in.OnBase {
		if err := s.Index.SetVariant(ctx, rec); err != nil {
			return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
		}
	}
	err := s.runJob(ctx, j, in)
	if in.OnBase {
		return current.Unit{}, err
	}
	rec.Finished, rec.State = time.Now(), forge.Passed
	switch {
	case err != nil && current.Cancelled(ctx):
		rec.State, rec.Message = forge.Cancelled, "cancelled: "+strings.TrimPrefix(context.Cause(ctx).Error(), "cancelled: ")
	case err != nil && current.KindOf(err).Infrastructure():
		rec.State, rec.Message = forge.Error, err.Error()
	case err != nil:
		rec.State, rec.Message = forge.Failed, err.Error()
	}
	s.Index.SetVariant(context.WithoutCancel(ctx), rec)
	return current.Unit{}, err
}

// withoutLayer reports whether a job builds without an opam layer of its own: over
// opam init of the whole tree, on a platform without compiler packages.
func (s *Service) withoutLayer(j Job) bool {
	p, ok := s.Config.Platform(j.Platform)
	return !ok || len(p.Compiler) == 0
}

func (s *Service) runJob(ctx context.Context, j *current.Job, in JobInput) error {
	specs := &Specs{Config: s.Config}
	src := Source{CloneURL: in.PR.Remote, HeadRef: in.PR.Ref, Head: in.PR.Head, Base: in.PR.Base}
	if in.OnBase {
		src.HeadRef, src.Head = in.PR.BaseRef, in.PR.Base
		j.Logf("%s against %s alone (%s), to tell whether its failure in %s is new", in.Job.ID(), s.baseBranch(), short(in.PR.Base), short(in.PR.Head))
	}
	repro, err := specs.Repro(src, in.Job)
	if err != nil {
		return err
	}
	logLines(j, repro)
	l, dir, err := s.jobLayer(ctx, in)
	if err != nil {
		return err
	}
	if l != nil {
		defer s.layers.release(dir)
	}
	if l == nil {
		dir = in.Dir
		j.Logf("This job ran the spec above, over opam init of the whole tree.")
	} else {
		specs = specs.WithLayer(*l)
		sp, err := specs.Spec(in.Job)
		if err != nil {
			return err
		}
		j.Logf("This job ran the same steps over a minimal opam layer instead of opam init of the whole tree: %s.", l.Describe())
		j.Logf("Its repository holds the %d package versions opam's solver picks for the job in the tree: %s", len(l.Install), strings.Join(l.Install, " "))
		j.Logf("The spec it ran (the layer's folder exists only in the service's build context):")
		logLines(j, sp.String())
	}
	req, err := specs.Request(in.Job, in.PR.client())
	if err != nil {
		return err
	}
	req.Ticket, req.SourceDir = "opamrepoci", dir
	req.Timeout = s.StepTimeout
	if req.Timeout <= 0 {
		req.Timeout = time.Hour
	}
	if in.OnBase {
		req.Urgent = false // comparisons go in the background lane
	}
	run := s.Run
	if run == nil {
		run = func(ctx context.Context, j *current.Job, req fleetjob.Request) (fleetjob.Result, error) {
			return fleetjob.Run(ctx, s.Fleet, j, req)
		}
	}
	_, err = run(ctx, j, req)
	return err
}

// logLines writes text to the job's log line by line.
func logLines(j *current.Job, text string) {
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		j.Logf("%s", l)
	}
}

// publish records a pull request's report in the index and shows it on its forge:
// the two statuses, and once nothing is pending, the comment.
func (s *Service) publish(ctx context.Context, j *current.Job, r Report) (current.Unit, error) {
	st, vs := r.Status()
	if err := s.Index.SetCommit(ctx, r.PR.Repo, r.PR.Head, st, vs); err != nil {
		return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
	}
	s.Metrics.setPR(r)
	j.Logf("%s %s: %s", r.PR.Ref, short(r.PR.Head), st.Title)
	ref := r.PR.forgeRef()
	if err := s.Forges.PublishCheck(ctx, ref, forge.Check{Name: StatusContext, URL: r.URL}, st, vs); err != nil {
		return current.Unit{}, current.Infra(current.FailNetwork, err)
	}
	lst, lvs := r.LintStatus()
	j.Logf("lint: %s", lst.Title)
	if err := s.Forges.PublishCheck(ctx, ref, forge.Check{Name: LintContext, URL: r.URL}, lst, lvs); err != nil {
		return current.Unit{}, current.Infra(current.FailNetwork, err)
	}
	if r.Final() {
		if err := s.Forges.Comment(ctx, ref, CommentMarker, r.Comment()); err != nil {
			return current.Unit{}, current.Infra(current.FailNetwork, err)
		}
	}
	return current.Unit{}, nil
}

// The statuses' names, as the reference service names them.
const (
	StatusContext = "opam-ci"
	LintContext   = "opam-repo-ci (linter)"
)

// RebuildCommit builds every job of a pull request's head again and returns how many
// builds it started.
func (s *Service) RebuildCommit(e *current.Engine, repo forge.RepoID, commit string) (int, error) {
	s.opsOnce.Do(s.makeOps)
	return s.ops.build.Rebuild(e, func(in JobInput) bool {
		return !in.OnBase && in.PR.Repo == repo && in.PR.Head == commit
	})
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
