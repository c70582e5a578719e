package opam

import (
	"fmt"
	"strconv"
)

// FormulaKind says which form a Formula has.
type FormulaKind uint8

// The forms of a Formula. Empty is the formula that always holds (no constraint).
const (
	FEmpty FormulaKind = iota
	FAtom
	FAnd
	FOr
)

// Formula is a boolean formula over atoms of type A: an atom, or a conjunction or
// disjunction of sub-formulas (n-ary), or Empty, which always holds.
type Formula[A any] struct {
	Kind FormulaKind
	Atom A
	Sub  []Formula[A]
}

// AtomOf makes a formula holding one atom.
func AtomOf[A any](a A) Formula[A] { return Formula[A]{Kind: FAtom, Atom: a} }

// And makes the conjunction of fs, dropping Empty formulas and flattening nested
// conjunctions.
func And[A any](fs ...Formula[A]) Formula[A] { return join(FAnd, fs) }

// Or makes the disjunction of fs. As in opam, Empty formulas are dropped from a
// disjunction too (an empty alternative does not make the disjunction hold).
func Or[A any](fs ...Formula[A]) Formula[A] { return join(FOr, fs) }

func join[A any](k FormulaKind, fs []Formula[A]) Formula[A] {
	var sub []Formula[A]
	for _, f := range fs {
		switch {
		case f.Kind == FEmpty:
		case f.Kind == k:
			sub = append(sub, f.Sub...)
		default:
			sub = append(sub, f)
		}
	}
	switch len(sub) {
	case 0:
		return Formula[A]{}
	case 1:
		return sub[0]
	}
	return Formula[A]{Kind: k, Sub: sub}
}

// Atoms lists the atoms of f, left to right.
func (f Formula[A]) Atoms() []A {
	n := f.countAtoms()
	if n == 0 {
		return nil
	}
	out := make([]A, 0, n)
	return f.appendAtoms(out)
}

func (f *Formula[A]) countAtoms() int {
	if f.Kind == FAtom {
		return 1
	}
	n := 0
	for i := range f.Sub {
		n += f.Sub[i].countAtoms()
	}
	return n
}

func (f *Formula[A]) appendAtoms(out []A) []A {
	if f.Kind == FAtom {
		return append(out, f.Atom)
	}
	for i := range f.Sub {
		out = f.Sub[i].appendAtoms(out)
	}
	return out
}

// Eval evaluates f with holds deciding each atom. Empty holds.
func (f Formula[A]) Eval(holds func(A) bool) bool {
	switch f.Kind {
	case FAtom:
		return holds(f.Atom)
	case FAnd:
		for _, g := range f.Sub {
			if !g.Eval(holds) {
				return false
			}
		}
	case FOr:
		for _, g := range f.Sub {
			if g.Eval(holds) {
				return true
			}
		}
		return false
	}
	return true
}

// node makes the conjunction (conj) or disjunction of fs as it is, for normalize to
// simplify once the whole formula is made.
func node[A any](conj bool, fs []Formula[A]) Formula[A] {
	if conj {
		return Formula[A]{Kind: FAnd, Sub: fs}
	}
	return Formula[A]{Kind: FOr, Sub: fs}
}

// normalize gives f the shape And and Or give (no Empty inside, no conjunction or
// disjunction of one formula, none directly inside one of its own kind), in time
// linear in f's size: folding And and Or from the leaves up copies a chain nested n
// deep n times. It reuses f's slices.
func normalize[A any](f Formula[A]) Formula[A] {
	prune(&f)
	flatten(&f)
	return f
}

// prune drops Empty formulas and replaces a conjunction or disjunction of one formula
// by that formula.
func prune[A any](f *Formula[A]) {
	if f.Kind != FAnd && f.Kind != FOr {
		return
	}
	sub := f.Sub[:0]
	for i := range f.Sub {
		prune(&f.Sub[i])
		if f.Sub[i].Kind != FEmpty {
			sub = append(sub, f.Sub[i])
		}
	}
	switch len(sub) {
	case 0:
		*f = Formula[A]{}
	case 1:
		*f = sub[0]
	default:
		f.Sub = sub
	}
}

// flatten lifts the operands of a pruned formula's sub-formulas of its own kind into
// it.
func flatten[A any](f *Formula[A]) {
	if f.Kind != FAnd && f.Kind != FOr {
		return
	}
	var out []Formula[A]
	stack := []*Formula[A]{f}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x != f && x.Kind != f.Kind {
			flatten(x)
			out = append(out, *x)
			continue
		}
		for i := len(x.Sub) - 1; i >= 0; i-- {
			stack = append(stack, &x.Sub[i])
		}
	}
	f.Sub = out
}

// MapFormula rewrites each atom of f into a formula, simplifying Empty away as opam does.
func MapFormula[A, B any](f Formula[A], fn func(A) Formula[B]) Formula[B] {
	switch f.Kind {
	case FAtom:
		return fn(f.Atom)
	case FAnd, FOr:
		sub := make([]Formula[B], len(f.Sub))
		for i, g := range f.Sub {
			sub[i] = MapFormula(g, fn)
		}
		return join(f.Kind, sub)
	}
	return Formula[B]{}
}

// CNF returns f in conjunctive normal form: a conjunction of clauses, each a
// disjunction of atoms. Empty gives no clause. The result can be exponentially larger
// than f (a disjunction of n conjunctions of two atoms has 2^n clauses); CNFAux
// stays linear.
func CNF[A any](f Formula[A]) [][]A { return cnf(f, -1, nil) }

// distribute returns the clauses a ∨ c for every a of acc and c of cs.
func distribute[A any](acc, cs [][]A) [][]A {
	next := make([][]A, 0, len(acc)*len(cs))
	for _, a := range acc {
		for _, c := range cs {
			cl := make([]A, 0, len(a)+len(c))
			cl = append(append(cl, a...), c...)
			next = append(next, cl)
		}
	}
	return next
}

// CNFAux returns a formula equisatisfiable with f in conjunctive normal form, of size
// linear in f's: a disjunction whose expansion would give more than limit clauses
// keeps each alternative that is not a single clause as one new atom, made by aux,
// which the caller defines to stand for that alternative (Tseitin's encoding; as the
// formulas have no negation, the atom only needs to imply its alternative). Smaller
// disjunctions are expanded as CNF does, so formulas with few alternatives get no
// new atom.
func CNFAux[A any](f Formula[A], limit int, aux func(Formula[A]) A) [][]A {
	return cnf(f, max(limit, 1), aux)
}

// cnf is CNFAux; a negative limit expands every disjunction.
func cnf[A any](f Formula[A], limit int, aux func(Formula[A]) A) [][]A {
	switch f.Kind {
	case FAtom:
		return [][]A{{f.Atom}}
	case FAnd:
		var out [][]A
		for _, g := range f.Sub {
			out = append(out, cnf(g, limit, aux)...)
		}
		return out
	case FOr:
		type alt struct {
			f  Formula[A]
			cs [][]A
		}
		alts := make([]alt, 0, len(f.Sub))
		product := 1
		for _, g := range f.Sub {
			cs := cnf(g, limit, aux)
			if len(cs) == 0 {
				continue
			}
			alts = append(alts, alt{g, cs})
			if product <= limit {
				product *= len(cs)
			}
		}
		if len(alts) == 0 {
			return nil
		}
		if limit < 0 || product <= limit {
			acc := [][]A{nil}
			for _, a := range alts {
				acc = distribute(acc, a.cs)
			}
			return acc
		}
		var cl []A
		for _, a := range alts {
			if len(a.cs) == 1 {
				cl = append(cl, a.cs[0]...)
			} else {
				cl = append(cl, aux(a.f))
			}
		}
		return [][]A{cl}
	}
	return nil
}

// DNF returns f in disjunctive normal form: a disjunction of conjunctions of atoms.
// Empty gives one empty conjunction.
func DNF[A any](f Formula[A]) [][]A {
	switch f.Kind {
	case FAtom:
		return [][]A{{f.Atom}}
	case FOr:
		var out [][]A
		for _, g := range f.Sub {
			out = append(out, DNF(g)...)
		}
		return out
	case FAnd:
		acc := [][]A{nil}
		for _, g := range f.Sub {
			ds := DNF(g)
			next := make([][]A, 0, len(acc)*len(ds))
			for _, a := range acc {
				for _, d := range ds {
					cl := make([]A, 0, len(a)+len(d))
					cl = append(append(cl, a...), d...)
					next = append(next, cl)
				}
			}
			acc = next
		}
		return acc
	}
	return [][]A{nil}
}

// Format prints f with show printing each atom, in opam syntax.
func (f Formula[A]) Format(show func(A) string) string {
	switch f.Kind {
	case FAtom:
		return show(f.Atom)
	case FAnd, FOr:
		sep := " & "
		if f.Kind == FOr {
			sep = " | "
		}
		s := ""
		for i, g := range f.Sub {
			if i > 0 {
				s += sep
			}
			t := g.Format(show)
			if g.Kind == FOr || (g.Kind == FAnd && f.Kind == FAnd) {
				t = "(" + t + ")"
			}
			s += t
		}
		return s
	}
	return ""
}

// Cond is an atom of the condition attached to a dependency, `"pkg" {cond}`: either a
// filter (Op is OpNone), such as `build` or `os = "linux"`, or a version constraint
// `Op Version`, whose version is itself a filter (a string, or a variable like
// `version`).
type Cond struct {
	Op     Op
	Filter Filter
}

func (c Cond) String() string {
	if c.Op == OpNone {
		return c.Filter.String()
	}
	return c.Op.String() + " " + c.Filter.String()
}

// Dependency is an atom of a filtered package formula (depends, depopts, conflicts):
// a package name and the condition in braces after it (Empty when there is none).
type Dependency struct {
	Name PackageName
	Cond Formula[Cond]
	Pos  Pos
}

func (d Dependency) String() string {
	s := strconv.Quote(string(d.Name))
	if d.Cond.Kind != FEmpty {
		s += " {" + d.Cond.Format(Cond.String) + "}"
	}
	return s
}

// Constraint is a resolved version constraint, such as `>= 4.08`.
type Constraint struct {
	Op      Op
	Version Version
}

func (c Constraint) String() string { return c.Op.String() + " " + strconv.Quote(string(c.Version)) }

// Matches reports whether version v satisfies the constraint.
func (c Constraint) Matches(v Version) bool {
	return relopHolds(c.Op, CompareVersions(string(v), string(c.Version)))
}

func relopHolds(op Op, cmp int) bool {
	switch op {
	case OpEq:
		return cmp == 0
	case OpNeq:
		return cmp != 0
	case OpLt:
		return cmp < 0
	case OpLeq:
		return cmp <= 0
	case OpGt:
		return cmp > 0
	case OpGeq:
		return cmp >= 0
	}
	return false
}

// Atom is a resolved dependency atom: a package name with a version constraint
// formula (Empty for any version).
type Atom struct {
	Name       PackageName
	Constraint Formula[Constraint]
}

func (a Atom) String() string {
	s := strconv.Quote(string(a.Name))
	if a.Constraint.Kind != FEmpty {
		s += " {" + a.Constraint.Format(Constraint.String) + "}"
	}
	return s
}

// Matches reports whether package p satisfies the atom.
func (a Atom) Matches(p Package) bool {
	return p.Name == a.Name && a.Constraint.Eval(func(c Constraint) bool { return c.Matches(p.Version) })
}

// MatchesVersion reports whether version v satisfies the atom's constraint.
func (a Atom) MatchesVersion(v Version) bool {
	return a.Constraint.Eval(func(c Constraint) bool { return c.Matches(v) })
}

func negRelop(op Op) Op {
	switch op {
	case OpEq:
		return OpNeq
	case OpNeq:
		return OpEq
	case OpLt:
		return OpGeq
	case OpLeq:
		return OpGt
	case OpGt:
		return OpLeq
	case OpGeq:
		return OpLt
	}
	return op
}

// ParseFilteredFormula reads a package formula field such as depends (conj true: list
// elements are all required) or depopts and conflicts (conj false: a list means any
// of them).
func ParseFilteredFormula(filename string, v *Value, conj bool) (Formula[Dependency], error) {
	f, err := formulaItems(filename, v.Elems(), conj)
	return normalize(f), err
}

func formulaItems(filename string, vs []Value, conj bool) (Formula[Dependency], error) {
	fs := make([]Formula[Dependency], 0, len(vs))
	for i := range vs {
		f, err := formulaItem(filename, &vs[i], conj)
		if err != nil {
			return Formula[Dependency]{}, err
		}
		fs = append(fs, f)
	}
	return node(conj, fs), nil
}

func formulaItem(filename string, v *Value, conj bool) (Formula[Dependency], error) {
	switch v.Kind {
	case KString:
		return AtomOf(Dependency{Name: PackageName(v.S), Pos: v.Pos}), nil
	case KOption:
		base := v.Arg()
		if base.Kind == KString {
			c, err := condList(filename, v.Options())
			if err != nil {
				return Formula[Dependency]{}, err
			}
			return AtomOf(Dependency{Name: PackageName(base.S), Cond: c, Pos: base.Pos}), nil
		}
		if base.Kind == KGroup {
			// `("a" | "b") {build}`: the condition applies to each atom inside.
			c, err := condList(filename, v.Options())
			if err != nil {
				return Formula[Dependency]{}, err
			}
			f, err := formulaItems(filename, base.Sub, conj)
			if err != nil {
				return f, err
			}
			return MapFormula(normalize(f), func(d Dependency) Formula[Dependency] {
				d.Cond = And(d.Cond, c)
				return AtomOf(d)
			}), nil
		}
	case KLogop:
		fs, err := chainOperands(v, func(x *Value) (Formula[Dependency], error) { return formulaItem(filename, x, conj) })
		if err != nil {
			return Formula[Dependency]{}, err
		}
		return node(v.Op == OpAnd, fs), nil
	case KGroup:
		return formulaItems(filename, v.Sub, conj)
	}
	return Formula[Dependency]{}, &Error{filename, v.Pos, fmt.Sprintf("expected a package name in a formula, found %s %s", v.Kind, v)}
}

func condList(filename string, vs []Value) (Formula[Cond], error) {
	fs := make([]Formula[Cond], 0, len(vs))
	for i := range vs {
		f, err := cond(filename, &vs[i], false)
		if err != nil {
			return f, err
		}
		fs = append(fs, f)
	}
	return normalize(node(true, fs)), nil
}

// cond reads one condition value; neg pushes a `!` inwards as opam does.
func cond(filename string, v *Value, neg bool) (Formula[Cond], error) {
	switch v.Kind {
	case KPrefixRelop:
		f, err := ParseFilter(filename, v.Arg())
		if err != nil {
			return Formula[Cond]{}, err
		}
		op := v.Op
		if neg {
			op = negRelop(op)
		}
		return AtomOf(Cond{Op: op, Filter: f}), nil
	case KLogop:
		fs, err := chainOperands(v, func(x *Value) (Formula[Cond], error) { return cond(filename, x, neg) })
		if err != nil {
			return Formula[Cond]{}, err
		}
		return node((v.Op == OpAnd) != neg, fs), nil
	case KPfxop:
		if v.Op == OpNot && containsPrefixRelop(v.Arg()) {
			return cond(filename, v.Arg(), !neg)
		}
	case KGroup:
		// `(>= "1" < "2")`: several conditions in a group are all required.
		fs := make([]Formula[Cond], 0, len(v.Sub))
		for i := range v.Sub {
			g, err := cond(filename, &v.Sub[i], neg)
			if err != nil {
				return g, err
			}
			fs = append(fs, g)
		}
		return node(!neg, fs), nil
	}
	f, err := ParseFilter(filename, v)
	if err != nil {
		return Formula[Cond]{}, err
	}
	if neg {
		f = Filter{Kind: FilterNot, Sub: []Filter{f}, Pos: f.Pos}
	}
	return AtomOf(Cond{Filter: f}), nil
}

func containsPrefixRelop(v *Value) bool {
	if v.Kind == KPrefixRelop {
		return true
	}
	for i := range v.Sub {
		if containsPrefixRelop(&v.Sub[i]) {
			return true
		}
	}
	return false
}

// chainOperands reads with item the operands of a chain of one logical operator,
// `a & b & c` (however the parser nested it), left to right, so that the chain becomes
// one n-ary node.
func chainOperands[A any](v *Value, item func(*Value) (Formula[A], error)) ([]Formula[A], error) {
	var fs []Formula[A]
	stack := []*Value{v}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x.Kind == KLogop && x.Op == v.Op {
			stack = append(stack, x.Rhs(), x.Lhs())
			continue
		}
		f, err := item(x)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}
