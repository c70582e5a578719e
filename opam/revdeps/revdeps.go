// Package revdeps finds the reverse dependencies of an opam package version: the
// versions that depend on it, directly or recursively, kept only when they can be
// installed together with it, as `opam list --depends-on P --coinstallable-with P
// --all-versions` does.
package revdeps

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/solver"
)

// Options mirror opam list's flags.
type Options struct {
	Recursive bool // --recursive
	Depopts   bool // --depopts
	// All counts the versions unavailable on the platform too (-A); they are never
	// coinstallable, so it matters with AnyInstallable.
	All bool
	// --with-test is the universe's (solver.Flags.WithTest): build it with the flag.

	// AnyInstallable skips the coinstallability filter (plain --depends-on).
	AnyInstallable bool
	// Installable, when set, is the universe the coinstallability checks solve in
	// instead of the one the dependencies are read from. (opam's --with-test applies
	// the test dependencies of every package to both, which is the default.)
	Installable *solver.Universe
	// RootTests adds, in the coinstallability checks, the test dependencies of the two
	// packages checked (not of their dependencies).
	RootTests bool
	// Progress, when set, is called after each coinstallability check.
	Progress func(done, total int)
}

// Candidates returns the versions that depend on pkg (directly, or recursively),
// before the coinstallability filter, sorted. As in opam, the recursive list holds
// pkg itself.
func Candidates(u *solver.Universe, pkg opam.Package, opts Options) ([]*solver.Cand, error) {
	c := u.Cand(pkg)
	if c == nil {
		return nil, fmt.Errorf("revdeps: unknown package %s", pkg)
	}
	var direct []*solver.Cand
	if opts.All {
		direct = u.DependsOnAll(c, opts.Depopts)
	} else {
		direct = u.DependsOn(c, opts.Depopts)
	}
	if !opts.Recursive {
		return sorted(direct, c), nil
	}
	seen := map[*solver.Cand]bool{c: true}
	queue := []*solver.Cand{c}
	var out []*solver.Cand
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		for _, y := range u.DependsOnNoCopy(x, opts.Depopts, opts.All) {
			if !seen[y] {
				seen[y] = true
				out = append(out, y)
				queue = append(queue, y)
			}
		}
	}
	// opam's recursive closure holds the package itself.
	return sorted(append(out, c), nil), nil
}

func sorted(cs []*solver.Cand, self *solver.Cand) []*solver.Cand {
	out := make([]*solver.Cand, 0, len(cs))
	for _, c := range cs {
		if c != self {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *solver.Cand) int {
		if a.Name != b.Name {
			return strings.Compare(string(a.Name), string(b.Name))
		}
		return opam.CompareVersions(string(a.Version), string(b.Version))
	})
	return out
}

// Of returns the reverse dependencies of pkg that can be installed together with it
// on the universe's platform, sorted by name and version.
func Of(ctx context.Context, u *solver.Universe, pkg opam.Package, opts Options) ([]opam.Package, error) {
	cands, err := Candidates(u, pkg, opts)
	if err != nil {
		return nil, err
	}
	iu := u
	if opts.Installable != nil {
		iu = opts.Installable
	}
	keep, err := coinstallable(ctx, iu, pkg, cands, opts)
	if err != nil {
		return nil, err
	}
	var out []opam.Package
	for i, c := range cands {
		if keep[i] {
			out = append(out, opam.Package{Name: c.Name, Version: c.Version})
		}
	}
	return out, nil
}

// coinstallable checks each candidate for coinstallability with pkg (and the hold
// atoms) in u, on every core (all are kept with opts.AnyInstallable).
func coinstallable(ctx context.Context, u *solver.Universe, pkg opam.Package, cands []*solver.Cand, opts Options, hold ...opam.Atom) ([]bool, error) {
	keep := make([]bool, len(cands))
	if opts.AnyInstallable {
		for i := range keep {
			keep[i] = true
		}
		return keep, nil
	}
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				keep[i] = coinstallableWith(ctx, u, pkg, cands[i], opts.RootTests, hold)
				if opts.Progress != nil {
					mu.Lock()
					done++
					opts.Progress(done, len(cands))
					mu.Unlock()
				}
			}
		})
	}
feed:
	for i := range cands {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return keep, ctx.Err()
}

// CI returns the reverse dependencies opam-repository CI tests for a version pkg:
// the union of `opam list --depends-on P --coinstallable-with P --all-versions` with
// --depopts, with --recursive, and with --with-test --depopts, without P itself,
// sorted. plain is the universe of the repository on the platform, withTest the same
// with solver.Flags{WithTest: true}. Each version kept can also be installed with the
// hold atoms (a platform's compiler, say).
//
// When pkg itself cannot be installed with the hold atoms, nothing can be installed
// with it: the error wraps ErrNotInstallable (and the candidates are not checked).
func CI(ctx context.Context, plain, withTest *solver.Universe, pkg opam.Package, hold ...opam.Atom) ([]opam.Package, error) {
	direct, err := Candidates(plain, pkg, Options{Depopts: true})
	if err != nil {
		return nil, err
	}
	if _, err := plain.Solve(ctx, solver.Request{Install: append([]opam.Atom{exactly(pkg.Name, pkg.Version)}, hold...), AnySolution: true}); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("revdeps: %s: %w: %v", pkg, ErrNotInstallable, err)
	}
	rec, err := Candidates(plain, pkg, Options{Recursive: true})
	if err != nil {
		return nil, err
	}
	tests, err := Candidates(withTest, pkg, Options{Depopts: true})
	if err != nil {
		return nil, err
	}
	seen := map[opam.Package]bool{pkg: true}
	var out []opam.Package
	// check keeps the candidates not seen yet that are coinstallable with pkg in u.
	check := func(u *solver.Universe, cands []*solver.Cand) error {
		var todo []*solver.Cand
		for _, c := range cands {
			p := opam.Package{Name: c.Name, Version: c.Version}
			if !seen[p] {
				seen[p] = true
				todo = append(todo, c)
			}
		}
		keep, err := coinstallable(ctx, u, pkg, todo, Options{}, hold...)
		if err != nil {
			return err
		}
		for i, c := range todo {
			if keep[i] {
				out = append(out, opam.Package{Name: c.Name, Version: c.Version})
			}
		}
		return nil
	}
	if err := check(plain, append(direct, rec...)); err != nil {
		return nil, err
	}
	// Versions checked above are not checked again: their test dependencies only add
	// constraints.
	if err := check(withTest, tests); err != nil {
		return nil, err
	}
	slices.SortFunc(out, comparePackages)
	return out, nil
}

// ErrNotInstallable says a package cannot be installed (with the atoms held).
var ErrNotInstallable = errors.New("cannot be installed")

func exactly(n opam.PackageName, v opam.Version) opam.Atom {
	return opam.Atom{Name: n, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: v})}
}

func comparePackages(a, b opam.Package) int {
	if a.Name != b.Name {
		return strings.Compare(string(a.Name), string(b.Name))
	}
	return opam.CompareVersions(string(a.Version), string(b.Version))
}

// OfName returns the reverse dependencies of every version of a package, as
// `opam list --depends-on NAME` does: each listed version depends on some version of
// the package and (unless AnyInstallable) can be installed together with it.
func OfName(ctx context.Context, u *solver.Universe, name opam.PackageName, opts Options) ([]opam.Package, error) {
	vs := u.Versions(name)
	if len(vs) == 0 {
		return nil, fmt.Errorf("revdeps: unknown package %s", name)
	}
	seen := map[opam.Package]bool{}
	var out []opam.Package
	for _, v := range vs {
		list, err := Of(ctx, u, opam.Package{Name: v.Name, Version: v.Version}, opts)
		if err != nil {
			return nil, err
		}
		for _, p := range list {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, comparePackages)
	return out, nil
}

// Latest keeps the newest version of each name of a sorted list, as opam list shows
// without --all-versions.
func Latest(list []opam.Package) []opam.Package {
	var out []opam.Package
	for i, p := range list {
		if i+1 < len(list) && list[i+1].Name == p.Name {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Coinstallable reports whether c can be installed together with pkg, with the test
// dependencies of both when withTest is set.
func Coinstallable(ctx context.Context, u *solver.Universe, pkg opam.Package, c *solver.Cand, withTest bool) bool {
	return coinstallableWith(ctx, u, pkg, c, withTest, nil)
}

func coinstallableWith(ctx context.Context, u *solver.Universe, pkg opam.Package, c *solver.Cand, withTest bool, hold []opam.Atom) bool {
	install := append([]opam.Atom{exactly(pkg.Name, pkg.Version), exactly(c.Name, c.Version)}, hold...)
	_, err := u.Solve(ctx, solver.Request{Install: install, WithTest: withTest, AnySolution: true})
	return err == nil
}
