package ocamlci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// KindNix is a build of the repository's own Nix expression on the fleet's Nix pool.
const KindNix Kind = "nix"

// NixConfig is the nix section of .kiln.yml: a Nix variant that builds an attribute of
// the repository's default.nix (or another file), or an output of its flake.nix.
type NixConfig struct {
	// File is the Nix file (default default.nix); Attr the attribute built from it.
	File string `yaml:"file" json:"file,omitempty"`
	Attr string `yaml:"attr" json:"attr,omitempty"`
	// Flake is an output of the flake.nix at the root ("hello", or
	// "packages.x86_64-linux.hello"), instead of File and Attr.
	Flake string `yaml:"flake" json:"flake,omitempty"`
	// Impure evaluates the flake with --impure.
	Impure bool `yaml:"impure" json:"impure,omitempty"`
}

// spec is the Nix job the configuration asks for.
func (c NixConfig) spec() nixrun.Spec {
	return nixrun.Spec{File: c.File, Attr: c.Attr, Flake: c.Flake, Impure: c.Impure}
}

func (c *NixConfig) validate() error {
	if c == nil {
		return nil
	}
	if err := c.spec().Validate(); err != nil {
		return &ConfigError{Msg: "nix: " + err.Error()}
	}
	return nil
}

// nixPlatform is the platform Nix variants are shown on, built by pool.
func nixPlatform(pool string) matrix.Platform {
	return matrix.Platform{Name: "nix", Arch: "amd64", Pool: pool}
}

// nixVariant is the Nix variant a commit's .kiln.yml asks for, if any. The file it
// names must be in the checkout at dir.
func nixVariant(dir string, a *Analysis, pool string) (*Variant, error) {
	c := a.Config.Nix
	if c == nil {
		return nil, nil
	}
	s := c.spec()
	file, what := s.File, s.Attr
	switch {
	case s.Flake != "":
		file, what = "flake.nix", "flake "+s.Flake
	case file != "" && what != "":
		what = file + " " + what
	case file != "":
		what = file
	}
	if file == "" {
		file = "default.nix"
	}
	if what == "" {
		what = file
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(file))); err != nil {
		return nil, &ConfigError{Msg: fmt.Sprintf("nix: %s is not in the repository", file)}
	}
	return &Variant{Name: "nix (" + what + ")", Kind: KindNix, Platform: nixPlatform(pool), Nix: &s}, nil
}

// nixJob is the fleet job text of a Nix variant of the commit checked out as co, or
// why there is none, and its cache hint: the repository's expression, whose outputs
// and inputs the worker that built it last has in its store.
func (s *Service) nixJob(co Checkout, v Variant) (spec, specError, cacheHint string) {
	if s.NixPool == "" {
		return "", "this server has no Nix builders (a fleet pool of kiln worker --runner nix, Service.NixPool)", ""
	}
	return v.Nix.Encode(), "", "nix " + co.Repo.String() + " " + v.Nix.String()
}

// nixResult judges the fleet job of a Nix variant: a failed evaluation or build fails
// the variant with Nix's error lines; the outputs of a successful one are logged.
func nixResult(j *current.Job, r fleetjob.Result, err error) (BuildResult, error) {
	if len(r.Output) == 0 {
		return BuildResult{}, err
	}
	out, derr := nixrun.DecodeOutput(r.Output)
	switch {
	case derr != nil && err != nil:
		return BuildResult{}, err
	case derr != nil:
		return BuildResult{}, current.Infra(current.FailWorkerLost, fmt.Errorf("fleet job %s: %w", r.JobID, derr))
	case out.Failure != nil:
		return BuildResult{}, current.WithLines(errors.New(out.Failure.Error()), out.Failure.Lines)
	case err != nil:
		return BuildResult{}, err
	}
	j.Logf("nix: %s built %v, a closure of %d store paths, %d bytes", out.Spec, out.Paths, out.ClosurePaths, out.ClosureSize)
	return BuildResult{Snapshot: r.Snapshot, Nix: out}, nil
}
