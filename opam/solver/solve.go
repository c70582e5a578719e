package solver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// Request says what to install.
type Request struct {
	// Install lists the packages wanted, each with an optional version constraint.
	Install []opam.Atom
	// WithTest adds the test dependencies of the requested packages (not of their
	// dependencies), as `opam install --with-test` does.
	WithTest bool
	// WithDoc adds the documentation dependencies of the requested packages.
	WithDoc bool
	// Pins are local opam files, pinned: each replaces every version of its name. Their
	// filters see dev = true.
	Pins []*repository.Package
	// LowerBounds prefers the oldest versions instead of the newest.
	LowerBounds bool
	// MaxSteps bounds the number of versions tried (0: DefaultMaxSteps).
	MaxSteps int
	// AnySolution stops at the first solution found: for questions about whether
	// there is one (installability, coinstallability), not which one opam picks.
	AnySolution bool
}

// DefaultMaxSteps is the default search budget of a solve, in versions tried.
const DefaultMaxSteps = 400000

// avoidFreeSteps bounds the search for a solution without versions flagged
// avoid-version, before the search that allows them.
const avoidFreeSteps = 2000

// optimizeSteps bounds the search for a better solution than the first found, in
// versions tried after it.
const optimizeSteps = 2000

// cost is a solution's rank under opam 2.1's install criteria (`opam config report`:
// -removed, -count[avoid-version,changed], -count[version-lag,request],
// -count[version-lag,changed], -count[missing-depexts,changed], -changed), compared
// in order, lower first: the versions flagged avoid-version, the version lag of the
// packages asked for, that of every package, the number of packages. Nothing is
// removed in an empty switch, and depexts are not modelled. Each version adds to it,
// so the cost of a partial selection bounds that of every solution extending it.
type cost [4]int

func (a cost) less(b cost) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func (a cost) add(b cost, sign int) cost {
	for i := range a {
		a[i] += sign * b[i]
	}
	return a
}

// ParseRequest reads package arguments such as "dune", "dune.3.24.0" or
// "dune>=3.0" (also <, <=, =, !=, >).
func ParseRequest(args []string) ([]opam.Atom, error) {
	var out []opam.Atom
	for _, a := range args {
		if i := strings.IndexAny(a, "<>=!"); i > 0 {
			j := i
			for j < len(a) && strings.ContainsRune("<>=!", rune(a[j])) {
				j++
			}
			op, ok := map[string]opam.Op{"=": opam.OpEq, "!=": opam.OpNeq, "<": opam.OpLt, "<=": opam.OpLeq, ">": opam.OpGt, ">=": opam.OpGeq}[a[i:j]]
			if !ok || !opam.ValidName(a[:i]) || j == len(a) {
				return nil, fmt.Errorf("bad package constraint %q", a)
			}
			out = append(out, opam.Atom{Name: opam.PackageName(a[:i]), Constraint: opam.AtomOf(opam.Constraint{Op: op, Version: opam.Version(a[j:])})})
			continue
		}
		if opam.ValidName(a) {
			out = append(out, opam.Atom{Name: opam.PackageName(a)})
			continue
		}
		p, ok := opam.ParsePackage(a)
		if !ok {
			return nil, fmt.Errorf("bad package %q (want NAME, NAME.VERSION or NAME>=VERSION)", a)
		}
		out = append(out, opam.Atom{Name: p.Name, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: p.Version})})
	}
	return out, nil
}

// Selection is a solution: the package versions to install.
type Selection struct {
	Packages []opam.Package // sorted by name
	// Steps is the number of versions the search tried.
	Steps int
}

// Failure is the error of a request that cannot be satisfied; Explanation says why,
// in terms a user can act on.
type Failure struct {
	Request     string
	Explanation string
	GaveUp      bool // the search budget ran out before a definite answer
}

func (f *Failure) Error() string {
	if f.GaveUp {
		return fmt.Sprintf("no solution found for %s within the search budget:\n%s", f.Request, f.Explanation)
	}
	return fmt.Sprintf("no solution for %s:\n%s", f.Request, f.Explanation)
}

// ErrGaveUp matches a Failure whose search ran out of budget.
var ErrGaveUp = errors.New("search budget exhausted")

func (f *Failure) Is(target error) bool { return target == ErrGaveUp && f.GaveUp }

type clause struct {
	atoms []opam.Atom
	from  *Cand // nil for the request
	count int   // versions that may satisfy it, an estimate of how constrained it is
	// sat counts the selected versions that satisfy an atom of a clause of the
	// search's queue (kept by push and pop): it is satisfied when sat > 0.
	sat int
}

func (c clause) String() string {
	who := "the request"
	if c.from != nil {
		who = c.from.String()
	}
	return who + " needs " + formatClause(c.atoms)
}

// rejection records why a version was not chosen for a clause.
type rejection struct {
	cand *Cand
	why  string
	sub  *failed
	// needs is, when unsatisfiable is set, the clause of cand that the selected
	// versions chosen leave unsatisfiable: the reason is written from them when
	// explained.
	unsatisfiable bool
	needs         []opam.Atom
	chosen        []*Cand
}

// reason says why the version was not chosen.
func (r rejection) reason() string {
	if !r.unsatisfiable {
		return r.why
	}
	var parts []string
	seen := map[opam.PackageName]bool{}
	for _, o := range r.chosen {
		if !seen[o.Name] {
			seen[o.Name] = true
			parts = append(parts, o.String())
		}
	}
	return fmt.Sprintf("it needs %s, but %s is chosen", formatClause(r.needs), strings.Join(parts, ", "))
}

type failed struct {
	cl      clause
	rejects []rejection
	none    bool // no version of any atom matches at all
	// culprits are the selected versions that together explain the failure: another
	// choice of one of them might help, a change elsewhere cannot.
	culprits map[*Cand]bool
	// everything says every selected version is a culprit (a bound on the cost of
	// solutions depends on all of them).
	everything bool
}

func (f *failed) blames(c *Cand) bool { return f.everything || f.culprits[c] }

func (f *failed) blame(cs ...*Cand) {
	for _, c := range cs {
		if c != nil {
			f.culprits[c] = true
		}
	}
}

// restriction is a conflict (or an optional dependency) of a selected version.
type restriction struct {
	from   *Cand
	atom   opam.Atom
	depopt bool
}

type search struct {
	u       *Universe
	ctx     context.Context
	lower   bool
	pins    map[opam.PackageName][]*Cand
	sel     map[opam.PackageName]*Cand
	order   []*Cand
	classes map[opam.PackageName]*Cand
	watch   map[opam.PackageName][]clause // clauses of selected packages, by names they mention
	// q is the queue of clauses to satisfy; qwatch holds the positions in q of the
	// clauses naming a package, by its name, in increasing order.
	q      []clause
	qwatch map[opam.PackageName][]int
	// against lists, by package name, the conflicts and optional dependencies of
	// the selected versions that name it, in the order of the selection.
	against   map[opam.PackageName][]restriction
	steps     int
	max       int
	gaveUp    bool
	cancelled error
	// noAvoid leaves out the versions flagged avoid-version.
	noAvoid bool
	// optimize keeps searching after a solution, for the one of least cost.
	optimize bool
	lags     map[*Cand]int
	roots    map[opam.PackageName]bool
	cost     cost   // of the selection
	costs    []cost // of each version of order
	best     []*Cand
	bestCost cost
}

// Solve finds the packages to install for req on the universe's platform.
func (u *Universe) Solve(ctx context.Context, req Request) (*Selection, error) {
	s := &search{
		u: u, ctx: ctx, lower: req.LowerBounds,
		sel: map[opam.PackageName]*Cand{}, classes: map[opam.PackageName]*Cand{},
		watch: map[opam.PackageName][]clause{}, max: req.MaxSteps,
		qwatch: map[opam.PackageName][]int{}, against: map[opam.PackageName][]restriction{},
	}
	if s.max <= 0 {
		s.max = DefaultMaxSteps
	}
	roots := map[opam.PackageName]bool{}
	for _, a := range req.Install {
		roots[a.Name] = true
	}
	s.roots, s.optimize = roots, !req.AnySolution && !req.LowerBounds
	if len(req.Pins) > 0 || req.WithTest || req.WithDoc {
		s.pins = map[opam.PackageName][]*Cand{}
		for _, p := range req.Pins {
			c := u.resolveFor(p, roots[p.Name] && req.WithTest, roots[p.Name] && req.WithDoc, true)
			s.pins[p.Name] = append(s.pins[p.Name], c)
			s.pinAux(c)
		}
		if req.WithTest || req.WithDoc {
			for n := range roots {
				if _, ok := s.pins[n]; ok {
					continue
				}
				var cs []*Cand
				for _, c := range u.cands(n) {
					r := u.resolveFor(c.Pkg, req.WithTest, req.WithDoc, false)
					cs = append(cs, r)
					s.pinAux(r)
				}
				s.pins[n] = cs
			}
		}
		// Dependencies may have become satisfiable (or not) through the pins.
		for _, cs := range s.pins {
			for _, c := range cs {
				if !c.dead {
					for _, cl := range c.Deps {
						if !u.clauseLive(cl, s.pins) {
							c.dead, c.deadWhy = true, formatClause(cl)
							break
						}
					}
				}
				u.count(c, s.pins)
			}
		}
	}
	for _, a := range req.Install {
		s.enqueue(clause{atoms: []opam.Atom{a}, count: u.liveCount([]opam.Atom{a}, s.pins)})
	}
	reqText := formatClauseList(req.Install)
	// opam's first criterion is the number of versions flagged avoid-version: look
	// for a solution without any, then (only if there is none) with them, last.
	// The first search has a small budget of its own: when it runs out, the second
	// one decides.
	budget := s.max
	s.noAvoid, s.max = true, min(budget, avoidFreeSteps)
	ok, f := s.run(0, 0)
	if !ok && s.best == nil && s.cancelled == nil {
		s.noAvoid, s.gaveUp, s.max = false, false, s.steps+budget
		ok, f = s.run(0, 0)
	}
	if s.cancelled != nil {
		return nil, s.cancelled
	}
	chosen := s.order
	if s.best != nil {
		chosen, ok = s.best, true
	}
	if !ok {
		return nil, &Failure{Request: reqText, Explanation: explain(f, 0), GaveUp: s.gaveUp}
	}
	sel := &Selection{Steps: s.steps}
	for _, c := range chosen {
		if c.Aux {
			continue
		}
		sel.Packages = append(sel.Packages, opam.Package{Name: c.Name, Version: c.Version})
	}
	slices.SortFunc(sel.Packages, func(a, b opam.Package) int { return strings.Compare(string(a.Name), string(b.Name)) })
	return sel, nil
}

func formatClauseList(as []opam.Atom) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, atomString(a))
	}
	return strings.Join(parts, ", ")
}

func (u *Universe) resolveFor(p *repository.Package, withTest, withDoc, dev bool) *Cand {
	return u.resolve(p, withTest, withDoc, dev)
}

// pinAux puts the auxiliary candidates of a re-resolved version with the pins.
func (s *search) pinAux(c *Cand) {
	for _, a := range c.aux {
		s.pins[a.Name] = []*Cand{a}
	}
}

func (s *search) versions(name opam.PackageName) []*Cand {
	if cs, ok := s.pins[name]; ok {
		return cs
	}
	return s.u.cands(name)
}

// matches counts the selected versions that satisfy an atom of cl (each once).
func (s *search) matches(cl clause) int {
	n := 0
	for i, a := range cl.atoms {
		if c := s.sel[a.Name]; c != nil && a.MatchesVersion(c.Version) && !matchedBefore(cl.atoms[:i], c) {
			n++
		}
	}
	return n
}

// matchedBefore says whether an atom of as names c and matches it.
func matchedBefore(as []opam.Atom, c *Cand) bool {
	for _, a := range as {
		if a.Name == c.Name && a.MatchesVersion(c.Version) {
			return true
		}
	}
	return false
}

// enqueue adds a clause to the queue, counting the selected versions satisfying it.
func (s *search) enqueue(cl clause) {
	cl.sat = s.matches(cl)
	j := len(s.q)
	s.q = append(s.q, cl)
	forNames(cl.atoms, func(n opam.PackageName) { s.qwatch[n] = append(s.qwatch[n], j) })
}

// truncate drops the clauses of the queue from position n on.
func (s *search) truncate(n int) {
	for j := len(s.q) - 1; j >= n; j-- {
		forNames(s.q[j].atoms, func(n opam.PackageName) {
			w := s.qwatch[n]
			s.qwatch[n] = w[:len(w)-1]
		})
	}
	s.q = s.q[:n]
}

// forNames calls f once with each package name of as, in order.
func forNames(as []opam.Atom, f func(opam.PackageName)) {
	for i, a := range as {
		if !slices.ContainsFunc(as[:i], func(b opam.Atom) bool { return b.Name == a.Name }) {
			f(a.Name)
		}
	}
}

// countSat adds sign to the satisfaction counts of the queued clauses c satisfies.
func (s *search) countSat(c *Cand, sign int) {
	for _, j := range s.qwatch[c.Name] {
		if matchedBefore(s.q[j].atoms, c) {
			s.q[j].sat += sign
		}
	}
}

// run satisfies the clauses q[i:] and those added on the way, depth first. It returns
// the failure of the clause that could not be satisfied.
func (s *search) run(i, depth int) (bool, *failed) {
	for {
		// The most constrained pending clause (fewest versions) goes first.
		best := -1
		for j := i; j < len(s.q); j++ {
			if s.q[j].sat > 0 {
				if j == i {
					i++
				}
				continue
			}
			if best < 0 || s.q[j].count < s.q[best].count {
				best = j
			}
		}
		if best < 0 {
			if !s.optimize {
				return true, nil
			}
			return false, s.record()
		}
		cl := s.q[best]
		f := &failed{cl: cl, culprits: map[*Cand]bool{}}
		f.blame(cl.from)
		tried := 0
		n := len(s.q)
		// Versions flagged avoid-version come after every other version of the
		// clause's packages (when they are allowed at all).
		for pass := range 2 {
			if pass == 1 && s.noAvoid {
				break
			}
			for _, a := range cl.atoms {
				if o := s.sel[a.Name]; o != nil {
					if pass == 0 {
						f.blame(o)
					}
					continue
				}
				vs := s.versions(a.Name)
				for k := range vs {
					idx := len(vs) - 1 - k
					if s.lower {
						idx = k
					}
					c := vs[idx]
					if c.Avoid != (pass == 1) || !a.MatchesVersion(c.Version) {
						continue
					}
					tried++
					if c.dead {
						why := "not available: " + c.Unavailable
						if c.Unavailable == "" {
							why = "no installable version for " + c.deadWhy
						}
						f.rejects = append(f.rejects, rejection{cand: c, why: why})
						continue
					}
					if r, culprits := s.incompatible(c); r.why != "" || r.unsatisfiable {
						r.cand = c
						f.rejects = append(f.rejects, r)
						f.blame(culprits...)
						continue
					}
					if s.best != nil && !s.cost.add(s.costOf(c), 1).less(s.bestCost) {
						// No solution with c beats the best one found: every choice
						// made so far is to blame.
						f.rejects = append(f.rejects, rejection{cand: c, why: "no better than a solution found"})
						f.everything = true
						continue
					}
					s.steps++
					if s.steps > s.max {
						s.gaveUp = true
						return false, f
					}
					if s.steps&255 == 0 {
						if err := s.ctx.Err(); err != nil {
							s.cancelled = err
							return false, f
						}
					}
					s.push(c)
					for k, d := range c.Deps {
						s.enqueue(clause{atoms: d, from: c, count: c.counts[k]})
					}
					ok, sub := s.run(i, depth+1)
					if ok {
						return true, nil
					}
					s.truncate(n)
					s.pop()
					f.rejects = append(f.rejects, rejection{cand: c, why: "", sub: sub})
					if s.gaveUp || s.cancelled != nil {
						return false, f
					}
					if !sub.blames(c) {
						// Another version of c cannot help: jump back to a culprit.
						return false, &failed{cl: sub.cl, rejects: sub.rejects, none: sub.none, culprits: sub.culprits}
					}
					f.everything = f.everything || sub.everything
					for k := range sub.culprits {
						if k != c {
							f.culprits[k] = true
						}
					}
				}
			}
		}
		f.none = tried == 0
		return false, f
	}
}

// record keeps the selection, a solution, when it is the best found so far, and
// returns the failure that makes the search go on: any choice made may lead to a
// better one.
func (s *search) record() *failed {
	if s.best == nil {
		// The search for a better solution has a budget of its own.
		s.max = s.steps + optimizeSteps
	}
	if s.best == nil || s.cost.less(s.bestCost) {
		s.best, s.bestCost = slices.Clone(s.order), s.cost
	}
	return &failed{culprits: map[*Cand]bool{}, everything: true}
}

// costOf is what c adds to the cost of a selection.
func (s *search) costOf(c *Cand) cost {
	if c.Aux {
		return cost{}
	}
	lag := s.lag(c)
	k := cost{2: lag, 3: 1}
	if c.Avoid {
		k[0] = 1
	}
	if s.roots[c.Name] {
		k[1] = lag
	}
	return k
}

// lag is c's version lag as opam 2.1 counts it: the available versions newer than c,
// where every version flagged avoid-version counts as newer than every other.
func (s *search) lag(c *Cand) int {
	if l, ok := s.lags[c]; ok {
		return l
	}
	if s.lags == nil {
		s.lags = map[*Cand]int{}
	}
	lag, seen := 0, false
	vs := s.versions(c.Name)
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if v == c {
			seen = true
			continue
		}
		if v.Unavailable != "" {
			continue
		}
		switch {
		case c.Avoid:
			if v.Avoid && !seen {
				lag++
			}
		case v.Avoid || !seen:
			lag++
		}
	}
	s.lags[c] = lag
	return lag
}

// incompatible says why c cannot join the current selection (a rejection without
// a reason if it can), and which selected versions are to blame.
func (s *search) incompatible(c *Cand) (rejection, []*Cand) {
	for _, k := range c.Classes {
		if o := s.classes[k]; o != nil {
			return rejection{why: fmt.Sprintf("conflict class %s is taken by %s", k, o)}, []*Cand{o}
		}
	}
	for _, a := range c.Conflicts {
		if o := s.sel[a.Name]; o != nil && a.MatchesVersion(o.Version) {
			return rejection{why: fmt.Sprintf("it conflicts with %s", o)}, []*Cand{o}
		}
	}
	for _, a := range c.Depopts {
		if o := s.sel[a.Name]; o != nil && !a.MatchesVersion(o.Version) {
			return rejection{why: fmt.Sprintf("its optional dependency %s is installed as %s", atomString(a), o)}, []*Cand{o}
		}
	}
	for _, r := range s.against[c.Name] {
		switch o, a := r.from, r.atom; {
		case !r.depopt && a.MatchesVersion(c.Version):
			return rejection{why: fmt.Sprintf("%s conflicts with it", o)}, []*Cand{o}
		case r.depopt && !a.MatchesVersion(c.Version):
			return rejection{why: fmt.Sprintf("%s accepts only %s as an optional dependency", o, atomString(a))}, []*Cand{o}
		}
	}
	// Clauses of selected packages that mention c's name must stay satisfiable.
	for _, cl := range s.watch[c.Name] {
		if !s.satisfiableWith(cl, c) {
			return rejection{why: fmt.Sprintf("%s needs %s", cl.from, formatClause(cl.atoms))}, append(s.selectedIn(cl.atoms), cl.from)
		}
	}
	// c's own clauses must be satisfiable given the selection.
	for _, d := range c.Deps {
		if !s.satisfiableWith(clause{atoms: d}, c) {
			chosen := s.selectedIn(d)
			return rejection{unsatisfiable: true, needs: d, chosen: chosen}, chosen
		}
	}
	return rejection{}, nil
}

// selectedIn lists the selected versions of the names of atoms.
func (s *search) selectedIn(as []opam.Atom) []*Cand {
	var out []*Cand
	for _, a := range as {
		if o := s.sel[a.Name]; o != nil {
			out = append(out, o)
		}
	}
	return out
}

// satisfiableWith reports whether cl can still hold once c is selected.
func (s *search) satisfiableWith(cl clause, c *Cand) bool {
	for _, a := range cl.atoms {
		if a.Name == c.Name {
			if a.MatchesVersion(c.Version) {
				return true
			}
			continue
		}
		o := s.sel[a.Name]
		if o == nil || a.MatchesVersion(o.Version) {
			return true
		}
	}
	return false
}

func (s *search) push(c *Cand) {
	s.sel[c.Name] = c
	s.order = append(s.order, c)
	s.countSat(c, 1)
	for _, a := range c.Conflicts {
		s.against[a.Name] = append(s.against[a.Name], restriction{from: c, atom: a})
	}
	for _, a := range c.Depopts {
		s.against[a.Name] = append(s.against[a.Name], restriction{from: c, atom: a, depopt: true})
	}
	if s.optimize {
		k := s.costOf(c)
		s.cost = s.cost.add(k, 1)
		s.costs = append(s.costs, k)
	}
	for _, k := range c.Classes {
		s.classes[k] = c
	}
	for _, d := range c.Deps {
		cl := clause{atoms: d, from: c}
		var seen opam.PackageName
		for _, a := range d {
			if a.Name != seen {
				s.watch[a.Name] = append(s.watch[a.Name], cl)
				seen = a.Name
			}
		}
	}
}

func (s *search) pop() {
	c := s.order[len(s.order)-1]
	s.order = s.order[:len(s.order)-1]
	s.countSat(c, -1)
	for _, as := range [][]opam.Atom{c.Conflicts, c.Depopts} {
		for _, a := range as {
			r := s.against[a.Name]
			s.against[a.Name] = r[:len(r)-1]
		}
	}
	if s.optimize {
		s.cost = s.cost.add(s.costs[len(s.costs)-1], -1)
		s.costs = s.costs[:len(s.costs)-1]
	}
	delete(s.sel, c.Name)
	for _, k := range c.Classes {
		if s.classes[k] == c {
			delete(s.classes, k)
		}
	}
	for _, d := range c.Deps {
		var seen opam.PackageName
		for _, a := range d {
			if a.Name != seen {
				w := s.watch[a.Name]
				s.watch[a.Name] = w[:len(w)-1]
				seen = a.Name
			}
		}
	}
}

// explain renders a failure as an indented tree, a few levels deep.
func explain(f *failed, depth int) string {
	if f == nil {
		return ""
	}
	ind := strings.Repeat("  ", depth)
	var b strings.Builder
	if f.none {
		fmt.Fprintf(&b, "%s- %s, but no version of %s matches\n", ind, f.cl, namesOf(f.cl.atoms))
		return b.String()
	}
	fmt.Fprintf(&b, "%s- %s; no version of it can be chosen:\n", ind, f.cl)
	// Versions rejected for the same reason are shown on one line.
	type group struct {
		names []string
		why   string
		sub   *failed
	}
	var groups []*group
	byWhy := map[string]*group{}
	for _, r := range f.rejects {
		if r.sub != nil {
			groups = append(groups, &group{names: []string{r.cand.String()}, sub: r.sub})
			continue
		}
		why := r.reason()
		if g := byWhy[why]; g != nil {
			g.names = append(g.names, string(r.cand.Version))
			continue
		}
		g := &group{names: []string{r.cand.String()}, why: why}
		byWhy[why] = g
		groups = append(groups, g)
	}
	subs := 0
	for _, g := range groups {
		names := strings.Join(g.names, ", ")
		if g.sub == nil {
			fmt.Fprintf(&b, "%s  %s: %s\n", ind, names, g.why)
			continue
		}
		subs++
		switch {
		case subs > 4:
			if subs == 5 {
				fmt.Fprintf(&b, "%s  ... and other versions, for similar reasons\n", ind)
			}
		case depth < 4:
			fmt.Fprintf(&b, "%s  %s, because:\n", ind, names)
			b.WriteString(explain(g.sub, depth+2))
		default:
			fmt.Fprintf(&b, "%s  %s: %s\n", ind, names, g.sub.cl)
		}
	}
	return b.String()
}

func namesOf(as []opam.Atom) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, string(a.Name))
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), " or ")
}
