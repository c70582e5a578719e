package opam

import (
	"fmt"
	"sync"
)

var parsers = sync.Pool{New: func() any { return new(parser) }}

func getParser(filename, src string) *parser {
	p := parsers.Get().(*parser)
	p.lx = lexer{src: src, line: 1, filename: filename}
	return p
}

func putParser(p *parser) {
	p.lx = lexer{}
	p.tok = token{}
	p.depth = 0
	p.frames = reuse(p.frames)
	p.vstack = reuse(p.vstack)
	p.istack = reuse(p.istack)
	p.sections = reuse(p.sections)
	parsers.Put(p)
}

// reuse empties a scratch stack for the next parse; one grown by deep nesting is
// dropped rather than kept in the pool.
func reuse[T any](s []T) []T {
	if cap(s) > 4096 {
		return nil
	}
	clear(s)
	return s[:0]
}

// MaxDepth bounds the nesting of values (brackets, parentheses, option braces and
// prefix operators) and of sections, so hostile input cannot exhaust memory; opam 2.1
// reads files nested 10,000 deep. Deeper nesting is a syntax error naming the file and
// the line. The parser keeps its own stack, so the bound costs no Go stack.
const MaxDepth = 10000

type parser struct {
	lx  lexer
	tok token
	// frames are the constructs open around the value being read, innermost last.
	frames []frame
	// depth counts the frames that nest (lists, groups, options, prefix operators).
	depth int
	// Scratch stacks: lists and items are gathered here, then copied to slices of
	// exact size.
	vstack   []Value
	istack   []Item
	sections []sectionFrame
}

type frameKind uint8

const (
	fList   frameKind = iota // '[', '(' or an option's '{': elements on vstack from mark
	fPrefix                  // '!' or '?' waiting for its operand
	fAnd                     // left '&' waiting for the right operand
	fOr                      // left '|' waiting for the right operand
)

// frame is an open construct; the left operand of fAnd and fOr waits on vstack.
type frame struct {
	kind    frameKind
	op      Op
	list    Kind    // KList, KGroup or KOption, for fList
	closing tokKind // for fList
	pos     Pos
	mark    int // for fList: where its elements start on vstack
}

type sectionFrame struct {
	item Item
	mark int // where its items start on istack
}

// Parse parses the text of an opam file. filename is used in error messages, which
// carry the position (file:line:col) of what is wrong.
func Parse(filename string, src []byte) (*File, error) {
	return ParseString(filename, string(src))
}

// ParseString is Parse for text already held in a string.
func ParseString(filename, src string) (*File, error) {
	p := getParser(filename, src)
	defer putParser(p)
	if err := p.advance(); err != nil {
		return nil, err
	}
	items, err := p.items()
	if err != nil {
		return nil, err
	}
	return &File{Filename: filename, Items: items}, nil
}

// ParseValue parses a single value, such as `"foo" {>= "1.0"}`.
func ParseValue(filename, src string) (Value, error) {
	p := getParser(filename, src)
	defer putParser(p)
	if err := p.advance(); err != nil {
		return Value{}, err
	}
	v, err := p.value()
	if err != nil {
		return Value{}, err
	}
	if p.tok.kind != tEOF {
		return Value{}, p.unexpected("end of value")
	}
	return v, nil
}

func (p *parser) advance() error { return p.lx.next(&p.tok) }

func (p *parser) tooDeep(what string) error {
	return p.lx.errAt(p.tok.pos, "%s nested more than %d deep", what, MaxDepth)
}

func (p *parser) unexpected(expected string) error {
	return p.lx.errAt(p.tok.pos, "unexpected %s, expected %s", p.tok.describe(), expected)
}

// exact copies s to a slice of its size (nil when empty).
func exact[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}

// items reads the items of the file up to its end; sections open and close on
// p.sections.
func (p *parser) items() ([]Item, error) {
	for {
		switch p.tok.kind {
		case tEOF:
			if len(p.sections) > 0 {
				return nil, p.unexpected("'}' closing the section")
			}
			return exact(p.istack), nil
		case tRBrace:
			n := len(p.sections)
			if n == 0 {
				return nil, p.unexpected("a field name")
			}
			s := p.sections[n-1]
			p.sections = p.sections[:n-1]
			s.item.Section.Items = exact(p.istack[s.mark:])
			clear(p.istack[s.mark:])
			p.istack = append(p.istack[:s.mark], s.item)
			if err := p.advance(); err != nil {
				return nil, err
			}
			continue
		case tIdent:
		default:
			return nil, p.unexpected("a field name")
		}
		it := Item{Pos: p.tok.pos, Name: p.tok.s}
		if err := p.advance(); err != nil {
			return nil, err
		}
		switch p.tok.kind {
		case tColon:
			if err := p.advance(); err != nil {
				return nil, err
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			it.Value = v
			p.istack = append(p.istack, it)
		case tString, tLBrace:
			sec := &Section{}
			it.Section = sec
			if p.tok.kind == tString {
				sec.HasLabel, sec.Label = true, p.tok.s
				if err := p.advance(); err != nil {
					return nil, err
				}
				if p.tok.kind != tLBrace {
					return nil, p.unexpected(fmt.Sprintf("'{' opening section %s %q", it.Name, sec.Label))
				}
			}
			if len(p.sections) >= MaxDepth {
				return nil, p.tooDeep("sections")
			}
			p.sections = append(p.sections, sectionFrame{item: it, mark: len(p.istack)})
			if err := p.advance(); err != nil {
				return nil, err
			}
		default:
			return nil, p.unexpected(fmt.Sprintf("':' after field name %q", it.Name))
		}
	}
}

// push opens a frame that nests, at the current token.
func (p *parser) push(f frame) error {
	if p.depth >= MaxDepth {
		return p.tooDeep("values")
	}
	p.depth++
	p.frames = append(p.frames, f)
	return nil
}

func (p *parser) pop() frame {
	n := len(p.frames) - 1
	f := p.frames[n]
	p.frames[n] = frame{}
	p.frames = p.frames[:n]
	if f.kind == fList || f.kind == fPrefix {
		p.depth--
	}
	return f
}

// top is the kind of the innermost frame; outside any frame, the value is complete as
// if in a list.
func (p *parser) top() frameKind {
	if n := len(p.frames); n > 0 {
		return p.frames[n-1].kind
	}
	return fList
}

// value reads one value with opam's precedence: '|' below '&' below prefix operators
// below option braces. It keeps the constructs still open on p.frames instead of
// recursing, so that nesting costs no Go stack.
func (p *parser) value() (Value, error) {
	for {
		// Read an operand: open whatever nests before it, up to an atom or a list
		// that closes at once.
		v, err := p.operand()
		if err != nil {
			return Value{}, err
		}
		for {
			// v is a complete primary: apply option braces, pending operators, and
			// either continue the chain or close the enclosing list.
			if p.tok.kind == tLBrace {
				if err := p.push(frame{kind: fList, list: KOption, closing: tRBrace, pos: v.Pos, mark: len(p.vstack)}); err != nil {
					return Value{}, err
				}
				if err := p.advance(); err != nil {
					return Value{}, err
				}
			} else {
				for p.top() == fPrefix {
					f := p.pop()
					v = Value{Kind: KPfxop, Op: f.op, Pos: f.pos, Sub: []Value{v}}
				}
				opened, err := p.logops(&v)
				if err != nil {
					return Value{}, err
				}
				if opened {
					break
				}
				if len(p.frames) == 0 {
					return v, nil
				}
			}
			// v goes to the innermost list (an option's braces take the value
			// they follow as first element).
			list, closed, err := p.element(v)
			if err != nil {
				return Value{}, err
			}
			if !closed {
				break
			}
			v = list
		}
	}
}

// element adds v to the innermost list; when the list closes after it, element
// returns the list's value, read up to its closing token.
func (p *parser) element(v Value) (Value, bool, error) {
	p.vstack = append(p.vstack, v)
	closed, err := p.listStart()
	if err != nil || !closed {
		return Value{}, false, err
	}
	list := p.closeList()
	return list, true, p.advance()
}

// logops joins *v, a complete operand of '&', to the operator frames waiting for it,
// '&' before '|' (left-associative), and opens a frame at an '&' or '|' that follows:
// then it reports true, the next operand being still to read.
func (p *parser) logops(v *Value) (bool, error) {
	for _, l := range [...]struct {
		frame frameKind
		op    Op
		tok   tokKind
	}{{fAnd, OpAnd, tAnd}, {fOr, OpOr, tOr}} {
		if p.top() == l.frame {
			*v = p.binary(l.op, *v)
		}
		if p.tok.kind == l.tok {
			p.frames = append(p.frames, frame{kind: l.frame})
			p.vstack = append(p.vstack, *v)
			return true, p.advance()
		}
	}
	return false, nil
}

// binary pops the innermost frame, an fAnd or fOr, and joins its left operand to r.
func (p *parser) binary(op Op, r Value) Value {
	p.pop()
	n := len(p.vstack) - 1
	l := p.vstack[n]
	p.vstack[n] = Value{}
	p.vstack = p.vstack[:n]
	return Value{Kind: KLogop, Op: op, Pos: l.Pos, Sub: []Value{l, r}}
}

// listStart checks the token after an element of the innermost list (or its opening):
// it reports whether it closes the list, and refuses what cannot start a value.
func (p *parser) listStart() (bool, error) {
	closing := p.frames[len(p.frames)-1].closing
	switch p.tok.kind {
	case closing:
		return true, nil
	case tEOF, tRBrace, tRBracket, tRPar, tColon:
		return false, p.unexpected(fmt.Sprintf("a value or %s", tokNames[closing]))
	}
	return false, nil
}

// closeList pops the innermost list at its closing token and makes its value.
func (p *parser) closeList() Value {
	f := p.pop()
	v := Value{Kind: f.list, Pos: f.pos, Sub: exact(p.vstack[f.mark:])}
	clear(p.vstack[f.mark:])
	p.vstack = p.vstack[:f.mark]
	return v
}

// operand opens the prefix operators, brackets and parentheses in front of a primary
// value and returns that value: an atom, a relation, or a list closed at once.
func (p *parser) operand() (Value, error) {
	for {
		pos := p.tok.pos
		switch p.tok.kind {
		case tPfxop:
			if err := p.push(frame{kind: fPrefix, op: p.tok.op, pos: pos}); err != nil {
				return Value{}, err
			}
			if err := p.advance(); err != nil {
				return Value{}, err
			}
			continue
		case tLBracket, tLPar:
			kind, closing := KList, tRBracket
			if p.tok.kind == tLPar {
				kind, closing = KGroup, tRPar
			}
			if err := p.push(frame{kind: fList, list: kind, closing: closing, pos: pos, mark: len(p.vstack)}); err != nil {
				return Value{}, err
			}
			if err := p.advance(); err != nil {
				return Value{}, err
			}
			closed, err := p.listStart()
			if err != nil {
				return Value{}, err
			}
			if !closed {
				continue
			}
			v := p.closeList()
			return v, p.advance()
		}
		return p.primary()
	}
}

func (p *parser) atom() (Value, bool) {
	t := &p.tok
	switch t.kind {
	case tString:
		return Value{Kind: KString, S: t.s, Pos: t.pos}, true
	case tIdent:
		return Value{Kind: KIdent, S: t.s, Pos: t.pos}, true
	case tBool:
		return Value{Kind: KBool, B: t.b, Pos: t.pos}, true
	case tInt:
		return Value{Kind: KInt, I: t.i, Pos: t.pos}, true
	}
	return Value{}, false
}

// primary reads an atom, a relation between two atoms, or a prefix relation.
func (p *parser) primary() (Value, error) {
	pos := p.tok.pos
	if p.tok.kind == tRelop {
		op := p.tok.op
		if err := p.advance(); err != nil {
			return Value{}, err
		}
		a, ok := p.atom()
		if !ok {
			return Value{}, p.unexpected(fmt.Sprintf("a string, identifier, bool or integer after '%s'", op))
		}
		if err := p.advance(); err != nil {
			return Value{}, err
		}
		return Value{Kind: KPrefixRelop, Op: op, Pos: pos, Sub: []Value{a}}, nil
	}
	a, ok := p.atom()
	if !ok {
		return Value{}, p.unexpected("a value")
	}
	if err := p.advance(); err != nil {
		return Value{}, err
	}
	if p.tok.kind != tRelop && p.tok.kind != tEnvop {
		return a, nil
	}
	kind, op := KRelop, p.tok.op
	if p.tok.kind == tEnvop {
		kind = KEnvBinding
	}
	if err := p.advance(); err != nil {
		return Value{}, err
	}
	b, ok := p.atom()
	if !ok {
		return Value{}, p.unexpected(fmt.Sprintf("a string, identifier, bool or integer after '%s'", op))
	}
	if err := p.advance(); err != nil {
		return Value{}, err
	}
	return Value{Kind: kind, Op: op, Pos: pos, Sub: []Value{a, b}}, nil
}
