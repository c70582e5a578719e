package opamrepoci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// Prefix is the path of the service's pages: /opam-repo-ci/github/OWNER/REPO/commit/HASH,
// so that they do not collide with ocaml-ci's in one kiln serve.
const Prefix = "/opam-repo-ci"

// ServiceKind is opam-repo-ci as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "opam-repo-ci",
	Help: "CI for pull requests to an opam repository: each analysed, linted, built on the fleet with its reverse dependencies, failures compared with the base branch, and reported as the statuses opam-ci and opam-repo-ci (linter) and one comment",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringArrayVar(&s.repos, "opam-repo-ci-repo", nil, "an opam repository to test: OWNER/NAME=GIT-URL-OR-PATH (plain git: every branch but the base is a pull request), or FORGE/OWNER/NAME of a forge followed (default: every repository of the forges followed)")
		fs.StringVar(&s.config, "opam-repo-ci-config", "", "the job matrix, a YAML file (default: Debian 12 amd64 and arm64; see docs/opam-repo-ci.md)")
		fs.StringVar(&s.base, "opam-repo-ci-base", "master", "the branch pull requests merge into")
		fs.BoolVar(&s.noBaseImages, "opam-repo-ci-no-base-images", false, "do not make the platforms' Debian base images in the state dir (the workers have them)")
		return s
	},
}

// served is opam-repo-ci configured by its flags, before it starts.
type served struct {
	repos        []string
	config, base string
	noBaseImages bool
	cfg          *Config
}

func (c *served) load() (*Config, error) {
	if c.cfg != nil {
		return c.cfg, nil
	}
	cfg := Default()
	if c.config != "" {
		var err error
		if cfg, err = Load(c.config); err != nil {
			return nil, err
		}
	}
	c.cfg = cfg
	return cfg, nil
}

// Pools are the fleet pools of the matrix's platforms (the default's when the
// configuration does not read; Start says why).
func (c *served) Pools() []string {
	cfg, err := c.load()
	if err != nil {
		return Default().Pools()
	}
	return cfg.Pools()
}

// repoFlags reads --opam-repo-ci-repo: plain git repositories the service follows
// itself, and repositories of the host's forges.
func repoFlags(values []string) (git []forges.GitRepo, followed []forge.RepoID, err error) {
	for _, v := range values {
		name, remote, isGit := strings.Cut(v, "=")
		parts := strings.Split(name, "/")
		switch {
		case isGit && len(parts) == 2 && parts[0] != "" && parts[1] != "" && remote != "":
			git = append(git, forges.GitRepo{Owner: parts[0], Name: parts[1], Remote: remote})
			followed = append(followed, forge.RepoID{Forge: "git", Owner: parts[0], Name: parts[1]})
		case !isGit && len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "":
			followed = append(followed, forge.RepoID{Forge: parts[0], Owner: parts[1], Name: parts[2]})
		default:
			return nil, nil, fmt.Errorf("--opam-repo-ci-repo %q: want OWNER/NAME=GIT-URL or FORGE/OWNER/NAME", v)
		}
	}
	return git, followed, nil
}

// Start opens the index and builds the pipeline over the repositories followed.
func (c *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	if env.Fleet == nil {
		return nil, errors.New("opam-repo-ci builds on a fleet, and the host has none")
	}
	cfg, err := c.load()
	if err != nil {
		return nil, err
	}
	gitRepos, followed, err := repoFlags(c.repos)
	if err != nil {
		return nil, err
	}
	set := env.Forges
	if len(gitRepos) > 0 {
		set = &forges.Set{}
		set.Add("git", &forges.Git{Repos: gitRepos})
		for _, f := range followed {
			if f.Forge != "git" {
				return nil, fmt.Errorf("--opam-repo-ci-repo: %s is on a forge and others are plain git; give one kind", f)
			}
		}
	} else if env.Forges.Empty() {
		return nil, errors.New("opam-repo-ci follows no repository: give --opam-repo-ci-repo OWNER/NAME=GIT-URL, or follow a forge (--github-app-id, --gitea-url)")
	}
	target, prefix := env.Tables("opamrepoci", "opamrepoci.db")
	idx, err := results.Open(ctx, target, prefix)
	if err != nil {
		return nil, err
	}
	work := filepath.Join(env.StateDir, "opamrepoci")
	archives, err := opamenv.NewArchives(filepath.Join(work, "opam-archives"), opamenv.ArchivesOptions{Logger: env.Logger, Register: env.Register})
	if err != nil {
		idx.Close()
		return nil, err
	}
	svc := &Service{
		Forges: set, Mirrors: env.Mirrors, Repos: followed, BaseBranch: c.base, Config: cfg, Fleet: env.Fleet, Index: idx,
		Archives: archives, WorkDir: work, BaseURL: env.BaseURL, Prefix: Prefix,
		Metrics: NewMetrics(env.Register), Logger: env.Logger,
	}
	if !c.noBaseImages {
		svc.Images = env.Images
	}
	env.Forges.OnRerun(func(ctx context.Context, repo forge.RepoID, commit string) error {
		_, err := svc.RebuildCommit(env.Engine, repo, commit)
		return err
	})
	env.Forges.OnRename(idx.RenameRepo)
	ui, err := results.NewUI(idx, env.Engine, env.Logger, results.Options{Prefix: Prefix, Tree: true})
	if err != nil {
		idx.Close()
		return nil, err
	}
	routes := map[string]http.Handler{}
	for _, r := range ui.Routes() {
		routes[r] = ui
	}
	env.Logger.Info("opam-repo-ci: testing pull requests", "base", svc.baseBranch(), "repos", c.repos, "pools", cfg.Pools(), "ui", env.BaseURL+Prefix)
	return &host.Running{Pipeline: svc.Pipeline(), Routes: routes, Close: func() { idx.Close() }}, nil
}
