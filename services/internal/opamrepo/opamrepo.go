// Package opamrepo follows an opam package repository for services: the head of a
// branch as an engine input, the package index at each commit, and solves of a
// repository's own packages against it on a platform of the matrix.
package opamrepo

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/solver"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Repository is an opam package repository followed on a branch of a local git
// repository (a mirror of opam-repository), by polling. Its index at a commit is
// updated incrementally from the previous one, with one solver universe per platform.
type Repository struct {
	GitDir string
	Branch string        // default "master"
	Poll   time.Duration // default 5 minutes

	once sync.Once
	mon  *current.Monitor[string]

	mu        sync.Mutex
	repo      *repository.Repo // at commit
	commit    string
	universes map[string]*solver.Universe // commit + platform → universe
}

// Head is the monitor of the branch's head commit.
func (o *Repository) Head() current.Term[string] {
	o.once.Do(func() {
		every := o.Poll
		if every <= 0 {
			every = 5 * time.Minute
		}
		o.mon = current.Poll("opam-repository head", every, o.readHead)
	})
	return o.mon.Term()
}

func (o *Repository) branch() string {
	if o.Branch == "" {
		return "master"
	}
	return o.Branch
}

func (o *Repository) readHead(ctx context.Context) (string, error) {
	r, err := git.Open(ctx, o.GitDir)
	if err != nil {
		return "", fmt.Errorf("opam repository %s: %w", o.GitDir, err)
	}
	head, err := r.Resolve(ctx, o.branch()+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("opam repository %s: no branch %s: %w", o.GitDir, o.branch(), err)
	}
	return head, nil
}

// at returns the repository index at commit, updated incrementally from the last one.
func (o *Repository) at(ctx context.Context, commit string) (*repository.Repo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.repo != nil && o.commit == commit {
		return o.repo, nil
	}
	var r *repository.Repo
	var err error
	if o.repo != nil {
		r, _, err = o.repo.Update(ctx, o.GitDir, commit)
	} else {
		r, err = repository.LoadGit(ctx, o.GitDir, commit)
	}
	if err != nil {
		return nil, fmt.Errorf("opam repository at %.12s: %w", commit, err)
	}
	o.repo, o.commit = r, commit
	o.universes = map[string]*solver.Universe{}
	return r, nil
}

// At is the index of the repository at commit.
func (o *Repository) At(ctx context.Context, commit string) (*repository.Repo, error) {
	return o.at(ctx, commit)
}

// Universe is the solver universe of the repository at commit on platform p.
func (o *Repository) Universe(ctx context.Context, commit string, p matrix.Platform) (*solver.Universe, error) {
	r, err := o.at(ctx, commit)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	u := o.universes[p.Name]
	if u == nil {
		u = solver.NewUniverse(r, solver.Platform(p.Vars))
		o.universes[p.Name] = u
	}
	return u, nil
}

// Local are a repository's own packages to solve for: their opam files, pinned as
// version "dev" and installed with their test dependencies.
type Local struct {
	Files []LocalFile
	// LowerBounds picks the oldest versions instead of the newest.
	LowerBounds bool
	// Extra are packages of other opam repositories, taking precedence over the
	// followed repository's; Pinned (pin-depends) are each the only version of its name.
	Extra, Pinned []*repository.Package
	// Also are more packages to install with them (a tool such as ocamlformat).
	Also []opam.Atom
}

// LocalFile is one local package's opam file.
type LocalFile struct {
	Name opam.PackageName
	Path string
	Data []byte
}

// Solve solves for the local packages in the repository at commit on platform p,
// holding the packages of the switch on the image's compiler (p.Compiler; p.System for
// a platform that names none) at their versions. It returns the exact set to install
// in that switch, as name.version, sorted: every package of the solution but the local
// ones, the compiler's included.
func (o *Repository) Solve(ctx context.Context, commit string, p matrix.Platform, l Local) ([]string, error) {
	u, err := o.Universe(ctx, commit, p)
	if err != nil {
		return nil, err
	}
	if len(l.Extra) > 0 {
		u = solver.NewUniverse(u.Repo.WithPackages(l.Extra...), u.Platform)
	}
	req := solver.Request{WithTest: true, LowerBounds: l.LowerBounds, Pins: append([]*repository.Package(nil), l.Pinned...)}
	local := map[opam.PackageName]bool{}
	for _, lf := range l.Files {
		f, err := opam.Parse(lf.Path, lf.Data)
		if err != nil {
			return nil, err
		}
		pkg := opam.Package{Name: lf.Name, Version: "dev"}
		req.Pins = append(req.Pins, &repository.Package{Package: pkg, Path: lf.Path, Data: lf.Data, File: f})
		req.Install = append(req.Install, opam.Atom{Name: lf.Name})
		local[lf.Name] = true
	}
	req.Install = append(req.Install, l.Also...)
	held := p.Compiler
	if len(held) == 0 {
		held = p.System
	}
	for _, s := range held {
		pkg, ok := opam.ParsePackage(s)
		if !ok || u.Cand(pkg) == nil {
			continue // not in this repository: nothing to hold
		}
		req.Install = append(req.Install, opam.Atom{Name: pkg.Name, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: pkg.Version})})
	}
	sel, err := u.Solve(ctx, req)
	if err != nil {
		return nil, err
	}
	var install []string
	for _, pkg := range sel.Packages {
		if !local[pkg.Name] {
			install = append(install, pkg.String())
		}
	}
	sort.Strings(install)
	return install, nil
}
