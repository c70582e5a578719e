package opam

import (
	"fmt"
	"strconv"
	"strings"
)

// FilterKind says which form a Filter has.
type FilterKind uint8

// The forms of a Filter.
const (
	FilterBool    FilterKind = iota // true, false
	FilterString                    // "text", may hold %{var}% interpolations
	FilterIdent                     // a variable: os, ocaml:version, a+b:installed, _:version
	FilterOp                        // Sub[0] Op Sub[1], a relational operator
	FilterAnd                       // Sub[0] & Sub[1]
	FilterOr                        // Sub[0] | Sub[1]
	FilterNot                       // !Sub[0]
	FilterDefined                   // ?Sub[0]
	FilterUndef                     // an undefined value (result of partial evaluation)
)

// Filter is an opam filter: a boolean or string expression over variables, as in
// `available: os = "linux" & arch != "arm32"` or `{with-test & ocaml:version >= "4.08"}`.
type Filter struct {
	Kind FilterKind
	Op   Op
	B    bool
	S    string
	Sub  []Filter
	Pos  Pos
}

// ParseFilter reads a filter from a value.
func ParseFilter(filename string, v *Value) (Filter, error) {
	switch v.Kind {
	case KBool:
		return Filter{Kind: FilterBool, B: v.B, Pos: v.Pos}, nil
	case KString:
		return Filter{Kind: FilterString, S: v.S, Pos: v.Pos}, nil
	case KIdent:
		return Filter{Kind: FilterIdent, S: v.S, Pos: v.Pos}, nil
	case KInt:
		return Filter{Kind: FilterString, S: strconv.Itoa(v.I), Pos: v.Pos}, nil
	case KRelop:
		l, err := ParseFilter(filename, v.Lhs())
		if err != nil {
			return l, err
		}
		r, err := ParseFilter(filename, v.Rhs())
		if err != nil {
			return r, err
		}
		return Filter{Kind: FilterOp, Op: v.Op, Sub: []Filter{l, r}, Pos: v.Pos}, nil
	case KLogop:
		l, err := ParseFilter(filename, v.Lhs())
		if err != nil {
			return l, err
		}
		r, err := ParseFilter(filename, v.Rhs())
		if err != nil {
			return r, err
		}
		k := FilterAnd
		if v.Op == OpOr {
			k = FilterOr
		}
		return Filter{Kind: k, Sub: []Filter{l, r}, Pos: v.Pos}, nil
	case KPfxop:
		x, err := ParseFilter(filename, v.Arg())
		if err != nil {
			return x, err
		}
		k := FilterNot
		if v.Op == OpDefined {
			k = FilterDefined
		}
		return Filter{Kind: k, Sub: []Filter{x}, Pos: v.Pos}, nil
	case KGroup:
		if len(v.Sub) == 1 {
			return ParseFilter(filename, &v.Sub[0])
		}
	}
	return Filter{}, &Error{filename, v.Pos, fmt.Sprintf("expected a filter, found %s %s", v.Kind, v)}
}

// ParseFilterList reads the values inside option braces `{...}` as one filter (their
// conjunction; none means true).
func ParseFilterList(filename string, vs []Value) (Filter, error) {
	f := Filter{Kind: FilterBool, B: true}
	for i := range vs {
		g, err := ParseFilter(filename, &vs[i])
		if err != nil {
			return g, err
		}
		if i == 0 {
			f = g
		} else {
			f = Filter{Kind: FilterAnd, Sub: []Filter{f, g}, Pos: f.Pos}
		}
	}
	return f, nil
}

func (f Filter) String() string {
	switch f.Kind {
	case FilterBool:
		return strconv.FormatBool(f.B)
	case FilterString:
		return Value{Kind: KString, S: f.S}.String()
	case FilterIdent:
		return f.S
	case FilterOp:
		return f.Sub[0].String() + " " + f.Op.String() + " " + f.Sub[1].String()
	case FilterAnd, FilterOr:
		l, r := f.Sub[0].String(), f.Sub[1].String()
		if f.Kind == FilterAnd {
			if f.Sub[0].Kind == FilterOr {
				l = "(" + l + ")"
			}
			if f.Sub[1].Kind == FilterOr || f.Sub[1].Kind == FilterAnd {
				r = "(" + r + ")"
			}
			return l + " & " + r
		}
		if f.Sub[1].Kind == FilterOr {
			r = "(" + r + ")"
		}
		return l + " | " + r
	case FilterNot, FilterDefined:
		op := "!"
		if f.Kind == FilterDefined {
			op = "?"
		}
		x := f.Sub[0].String()
		if f.Sub[0].Kind == FilterAnd || f.Sub[0].Kind == FilterOr {
			x = "(" + x + ")"
		}
		return op + x
	}
	return "<undefined>"
}

// Variables lists the variables the filter reads, including those interpolated in
// its strings.
func (f Filter) Variables() []string {
	var out []string
	var walk func(g *Filter)
	walk = func(g *Filter) {
		switch g.Kind {
		case FilterIdent:
			out = append(out, g.S)
		case FilterString:
			out = append(out, InterpolatedVariables(g.S)...)
		}
		for i := range g.Sub {
			walk(&g.Sub[i])
		}
	}
	walk(&f)
	return out
}

// SplitVariable splits a full variable name into its packages and variable:
// "ocaml:version" gives ([ocaml], version), "a+b:installed" gives ([a b], installed),
// "os" gives (nil, os).
func SplitVariable(s string) (pkgs []string, name string) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return nil, s
	}
	return strings.Split(s[:i], "+"), s[i+1:]
}

// ValKind says whether a filter result is undefined, a bool or a string.
type ValKind uint8

// The kinds of filter results.
const (
	Undef ValKind = iota
	Bool
	String
)

// Val is the value of a variable or the result of a filter.
type Val struct {
	Kind ValKind
	B    bool
	S    string
}

// BoolVal and StringVal make defined values.
func BoolVal(b bool) Val     { return Val{Kind: Bool, B: b} }
func StringVal(s string) Val { return Val{Kind: String, S: s} }

func (v Val) String() string {
	switch v.Kind {
	case Bool:
		return strconv.FormatBool(v.B)
	case String:
		return v.S
	}
	return "<undefined>"
}

// AsBool converts v to a bool: a bool, or the strings "true" and "false".
func (v Val) AsBool() (bool, bool) {
	switch v.Kind {
	case Bool:
		return v.B, true
	case String:
		switch v.S {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}

// Env gives the value of a variable by its full name ("os", "ocaml:version",
// "_:version", "with-test"); Val{} (Undef) when it is not defined.
type Env func(name string) Val

// MapEnv makes an Env from variables as `opam var` prints them: "true" and "false" are
// bools, anything else a string, missing names undefined.
func MapEnv(vars map[string]string) Env {
	return func(name string) Val {
		s, ok := vars[name]
		if !ok {
			return Val{}
		}
		switch s {
		case "true":
			return BoolVal(true)
		case "false":
			return BoolVal(false)
		}
		return StringVal(s)
	}
}

// Overlay returns an Env looking names up in vars first, then in env.
func (env Env) Overlay(vars map[string]Val) Env {
	return func(name string) Val {
		if v, ok := vars[name]; ok {
			return v
		}
		if env == nil {
			return Val{}
		}
		return env(name)
	}
}

func lookup(env Env, name string) Val {
	if env == nil {
		return Val{}
	}
	if strings.IndexByte(name, '+') < 0 {
		return env(name)
	}
	pkgs, v := SplitVariable(name)
	if len(pkgs) == 1 {
		return env(name)
	}
	// a+b:var: defined only for bools, true when it holds for every package.
	all := true
	for _, p := range pkgs {
		x := env(p + ":" + v)
		b, ok := x.AsBool()
		if !ok {
			return Val{}
		}
		all = all && b
	}
	return BoolVal(all)
}

// Eval evaluates the filter under env, as opam does: relational operators compare
// as versions, `&` and `|` are false (true) as soon as one side is, and an undefined
// variable makes the result undefined otherwise.
func (f *Filter) Eval(env Env) Val {
	switch f.Kind {
	case FilterBool:
		return BoolVal(f.B)
	case FilterString:
		return StringVal(Interpolate(f.S, env))
	case FilterIdent:
		return lookup(env, f.S)
	case FilterOp:
		l, r := f.Sub[0].Eval(env), f.Sub[1].Eval(env)
		if l.Kind == Undef || r.Kind == Undef {
			return Val{}
		}
		return BoolVal(relopHolds(f.Op, CompareVersions(l.String(), r.String())))
	case FilterAnd, FilterOr:
		absorb := f.Kind == FilterOr
		l, r := f.Sub[0].Eval(env), f.Sub[1].Eval(env)
		lb, lok := l.AsBool()
		rb, rok := r.AsBool()
		if (lok && lb == absorb) || (rok && rb == absorb) {
			return BoolVal(absorb)
		}
		if lok && rok {
			return BoolVal(!absorb)
		}
		return Val{}
	case FilterNot:
		b, ok := f.Sub[0].Eval(env).AsBool()
		if !ok {
			return Val{}
		}
		return BoolVal(!b)
	case FilterDefined:
		return BoolVal(f.Sub[0].Eval(env).Kind != Undef)
	}
	return Val{}
}

// EvalBool evaluates the filter to a bool; undefined (or a string that is not a bool)
// gives def.
func (f *Filter) EvalBool(env Env, def bool) bool {
	b, ok := f.Eval(env).AsBool()
	if !ok {
		return def
	}
	return b
}

// Interpolate expands %{var}%, %{pkg:var}% and %{var?if-true:if-false}% in s.
// An undefined variable is left as written, except in the ?: form where it selects the
// second string.
func Interpolate(s string, env Env) string {
	if !strings.Contains(s, "%{") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "%{")
		if i < 0 {
			break
		}
		j := strings.Index(s[i+2:], "}%")
		if j < 0 {
			break
		}
		b.WriteString(s[:i])
		expr := s[i+2 : i+2+j]
		b.WriteString(expand(expr, s[i:i+4+j], env))
		s = s[i+4+j:]
	}
	b.WriteString(s)
	return b.String()
}

func expand(expr, raw string, env Env) string {
	name, alt, hasAlt := strings.Cut(expr, "?")
	v := lookup(env, name)
	if hasAlt {
		yes, no, _ := strings.Cut(alt, ":")
		if b, ok := v.AsBool(); ok && b {
			return yes
		}
		return no
	}
	if v.Kind == Undef {
		return raw
	}
	return v.String()
}

// InterpolatedVariables lists the variables named in %{...}% of s.
func InterpolatedVariables(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "%{")
		if i < 0 {
			return out
		}
		j := strings.Index(s[i+2:], "}%")
		if j < 0 {
			return out
		}
		name, _, _ := strings.Cut(s[i+2:i+2+j], "?")
		out = append(out, name)
		s = s[i+4+j:]
	}
}

// Simplify partially evaluates the filter: variables env defines are replaced by their
// values and what can be decided is folded, while undefined variables stay, so the
// result is what remains to be decided by a fuller environment.
func (f *Filter) Simplify(env Env) Filter {
	lit := func(v Val) (Filter, bool) {
		switch v.Kind {
		case Bool:
			return Filter{Kind: FilterBool, B: v.B, Pos: f.Pos}, true
		case String:
			return Filter{Kind: FilterString, S: v.S, Pos: f.Pos}, true
		}
		return Filter{}, false
	}
	switch f.Kind {
	case FilterIdent:
		if g, ok := lit(lookup(env, f.S)); ok {
			return g
		}
		return *f
	case FilterString:
		return Filter{Kind: FilterString, S: Interpolate(f.S, env), Pos: f.Pos}
	case FilterOp:
		l, r := f.Sub[0].Simplify(env), f.Sub[1].Simplify(env)
		if isLiteral(&l) && isLiteral(&r) {
			g := Filter{Kind: FilterOp, Op: f.Op, Sub: []Filter{l, r}}
			v, _ := lit(g.Eval(nil))
			return v
		}
		return Filter{Kind: FilterOp, Op: f.Op, Sub: []Filter{l, r}, Pos: f.Pos}
	case FilterAnd, FilterOr:
		absorb := f.Kind == FilterOr
		l, r := f.Sub[0].Simplify(env), f.Sub[1].Simplify(env)
		lb, lok := literalBool(&l)
		rb, rok := literalBool(&r)
		switch {
		case (lok && lb == absorb) || (rok && rb == absorb):
			return Filter{Kind: FilterBool, B: absorb, Pos: f.Pos}
		case lok:
			return r
		case rok:
			return l
		}
		return Filter{Kind: f.Kind, Sub: []Filter{l, r}, Pos: f.Pos}
	case FilterNot:
		x := f.Sub[0].Simplify(env)
		if b, ok := literalBool(&x); ok {
			return Filter{Kind: FilterBool, B: !b, Pos: f.Pos}
		}
		return Filter{Kind: FilterNot, Sub: []Filter{x}, Pos: f.Pos}
	case FilterDefined:
		x := f.Sub[0].Simplify(env)
		if isLiteral(&x) {
			return Filter{Kind: FilterBool, B: true, Pos: f.Pos}
		}
		return Filter{Kind: FilterDefined, Sub: []Filter{x}, Pos: f.Pos}
	}
	return *f
}

func isLiteral(f *Filter) bool {
	return f.Kind == FilterBool || (f.Kind == FilterString && !strings.Contains(f.S, "%{"))
}

func literalBool(f *Filter) (bool, bool) {
	switch f.Kind {
	case FilterBool:
		return f.B, true
	case FilterString:
		switch f.S {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}
