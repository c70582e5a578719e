package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/services/ocamlci"
)

// ciFlags configure the ocaml-ci service of `kiln serve`.
type ciFlags struct {
	repos                        []string
	poll                         time.Duration
	opamRepo, opamBranch         string
	githubAppID                  int64
	githubKey, githubSecret      string
	githubAPI                    string
	githubAllow                  []string
	giteaURL, giteaToken         string
	giteaSecret                  string
	giteaOwners                  []string
	baseURL, natsListen          string
	workerToken                  string
	localWorkers, workerCapacity int
	noArm64                      bool
}

func (f *ciFlags) add(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.repos, "repo", nil, "OWNER/NAME=URL-OR-PATH: a plain git repository to build, polled (repeatable; default: a sample OCaml project made in the state dir)")
	fs.DurationVar(&f.poll, "repo-poll", 30*time.Second, "how often plain git repositories are polled")
	fs.StringVar(&f.opamRepo, "opam-repository", "", "git directory of an opam-repository clone to solve against (default: the platform's own packages only)")
	fs.StringVar(&f.opamBranch, "opam-branch", "master", "branch of --opam-repository followed")
	fs.Int64Var(&f.githubAppID, "github-app-id", 0, "GitHub App id (with --github-key and --github-webhook-secret)")
	fs.StringVar(&f.githubKey, "github-key", "", "GitHub App private key file (PEM)")
	fs.StringVar(&f.githubSecret, "github-webhook-secret", "", "GitHub webhook secret (@FILE reads a file); webhooks go to /webhooks/github")
	fs.StringVar(&f.githubAPI, "github-api", github.DefaultAPI, "GitHub REST API root (GitHub Enterprise: https://HOST/api/v3/)")
	fs.StringArrayVar(&f.githubAllow, "github-account", nil, "GitHub account whose installations are served (repeatable; default all)")
	fs.StringVar(&f.giteaURL, "gitea-url", "", "Gitea or Forgejo server to follow (with --gitea-token)")
	fs.StringVar(&f.giteaToken, "gitea-token", "", "Gitea API token (@FILE reads a file)")
	fs.StringVar(&f.giteaSecret, "gitea-webhook-secret", "", "Gitea webhook secret (@FILE reads a file); webhooks go to /webhooks/gitea")
	fs.StringArrayVar(&f.giteaOwners, "gitea-owner", nil, "Gitea owner whose repositories are followed (repeatable; default all the token sees)")
	fs.StringVar(&f.baseURL, "base-url", "", "public address of this server, for links in statuses (default http://LISTEN)")
	fs.StringVar(&f.natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded fleet's NATS server, for `kiln worker --nats`")
	fs.StringVar(&f.workerToken, "worker-token", os.Getenv("KILN_WORKER_TOKEN"), "token workers must present (@FILE reads a file; env KILN_WORKER_TOKEN)")
	fs.IntVar(&f.localWorkers, "local-workers", 1, "workers run inside the server per pool (0: only `kiln worker` processes build)")
	fs.IntVar(&f.workerCapacity, "local-worker-capacity", 2, "jobs each local worker runs at once")
	fs.BoolVar(&f.noArm64, "no-arm64", false, "leave out the emulated arm64 platform")
}

// ciService is a running ocaml-ci: its pipeline and its web handlers.
type ciService struct {
	Pipeline current.Term[current.Unit]
	// Handler serves the public UI and the webhooks at Routes.
	Handler http.Handler
	Routes  []string
	Fleet   *cluster.Fleet
	close   func()
}

func (s *ciService) Close() { s.close() }

// startCI starts the fleet (embedded NATS, scheduler, local workers) and builds the
// ocaml-ci pipeline over the configured forges.
func startCI(ctx context.Context, log *slog.Logger, stateDir, listen string, eng *current.Engine, f ciFlags) (*ciService, error) {
	var closers []func()
	fail := func(err error) (*ciService, error) {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		return nil, err
	}
	token, err := secretFlag(f.workerToken)
	if err != nil {
		return nil, fmt.Errorf("--worker-token: %w", err)
	}
	fleet, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(stateDir, "fleet"), Listen: f.natsListen, WorkerToken: token, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	closers = append(closers, fleet.Close)

	platforms := ocamlci.DefaultPlatforms()
	if f.noArm64 {
		platforms = platforms[:1]
	}
	images := filepath.Join(stateDir, "images")
	workerCtx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	closers = append(closers, func() { stopWorkers(); wg.Wait() })
	if f.localWorkers > 0 {
		runner, err := buildrun.New(buildrun.Options{Root: filepath.Join(stateDir, "builder"), Images: images})
		if err != nil {
			return fail(fmt.Errorf("builder: %w", err))
		}
		seen := map[string]bool{}
		for _, p := range platforms {
			if seen[p.Pool] {
				continue
			}
			seen[p.Pool] = true
			for i := 0; i < f.localWorkers; i++ {
				name := fmt.Sprintf("local-%s-%d", p.Pool, i+1)
				nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: fleet.URL, Name: name, Logger: log})
				if err != nil {
					return fail(err)
				}
				w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: name, Pool: p.Pool, Capacity: f.workerCapacity, Token: token,
					StateDir: filepath.Join(stateDir, "workers", name), Runner: runner, Logger: log})
				if err != nil {
					nc.Close()
					return fail(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer nc.Close()
					if err := w.Run(workerCtx); err != nil && workerCtx.Err() == nil {
						log.Error("local worker stopped", "worker", name, "err", err)
					}
				}()
			}
		}
	}

	idx, err := ocamlci.OpenIndex(filepath.Join(stateDir, "ocamlci.db"))
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { idx.Close() })
	baseURL := f.baseURL
	if baseURL == "" {
		baseURL = "http://" + listen
	}
	svc := &ocamlci.Service{
		Fleet: fleet.Client, WorkDir: filepath.Join(stateDir, "ocamlci"), Platforms: platforms,
		Index: idx, Images: images, BaseURL: baseURL, Logger: log,
		Publishers: map[string]ocamlci.Publisher{},
	}
	if f.opamRepo != "" {
		svc.Opam = &ocamlci.OpamRepository{GitDir: f.opamRepo, Branch: f.opamBranch}
	}
	mux := http.NewServeMux()
	mux.Handle("/api/fleet/", http.StripPrefix("/api/fleet", cluster.Handler(fleet.Client)))
	routes := []string{"/api/fleet/"}
	var creds []git.CredentialSource

	if f.githubAppID != 0 {
		key, err := os.ReadFile(f.githubKey)
		if err != nil {
			return fail(fmt.Errorf("--github-key: %w", err))
		}
		secret, err := secretFlag(f.githubSecret)
		if err != nil || secret == "" {
			return fail(fmt.Errorf("--github-webhook-secret is required with --github-app-id (%v)", err))
		}
		allow := github.NewAllowList(f.githubAllow...)
		app, err := github.NewApp(github.AppConfig{AppID: f.githubAppID, PrivateKey: key, API: f.githubAPI, Allow: allow, Logger: log})
		if err != nil {
			return fail(err)
		}
		gh := &ocamlci.GitHub{App: app, BaseURL: baseURL, Logger: log, Rerun: func(ctx context.Context, repo ocamlci.RepoID, commit string) error {
			_, err := eng.RebuildQuery(current.Query{Op: "ocamlci-build", KeyContains: repo.String() + " " + commit})
			return err
		}}
		svc.Sources = append(svc.Sources, gh)
		svc.Publishers["github"] = gh
		creds = append(creds, gh.Credentials())
		mux.Handle("POST /webhooks/github", gh.Webhook([]byte(secret), allow))
		routes = append(routes, "/webhooks/github")
	}
	if f.giteaURL != "" {
		tok, err := secretFlag(f.giteaToken)
		if err != nil {
			return fail(fmt.Errorf("--gitea-token: %w", err))
		}
		client, err := gitea.NewClient(ctx, f.giteaURL, tok, nil)
		if err != nil {
			return fail(fmt.Errorf("--gitea-url %s: %w", f.giteaURL, err))
		}
		g := &ocamlci.Gitea{Client: client, Owners: f.giteaOwners, BaseURL: baseURL, Logger: log}
		svc.Sources = append(svc.Sources, g)
		svc.Publishers["gitea"] = g
		creds = append(creds, g.Credentials())
		if f.giteaSecret != "" {
			secret, err := secretFlag(f.giteaSecret)
			if err != nil {
				return fail(fmt.Errorf("--gitea-webhook-secret: %w", err))
			}
			mux.Handle("POST /webhooks/gitea", g.Webhook([]byte(secret)))
			routes = append(routes, "/webhooks/gitea")
		}
	}
	var plain []ocamlci.GitRepo
	for _, r := range f.repos {
		id, remote, ok := strings.Cut(r, "=")
		owner, name, ok2 := strings.Cut(id, "/")
		if !ok || !ok2 || owner == "" || name == "" || remote == "" {
			return fail(fmt.Errorf("--repo %q: want OWNER/NAME=URL-OR-PATH", r))
		}
		plain = append(plain, ocamlci.GitRepo{Owner: owner, Name: name, Remote: remote})
	}
	if len(plain) == 0 && len(svc.Sources) == 0 {
		sample := filepath.Join(stateDir, "sample", "hello")
		if err := ocamlci.CreateSample(ctx, sample); err != nil {
			return fail(err)
		}
		log.Info("building a sample OCaml project; commit to it to see a new build", "repo", sample)
		plain = append(plain, ocamlci.GitRepo{Owner: "local", Name: "hello", Remote: sample})
	}
	if len(plain) > 0 {
		svc.Sources = append(svc.Sources, &ocamlci.GitSource{Repos: plain, Every: f.poll})
	}
	svc.Mirrors = git.NewMirrors(filepath.Join(stateDir, "mirrors"), git.MirrorsOptions{Logger: log, Credentials: anyCredentials(creds)})

	ui, err := ocamlci.NewUI(idx, eng, log)
	if err != nil {
		return fail(err)
	}
	for _, r := range ui.Routes() {
		mux.Handle(r, ui)
		routes = append(routes, r)
	}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	return &ciService{Pipeline: svc.Pipeline(), Handler: mux, Routes: routes, Fleet: fleet, close: closeAll}, nil
}

// anyCredentials asks each source in turn for a remote's credentials.
func anyCredentials(srcs []git.CredentialSource) git.CredentialSource {
	if len(srcs) == 0 {
		return nil
	}
	return func(ctx context.Context, remote string) (git.Credentials, bool, error) {
		for _, s := range srcs {
			c, ok, err := s(ctx, remote)
			if err != nil || ok {
				return c, ok, err
			}
		}
		return git.Credentials{}, false, nil
	}
}
