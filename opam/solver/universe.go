// Package solver finds installable sets of opam packages for a platform: the newest
// versions that work together (or the oldest, in lower-bounds mode), trying the newest
// version of each package first and backtracking, as the OCaml CI services do, and
// explains failures.
package solver

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Platform is the set of variables `opam var` prints on a platform: os, arch,
// os-distribution, os-family, os-version, opam-version, ...
type Platform map[string]string

// DebianAMD64 is the platform of a Debian 12 x86_64 image with opam 2.1.
func DebianAMD64() Platform {
	return Platform{
		"arch": "x86_64", "os": "linux", "os-distribution": "debian", "os-family": "debian",
		"os-version": "12", "opam-version": "2.1.2", "make": "make", "jobs": "1", "exe": "",
	}
}

// Cand is one package version as the solver sees it on a platform: its availability
// and its formulas with filters evaluated.
type Cand struct {
	Pkg     *repository.Package
	Name    opam.PackageName
	Version opam.Version
	// Unavailable says why the version cannot be installed on the platform ("" when it
	// can): its available filter is false, or its opam file is broken.
	Unavailable string
	// Deps is the depends formula in conjunctive normal form.
	Deps      [][]opam.Atom
	Conflicts []opam.Atom
	Depopts   []opam.Atom
	Classes   []opam.PackageName
	// Avoid says the version is flagged avoid-version (or deprecated, for opam 2.2
	// and later): the solver tries it after every other version.
	Avoid bool
	// Aux says the candidate is not a package but stands for one alternative of a
	// large disjunction in Pkg's depends (see opam.CNFAux); Deps are its clauses.
	Aux bool
	// Def is, for an auxiliary candidate, the alternative it stands for.
	Def opam.Formula[opam.Atom]
	// aux lists the auxiliary candidates made for this version's depends.
	aux []*Cand
	// listDeps are the atoms of depends as opam's list reads them (no post
	// dependencies), for the reverse index.
	listDeps []opam.Atom
	// dead says the version can never be installed: unavailable, or a dependency
	// clause none of whose versions can be.
	dead bool
	// deadWhy names the clause that cannot be satisfied when dead.
	deadWhy string
	// counts holds, for each clause of Deps, the number of live versions matching it.
	counts []int
}

func (c *Cand) String() string {
	if c.Aux {
		return string(c.Name)
	}
	return string(c.Name) + "." + string(c.Version)
}

// auxLimit is the number of clauses up to which a disjunction in depends is
// expanded into conjunctive normal form; a larger one gets auxiliary candidates.
const auxLimit = 64

// MaxDependsAtoms bounds the number of package atoms in one version's depends field
// (after filters); a version with more is unavailable, with an error naming its file.
const MaxDependsAtoms = 10000

// Universe is a repository seen from one platform: every package version with its
// formulas resolved. It is safe for concurrent use by several solves.
type Universe struct {
	Repo     *repository.Repo
	Platform Platform
	env      opam.Env
	Flags    Flags
	byName   map[opam.PackageName][]*Cand // increasing versions
	// lazy, for a universe read from a cache, holds the versions not decoded yet:
	// until complete is set, byName is only used with lazyMu held.
	lazy     *lazyCands
	lazyMu   sync.Mutex
	complete atomic.Bool
	// revAvail links the versions available on the platform, revAll every version.
	revAvail, revAll reverseIndex
	listOnce         sync.Once
}

// reverseIndex holds the reverse edges of a universe: who may depend on a version.
// It indexes the versions by the package names their dependencies mention, and
// finds the edges of a version, checking its constraints, when first asked.
type reverseIndex struct {
	once   sync.Once
	all    bool                         // versions unavailable on the platform count
	names  map[opam.PackageName][]*Cand // through depends, by the name depended on
	opt    map[opam.PackageName][]*Cand // through depopts
	mu     sync.Mutex                   // guards rev and revOpt
	rev    map[*Cand][]*Cand            // through depends
	revOpt map[*Cand][]*Cand            // through depopts
}

// Flags select dependency flags applied to every package of a universe, as opam's
// list command does for --with-test and --with-doc.
type Flags struct {
	WithTest bool
	WithDoc  bool
}

// NewUniverse resolves every package version of repo for the platform.
func NewUniverse(repo *repository.Repo, p Platform) *Universe {
	return NewUniverseFlags(repo, p, Flags{})
}

// NewUniverseFlags is NewUniverse with dependency flags applying to every package.
func NewUniverseFlags(repo *repository.Repo, p Platform, flags Flags) *Universe {
	u := &Universe{Repo: repo, Platform: p, Flags: flags, env: opam.MapEnv(p), byName: make(map[opam.PackageName][]*Cand, len(repo.Names()))}
	names := repo.Names()
	all := make([][]*Cand, len(names))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(names); i += workers {
				vs := repo.Versions(names[i])
				cs := make([]*Cand, len(vs))
				for j, pk := range vs {
					cs[j] = u.resolve(pk, false, false, false)
				}
				all[i] = cs
			}
		})
	}
	wg.Wait()
	for i, n := range names {
		u.byName[n] = all[i]
		for _, c := range all[i] {
			for _, a := range c.aux {
				u.byName[a.Name] = []*Cand{a}
			}
		}
	}
	u.markDead()
	for _, cs := range u.byName {
		for _, c := range cs {
			u.count(c, nil)
		}
	}
	return u
}

func (u *Universe) count(c *Cand, pins map[opam.PackageName][]*Cand) {
	c.counts = make([]int, len(c.Deps))
	for k, cl := range c.Deps {
		c.counts[k] = u.liveCount(cl, pins)
	}
}

// liveCount counts the live versions matching an atom of cl.
func (u *Universe) liveCount(cl []opam.Atom, pins map[opam.PackageName][]*Cand) int {
	n := 0
	for _, a := range cl {
		vs, ok := pins[a.Name]
		if !ok {
			vs = u.cands(a.Name)
		}
		for _, v := range vs {
			if !v.dead && a.MatchesVersion(v.Version) {
				n++
			}
		}
	}
	return n
}

// Versions returns the candidates of a package, oldest first.
func (u *Universe) Versions(name opam.PackageName) []*Cand { return u.cands(name) }

// cands returns the candidates of a package, decoding them from the cache first if
// need be.
func (u *Universe) cands(name opam.PackageName) []*Cand {
	if u.lazy == nil || u.complete.Load() {
		return u.byName[name]
	}
	u.lazyMu.Lock()
	defer u.lazyMu.Unlock()
	if cs, ok := u.byName[name]; ok {
		return cs
	}
	cs := u.lazy.decode(name)
	if cs != nil {
		u.byName[name] = cs
	}
	return cs
}

// all returns every candidate by name, decoding what the cache still holds.
func (u *Universe) all() map[opam.PackageName][]*Cand {
	if u.lazy == nil || u.complete.Load() {
		return u.byName
	}
	u.lazyMu.Lock()
	defer u.lazyMu.Unlock()
	for name := range u.lazy.groups {
		if cs := u.lazy.decode(name); cs != nil {
			u.byName[name] = cs
		}
	}
	u.complete.Store(true)
	return u.byName
}

// Cand returns the candidate of one package version, or nil.
func (u *Universe) Cand(p opam.Package) *Cand {
	for _, c := range u.cands(p.Name) {
		if c.Version == p.Version {
			return c
		}
	}
	return nil
}

// resolve evaluates the filters of a package version's formulas.
func (u *Universe) resolve(pk *repository.Package, withTest, withDoc, dev bool) *Cand {
	c := &Cand{Pkg: pk, Name: pk.Name, Version: pk.Version}
	if pk.File == nil {
		c.Unavailable = fmt.Sprintf("its opam file does not parse: %v", pk.Err)
		c.dead = true
		return c
	}
	f := pk.File
	d := opam.DepsEnv{Build: true, Post: true, WithTest: withTest || u.Flags.WithTest, WithDoc: withDoc || u.Flags.WithDoc, Dev: dev, Self: pk.Package, Vars: u.env}
	env := d.Env()
	av, err := f.Available()
	if err != nil {
		c.Unavailable = err.Error()
	} else if !av.EvalBool(env, false) {
		c.Unavailable = "available: " + av.String()
	}
	depends, err := f.Depends()
	if err != nil && c.Unavailable == "" {
		c.Unavailable = err.Error()
	}
	deps := d.Resolve(depends)
	if err == nil && !withTest && !withDoc && !dev {
		// As opam's list reads them (no post dependencies), for the reverse index:
		// from the formula parsed already.
		l := d
		l.Post = false
		c.listDeps = l.Resolve(depends).Atoms()
		if c.listDeps == nil {
			c.listDeps = []opam.Atom{}
		}
	}
	if n := len(deps.Atoms()); n > MaxDependsAtoms {
		if c.Unavailable == "" {
			c.Unavailable = fmt.Sprintf("%s/opam: depends has %d package atoms, more than the %d the solver takes", pk.Path, n, MaxDependsAtoms)
		}
	} else {
		c.Deps = u.clauses(c, deps)
	}
	if conf, err := f.Conflicts(); err == nil {
		c.Conflicts = d.Resolve(conf).Atoms()
	} else if c.Unavailable == "" {
		c.Unavailable = err.Error()
	}
	if dep, err := f.Depopts(); err == nil {
		c.Depopts = d.Resolve(dep).Atoms()
	}
	c.Classes = f.ConflictClass()
	c.Avoid = f.HasFlag("avoid-version") || (u.avoidDeprecated() && f.HasFlag("deprecated"))
	c.dead = c.Unavailable != ""
	return c
}

// avoidDeprecated says whether the platform's opam (2.2 and later) treats the
// deprecated flag as avoid-version.
func (u *Universe) avoidDeprecated() bool {
	v, ok := u.Platform["opam-version"]
	return ok && opam.CompareVersions(v, "2.2~") >= 0
}

// clauses turns a version's resolved depends into clauses, with auxiliary
// candidates (recorded in c.aux) standing for the alternatives of large
// disjunctions, so the work stays linear in the size of the formula.
func (u *Universe) clauses(c *Cand, f opam.Formula[opam.Atom]) [][]opam.Atom {
	var aux func(g opam.Formula[opam.Atom]) opam.Atom
	aux = func(g opam.Formula[opam.Atom]) opam.Atom {
		a := &Cand{Pkg: c.Pkg, Version: "0", Aux: true, Def: g}
		a.Name = opam.PackageName(fmt.Sprintf("%s[alternative %d]", c, len(c.aux)+1))
		c.aux = append(c.aux, a)
		a.Deps = opam.CNFAux(g, auxLimit, aux)
		return opam.Atom{Name: a.Name}
	}
	return opam.CNFAux(f, auxLimit, aux)
}

// markDead finds, by fixpoint, the versions that can never be installed because a
// dependency clause has no live version at all.
func (u *Universe) markDead() {
	var all []*Cand
	for _, cs := range u.byName {
		all = append(all, cs...)
	}
	u.markDeadAmong(all)
}

// markDeadAmong is markDead for the versions of list, the others being settled.
func (u *Universe) markDeadAmong(list []*Cand) {
	for changed := true; changed; {
		changed = false
		for _, c := range list {
			if c.dead {
				continue
			}
			if why := u.deadClause(c); why != "" {
				c.dead, c.deadWhy = true, why
				changed = true
			}
		}
	}
}

func (u *Universe) deadClause(c *Cand) string {
	for _, cl := range c.Deps {
		if !u.clauseLive(cl, nil) {
			return formatClause(cl)
		}
	}
	return ""
}

// clauseLive reports whether some live version (in u, or in pins) matches an atom of cl.
func (u *Universe) clauseLive(cl []opam.Atom, pins map[opam.PackageName][]*Cand) bool {
	for _, a := range cl {
		vs, ok := pins[a.Name]
		if !ok {
			vs = u.cands(a.Name)
		}
		for _, v := range vs {
			if !v.dead && a.MatchesVersion(v.Version) {
				return true
			}
		}
	}
	return false
}

func formatClause(cl []opam.Atom) string {
	s := ""
	for i, a := range cl {
		if i > 0 {
			s += " | "
		}
		s += atomString(a)
	}
	return s
}

func atomString(a opam.Atom) string {
	if a.Constraint.Kind == opam.FEmpty {
		return string(a.Name)
	}
	return string(a.Name) + " {" + a.Constraint.Format(func(c opam.Constraint) string { return c.Op.String() + " " + string(c.Version) }) + "}"
}

// reverse returns the reverse index, built on first use: of the versions available
// on the platform, or of every version when all is set (opam list's -A).
func (u *Universe) reverse(all bool) *reverseIndex {
	ix := &u.revAvail
	if all {
		ix = &u.revAll
	}
	ix.once.Do(func() { u.buildReverse(ix, all) })
	return ix
}

// fillListDeps reads, once, the dependencies of every version as opam's list does:
// edges follow dependencies without post ones.
func (u *Universe) fillListDeps() {
	u.listOnce.Do(func() {
		for _, cs := range u.all() {
			for _, c := range cs {
				if c.listDeps == nil {
					u.setListDeps(c)
				}
			}
		}
	})
}

// counted says whether c takes part in the reverse index.
func (ix *reverseIndex) counted(c *Cand) bool { return !c.Aux && (ix.all || c.Unavailable == "") }

// buildReverse indexes the versions by the package names their depends (and
// depopts) mention.
func (u *Universe) buildReverse(ix *reverseIndex, all bool) {
	u.fillListDeps()
	ix.all = all
	ix.names = map[opam.PackageName][]*Cand{}
	ix.opt = map[opam.PackageName][]*Cand{}
	ix.rev = map[*Cand][]*Cand{}
	ix.revOpt = map[*Cand][]*Cand{}
	add := func(m map[opam.PackageName][]*Cand, from *Cand, as []opam.Atom) {
		for i, a := range as {
			if !slices.ContainsFunc(as[:i], func(b opam.Atom) bool { return b.Name == a.Name }) {
				m[a.Name] = append(m[a.Name], from)
			}
		}
	}
	for _, cs := range u.all() {
		for _, c := range cs {
			// opam's list works on the packages available on the platform, unless -A.
			if ix.counted(c) {
				add(ix.names, c, c.listDeps)
				add(ix.opt, c, c.Depopts)
			}
		}
	}
}

// edges returns the versions whose atoms (list dependencies, or depopts when opt
// is set) name t with a constraint t satisfies; the slice is the index's own.
func (ix *reverseIndex) edges(t *Cand, opt bool) []*Cand {
	memo, names := ix.rev, ix.names
	if opt {
		memo, names = ix.revOpt, ix.opt
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if out, ok := memo[t]; ok {
		return out
	}
	var out []*Cand
	if ix.counted(t) {
		for _, from := range names[t.Name] {
			as := from.listDeps
			if opt {
				as = from.Depopts
			}
			if slices.ContainsFunc(as, func(a opam.Atom) bool { return a.Name == t.Name && a.MatchesVersion(t.Version) }) {
				out = append(out, from)
			}
		}
	}
	memo[t] = out
	return out
}

// DependsOn returns the versions whose dependencies (and depopts when depopts is
// set) name c with a constraint c satisfies; only versions available on the
// platform count.
func (u *Universe) DependsOn(c *Cand, depopts bool) []*Cand {
	return u.dependsOn(c, depopts, false)
}

// DependsOnAll is DependsOn counting the versions unavailable on the platform too
// (opam list's -A).
func (u *Universe) DependsOnAll(c *Cand, depopts bool) []*Cand {
	return u.dependsOn(c, depopts, true)
}

func (u *Universe) dependsOn(c *Cand, depopts, all bool) []*Cand {
	ix := u.reverse(all)
	out := slices.Clone(ix.edges(c, false))
	if depopts {
		for _, o := range ix.edges(c, true) {
			if !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	return out
}

// DependsOnNoCopy is DependsOn (DependsOnAll when all is set) returning, without
// depopts, the index's own slice, which the caller must not modify.
func (u *Universe) DependsOnNoCopy(c *Cand, depopts, all bool) []*Cand {
	if depopts {
		return u.dependsOn(c, true, all)
	}
	return u.reverse(all).edges(c, false)
}
