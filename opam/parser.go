package opam

import (
	"fmt"
	"sync"
)

var parsers = sync.Pool{New: func() any { return new(parser) }}

func getParser(filename, src string) *parser {
	p := parsers.Get().(*parser)
	p.lx = lexer{src: src, line: 1, filename: filename}
	p.depth = 0
	return p
}

func putParser(p *parser) {
	p.lx = lexer{}
	p.tok = token{}
	parsers.Put(p)
}

// maxDepth bounds the nesting of values (brackets, parentheses, option braces and
// prefix operators), so hostile input cannot exhaust memory; opam 2.1 reads files
// nested 10,000 deep.
const maxDepth = 10000

type parser struct {
	lx    lexer
	tok   token
	depth int
	// Scratch stacks: lists are gathered here, then copied to slices of exact size.
	vstack []Value
	istack []Item
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
	items, err := p.items(false)
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

// enter counts one more level of nesting at the current token (the caller
// decrements p.depth when leaving it).
func (p *parser) enter() error {
	if p.depth >= maxDepth {
		return p.lx.errAt(p.tok.pos, "values nested more than %d deep", maxDepth)
	}
	p.depth++
	return nil
}

func (p *parser) unexpected(expected string) error {
	return p.lx.errAt(p.tok.pos, "unexpected %s, expected %s", p.tok.describe(), expected)
}

func (p *parser) items(inSection bool) ([]Item, error) {
	mark := len(p.istack)
	defer func() { p.istack = p.istack[:mark] }()
	done := func() []Item {
		return append([]Item(nil), p.istack[mark:]...)
	}
	for {
		switch p.tok.kind {
		case tEOF:
			if inSection {
				return nil, p.unexpected("'}' closing the section")
			}
			return done(), nil
		case tRBrace:
			if inSection {
				return done(), nil
			}
			return nil, p.unexpected("a field name")
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
			if err := p.advance(); err != nil {
				return nil, err
			}
			sub, err := p.items(true)
			if err != nil {
				return nil, err
			}
			sec.Items = sub
			if err := p.advance(); err != nil { // the '}'
				return nil, err
			}
		default:
			return nil, p.unexpected(fmt.Sprintf("':' after field name %q", it.Name))
		}
		p.istack = append(p.istack, it)
	}
}

// value parses `or` (lowest precedence): and ('|' and)*
func (p *parser) value() (Value, error) {
	l, err := p.and()
	if err != nil {
		return l, err
	}
	for p.tok.kind == tOr {
		if err := p.advance(); err != nil {
			return Value{}, err
		}
		r, err := p.and()
		if err != nil {
			return Value{}, err
		}
		l = Value{Kind: KLogop, Op: OpOr, Pos: l.Pos, Sub: []Value{l, r}}
	}
	return l, nil
}

func (p *parser) and() (Value, error) {
	l, err := p.unary()
	if err != nil {
		return l, err
	}
	for p.tok.kind == tAnd {
		if err := p.advance(); err != nil {
			return Value{}, err
		}
		r, err := p.unary()
		if err != nil {
			return Value{}, err
		}
		l = Value{Kind: KLogop, Op: OpAnd, Pos: l.Pos, Sub: []Value{l, r}}
	}
	return l, nil
}

// unary parses `!x` and `?x`, whose operand binds option braces tighter.
func (p *parser) unary() (Value, error) {
	if p.tok.kind != tPfxop {
		return p.postfix()
	}
	if err := p.enter(); err != nil {
		return Value{}, err
	}
	defer func() { p.depth-- }()
	pos, op := p.tok.pos, p.tok.op
	if err := p.advance(); err != nil {
		return Value{}, err
	}
	x, err := p.unary()
	if err != nil {
		return Value{}, err
	}
	return Value{Kind: KPfxop, Op: op, Pos: pos, Sub: []Value{x}}, nil
}

// postfix parses a primary value followed by any number of option braces.
func (p *parser) postfix() (Value, error) {
	v, err := p.primary()
	if err != nil {
		return v, err
	}
	for p.tok.kind == tLBrace {
		if err := p.enter(); err != nil {
			return Value{}, err
		}
		if err := p.advance(); err != nil {
			return Value{}, err
		}
		sub, err := p.values(&v, tRBrace)
		p.depth--
		if err != nil {
			return Value{}, err
		}
		v = Value{Kind: KOption, Pos: v.Pos, Sub: sub}
	}
	return v, nil
}

// values parses values up to the closing token; first, when not nil, is put before
// them (the value an option applies to).
func (p *parser) values(first *Value, closing tokKind) ([]Value, error) {
	mark := len(p.vstack)
	defer func() { p.vstack = p.vstack[:mark] }()
	if first != nil {
		p.vstack = append(p.vstack, *first)
	}
	for p.tok.kind != closing {
		switch p.tok.kind {
		case tEOF, tRBrace, tRBracket, tRPar, tColon:
			return nil, p.unexpected(fmt.Sprintf("a value or %s", tokNames[closing]))
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.vstack = append(p.vstack, v)
	}
	var out []Value
	if n := len(p.vstack) - mark; n > 0 {
		out = make([]Value, n)
		copy(out, p.vstack[mark:])
	}
	return out, p.advance()
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

func (p *parser) primary() (Value, error) {
	pos := p.tok.pos
	switch p.tok.kind {
	case tLBracket, tLPar:
		kind, closing := KList, tRBracket
		if p.tok.kind == tLPar {
			kind, closing = KGroup, tRPar
		}
		if err := p.enter(); err != nil {
			return Value{}, err
		}
		defer func() { p.depth-- }()
		if err := p.advance(); err != nil {
			return Value{}, err
		}
		sub, err := p.values(nil, closing)
		if err != nil {
			return Value{}, err
		}
		return Value{Kind: kind, Pos: pos, Sub: sub}, nil
	case tRelop:
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
