package ocamlci

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/solver"
)

// OpamRepository is the opam package repository commits are solved against: a branch
// of a local git repository (a mirror of opam-repository), followed by polling. When
// it moves on, every active ref is solved again; a ref whose solution changed is
// rebuilt in the fleet's background lane.
type OpamRepository struct {
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
func (o *OpamRepository) Head() current.Term[string] {
	o.once.Do(func() {
		every := o.Poll
		if every <= 0 {
			every = 5 * time.Minute
		}
		o.mon = current.Poll("opam-repository head", every, o.readHead)
	})
	return o.mon.Term()
}

func (o *OpamRepository) branch() string {
	if o.Branch == "" {
		return "master"
	}
	return o.Branch
}

func (o *OpamRepository) readHead(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "--git-dir", o.GitDir, "rev-parse", "--verify", o.branch()+"^{commit}").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("opam repository %s: no branch %s: %s", o.GitDir, o.branch(), strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("opam repository %s: %w", o.GitDir, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// at returns the repository index at commit, updated incrementally from the last one.
func (o *OpamRepository) at(ctx context.Context, commit string) (*repository.Repo, error) {
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
		return nil, fmt.Errorf("opam repository at %s: %w", short(commit), err)
	}
	o.repo, o.commit = r, commit
	o.universes = map[string]*solver.Universe{}
	return r, nil
}

func (o *OpamRepository) universe(ctx context.Context, commit string, p Platform) (*solver.Universe, error) {
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

// Solver returns the solve function for the repository at commit: the newest
// versions (or the oldest, for lower bounds) of what the local packages need, keeping
// the packages the platform's image provides at their versions; it returns those the
// image lacks.
//
// extra are the packages of the repository's own extra opam repositories (.kiln.yml),
// which take precedence over the followed repository's.
// pinned are the pin-depends packages, each the only version of its name.
func (o *OpamRepository) Solver(commit string, lowerBounds bool, extra, pinned []*repository.Package) func(ctx context.Context, a *Analysis, p Platform) ([]string, error) {
	return func(ctx context.Context, a *Analysis, p Platform) ([]string, error) {
		u, err := o.universe(ctx, commit, p)
		if err != nil {
			return nil, err
		}
		if len(extra) > 0 {
			u = solver.NewUniverse(u.Repo.WithPackages(extra...), u.Platform)
		}
		req := solver.Request{WithTest: true, LowerBounds: lowerBounds, Pins: append([]*repository.Package(nil), pinned...)}
		local := map[opam.PackageName]bool{}
		for _, rel := range sortedKeys(a.OpamFiles) {
			name := opam.PackageName(packageNameOf(rel))
			f, err := opam.Parse(rel, a.OpamFiles[rel])
			if err != nil {
				return nil, err
			}
			pkg := opam.Package{Name: name, Version: "dev"}
			req.Pins = append(req.Pins, &repository.Package{Package: pkg, Path: rel, Data: a.OpamFiles[rel], File: f})
			req.Install = append(req.Install, opam.Atom{Name: name})
			local[name] = true
		}
		system := map[opam.PackageName]opam.Version{}
		for _, s := range p.System {
			pkg, ok := opam.ParsePackage(s)
			if !ok || u.Cand(pkg) == nil {
				continue // not in this repository: nothing to hold
			}
			system[pkg.Name] = pkg.Version
			req.Install = append(req.Install, opam.Atom{Name: pkg.Name, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: pkg.Version})})
		}
		sel, err := u.Solve(ctx, req)
		if err != nil {
			return nil, err
		}
		var install []string
		for _, pkg := range sel.Packages {
			if local[pkg.Name] {
				continue
			}
			if v, ok := system[pkg.Name]; ok && v == pkg.Version {
				continue
			}
			install = append(install, pkg.String())
		}
		sort.Strings(install)
		return install, nil
	}
}

// extraPackages fetches the extra opam repositories a repository's configuration names
// and reads their packages at their default branch.
func extraPackages(ctx context.Context, mirrors *git.Mirrors, repos []ExtraRepository, logf func(string, ...any)) ([]*repository.Package, error) {
	var pkgs []*repository.Package
	for _, r := range repos {
		m, err := mirrors.Fetch(ctx, r.URL)
		if err != nil {
			return nil, fmt.Errorf("%s: opam repository %s: %w", ConfigFile, r.Name, err)
		}
		heads, err := m.Heads(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: opam repository %s: %w", ConfigFile, r.Name, err)
		}
		branches := []string{r.Branch}
		if r.Branch == "" {
			branches = []string{"main", "master"}
		}
		var head string
		for _, b := range branches {
			if head = heads["refs/heads/"+b]; head != "" {
				break
			}
		}
		if head == "" {
			return nil, fmt.Errorf("%s: opam repository %s has no branch %s", ConfigFile, r.Name, strings.Join(branches, " or "))
		}
		idx, err := repository.LoadGit(ctx, m.Dir, head)
		if err != nil {
			return nil, fmt.Errorf("%s: opam repository %s at %s: %w", ConfigFile, r.Name, short(head), err)
		}
		logf("opam repository %s at %s: %d package versions", r.Name, short(head), idx.Len())
		pkgs = append(pkgs, idx.Packages()...)
	}
	return pkgs, nil
}
