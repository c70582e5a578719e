// Package ocamlci is CI for OCaml repositories: for every branch and pull request of the
// repositories it follows (on GitHub, Gitea, Forgejo or plain git) it analyses the
// commit, builds and tests it on every platform of a matrix on the fleet, runs the lints,
// reports one status per commit to the forge, and keeps an index the web UI shows.
package ocamlci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/baseimages"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// Service is the ocaml-ci pipeline and its state.
type Service struct {
	// Forges are the forges followed: every ref of every source is built, and each
	// commit's status goes back to its forge (plain git ones are shown only in the UI).
	Forges  *forges.Set
	Fleet   fleetjob.Fleet
	Mirrors *git.Mirrors
	// WorkDir holds checkouts of commits.
	WorkDir   string
	Platforms []matrix.Platform
	// Opam is the opam repository commits are solved against. Nil: local packages may
	// depend only on the platform's system packages (SystemSolve).
	Opam *opamrepo.Repository
	// Archives is the fleet's source-archive cache the dependency layers take their
	// sources from (nil: one in WorkDir/opam-archives, made on first use).
	Archives *opamenv.Archives
	Index    *results.Index
	// Images, when set, is the builder's image store folder: the platforms' Debian base
	// images are made there (one job each, with its log) before the first build needs
	// them. Workers elsewhere must have the images in their own stores.
	Images string
	// BaseURL is the web UI's address, for links in statuses.
	BaseURL string
	// NixPool is the fleet pool of Nix variants (kiln worker --runner nix), e.g.
	// linux-x86_64-nix; empty, a Nix variant fails saying the server has no Nix builders.
	NixPool string
	// StepTimeout bounds one build on the fleet (default 1 hour).
	StepTimeout time.Duration
	Logger      *slog.Logger

	opsOnce sync.Once
	ops     struct {
		head    *current.Op[forge.Ref, current.Unit]
		fetch   *current.Op[FetchInput, Checkout]
		analyse *current.Op[AnalysisInput, Plan]
		build   *current.Op[BuildInput, BuildResult]
		status  *current.Op[StatusInput, current.Unit]
		ended   *current.Op[results.Live, current.Unit]
		base    *current.Op[image.DebianOptions, string]
	}
	// bases are, by platform name, the terms that are ok once the platform's base image
	// is in the store (only for platforms whose image the service makes).
	bases map[string]current.Term[current.Unit]
	// ensureDebian and heartbeatEvery are the base images' Maker's Ensure and
	// Heartbeat; tests change them.
	ensureDebian   func(*image.Store, context.Context, image.DebianOptions) (image.Base, error)
	heartbeatEvery time.Duration
	seenMu         sync.Mutex
	seen           map[string]string // commit+variant → first spec digest built, to tell re-tests
}

// Checkout is a commit checked out on disk.
type Checkout struct {
	Repo   forge.RepoID `json:"repo"`
	Commit string       `json:"commit"`
	Dir    string       `json:"dir"`
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

// FetchInput is a commit to check out and a ref to fetch it by (a pull request's head
// may be on no branch).
type FetchInput struct {
	Repo   forge.RepoID `json:"repo"`
	Commit string       `json:"commit"`
	Ref    string       `json:"ref"`
	Remote string       `json:"remote"`
}

func (f FetchInput) key() string { return f.Repo.String() + " " + f.Commit }

// BuildInput is one variant of one commit. Like every input here, it holds nothing of
// the refs that point at the commit: a branch and its pull request share the builds.
type BuildInput struct {
	Checkout Checkout `json:"checkout"`
	Variant  Variant  `json:"variant"`
	Spec     string   `json:"spec,omitempty"`
	// SpecError says why the variant has no spec (the analysis could not make one).
	SpecError string         `json:"spec_error,omitempty"`
	Findings  []lint.Finding `json:"findings,omitempty"`
	// CacheHint names the dependency layer (platform, opam files, packages installed), so
	// the fleet prefers a worker that built it recently.
	CacheHint string `json:"cache_hint,omitempty"`
}

// specDigest identifies what the variant runs: its spec, or why it has none.
func (b BuildInput) specDigest() string {
	if b.SpecError != "" {
		return digest("; " + b.SpecError)
	}
	return digest(b.Spec)
}

// BuildResult is a successful variant.
type BuildResult struct {
	Snapshot string `json:"snapshot,omitempty"`
	// Nix is a Nix variant's outputs and their closure size.
	Nix *nixrun.Output `json:"nix,omitempty"`
}

// StatusInput is what the status of one commit is made of.
type StatusInput struct {
	Repo     forge.RepoID    `json:"repo"`
	Commit   string          `json:"commit"`
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
	// Each platform's builds wait for its own base image only; variants that need no
	// image (lint-opam, variants that cannot build) wait for none.
	s.bases = map[string]current.Term[current.Unit]{}
	if s.Images != "" {
		for _, p := range s.Platforms {
			if p.Debian != nil {
				s.bases[p.Name] = current.All(current.Do(s.ops.base, current.Return(*p.Debian))).Named("base image " + p.Image)
			}
		}
	}
	var all []current.AnyTerm
	for _, src := range s.Forges.Sources() {
		refs := src.Refs()
		heads := current.ListIter(refs, forge.Ref.Key, func(r current.Term[forge.Ref]) current.Term[current.Unit] {
			return current.Do(s.ops.head, r)
		})
		// One pipeline per commit, however many refs point at it.
		commits := current.ListIter(current.Map(refs, commitsOf), FetchInput.key, s.pipelineOf)
		// A commit no ref points at any more ends: its unfinished variants cancelled.
		ended := current.Do(s.ops.ended, current.Map(refs, liveCommits))
		all = append(all, heads, commits, ended)
	}
	return current.All(all...)
}

// liveCommits are the commits the refs point at.
func liveCommits(refs []forge.Ref) results.Live {
	repos, commits := make([]forge.RepoID, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		repos[i], commits[i] = r.Repo, r.Commit
	}
	return results.LiveOf(repos, commits)
}

// supersededMessage is why the variants of a commit no ref points at are cancelled.
const supersededMessage = "cancelled: superseded (no branch or pull request points at this commit any more)"

// endSuperseded gives every unfinished commit of the source's forges that no ref
// points at any more its final status: its queued and running variants cancelled,
// and the status published, so that the forge is not left with a pending one.
func (s *Service) endSuperseded(ctx context.Context, j *current.Job, live results.Live) (current.Unit, error) {
	return current.Unit{}, s.endCommitsNotIn(ctx, j.Logf, live)
}

// endCommitsNotIn ends the commits that live supersedes.
func (s *Service) endCommitsNotIn(ctx context.Context, logf func(string, ...any), live results.Live) error {
	superseded, err := s.Index.Superseded(ctx, live)
	if err != nil {
		return current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
	}
	for _, c := range superseded {
		recs, err := s.Index.CancelUnfinished(ctx, c.Repo, c.Commit, supersededMessage)
		if err != nil {
			return current.Infra(current.FailDiskFull, err)
		}
		vs := make([]forge.Variant, 0, len(recs))
		for _, r := range recs {
			v := forge.Variant{Name: r.Name, State: r.State, Experimental: r.Experimental, Message: r.Message}
			if r.JobID != "" {
				v.URL = s.variantURL(c.Repo, c.Commit, r.Name)
			}
			if !r.Started.IsZero() && !r.Finished.IsZero() {
				v.Duration = r.Finished.Sub(r.Started)
			}
			vs = append(vs, v)
		}
		if len(vs) == 0 {
			// Superseded before its analysis listed anything.
			vs = []forge.Variant{{Name: results.AnalysisVariant, State: forge.Cancelled, Message: supersededMessage}}
		}
		logf("%s %s is superseded: %d variants, %d unfinished cancelled", c.Repo, short(c.Commit), len(vs), countState(vs, forge.Cancelled))
		if err := s.publishStatus(ctx, logf, StatusInput{Repo: c.Repo, Commit: c.Commit, Variants: vs}); err != nil {
			return err
		}
	}
	return nil
}

func countState(vs []forge.Variant, st forge.State) int {
	n := 0
	for _, v := range vs {
		if v.State == st {
			n++
		}
	}
	return n
}

// commitsOf lists the commits the refs point at, each with the first of its refs by
// name to fetch it by (a branch before a pull request).
func commitsOf(refs []forge.Ref) []FetchInput {
	byKey := map[string]FetchInput{}
	for _, r := range refs {
		f := FetchInput{Repo: r.Repo, Commit: r.Commit, Ref: r.Name, Remote: r.Remote}
		if old, ok := byKey[f.key()]; !ok || r.Name < old.Ref {
			byKey[f.key()] = f
		}
	}
	out := make([]FetchInput, 0, len(byKey))
	for _, k := range sortedKeys(byKey) {
		out = append(out, byKey[k])
	}
	return out
}

func (s *Service) pipelineOf(commit current.Term[FetchInput]) current.Term[current.Unit] {
	src := current.Do(s.ops.fetch, commit)
	opamHead := current.Return("")
	if s.Opam != nil {
		opamHead = s.Opam.Head()
	}
	plan := current.Do(s.ops.analyse, current.Map2(src, opamHead, func(co Checkout, opamCommit string) AnalysisInput {
		return AnalysisInput{Checkout: co, OpamCommit: opamCommit}
	}))
	inputs := current.Map2(src, plan, s.buildInputs)
	var groups []current.Term[[]forge.Variant]
	for _, platform := range append([]string{""}, sortedKeys(s.bases)...) {
		groups = append(groups, s.buildGroup(inputs, platform))
	}
	builds := groups[0]
	if len(groups) > 1 {
		builds = current.Map(current.List(groups...), func(gs [][]forge.Variant) []forge.Variant { return slices.Concat(gs...) })
	}
	analysis := current.Observe(plan)
	status := current.Map3(src, analysis, current.Observe(builds), func(co Checkout, a current.Observed[Plan], b current.Observed[[]forge.Variant]) StatusInput {
		in := StatusInput{Repo: co.Repo, Commit: co.Commit}
		switch {
		case a.State == current.StateFailed:
			st := forge.Failed
			if a.Kind.Infrastructure() {
				st = forge.Error
			}
			in.Variants = []forge.Variant{{Name: results.AnalysisVariant, State: st, Message: a.Message, FailingLines: a.Lines}}
		case a.State != current.StateOk:
			in.Variants = []forge.Variant{{Name: results.AnalysisVariant, State: forge.Running}}
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

// imageOf is the platform whose base image a variant waits for, or "" when it needs
// none the service makes.
func (s *Service) imageOf(b BuildInput) string {
	if b.Variant.Kind == KindLintOpam || b.SpecError != "" {
		return ""
	}
	if _, ok := s.bases[b.Variant.Platform.Name]; !ok {
		return ""
	}
	return b.Variant.Platform.Name
}

// buildGroup builds the variants that wait for the base image of platform ("": those
// that wait for none). Its value is always the variants' states: while the image
// is being made, its variants are queued, saying so.
func (s *Service) buildGroup(inputs current.Term[[]BuildInput], platform string) current.Term[[]forge.Variant] {
	mine := inputs
	if len(s.bases) > 0 {
		mine = current.Map(inputs, func(bs []BuildInput) []BuildInput {
			var out []BuildInput
			for _, b := range bs {
				if s.imageOf(b) == platform {
					out = append(out, b)
				}
			}
			return out
		})
	}
	build := func(in current.Term[[]BuildInput]) current.Term[[]forge.Variant] {
		return current.ListMap(in, func(b BuildInput) string { return b.Variant.Name }, func(b current.Term[BuildInput]) current.Term[forge.Variant] {
			return current.Map2(b, current.Observe(current.Do(s.ops.build, b)), s.variantStatus)
		})
	}
	if platform == "" {
		return build(mine) // ok as soon as the plan is: each variant's state is observed
	}
	ready := s.bases[platform]
	return current.Map3(mine, current.Observe(ready), current.Observe(build(current.Gate(mine, ready))), func(bs []BuildInput, r current.Observed[current.Unit], b current.Observed[[]forge.Variant]) []forge.Variant {
		if b.State == current.StateOk {
			return b.Value
		}
		out := make([]forge.Variant, 0, len(bs))
		for _, in := range bs {
			v := forge.Variant{Name: in.Variant.Name, State: forge.Queued, Experimental: in.Variant.Experimental}
			switch r.State {
			case current.StateOk:
			case current.StateFailed:
				v.State, v.Message = forge.Error, fmt.Sprintf("the base image %s could not be made: %s", in.Variant.Platform.Image, r.Message)
			default:
				v.Message = fmt.Sprintf("waiting for the base image %s (job ocamlci-base-image)", in.Variant.Platform.Image)
			}
			out = append(out, v)
		}
		return out
	})
}

// buildInputs turns a plan into one input per variant, with its spec.
func (s *Service) buildInputs(co Checkout, p Plan) []BuildInput {
	var out []BuildInput
	for _, v := range p.Variants {
		in := BuildInput{Checkout: co, Variant: v, CacheHint: dependencyLayer(p.Analysis, v)}
		if v.Kind == KindLintOpam {
			in.Findings = p.Findings
		} else if v.Kind == KindNix {
			in.Spec, in.SpecError, in.CacheHint = s.nixJob(co, v)
		} else if sp, err := v.Spec(p.Analysis); err == nil {
			in.Spec = sp.String()
		} else {
			in.SpecError = err.Error()
		}
		out = append(out, in)
	}
	return out
}

func (s *Service) variantStatus(b BuildInput, o current.Observed[BuildResult]) forge.Variant {
	v := forge.Variant{Name: b.Variant.Name, Experimental: b.Variant.Experimental}
	rec, _ := s.Index.Variant(context.Background(), b.Checkout.Repo, b.Checkout.Commit, b.Variant.Name)
	if rec != nil {
		v.URL = s.variantURL(b.Checkout.Repo, b.Checkout.Commit, b.Variant.Name)
		if !rec.Finished.IsZero() && !rec.Started.IsZero() {
			v.Duration = rec.Finished.Sub(rec.Started)
		}
	}
	switch o.State {
	case current.StateOk:
		v.State = forge.Passed
	case current.StateFailed:
		v.State = forge.Failed
		v.Message, v.FailingLines = o.Message, o.Lines
		switch {
		case o.Kind == current.FailCancelled:
			v.State = forge.Cancelled
		case o.Kind.Infrastructure():
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
	if v.State == forge.Queued && rec != nil && rec.State == forge.Queued {
		v.Message = rec.Message // why it waits
	}
	return v
}

func (s *Service) variantURL(r forge.RepoID, commit, variant string) string {
	return fmt.Sprintf("%s/%s/%s/%s/commit/%s/variant/%s", strings.TrimRight(s.BaseURL, "/"), r.Forge, r.Owner, r.Name, commit, variant)
}

func (s *Service) makeOps() {
	if s.seen == nil {
		s.seen = map[string]string{}
	}
	s.ops.head = &current.Op[forge.Ref, current.Unit]{
		Name:    "ocamlci-head",
		Publish: true,
		Key:     forge.Ref.Key,
		Label:   func(r forge.Ref) string { return "head " + r.Name + " " + short(r.Commit) },
		Run: func(ctx context.Context, j *current.Job, r forge.Ref) (current.Unit, error) {
			if err := s.Index.SetHead(ctx, r); err != nil {
				return current.Unit{}, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
			}
			return current.Unit{}, nil
		},
	}
	s.ops.fetch = &current.Op[FetchInput, Checkout]{
		Name:    "ocamlci-fetch",
		Key:     FetchInput.key,
		Label:   func(f FetchInput) string { return "fetch " + f.Repo.Owner + "/" + f.Repo.Name + " " + short(f.Commit) },
		Timeout: 10 * time.Minute,
		Run:     s.fetch,
	}
	s.ops.analyse = &current.Op[AnalysisInput, Plan]{
		Name: "ocamlci-analysis",
		Key: func(in AnalysisInput) string {
			return in.Checkout.Repo.String() + " " + in.Checkout.Commit + " " + in.OpamCommit + " " + matrix.Digest(s.Platforms)
		},
		Label:   func(in AnalysisInput) string { return "analysis " + short(in.Checkout.Commit) },
		Timeout: 10 * time.Minute,
		Run:     s.analyse,
	}
	s.ops.build = &current.Op[BuildInput, BuildResult]{
		Name: "ocamlci-build",
		Key: func(b BuildInput) string {
			return b.Checkout.Repo.String() + " " + b.Checkout.Commit + " " + b.Variant.Name + " " + b.specDigest()
		},
		Label: func(b BuildInput) string { return b.Variant.Name + " " + short(b.Checkout.Commit) },
		Run:   s.build,
		Pool:  fleetjob.Pool,
	}
	s.ops.base = (&baseimages.Maker{Dir: s.Images, Heartbeat: s.heartbeatEvery, Ensure: s.ensureDebian}).Op("ocamlci-base-image")
	s.ops.ended = &current.Op[results.Live, current.Unit]{
		Name:  "ocamlci-superseded",
		Key:   func(l results.Live) string { return "superseded " + strings.Join(l.Forges, ",") },
		Label: func(l results.Live) string { return "end superseded commits" },
		Run:   s.endSuperseded,
	}
	s.ops.status = &current.Op[StatusInput, current.Unit]{
		Name:    "ocamlci-status",
		Publish: true,
		Key:     func(in StatusInput) string { return in.Repo.String() + " " + in.Commit },
		Label:   func(in StatusInput) string { return "status " + short(in.Commit) },
		Run:     s.publish,
	}
}

func (s *Service) fetch(ctx context.Context, j *current.Job, r FetchInput) (Checkout, error) {
	dir := filepath.Join(s.WorkDir, "checkouts", r.Repo.Forge, r.Repo.Owner, r.Repo.Name, r.Commit)
	co := Checkout{Repo: r.Repo, Commit: r.Commit, Dir: dir}
	done := func() bool {
		_, err := os.Stat(filepath.Join(dir, ".kiln-checkout"))
		return err == nil
	}
	if done() {
		j.Logf("%s is already checked out", short(r.Commit))
		return co, nil
	}
	j.Logf("fetching %s from %s", r.Commit, git.Redact(r.Remote))
	repo, err := s.Mirrors.FetchCommit(ctx, r.Remote, r.Commit, r.Ref)
	if err != nil {
		return co, fetchError(err)
	}
	if info, err := results.ReadCommitInfo(ctx, repo.Dir, r.Commit); err != nil {
		j.Logf("no commit message and author for the pages: %v", err)
	} else if err := s.Index.SetCommitInfo(ctx, r.Repo, r.Commit, info); err != nil {
		return co, current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
	}
	tmp := dir + ".tmp-" + j.ID()
	os.RemoveAll(tmp)
	defer os.RemoveAll(tmp)
	if err := repo.Checkout(ctx, r.Commit, tmp); err != nil {
		return co, fmt.Errorf("check out %s: %w", short(r.Commit), err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".kiln-checkout"), []byte(r.Commit+"\n"), 0o644); err != nil {
		return co, current.Infra(current.FailDiskFull, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if done() {
			j.Logf("%s was checked out meanwhile", short(r.Commit))
			return co, nil
		}
		// A checkout left unfinished by an earlier process.
		os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			return co, err
		}
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
	idx.SetVariant(ctx, results.VariantRecord{Repo: b.Checkout.Repo, Commit: b.Checkout.Commit, Name: b.Variant.Name,
		JobID: j.ID(), State: forge.Running, Started: started, Experimental: b.Variant.Experimental})
	res, err := s.runVariant(ctx, j, b)
	rec := results.VariantRecord{Repo: b.Checkout.Repo, Commit: b.Checkout.Commit, Name: b.Variant.Name, JobID: j.ID(),
		State: forge.Passed, Started: started, Finished: time.Now(), Experimental: b.Variant.Experimental}
	var wait *current.AwaitError
	switch {
	case errors.As(err, &wait):
		// Put aside until the fleet starts it: queued, saying why.
		rec.State, rec.Message, rec.Started, rec.Finished = forge.Queued, wait.Reason, time.Time{}, time.Time{}
	case err != nil && current.Cancelled(ctx):
		// No longer wanted (superseded, or cancelled by an operator): not a failure.
		rec.State = forge.Cancelled
		rec.Message = context.Cause(ctx).Error()
		if !strings.HasPrefix(rec.Message, "cancelled") {
			rec.Message = "cancelled: " + rec.Message
		}
	case err != nil:
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
	if b.SpecError != "" {
		return BuildResult{}, errors.New(b.SpecError)
	}
	timeout := s.StepTimeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	r, err := fleetjob.Run(ctx, s.Fleet, j, fleetjob.Request{
		Ticket:    "ocamlci",
		Pool:      b.Variant.Platform.Pool,
		Client:    b.Checkout.Repo.Owner,
		Spec:      b.Spec,
		SourceDir: b.Checkout.Dir,
		CacheHint: b.CacheHint,
		Urgent:    s.firstBuild(b),
		Timeout:   timeout,
	})
	if b.Variant.Kind == KindNix {
		return nixResult(j, r, err)
	}
	if err != nil {
		return BuildResult{}, err
	}
	return BuildResult{Snapshot: r.Snapshot}, nil
}

// firstBuild reports whether this is the first build of the variant of this commit:
// such builds are urgent (someone waits for them); rebuilds because opam-repository
// moved on go in the background lane.
func (s *Service) firstBuild(b BuildInput) bool {
	k := b.Checkout.Repo.String() + " " + b.Checkout.Commit + " " + b.Variant.Name
	d := b.specDigest()
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
		return current.WithLines(fmt.Errorf("opam lint found %d error(s)", len(errs)), errs)
	}
	j.Logf("opam lint: no errors (%d warnings)", len(findings))
	return nil
}

func (s *Service) publish(ctx context.Context, j *current.Job, in StatusInput) (current.Unit, error) {
	return current.Unit{}, s.publishStatus(ctx, j.Logf, in)
}

// publishStatus records a commit's status in the index and sends it to its forge.
func (s *Service) publishStatus(ctx context.Context, logf func(string, ...any), in StatusInput) error {
	st := forge.Summarise(in.Variants)
	if err := s.Index.SetCommit(ctx, in.Repo, in.Commit, st, in.Variants); err != nil {
		return current.Infra(current.FailDiskFull, fmt.Errorf("index: %w", err))
	}
	logf("%s: %s", short(in.Commit), st.Title)
	if err := s.Forges.Publish(ctx, forge.Ref{Repo: in.Repo, Commit: in.Commit}, st, in.Variants); err != nil {
		return current.Infra(current.FailNetwork, err)
	}
	return nil
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// RebuildCommit builds every variant of a commit again (someone asked the forge to
// re-run its checks) and returns how many builds it started.
func (s *Service) RebuildCommit(e *current.Engine, repo forge.RepoID, commit string) (int, error) {
	s.opsOnce.Do(s.makeOps)
	return s.ops.build.Rebuild(e, func(b BuildInput) bool {
		return b.Checkout.Repo == repo && b.Checkout.Commit == commit
	})
}
