package opamrepoci

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/solver"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// LayerRequest is the request of a job's opam layer (services/internal/opamenv): a
// switch on the platform's compiler over a repository holding exactly the versions
// the job's steps install, as the solver chooses them in the merged tree (for a
// lower-bounds job, the newest and the oldest choices), so that opam, asked to pin
// and reinstall as in opam-repository CI, finds those and builds from the archive
// cache. The switch is made first of the platform's compiler packages alone (and
// what they need), so every job of the platform shares it. gitDir is the repository
// the analysis read.
func (pl *Planner) LayerRequest(ctx context.Context, gitDir string, res *prdiff.Result, j Job) (opamenv.Request, error) {
	plat, ok := pl.Config.Platform(j.Platform)
	if !ok {
		return opamenv.Request{}, fmt.Errorf("job %s: unknown platform %q", j.ID(), j.Platform)
	}
	if len(plat.Compiler) == 0 {
		return opamenv.Request{}, fmt.Errorf("job %s: platform %s names no compiler packages to make a switch with", j.ID(), plat.Name)
	}
	if res.Repo == nil {
		return opamenv.Request{}, fmt.Errorf("job %s: the analysis has no index of the merged tree", j.ID())
	}
	var want []opam.Atom
	for _, c := range plat.Compiler {
		p, ok := opam.ParsePackage(c)
		if !ok {
			return opamenv.Request{}, fmt.Errorf("platform %s: compiler package %q is not name.version", plat.Name, c)
		}
		want = append(want, exact(p))
	}
	want = append(want, exact(j.Package))
	if j.Kind == Revdep {
		want = append(want, exact(j.Revdep))
	}
	steps := []solver.Request{{Install: want}}
	switch j.Kind {
	case Tests, Revdep:
		steps = append(steps, solver.Request{Install: want, WithTest: true})
	case LowerBounds:
		steps = append(steps, solver.Request{Install: want, LowerBounds: true})
	}
	u := pl.universe(res, plat, false)
	// The switch alone, made first, so that the jobs of the platform share it.
	sw, err := u.Solve(ctx, solver.Request{Install: want[:len(plat.Compiler)]})
	if err != nil {
		return opamenv.Request{}, fmt.Errorf("job %s: the switch of %s: %w", j.ID(), plat.Name, err)
	}
	set := map[opam.Package]bool{}
	var switchSet []string
	for _, p := range sw.Packages {
		set[p] = true
		switchSet = append(switchSet, p.String())
	}
	var first []string
	for i, r := range steps {
		sel, err := u.Solve(ctx, r)
		if err != nil {
			return opamenv.Request{}, fmt.Errorf("job %s: no solution on %s: %w", j.ID(), plat.Name, err)
		}
		for _, p := range sel.Packages {
			set[p] = true
			if i == 0 {
				first = append(first, p.String())
			}
		}
	}
	var rps []*repository.Package
	for p := range set {
		rp := res.Repo.Get(p)
		if rp == nil {
			return opamenv.Request{}, fmt.Errorf("job %s: %s is not in the merged tree", j.ID(), p)
		}
		rps = append(rps, rp)
	}
	slices.SortFunc(rps, func(a, b *repository.Package) int { return strings.Compare(a.Package.String(), b.Package.String()) })
	pkgs, err := opamenv.FromRepository(ctx, gitDir, res.Merged, rps)
	if err != nil {
		return opamenv.Request{}, err
	}
	return opamenv.Request{Compiler: plat.Compiler[0], Install: first, Packages: pkgs, Switch: switchSet}, nil
}

func exact(p opam.Package) opam.Atom {
	return opam.Atom{Name: p.Name, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: p.Version})}
}

// preparedLayer is a prepared opamenv layer: its setup, whatever the platform.
type preparedLayer struct{ l opamenv.Layer }

func (p preparedLayer) Ops(matrix.Platform) []spec.Op { return p.l.Setup() }

// Sources: the network when a source could not be kept in the layer (Layer.Online),
// never the shared download cache, which would hide the layer's.
func (p preparedLayer) Sources() (network, cache bool) { return len(p.l.Online) > 0, false }

// WithLayer returns specs whose jobs build over the prepared layer l (made by
// opamenv.Prepare from LayerRequest, in the build context), instead of opam init over
// the whole merged tree: the install steps run offline unless a source could not be
// kept (l.Online; they then fetch it with the network, and the download cache shared
// between builds is not mounted over the layer's). The reproduction commands are best
// written by specs without it: the layer's folder exists only in the service's build
// context.
func (s *Specs) WithLayer(l opamenv.Layer) *Specs {
	return &Specs{Config: s.Config, Layer: preparedLayer{l}}
}
