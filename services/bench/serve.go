package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/notify"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
)

// APIPath is the submit API's path.
const APIPath = Prefix + "/api/v1/runs"

// ServiceKind is the benchmarking service as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "bench",
	Help: "continuous benchmarking: stores results (current-bench JSON), charts them, flags significant changes on PRs",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringVar(&s.db, "bench-db", "", "the benchmark database: a postgres:// URL, or a SQLite file (default kiln serve's --database, else STATE/bench/bench.db)")
		fs.StringVar(&s.target, "bench-target", "main", "the branch pull requests are compared with when not run interleaved with their base")
		fs.Float64Var(&s.confidence, "bench-confidence", 0.99, "the confidence at which a change is reported as significant")
		fs.StringVar(&s.runner, "bench-runner", "auto", "where benchmarks run: fleet (the pool each repository's bench.pool names, served with --bench-pool), sandbox (the builder here, with runc, on --bench-image), host, or auto (sandbox when root, runc and the image are there)")
		fs.StringArrayVar(&s.pools, "bench-pool", []string{"bench"}, "with --bench-runner fleet: the fleet pools of benchmark slots the server's fleet serves (repeatable)")
		fs.StringVar(&s.image, "bench-image", matrix.Debian(debianArch()).Image, "base image of sandboxed benchmarks (Debian's OCaml; make it with: kiln base debian)")
		fs.StringVar(&s.cpus, "bench-cpus", "", "pin the benchmarks run here to these CPUs (a benchmark slot, e.g. 1)")
		fs.StringVar(&s.opamRepo, "bench-opam-repository", "", "git directory of an opam-repository clone: the dependencies of a benchmarked project's opam files are installed from it in a cached layer before the benchmark (sandbox and fleet runners)")
		fs.StringVar(&s.opamBranch, "bench-opam-branch", "master", "branch of --bench-opam-repository followed")
		fs.StringArrayVar(&s.webhooks, "bench-alert", nil, "KIND=FILE: post branch regressions, bisected to their first bad commit, to the webhook whose URL is in FILE (KIND slack or json; repeatable)")
		return s
	},
}

type served struct {
	db, target, runner, image, cpus string
	opamRepo, opamBranch            string
	confidence                      float64
	webhooks, pools                 []string
}

// Pools are the fleet pools the benchmarks run on, with --bench-runner fleet.
func (s *served) Pools() []string {
	if s.runner == "fleet" {
		return s.pools
	}
	return nil
}

func debianArch() string {
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" {
		return runtime.GOARCH
	}
	return "amd64"
}

// deps installs the benchmarked projects' opam dependencies from --bench-opam-repository;
// nil without it.
func (s *served) deps(env *host.Env) (*Deps, error) {
	if s.opamRepo == "" {
		return nil, nil
	}
	archives, err := opamenv.NewArchives(filepath.Join(env.StateDir, "bench", "opam-archives"),
		opamenv.ArchivesOptions{Logger: env.Logger, Register: env.Register})
	if err != nil {
		return nil, fmt.Errorf("--bench-opam-repository: %w", err)
	}
	plat := matrix.Debian(debianArch())
	plat.Image = s.image
	return &Deps{Opam: &opamrepo.Repository{GitDir: s.opamRepo, Branch: s.opamBranch}, Archives: archives, Platform: plat}, nil
}

// pickRunner is the runner --bench-runner asks for.
func (s *served) pickRunner(ctx context.Context, env *host.Env) (Runner, error) {
	if s.runner == "host" {
		return HostRunner{}, nil
	}
	why := ""
	var b *builder.Builder
	switch {
	case os.Geteuid() != 0:
		why = "not running as root"
	case env.Images == "":
		why = "no image store"
	default:
		if _, err := exec.LookPath("runc"); err != nil {
			why = "runc is not installed"
			break
		}
		images, err := image.Open(env.Images)
		if err == nil {
			_, err = images.Resolve(ctx, s.image)
		}
		if err == nil {
			b, err = builder.New(builder.Options{Root: filepath.Join(env.StateDir, "bench", "builder"), Images: images,
				Limits: sandbox.Limits{CPUSet: s.cpus}})
		}
		if err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		if s.runner == "sandbox" {
			return nil, fmt.Errorf("--bench-runner sandbox: %s", why)
		}
		env.Logger.Warn("benchmarks run on the host", "why_not_sandboxed", why)
		return HostRunner{}, nil
	}
	deps, err := s.deps(env)
	if err != nil {
		return nil, err
	}
	return Sandbox{Builder: b, Image: s.image, Deps: deps}, nil
}

// Start opens the database and serves the pages and the submit API.
func (s *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	db := s.db
	if db == "" {
		db = env.Database
	}
	if db == "" {
		dir := filepath.Join(env.StateDir, "bench")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		db = filepath.Join(dir, "bench.db")
	}
	st, err := store.Open(ctx, db)
	if err != nil {
		return nil, err
	}
	o := detect.Options{Confidence: s.confidence}
	ui, err := NewUI(st, env.Logger, o)
	if err != nil {
		st.Close()
		return nil, err
	}
	ui.Target = s.target
	pub := &Publisher{Store: st, Forges: env.Forges, BaseURL: env.BaseURL, Target: s.target, Options: o}
	api, err := NewAPI(API{Store: st, Logger: env.Logger, Options: o, Target: s.target, OnJudged: func(ctx context.Context, c Comparison) {
		if err := pub.Publish(ctx, c); err != nil {
			env.Logger.Warn("bench publish", "repo", c.Run.Repo, "commit", c.Run.Commit, "err", err)
		}
	}}, env.Register)
	if err != nil {
		st.Close()
		return nil, err
	}
	switch s.runner {
	case "auto", "sandbox", "host", "fleet":
	default:
		st.Close()
		return nil, fmt.Errorf("--bench-runner %q: want fleet, sandbox, host or auto", s.runner)
	}
	running := &host.Running{
		Routes: map[string]http.Handler{Prefix + "/": ui},
		Close:  func() { st.Close() },
	}
	// The submit API authenticates its callers by their repository's token, as the
	// forges' webhooks do by their signatures: it is served beside them, outside the
	// console's access control.
	if env.Forges != nil {
		env.Forges.Handle("POST "+APIPath, api)
	} else {
		running.Routes[APIPath] = api
	}
	if env.Forges == nil || env.Forges.Empty() {
		return running, nil // results come through the API only
	}
	p := &Pipeline{Forges: env.Forges, Mirrors: env.Mirrors, API: api,
		WorkDir: filepath.Join(env.StateDir, "bench", "work"), Target: s.target, CPUs: s.cpus}
	if env.Engine != nil {
		p.Logs = env.Engine
	}
	if s.runner == "fleet" {
		if env.Fleet == nil {
			st.Close()
			return nil, errors.New("--bench-runner fleet: the server has no fleet")
		}
		deps, err := s.deps(env)
		if err != nil {
			st.Close()
			return nil, err
		}
		p.Fleet = &FleetRunner{Fleet: env.Fleet, Image: s.image, Deps: deps}
	} else if p.Runner, err = s.pickRunner(ctx, env); err != nil {
		st.Close()
		return nil, err
	}
	if len(s.webhooks) > 0 {
		var hooks []notify.Webhook
		for i, w := range s.webhooks {
			kind, file, ok := strings.Cut(w, "=")
			if !ok {
				st.Close()
				return nil, fmt.Errorf("--bench-alert %q: want KIND=FILE", w)
			}
			hooks = append(hooks, notify.Webhook{Name: fmt.Sprintf("bench-%d", i+1), Kind: notify.Kind(kind), URLFile: file})
		}
		n, err := notify.New(notify.Options{Webhooks: hooks, Logger: env.Logger, Register: env.Register})
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("--bench-alert: %w", err)
		}
		p.Hunt = &Hunt{Store: st, Options: o, Alert: n, BaseURL: env.BaseURL, Logger: env.Logger}
		running.Close = func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n.Close(ctx)
			st.Close()
		}
	}
	env.Forges.OnRerun(func(ctx context.Context, repo forge.RepoID, commit string) error {
		_, err := p.Rerun(env.Engine, repo, commit)
		return err
	})
	running.Pipeline = p.Term()
	// The schedules of the repositories' bench sections, looked at every minute.
	schedCtx, stopSched := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); p.Schedule(schedCtx, env.Engine, time.Minute, env.Logger) }()
	closeRest := running.Close
	running.Close = func() { stopSched(); <-schedDone; closeRest() }
	return running, nil
}

// Forges is what the service needs of the forges: a status per check and one comment
// per PR (plugins/forges.Set).
type Forges interface {
	PublishCheck(ctx context.Context, ref forge.Ref, check forge.Check, st forge.Status, variants []forge.Variant) error
	Comment(ctx context.Context, ref forge.Ref, marker, body string) error
}

// Publisher reports judged runs on their forge: a commit status per environment and,
// for a PR, one comment kept up to date with every environment's latest comparison.
type Publisher struct {
	Store   *store.Store
	Forges  Forges
	BaseURL string
	Target  string
	Options detect.Options
	mu      sync.Mutex // one comment edit at a time
}

// Publish sends c's status and, for a PR, the PR's comment.
func (p *Publisher) Publish(ctx context.Context, c Comparison) error {
	if p.Forges == nil {
		return nil
	}
	repo, ok := RepoID(c.Run.Repo)
	if !ok {
		return fmt.Errorf("repository %q is not FORGE/OWNER/NAME", c.Run.Repo)
	}
	ref := forge.Ref{Repo: repo, Commit: c.Run.Commit, PR: int(c.Run.PR), Name: "refs/heads/" + c.Run.Branch}
	link := fmt.Sprintf("%s%s/r/%s", p.BaseURL, Prefix, c.Run.Repo)
	if c.Run.PR > 0 {
		ref.Name = fmt.Sprintf("refs/pull/%d/head", c.Run.PR)
		link += "/pr/" + strconv.FormatInt(c.Run.PR, 10)
	}
	check := forge.Check{Name: "kiln-bench", URL: link}
	if c.Run.Env != "" {
		check.Name += " (" + c.Run.Env + ")"
	}
	if err := p.Forges.PublishCheck(ctx, ref, check, Status(c), nil); err != nil {
		return err
	}
	if c.Run.PR <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cs, err := p.latest(ctx, c)
	if err != nil {
		return err
	}
	return p.Forges.Comment(ctx, ref, CommentMarker, Comment(cs, link))
}

// latest is the comparison of the PR's latest passed run in each environment.
func (p *Publisher) latest(ctx context.Context, c Comparison) ([]Comparison, error) {
	runs, err := p.Store.Runs(ctx, store.Filter{Repo: c.Run.Repo, PR: c.Run.PR, State: store.Passed})
	if err != nil {
		return nil, err
	}
	byEnv := map[string]store.Run{}
	var envs []string
	for _, r := range runs {
		if r.Commit != c.Run.Commit {
			continue
		}
		if _, ok := byEnv[r.Env]; !ok {
			envs = append(envs, r.Env)
		}
		byEnv[r.Env] = r
	}
	var out []Comparison
	for _, e := range envs {
		if e == c.Run.Env {
			out = append(out, c)
			continue
		}
		other, err := Compare(ctx, p.Store, byEnv[e], p.Target, p.Options)
		if err != nil {
			return nil, err
		}
		out = append(out, other)
	}
	if len(out) == 0 {
		out = append(out, c)
	}
	return out, nil
}
