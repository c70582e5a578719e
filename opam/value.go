// Package opam reads and writes opam 2.x package metadata: the file format, package
// names and versions, version ordering, package formulas and filters.
package opam

import "fmt"

// Pos is a position in an opam file: 1-based line and column (in bytes).
type Pos struct {
	Line, Col int32
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// Kind says which form a Value has.
type Kind uint8

// The forms of a Value.
const (
	KBool        Kind = iota // true, false
	KInt                     // 42, -1
	KString                  // "text" or """text"""
	KIdent                   // build, ocaml:version, _:name, a+b:installed
	KRelop                   // lhs = rhs (both atoms)
	KPrefixRelop             // >= "1.0"
	KLogop                   // lhs & rhs, lhs | rhs
	KPfxop                   // !x, ?x
	KEnvBinding              // VAR += "x" (operators other than =)
	KList                    // [ a b c ]
	KGroup                   // ( a b c )
	KOption                  // value { options }
)

var kindNames = [...]string{"bool", "int", "string", "ident", "relop", "prefix relop", "logop", "pfxop", "env binding", "list", "group", "option"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Op is an operator: relational, logical, prefix or environment update.
type Op uint8

// Operators.
const (
	OpNone    Op = iota
	OpEq         // =
	OpNeq        // !=
	OpLt         // <
	OpLeq        // <=
	OpGt         // >
	OpGeq        // >=
	OpAnd        // &
	OpOr         // |
	OpNot        // !
	OpDefined    // ?
	// Environment updates.
	OpPlusEq   // +=
	OpEqPlus   // =+
	OpEqPlusEq // =+=
	OpColonEq  // :=
	OpEqColon  // =:
)

var opNames = [...]string{"", "=", "!=", "<", "<=", ">", ">=", "&", "|", "!", "?", "+=", "=+", "=+=", ":=", "=:"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", int(o))
}

// IsRelop reports whether o is a relational operator.
func (o Op) IsRelop() bool { return o >= OpEq && o <= OpGeq }

// Value is one value of an opam file with its position. Which fields are meaningful
// depends on Kind:
//
//	KBool: B; KInt: I; KString, KIdent: S
//	KRelop, KLogop, KEnvBinding: Op, Sub = [lhs, rhs]
//	KPrefixRelop, KPfxop: Op, Sub = [operand]
//	KList, KGroup: Sub = elements
//	KOption: Sub[0] = the value, Sub[1:] = the options inside the braces
type Value struct {
	Kind Kind
	Op   Op
	B    bool
	Pos  Pos
	I    int
	S    string
	Sub  []Value
}

// Lhs is the left operand of a binary value.
func (v *Value) Lhs() *Value { return &v.Sub[0] }

// Rhs is the right operand of a binary value.
func (v *Value) Rhs() *Value { return &v.Sub[1] }

// Arg is the operand of a prefix value, or the value an option is attached to.
func (v *Value) Arg() *Value { return &v.Sub[0] }

// Options are the values inside the braces of a KOption value.
func (v *Value) Options() []Value {
	if v.Kind != KOption {
		return nil
	}
	return v.Sub[1:]
}

// Elems returns the elements of a list or group, or the value itself as a one-element
// list: opam accepts a single value where a list is expected.
func (v *Value) Elems() []Value {
	if v.Kind == KList {
		return v.Sub
	}
	return []Value{*v}
}

// Strip returns the value without its option braces, and the options.
func (v *Value) Strip() (*Value, []Value) {
	if v.Kind == KOption {
		return &v.Sub[0], v.Sub[1:]
	}
	return v, nil
}

// Equal reports whether a and b are the same value, positions aside.
func Equal(a, b *Value) bool {
	type pair struct{ a, b *Value }
	stack := []pair{{a, b}}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		a, b := x.a, x.b
		if a.Kind != b.Kind || a.Op != b.Op || a.B != b.B || a.I != b.I || a.S != b.S || len(a.Sub) != len(b.Sub) {
			return false
		}
		for i := range a.Sub {
			stack = append(stack, pair{&a.Sub[i], &b.Sub[i]})
		}
	}
	return true
}

// String prints the value in opam syntax.
func (v Value) String() string {
	var p printer
	p.value(&v)
	return p.b.String()
}

// Item is a field (`name: value`) or a section (`kind "label" { items }`) of an opam
// file.
type Item struct {
	Pos Pos
	// Name is the field name, or the section kind (url, extra-source).
	Name string
	// Value is the field's value (unused for a section).
	Value Value
	// Section is nil for a field.
	Section *Section
}

// Section is the content of a section item.
type Section struct {
	// HasLabel says whether a quoted label follows the kind, as in
	// extra-source "file.patch" { ... }.
	HasLabel bool
	Label    string
	Items    []Item
}

// File is a parsed opam file: its items in order, with positions.
type File struct {
	// Filename is the name given to Parse, used in messages.
	Filename string
	Items    []Item
}

// Field returns the value of the first field called name, if any.
func (f *File) Field(name string) (*Value, bool) {
	for i := range f.Items {
		it := &f.Items[i]
		if it.Section == nil && it.Name == name {
			return &it.Value, true
		}
	}
	return nil, false
}

// Section returns the first section of the given kind, if any.
func (f *File) Section(kind string) (*Item, bool) {
	for i := range f.Items {
		it := &f.Items[i]
		if it.Section != nil && it.Name == kind {
			return it, true
		}
	}
	return nil, false
}

// EqualFiles reports whether two files hold the same items and values, positions and
// file names aside.
func EqualFiles(a, b *File) bool { return equalItems(a.Items, b.Items) }

func equalItems(a, b []Item) bool {
	type pair struct{ a, b []Item }
	stack := []pair{{a, b}}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if len(x.a) != len(x.b) {
			return false
		}
		for i := range x.a {
			a, b := &x.a[i], &x.b[i]
			if a.Name != b.Name || (a.Section == nil) != (b.Section == nil) {
				return false
			}
			if s, t := a.Section, b.Section; s != nil {
				if s.HasLabel != t.HasLabel || s.Label != t.Label {
					return false
				}
				stack = append(stack, pair{s.Items, t.Items})
			} else if !Equal(&a.Value, &b.Value) {
				return false
			}
		}
	}
	return true
}

// Error is a syntax or type error at a position of an opam file.
type Error struct {
	Filename string
	Pos      Pos
	Msg      string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.Filename, e.Pos.Line, e.Pos.Col, e.Msg)
}
