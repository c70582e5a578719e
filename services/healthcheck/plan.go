package healthcheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/solver"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Job is one build of a run: a package on a switch with the dependencies the solver
// chose, in the order they are installed.
type Job struct {
	Switch  string `json:"switch"`
	Package string `json:"package"`
	// Deps are the package's solved dependencies (name.version), dependencies
	// before what needs them and, among those ready together, the ones the most jobs
	// of the switch need first, so that jobs share the longest prefix of steps.
	Deps []string `json:"deps"`
}

// Key names the job in its run.
func (j Job) Key() string { return LogKey(j.Switch, j.Package) }

// Plan is what a run builds.
type Plan struct {
	Jobs []Job `json:"jobs"`
	// Results are the run's results as planned: every job pending, and the packages
	// with no solution not available.
	Results []Result `json:"-"`
}

// Planner computes runs' plans with the opam solver.
type Planner struct {
	Config *Config
	// Workers bounds the solves at once (default GOMAXPROCS).
	Workers int
	// Progress, when set, is called as switches' solves end.
	Progress func(sw string, done, total int)
}

// Select lists the package versions a run checks: the latest version of each name,
// or every version.
func Select(repo *repository.Repo, all bool) []opam.Package {
	var out []opam.Package
	for _, n := range repo.Names() {
		vs := repo.Versions(n)
		if len(vs) == 0 {
			continue
		}
		if !all {
			out = append(out, repo.Latest(n).Package)
			continue
		}
		for _, v := range vs {
			out = append(out, v.Package)
		}
	}
	return out
}

// SwitchPlatform is the platform's opam variables for a switch: the system
// compiler's variables are dropped unless the switch is on the system compiler.
func SwitchPlatform(p matrix.Platform, sw Switch) solver.Platform {
	vars := solver.Platform{}
	system := strings.HasPrefix(sw.Compiler, "ocaml-system.")
	for k, v := range p.Vars {
		if !system && (strings.Contains(k, ":") || strings.HasPrefix(k, "sys-ocaml")) {
			continue
		}
		vars[k] = v
	}
	return vars
}

// Plan solves each package of pkgs on each switch (only restrict's when not nil)
// and returns the run's jobs and planned results. A package with no solution is not
// available and not built.
func (pl *Planner) Plan(ctx context.Context, run int64, repo *repository.Repo, pkgs []opam.Package, restrict map[string]bool) (*Plan, error) {
	plat, err := pl.Config.platform()
	if err != nil {
		return nil, err
	}
	maint := maintainers(repo)
	revdeps := RevdepCounts(repo)
	out := &Plan{}
	for _, sw := range pl.Config.Switches {
		u := solver.NewUniverse(repo, SwitchPlatform(plat, sw))
		jobs, na, err := pl.solveSwitch(ctx, u, sw, pkgs, restrict)
		if err != nil {
			return nil, err
		}
		out.Jobs = append(out.Jobs, jobs...)
		for _, j := range jobs {
			out.Results = append(out.Results, Result{Run: run, Package: j.Package, Switch: sw.Name, State: Pending})
		}
		out.Results = append(out.Results, na...)
	}
	for i := range out.Results {
		r := &out.Results[i]
		r.Run = run
		p, _ := opam.ParsePackage(r.Package)
		r.Maintainers, r.Revdeps = maint[p], revdeps[p.Name]
	}
	return out, nil
}

func (pl *Planner) solveSwitch(ctx context.Context, u *solver.Universe, sw Switch, pkgs []opam.Package, restrict map[string]bool) ([]Job, []Result, error) {
	compiler, ok := opam.ParsePackage(sw.Compiler)
	if !ok {
		return nil, nil, fmt.Errorf("switch %s: compiler %q is not name.version", sw.Name, sw.Compiler)
	}
	hold := exactAtom(compiler)
	var todo []opam.Package
	for _, p := range pkgs {
		if restrict == nil || restrict[p.String()] {
			todo = append(todo, p)
		}
	}
	type answer struct {
		sel []opam.Package
		why string
	}
	answers := make([]answer, len(todo))
	workers := pl.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		next     int
		done     int
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(todo) || ctx.Err() != nil {
					return
				}
				p := todo[i]
				req := solver.Request{Install: []opam.Atom{exactAtom(p), hold}, WithTest: pl.Config.WithTest}
				sel, err := u.Solve(ctx, req)
				var f *solver.Failure
				switch {
				case errors.As(err, &f):
					answers[i].why = firstLine(f.Explanation)
					if f.GaveUp {
						answers[i].why = "the solver gave up: " + answers[i].why
					}
				case err != nil:
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("switch %s: solve %s: %w", sw.Name, p, err)
					}
					mu.Unlock()
					return
				default:
					answers[i].sel = sel.Packages
				}
				mu.Lock()
				done++
				if pl.Progress != nil && done%500 == 0 {
					pl.Progress(sw.Name, done, len(todo))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	var jobs []Job
	var na []Result
	need := map[opam.Package]int{}
	for i, a := range answers {
		if a.sel == nil {
			na = append(na, Result{Package: todo[i].String(), Switch: sw.Name, State: NotAvailable, Kind: KindSolver, Message: a.why})
			continue
		}
		for _, d := range a.sel {
			need[d]++
		}
	}
	for i, a := range answers {
		if a.sel != nil {
			jobs = append(jobs, Job{Switch: sw.Name, Package: todo[i].String(), Deps: order(u.Repo, a.sel, todo[i], need)})
		}
	}
	return jobs, na, nil
}

func exactAtom(p opam.Package) opam.Atom {
	return opam.Atom{Name: p.Name, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: p.Version})}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// order lists the selection but pkg, each package after the ones it depends on
// (depends and depopts among the selection); among the packages ready at once, the
// ones more jobs need (need) come first, then by name.
func order(repo *repository.Repo, sel []opam.Package, pkg opam.Package, need map[opam.Package]int) []string {
	byName := map[opam.PackageName]opam.Package{}
	for _, p := range sel {
		byName[p.Name] = p
	}
	deps := map[opam.Package][]opam.Package{}
	blocking := map[opam.Package]int{}
	users := map[opam.Package][]opam.Package{}
	for _, p := range sel {
		if p == pkg {
			continue
		}
		for _, n := range depNames(repo.Get(p)) {
			d, ok := byName[n]
			if !ok || d == p || d == pkg || slices.Contains(deps[p], d) {
				continue
			}
			deps[p] = append(deps[p], d)
			blocking[p]++
			users[d] = append(users[d], p)
		}
	}
	before := func(a, b opam.Package) int {
		if c := cmp.Compare(need[b], need[a]); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	}
	var ready, out []opam.Package
	left := map[opam.Package]bool{}
	for _, p := range sel {
		if p == pkg {
			continue
		}
		left[p] = true
		if blocking[p] == 0 {
			ready = append(ready, p)
		}
	}
	for len(left) > 0 {
		if len(ready) == 0 {
			// A cycle (post dependencies): take the first of what is left.
			rest := slices.SortedFunc(func(yield func(opam.Package) bool) {
				for p := range left {
					if !yield(p) {
						return
					}
				}
			}, before)
			ready = append(ready, rest[0])
			blocking[rest[0]] = 0
		}
		slices.SortFunc(ready, before)
		p := ready[0]
		ready = ready[1:]
		if !left[p] {
			continue
		}
		delete(left, p)
		out = append(out, p)
		for _, u := range users[p] {
			blocking[u]--
			if blocking[u] == 0 && left[u] {
				ready = append(ready, u)
			}
		}
	}
	names := make([]string, len(out))
	for i, p := range out {
		names[i] = p.String()
	}
	return names
}

// depNames are the names a package's depends and depopts mention.
func depNames(p *repository.Package) []opam.PackageName {
	if p == nil || p.File == nil {
		return nil
	}
	var out []opam.PackageName
	for _, get := range []func() (opam.Formula[opam.Dependency], error){p.File.Depends, p.File.Depopts} {
		f, err := get()
		if err != nil {
			continue
		}
		for _, d := range f.Atoms() {
			out = append(out, d.Name)
		}
	}
	return out
}

// RevdepCounts counts, for each package name, the other names with a version that
// depends on it (depends or depopts): the reference's sort-by-revdeps order.
func RevdepCounts(repo *repository.Repo) map[opam.PackageName]int {
	users := map[opam.PackageName]map[opam.PackageName]bool{}
	repo.All(func(p *repository.Package) bool {
		for _, n := range depNames(p) {
			if n == p.Name {
				continue
			}
			if users[n] == nil {
				users[n] = map[opam.PackageName]bool{}
			}
			users[n][p.Name] = true
		}
		return true
	})
	out := make(map[opam.PackageName]int, len(users))
	for n, us := range users {
		out[n] = len(us)
	}
	return out
}

func maintainers(repo *repository.Repo) map[opam.Package][]string {
	out := map[opam.Package][]string{}
	repo.All(func(p *repository.Package) bool {
		if p.File != nil {
			out[p.Package] = p.File.Maintainer()
		}
		return true
	})
	return out
}
