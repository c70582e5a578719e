package opam

import (
	"fmt"
	"strings"
)

// DepsEnv describes the context in which a package's dependencies are read, as opam's
// solver does: which dependency flags hold, and the platform's variables for the
// other filters.
type DepsEnv struct {
	Build    bool // build dependencies wanted (opam: true when installing)
	Post     bool // post dependencies wanted (opam: false for the solver)
	WithTest bool
	WithDoc  bool
	Dev      bool // the package is a development (pinned source) version
	// Self is the package whose formula this is, for `version`, `name` and `_:var`.
	Self Package
	// Vars gives every other variable (os, arch, ocaml:version, ...); may be nil.
	Vars Env
	// Undefined is the value of a filter that is still undefined (opam uses false).
	Undefined bool
}

// Env returns the variable environment described by d: the dependency flags, the
// package's own name and version, then Vars.
func (d *DepsEnv) Env() Env {
	return func(name string) Val {
		switch name {
		case "build":
			return BoolVal(d.Build)
		case "post":
			return BoolVal(d.Post)
		case "with-test":
			return BoolVal(d.WithTest)
		case "with-doc":
			return BoolVal(d.WithDoc)
		case "dev":
			return BoolVal(d.Dev)
		case "name", "_:name":
			if d.Self.Name != "" {
				return StringVal(string(d.Self.Name))
			}
		case "version", "_:version":
			if d.Self.Version != "" {
				return StringVal(string(d.Self.Version))
			}
		}
		if len(name) > 2 && name[0] == '_' && name[1] == ':' && d.Self.Name != "" {
			name = string(d.Self.Name) + name[1:]
		}
		if d.Vars == nil {
			return Val{}
		}
		return d.Vars(name)
	}
}

// Resolve evaluates the filters of a dependency formula, as opam's filter_deps does:
// a dependency whose filter is false disappears (also from a disjunction), version
// constraints get their variables replaced, and what is left is a formula over
// package names and version constraints.
func (d *DepsEnv) Resolve(f Formula[Dependency]) Formula[Atom] {
	env := d.Env()
	return MapFormula(f, func(dep Dependency) Formula[Atom] {
		c, t := resolveCond(dep.Cond, env, d.Undefined)
		switch t {
		case condFalse:
			return Formula[Atom]{}
		case condTrue:
			return AtomOf(Atom{Name: dep.Name})
		}
		return AtomOf(Atom{Name: dep.Name, Constraint: c})
	})
}

type condTruth uint8

const (
	condFormula condTruth = iota
	condTrue
	condFalse
)

// resolveCond partially evaluates a condition: filters become true or false, version
// constraints stay as atoms.
func resolveCond(f Formula[Cond], env Env, undef bool) (Formula[Constraint], condTruth) {
	switch f.Kind {
	case FEmpty:
		return Formula[Constraint]{}, condTrue
	case FAtom:
		c := f.Atom
		if c.Op == OpNone {
			if c.Filter.EvalBool(env, undef) {
				return Formula[Constraint]{}, condTrue
			}
			return Formula[Constraint]{}, condFalse
		}
		v := c.Filter.Eval(env)
		if v.Kind == Undef {
			// opam ignores a version constraint it cannot evaluate.
			return Formula[Constraint]{}, condTrue
		}
		return AtomOf(Constraint{Op: c.Op, Version: Version(v.String())}), condFormula
	}
	var sub []Formula[Constraint]
	for _, g := range f.Sub {
		r, t := resolveCond(g, env, undef)
		switch {
		case f.Kind == FAnd && t == condFalse:
			return Formula[Constraint]{}, condFalse
		case f.Kind == FOr && t == condTrue:
			return Formula[Constraint]{}, condTrue
		case t == condFormula:
			sub = append(sub, r)
		}
	}
	if len(sub) == 0 {
		if f.Kind == FAnd {
			return Formula[Constraint]{}, condTrue
		}
		return Formula[Constraint]{}, condFalse
	}
	return join(f.Kind, sub), condFormula
}

// Names lists the package names a resolved formula mentions, without duplicates.
func Names(f Formula[Atom]) []PackageName {
	seen := map[PackageName]bool{}
	var out []PackageName
	for _, a := range f.Atoms() {
		if !seen[a.Name] {
			seen[a.Name] = true
			out = append(out, a.Name)
		}
	}
	return out
}

// Satisfied reports whether the installed packages (name to version) satisfy f.
func Satisfied(f Formula[Atom], installed func(PackageName) (Version, bool)) bool {
	return f.Eval(func(a Atom) bool {
		v, ok := installed(a.Name)
		return ok && a.MatchesVersion(v)
	})
}

// ParseAtom reads a package atom as the opam command line writes it: "name",
// "name.version" (that version), or "name" followed by an operator and a version
// ("ocaml>=4.14", "dune<3.0", "foo!=1.2", "foo=1.0").
func ParseAtom(s string) (Atom, error) {
	i := strings.IndexAny(s, "<>=!")
	if i < 0 {
		if ValidName(s) {
			return Atom{Name: PackageName(s)}, nil
		}
		if p, ok := ParsePackage(s); ok {
			return Atom{Name: p.Name, Constraint: AtomOf(Constraint{OpEq, p.Version})}, nil
		}
		return Atom{}, fmt.Errorf("%q is not a package name or name.version", s)
	}
	name, rest := s[:i], s[i:]
	var op Op
	switch {
	case strings.HasPrefix(rest, ">="):
		op, rest = OpGeq, rest[2:]
	case strings.HasPrefix(rest, "<="):
		op, rest = OpLeq, rest[2:]
	case strings.HasPrefix(rest, "!="):
		op, rest = OpNeq, rest[2:]
	case strings.HasPrefix(rest, ">"):
		op, rest = OpGt, rest[1:]
	case strings.HasPrefix(rest, "<"):
		op, rest = OpLt, rest[1:]
	case strings.HasPrefix(rest, "="):
		op, rest = OpEq, rest[1:]
	default:
		return Atom{}, fmt.Errorf("%q: unknown operator in %q", s, rest)
	}
	if !ValidName(name) {
		return Atom{}, fmt.Errorf("%q: %q is not a package name", s, name)
	}
	if !ValidVersion(rest) {
		return Atom{}, fmt.Errorf("%q: %q is not a version", s, rest)
	}
	return Atom{Name: PackageName(name), Constraint: AtomOf(Constraint{op, Version(rest)})}, nil
}

// Required lists the package names every way of satisfying f installs: the names of
// a conjunction's parts, and of a disjunction only those all its alternatives need.
func Required(f Formula[Atom]) []PackageName {
	set := required(&f)
	out := make([]PackageName, 0, len(set))
	for _, a := range f.Atoms() {
		if set[a.Name] {
			out = append(out, a.Name)
			delete(set, a.Name)
		}
	}
	return out
}

func required(f *Formula[Atom]) map[PackageName]bool {
	switch f.Kind {
	case FAtom:
		return map[PackageName]bool{f.Atom.Name: true}
	case FAnd:
		out := map[PackageName]bool{}
		for i := range f.Sub {
			for n := range required(&f.Sub[i]) {
				out[n] = true
			}
		}
		return out
	case FOr:
		var out map[PackageName]bool
		for i := range f.Sub {
			r := required(&f.Sub[i])
			if out == nil {
				out = r
				continue
			}
			for n := range out {
				if !r[n] {
					delete(out, n)
				}
			}
		}
		return out
	}
	return map[PackageName]bool{}
}
