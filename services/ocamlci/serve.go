package ocamlci

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// ServiceKind is ocaml-ci as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "ocaml-ci",
	Help: "CI for OCaml repositories: every branch and pull request of the forges followed (without any, a sample project made in the state dir) analysed, built on the fleet, linted and reported",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringVar(&s.opamRepo, "opam-repository", "", "git directory of an opam-repository clone to solve against (default: the platform's own packages only)")
		fs.StringVar(&s.opamBranch, "opam-branch", "master", "branch of --opam-repository followed")
		fs.BoolVar(&s.noArm64, "no-arm64", false, "leave out the emulated arm64 platform")
		fs.BoolVar(&s.noBaseImages, "no-base-images", false, "do not make the platforms' Debian base images in the state dir (the workers have them)")
		fs.StringVar(&s.nixPool, "nix-pool", "", "fleet pool of kiln worker --runner nix that builds the Nix variants repositories ask for in .kiln.yml (docs/nix.md); the fleet's scheduler must serve it: the embedded one does not")
		fs.StringToStringVar(&s.images, "platform-image", nil, "PLATFORM=REF: build the platform on a registry image (e.g. debian-12-4.13_amd64=REGISTRY/ocaml/opam:debian-12-ocaml-4.13, a tag of the base-images service) instead of a Debian base made locally")
		return s
	},
}

// served is ocaml-ci configured by its flags, before it starts.
type served struct {
	opamRepo, opamBranch  string
	noArm64, noBaseImages bool
	images                map[string]string // platform name → image reference
	nixPool               string
}

func (c *served) platforms() []matrix.Platform {
	ps := matrix.Default()
	if c.noArm64 {
		ps = ps[:1]
	}
	return ps
}

// Pools are the fleet pools of the platforms built.
func (c *served) Pools() []string { return matrix.Pools(c.platforms()) }

// Start opens the index and builds the pipeline over the host's forges, or over a
// sample project made in the state dir when no forge is followed.
func (c *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	if env.Fleet == nil {
		return nil, fmt.Errorf("ocaml-ci builds on a fleet, and the host has none")
	}
	platforms, err := matrix.WithImages(c.platforms(), c.images)
	if err != nil {
		return nil, fmt.Errorf("--platform-image: %w", err)
	}
	target, prefix := env.Tables("ocamlci", "ocamlci.db")
	idx, err := results.Open(ctx, target, prefix)
	if err != nil {
		return nil, err
	}
	svc := &Service{
		Forges: env.Forges, Fleet: env.Fleet, Mirrors: env.Mirrors, WorkDir: filepath.Join(env.StateDir, "ocamlci"),
		Platforms: platforms, Index: idx, Images: env.Images, BaseURL: env.BaseURL, Logger: env.Logger,
		NixPool: c.nixPool,
	}
	if c.noBaseImages {
		svc.Images = ""
	}
	if c.opamRepo != "" {
		svc.Opam = &opamrepo.Repository{GitDir: c.opamRepo, Branch: c.opamBranch}
		svc.Archives, err = opamenv.NewArchives(filepath.Join(env.StateDir, "opam-archives"),
			opamenv.ArchivesOptions{Logger: env.Logger, Register: env.Register})
		if err != nil {
			idx.Close()
			return nil, err
		}
	}
	if env.Forges.Empty() {
		sample := filepath.Join(env.StateDir, "sample", "hello")
		if err := CreateSample(ctx, sample); err != nil {
			idx.Close()
			return nil, err
		}
		env.Logger.Info("building a sample OCaml project; commit to it to see a new build", "repo", sample)
		own := &forges.Set{}
		own.Add("git", &forges.Git{Repos: []forges.GitRepo{{Owner: "local", Name: "hello", Remote: sample}}})
		svc.Forges = own
	}
	env.Forges.OnRerun(func(ctx context.Context, repo forge.RepoID, commit string) error {
		_, err := svc.RebuildCommit(env.Engine, repo, commit)
		return err
	})
	env.Forges.OnRename(idx.RenameRepo) // a renamed repository keeps its history
	ui, err := results.NewUI(idx, env.Engine, env.Logger)
	if err != nil {
		idx.Close()
		return nil, err
	}
	routes := map[string]http.Handler{}
	for _, r := range ui.Routes() {
		routes[r] = ui
	}
	return &host.Running{Pipeline: svc.Pipeline(), Routes: routes, Close: func() { idx.Close() }}, nil
}
