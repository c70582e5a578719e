package opamrepoci

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Kind is what a job does with its package.
type Kind string

// The kinds of job, as the tree names them.
const (
	Build       Kind = "build"        // install the package
	Tests       Kind = "tests"        // install it, then reinstall it with its tests
	LowerBounds Kind = "lower-bounds" // install it with the oldest dependencies opam accepts
	Revdep      Kind = "revdeps"      // install it, then a reverse dependency with its tests
)

// Job is one build of the plan.
type Job struct {
	// Path is the job's place in the tree: package, group, label, kind, and for a
	// reverse dependency its name.version. Joined with commas it names the job
	// (ID) in URLs (…/variant/<ID>) and on the command line.
	Path     []string     `json:"path"`
	Package  opam.Package `json:"package"`
	Group    Group        `json:"group"`
	Label    string       `json:"label"`
	Platform string       `json:"platform"` // the platform's name
	Kind     Kind         `json:"kind"`
	// Revdep is the reverse dependency a revdeps job builds (zero otherwise).
	Revdep opam.Package `json:"revdep,omitzero"`
	// AcceptFailure says the package built (the reverse dependency, for a revdeps
	// job) names the platform's distribution in x-ci-accept-failures: its failure is
	// reported but does not fail the pull request.
	AcceptFailure bool `json:"accept_failure,omitempty"`
	// Background jobs go to the fleet's background lane: the reverse dependencies of a
	// pull request with many of them.
	Background bool `json:"background,omitempty"`
}

// ID is the job's tree path joined with commas.
func (j Job) ID() string { return strings.Join(j.Path, ",") }

// Skip is a job left out of the plan, with why.
type Skip struct {
	Path   []string `json:"path"`
	Reason string   `json:"reason"`
}

// Node is a node of the job tree: a package, group, label or kind, or a job (a leaf).
type Node struct {
	Label    string  `json:"label"`
	Job      *Job    `json:"job,omitempty"`
	Children []*Node `json:"children,omitempty"`
}

// Plan is what CI does for a pull request: its analysis, its lint and its jobs.
type Plan struct {
	Analysis *prdiff.Result `json:"analysis"`
	Lint     LintReport     `json:"lint"`
	// Built lists the packages built: new, and significantly changed and available.
	Built   []opam.Package `json:"built"`
	Jobs    []Job          `json:"jobs"`
	Skipped []Skip         `json:"skipped,omitempty"`
}

// Failed reports whether the pull request cannot be tested as it stands.
func (p *Plan) Failed() bool { return p.Analysis.Failed() }

// Counts returns the number of jobs of each kind.
func (p *Plan) Counts() map[Kind]int {
	m := map[Kind]int{}
	for _, j := range p.Jobs {
		m[j.Kind]++
	}
	return m
}

// Job finds a job by its ID.
func (p *Plan) Job(id string) (Job, bool) {
	i := slices.IndexFunc(p.Jobs, func(j Job) bool { return j.ID() == id })
	if i < 0 {
		return Job{}, false
	}
	return p.Jobs[i], true
}

// Tree returns the jobs as a tree, in plan order.
func (p *Plan) Tree() []*Node {
	root := &Node{}
	for i := range p.Jobs {
		j := &p.Jobs[i]
		n := root
		for _, l := range j.Path {
			var c *Node
			if k := len(n.Children); k > 0 && n.Children[k-1].Label == l {
				c = n.Children[k-1]
			} else {
				c = &Node{Label: l}
				n.Children = append(n.Children, c)
			}
			n = c
		}
		n.Job = j
	}
	return root.Children
}

// Planner plans pull requests on a configuration. It keeps the solver universes of
// the trees it planned last (a plan needs two per platform with reverse
// dependencies), so planning the same tree again is cheap, and makes the universe of
// another tree by updating the latest one of the platform with what differs (the
// packages a pull request changes, and those another changed): a whole universe is
// made only for the first tree. It is safe for concurrent use.
type Planner struct {
	Config *Config

	mu        sync.Mutex
	universes []treeUniverse // the least recently used first
	made      int            // whole universes made
}

// maxUniverses bounds the universes a planner keeps: those of the last few trees.
const maxUniverses = 12

// treeUniverse is the universe of a tree on a platform.
type treeUniverse struct {
	tree     string
	platform string
	withTest bool
	u        *solver.Universe
}

// Plan plans the jobs of an analysed pull request. A failed analysis has no jobs.
func (pl *Planner) Plan(ctx context.Context, res *prdiff.Result) (*Plan, error) {
	p := &Plan{Analysis: res, Lint: Lint(res), Jobs: []Job{}}
	if res.Failed() {
		return p, nil
	}
	if res.Repo == nil {
		return nil, fmt.Errorf("plan %.12s: the analysis has no index of the merged tree", res.Head)
	}
	own := map[opam.Package]bool{} // built by the pull request itself: not as revdeps
	hasTests := map[opam.Package]bool{}
	for _, c := range res.Changes {
		if c.Built() {
			own[c.Package] = true
			hasTests[c.Package] = c.HasTests
			p.Built = append(p.Built, c.Package)
		}
	}
	var revdepJobs []int
	for _, pkg := range p.Built {
		rp := res.Repo.Get(pkg)
		if rp == nil || rp.File == nil {
			continue // a malformed file fails the analysis before
		}
		for _, t := range pl.Config.targets() {
			at := []string{pkg.String(), string(t.group), t.label}
			why := unavailable(rp, t.platform)
			if why == "" {
				why = pl.installable(ctx, res, t.platform, pkg)
			}
			if why != "" {
				p.Skipped = append(p.Skipped, Skip{Path: at, Reason: why})
				continue
			}
			job := func(k Kind) Job {
				return Job{Path: append(slices.Clip(at), string(k)), Package: pkg, Group: t.group, Label: t.label,
					Platform: t.platform.Name, Kind: k, AcceptFailure: acceptsFailure(rp, t.platform)}
			}
			p.Jobs = append(p.Jobs, job(Build))
			if hasTests[pkg] {
				p.Jobs = append(p.Jobs, job(Tests))
			}
			if t.lowerBounds {
				p.Jobs = append(p.Jobs, job(LowerBounds))
			}
			if !t.revdeps {
				continue
			}
			list, err := pl.revdeps(ctx, res, t.platform, pkg)
			if err != nil {
				return nil, err
			}
			for _, r := range list {
				if own[r] {
					continue
				}
				j := job(Revdep)
				j.Path = append(j.Path, r.String())
				j.Revdep = r
				j.AcceptFailure = acceptsFailure(res.Repo.Get(r), t.platform)
				revdepJobs = append(revdepJobs, len(p.Jobs))
				p.Jobs = append(p.Jobs, j)
			}
		}
	}
	if len(revdepJobs) > pl.Config.backgroundRevdeps() {
		for _, i := range revdepJobs {
			p.Jobs[i].Background = true
		}
	}
	return p, nil
}

// revdeps lists the reverse dependencies of pkg that can be installed with it on
// platform plat, with plat's compiler.
func (pl *Planner) revdeps(ctx context.Context, res *prdiff.Result, plat matrix.Platform, pkg opam.Package) ([]opam.Package, error) {
	list, err := revdeps.CI(ctx, pl.universe(res, plat, false), pl.universe(res, plat, true), pkg, compilerAtoms(plat)...)
	if err != nil {
		return nil, fmt.Errorf("reverse dependencies of %s on %s: %w", pkg, plat.Name, err)
	}
	return list, nil
}

// installable says why pkg cannot be installed on plat with its compiler ("" when
// it can).
func (pl *Planner) installable(ctx context.Context, res *prdiff.Result, plat matrix.Platform, pkg opam.Package) string {
	_, err := pl.universe(res, plat, false).Solve(ctx, solver.Request{Install: append(compilerAtoms(plat), exact(pkg)), AnySolution: true})
	if err == nil {
		return ""
	}
	return fmt.Sprintf("cannot be installed with OCaml %s on %s", plat.Vars["ocaml:version"], plat.Name)
}

// compilerAtoms holds the packages of the platform's switch (Platform.Compiler, e.g.
// ocaml-system.4.13.1 and ocaml.4.13.1) at their versions: what is installed must go
// with them, as in a switch on the image's compiler.
func compilerAtoms(plat matrix.Platform) []opam.Atom {
	var out []opam.Atom
	for _, c := range plat.Compiler {
		if p, ok := opam.ParsePackage(c); ok {
			out = append(out, exact(p))
		}
	}
	return out
}

// universe returns the solver universe of the merged tree on plat (with the test
// dependencies of every package when withTest is set), with the platform's compiler
// as the only version of ocaml: what needs another is dead in it (found once, when it
// is made), as in a switch on the image's compiler.
func (pl *Planner) universe(res *prdiff.Result, plat matrix.Platform, withTest bool) *solver.Universe {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var last *solver.Universe // the platform's latest, of another tree
	for i, e := range pl.universes {
		if e.platform != plat.Name || e.withTest != withTest {
			continue
		}
		if e.tree == res.Merged {
			pl.universes = append(slices.Delete(pl.universes, i, i+1), e)
			return e.u
		}
		last = e.u
	}
	r := res.Repo
	if v := plat.Vars["ocaml:version"]; v != "" {
		var pkgs []*repository.Package
		for _, p := range r.Packages() {
			if p.Package.Name != "ocaml" || string(p.Package.Version) == v {
				pkgs = append(pkgs, p)
			}
		}
		r = repository.New(r.Commit, pkgs, r.Stray)
	}
	var u *solver.Universe
	if last != nil {
		u = last.Update(r)
	} else {
		u = solver.NewUniverseFlags(r, solver.Platform(plat.Vars), solver.Flags{WithTest: withTest})
		pl.made++
	}
	pl.universes = append(pl.universes, treeUniverse{tree: res.Merged, platform: plat.Name, withTest: withTest, u: u})
	if n := len(pl.universes) - maxUniverses; n > 0 {
		pl.universes = slices.Delete(pl.universes, 0, n)
	}
	return u
}

// unavailable says why a package cannot be built on a platform by its available
// field ("" when it can).
func unavailable(p *repository.Package, plat matrix.Platform) string {
	f, err := p.File.Available()
	if err != nil {
		return fmt.Sprintf("its available field does not read: %v", err)
	}
	env := opam.MapEnv(plat.Vars).Overlay(map[string]opam.Val{
		"name": opam.StringVal(string(p.Package.Name)), "version": opam.StringVal(string(p.Package.Version)),
	})
	if !f.EvalBool(env, true) {
		return fmt.Sprintf("not available on %s (available: %s)", plat.Name, f)
	}
	return ""
}

// acceptsFailure reports whether the package's x-ci-accept-failures names the
// platform's distribution.
func acceptsFailure(p *repository.Package, plat matrix.Platform) bool {
	if p == nil || p.File == nil {
		return false
	}
	v, ok := p.File.Field("x-ci-accept-failures")
	if !ok {
		return false
	}
	for _, e := range v.Elems() {
		if e.Kind == opam.KString && e.S == plat.Distro {
			return true
		}
	}
	return false
}

// ParseJob reads a job's ID (its tree path joined with commas:
// PACKAGE,GROUP,LABEL,KIND[,REVDEP]) against the configuration, as the variant pages
// and `kiln opam-repo-ci repro` name jobs. Whether the package accepts failures is
// not known from the ID alone.
func (c *Config) ParseJob(id string) (Job, error) {
	path := strings.Split(id, ",")
	if len(path) < 4 || len(path) > 5 {
		return Job{}, fmt.Errorf("job %q: want PACKAGE,GROUP,LABEL,KIND[,REVDEP]", id)
	}
	pkg, ok := opam.ParsePackage(path[0])
	if !ok {
		return Job{}, fmt.Errorf("job %q: %q is not NAME.VERSION", id, path[0])
	}
	t, ok := c.target(Group(path[1]), path[2])
	if !ok {
		return Job{}, fmt.Errorf("job %q: the configuration has no %s entry labelled %q", id, path[1], path[2])
	}
	j := Job{Path: path, Package: pkg, Group: t.group, Label: t.label, Platform: t.platform.Name, Kind: Kind(path[3])}
	switch {
	case j.Kind == Revdep && len(path) == 5:
		if j.Revdep, ok = opam.ParsePackage(path[4]); !ok {
			return Job{}, fmt.Errorf("job %q: %q is not NAME.VERSION", id, path[4])
		}
	case len(path) == 5, j.Kind == Revdep:
		return Job{}, fmt.Errorf("job %q: only a revdeps job names a fifth part, its reverse dependency", id)
	case j.Kind == LowerBounds && !t.lowerBounds:
		return Job{}, fmt.Errorf("job %q: %s %s has no lower-bounds jobs", id, t.group, t.label)
	case j.Kind != Build && j.Kind != Tests && j.Kind != LowerBounds:
		return Job{}, fmt.Errorf("job %q: unknown kind %q (build, tests, lower-bounds, revdeps)", id, path[3])
	}
	return j, nil
}
