package healthcheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
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
	// Deps are the package's solved dependencies (name.version) in install steps:
	// each step after the steps it depends on, packages that depend on each other
	// (post dependencies) in one step, and among the steps ready together the ones
	// the most jobs of the switch need first, so that jobs share the longest prefix
	// of steps.
	Deps [][]string `json:"deps"`
	// With are installed in the package's own step (a post-dependency cycle).
	With []string `json:"with,omitempty"`
}

// Packages lists every package the job installs: its dependencies, the package,
// then With.
func (j Job) Packages() []string {
	var out []string
	for _, g := range j.Deps {
		out = append(out, g...)
	}
	return append(append(out, j.Package), j.With...)
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
	// Repos, when set, gives the repository a switch solves in (the followed one
	// with the switch's extra repositories).
	Repos func(sw Switch) (*repository.Repo, error)
	// Changed, when not nil, limits the plan to what a change of these packages
	// (name.version) can affect: them and the packages that depend on them.
	Changed []string

	// The universes and package data made so far, kept for the planner's life:
	// switches on the same repository and platform variables share them.
	mu        sync.Mutex
	universes map[universeKey]*solver.Universe
	repoData  map[*repository.Repo]*repoData
}

type universeKey struct {
	repo     *repository.Repo
	platform string
}

// repoData is what the pages need of a repository's packages.
type repoData struct {
	maintainers map[opam.Package][]string
	revdeps     map[opam.PackageName]int
}

// universe returns the solver's universe of a repository on a platform, made once.
func (pl *Planner) universe(repo *repository.Repo, plat solver.Platform) *solver.Universe {
	keys := slices.Sorted(maps.Keys(plat))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, plat[k])
	}
	key := universeKey{repo, b.String()}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if u := pl.universes[key]; u != nil {
		return u
	}
	if pl.universes == nil {
		pl.universes = map[universeKey]*solver.Universe{}
	}
	u := solver.NewUniverse(repo, plat)
	pl.universes[key] = u
	return u
}

// data returns the maintainers and reverse-dependency counts of a repository,
// read once.
func (pl *Planner) data(repo *repository.Repo) *repoData {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if d := pl.repoData[repo]; d != nil {
		return d
	}
	if pl.repoData == nil {
		pl.repoData = map[*repository.Repo]*repoData{}
	}
	d := &repoData{maintainers(repo), RevdepCounts(repo)}
	pl.repoData[repo] = d
	return d
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

// Sample keeps the versions of one package name in n of pkgs (sorted by name): the
// first name, the n+1th, and so on.
func Sample(pkgs []opam.Package, n int) []opam.Package {
	var out []opam.Package
	i := -1
	var last opam.PackageName
	for _, p := range pkgs {
		if p.Name != last {
			last = p.Name
			i++
		}
		if i%n == 0 {
			out = append(out, p)
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

// Plan solves each package of pkgs on each switch (only those Changed can affect,
// when set) and returns the run's jobs and planned results. A package with no
// solution is not available and not built.
func (pl *Planner) Plan(ctx context.Context, run int64, repo *repository.Repo, pkgs []opam.Package) (*Plan, error) {
	plat, err := pl.Config.platform()
	if err != nil {
		return nil, err
	}
	out := &Plan{}
	for _, sw := range pl.Config.Switches {
		swRepo, swPkgs := repo, pkgs
		if pl.Repos != nil && len(sw.Repositories) > 0 {
			if swRepo, err = pl.Repos(sw); err != nil {
				return nil, err
			}
			// pkgs are every version when there are more of them than names
			swPkgs = Select(swRepo, len(pkgs) > len(repo.Names()))
		}
		var restrict map[string]bool
		if pl.Changed != nil {
			restrict = affected(swRepo, pl.Changed)
		}
		u := pl.universe(swRepo, SwitchPlatform(plat, sw))
		jobs, na, err := pl.solveSwitch(ctx, u, sw, swPkgs, restrict)
		if err != nil {
			return nil, err
		}
		first := len(out.Results)
		for _, j := range jobs {
			out.Results = append(out.Results, Result{Package: j.Package, Switch: sw.Name, State: Pending})
		}
		out.Results = append(out.Results, na...)
		out.Jobs = append(out.Jobs, jobs...)
		d := pl.data(swRepo)
		for i := first; i < len(out.Results); i++ {
			r := &out.Results[i]
			r.Run = run
			p, _ := opam.ParsePackage(r.Package)
			r.Maintainers, r.Revdeps = d.maintainers[p], d.revdeps[p.Name]
		}
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
			deps, with := order(u.Repo, a.sel, todo[i], need)
			jobs = append(jobs, Job{Switch: sw.Name, Package: todo[i].String(), Deps: deps, With: with})
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

// order groups the selection into install steps: packages that depend on each
// other (post dependencies: the compiler and ocaml) share a step, and each step
// comes after the steps it depends on; among the steps ready at once, those more jobs
// need (need) come first, then by name. The group holding pkg, and every group that
// depends on it, is its build step (with: their other packages); deps are the steps
// before it.
func order(repo *repository.Repo, sel []opam.Package, pkg opam.Package, need map[opam.Package]int) (deps [][]string, with []string) {
	idx := map[opam.PackageName]int{}
	for i, p := range sel {
		idx[p.Name] = i
	}
	edges := make([][]int, len(sel))
	for i, p := range sel {
		for _, n := range depNames(repo.Get(p)) {
			if j, ok := idx[n]; ok && j != i && !slices.Contains(edges[i], j) {
				edges[i] = append(edges[i], j)
			}
		}
	}
	comp := sccs(edges)
	groups := map[int][]opam.Package{}
	for i, c := range comp {
		groups[c] = append(groups[c], sel[i])
	}
	blocking := map[int]int{}
	users := map[int][]int{}
	for i := range sel {
		for _, j := range edges[i] {
			if ci, cj := comp[i], comp[j]; ci != cj && !slices.Contains(users[cj], ci) {
				users[cj] = append(users[cj], ci)
				blocking[ci]++
			}
		}
	}
	weight := func(c int) int {
		w := 0
		for _, p := range groups[c] {
			w = max(w, need[p])
		}
		return w
	}
	name := func(c int) string { return groups[c][0].String() }
	before := func(a, b int) int {
		if c := cmp.Compare(weight(b), weight(a)); c != 0 {
			return c
		}
		return strings.Compare(name(a), name(b))
	}
	var ready []int
	for c := range groups {
		if blocking[c] == 0 {
			ready = append(ready, c)
		}
	}
	// What depends on the package (the compiler, through post dependencies, on the
	// package of a base library) is installed in its step.
	target := comp[idx[pkg.Name]]
	onTarget := map[int]bool{target: true}
	for queue := []int{target}; len(queue) > 0; queue = queue[1:] {
		for _, u := range users[queue[0]] {
			if !onTarget[u] {
				onTarget[u] = true
				queue = append(queue, u)
			}
		}
	}
	for len(ready) > 0 {
		slices.SortFunc(ready, before)
		c := ready[0]
		ready = ready[1:]
		for _, u := range users[c] {
			if blocking[u]--; blocking[u] == 0 {
				ready = append(ready, u)
			}
		}
		if onTarget[c] {
			for _, p := range groups[c] {
				if p != pkg {
					with = append(with, p.String())
				}
			}
			continue
		}
		var names []string
		for _, p := range groups[c] {
			names = append(names, p.String())
		}
		slices.Sort(names)
		deps = append(deps, names)
	}
	return deps, with
}

// sccs numbers the strongly connected components of a graph (Tarjan's algorithm).
func sccs(edges [][]int) []int {
	n := len(edges)
	index, low, comp := make([]int, n), make([]int, n), make([]int, n)
	for i := range index {
		index[i], comp[i] = -1, -1
	}
	var stack []int
	onStack := make([]bool, n)
	next, count := 0, 0
	var visit func(v int)
	visit = func(v int) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range edges[v] {
			if index[w] < 0 {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				comp[w] = count
				if w == v {
					break
				}
			}
			count++
		}
	}
	for v := range edges {
		if index[v] < 0 {
			visit(v)
		}
	}
	return comp
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
