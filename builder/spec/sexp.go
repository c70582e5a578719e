package spec

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Pos is a position in spec text: 1-based line and column (in bytes).
type Pos struct{ Line, Col int }

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// sexp is a parsed S-expression: an atom (list == nil, isList false) or a list.
type sexp struct {
	pos    Pos
	isList bool
	atom   string
	list   []*sexp
	end    Pos // position of a list's closing parenthesis
}

// SyntaxError is a parse error with the position it refers to.
type SyntaxError struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("%d:%d: %s", e.Pos.Line, e.Pos.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// maxDepth bounds list nesting so hostile input cannot exhaust the stack.
const maxDepth = 1000

type reader struct {
	file string
	src  []byte
	off  int
	line int
	col  int
}

func (r *reader) pos() Pos { return Pos{r.line, r.col} }

func (r *reader) errAt(p Pos, format string, args ...any) error {
	return &SyntaxError{File: r.file, Pos: p, Msg: fmt.Sprintf(format, args...)}
}

func (r *reader) peek() (byte, bool) {
	if r.off >= len(r.src) {
		return 0, false
	}
	return r.src[r.off], true
}

func (r *reader) next() byte {
	c := r.src[r.off]
	r.off++
	if c == '\n' {
		r.line++
		r.col = 1
	} else {
		r.col++
	}
	return c
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// skip passes over blanks and comments: "; …" to end of line, "#| … |#" (nested)
// and "#;" followed by one expression.
func (r *reader) skip(depth int) error {
	for {
		c, ok := r.peek()
		if !ok {
			return nil
		}
		switch {
		case isSpace(c):
			r.next()
		case c == ';':
			for {
				c, ok := r.peek()
				if !ok || c == '\n' {
					break
				}
				r.next()
			}
		case c == '#' && r.off+1 < len(r.src) && r.src[r.off+1] == '|':
			start := r.pos()
			r.next()
			r.next()
			level := 1
			for level > 0 {
				if r.off >= len(r.src) {
					return r.errAt(start, "unterminated block comment #| … |#")
				}
				if r.src[r.off] == '|' && r.off+1 < len(r.src) && r.src[r.off+1] == '#' {
					r.next()
					r.next()
					level--
				} else if r.src[r.off] == '#' && r.off+1 < len(r.src) && r.src[r.off+1] == '|' {
					r.next()
					r.next()
					level++
				} else {
					r.next()
				}
			}
		case c == '#' && r.off+1 < len(r.src) && r.src[r.off+1] == ';':
			start := r.pos()
			r.next()
			r.next()
			if err := r.skip(depth); err != nil {
				return err
			}
			if _, ok := r.peek(); !ok {
				return r.errAt(start, "#; comment is not followed by an expression")
			}
			if c, _ := r.peek(); c == ')' {
				return r.errAt(start, "#; comment is not followed by an expression")
			}
			if _, err := r.read(depth); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// readAll reads every top-level expression of the input.
func (r *reader) readAll() ([]*sexp, error) {
	var out []*sexp
	for {
		if err := r.skip(0); err != nil {
			return nil, err
		}
		if _, ok := r.peek(); !ok {
			return out, nil
		}
		if c, _ := r.peek(); c == ')' {
			return nil, r.errAt(r.pos(), "unexpected ')' with no matching '('")
		}
		x, err := r.read(0)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
}

// read reads one expression; the caller has skipped blanks.
func (r *reader) read(depth int) (*sexp, error) {
	start := r.pos()
	c := r.src[r.off]
	switch {
	case c == '(':
		if depth >= maxDepth {
			return nil, r.errAt(start, "lists nested more than %d deep", maxDepth)
		}
		r.next()
		l := &sexp{pos: start, isList: true}
		for {
			if err := r.skip(depth + 1); err != nil {
				return nil, err
			}
			c, ok := r.peek()
			if !ok {
				return nil, r.errAt(start, "unclosed '(' (end of input reached)")
			}
			if c == ')' {
				l.end = r.pos()
				r.next()
				return l, nil
			}
			x, err := r.read(depth + 1)
			if err != nil {
				return nil, err
			}
			l.list = append(l.list, x)
		}
	case c == '"':
		s, err := r.readString()
		if err != nil {
			return nil, err
		}
		return &sexp{pos: start, atom: s}, nil
	default:
		var b strings.Builder
		for {
			c, ok := r.peek()
			if !ok || isSpace(c) || c == '(' || c == ')' || c == '"' || c == ';' {
				break
			}
			if c == '#' && r.off+1 < len(r.src) && (r.src[r.off+1] == '|' || r.src[r.off+1] == ';') && b.Len() > 0 {
				break
			}
			if c == '|' && r.off+1 < len(r.src) && r.src[r.off+1] == '#' {
				return nil, r.errAt(r.pos(), "'|#' outside a block comment")
			}
			b.WriteByte(r.next())
		}
		return &sexp{pos: start, atom: b.String()}, nil
	}
}

// readString reads a quoted string with the escapes sexplib (parsexp) reads: \\ \" \'
// \n \t \b \r, \DDD (decimal), \xHH, and backslash-newline, which skips the newline and
// the blanks after it. Any other escape, "\ " included, keeps its backslash.
func (r *reader) readString() (string, error) {
	start := r.pos()
	r.next() // opening quote
	var b strings.Builder
	for {
		c, ok := r.peek()
		if !ok {
			return "", r.errAt(start, "unterminated string")
		}
		r.next()
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			escPos := r.pos()
			e, ok := r.peek()
			if !ok {
				return "", r.errAt(start, "unterminated string")
			}
			switch e {
			case '\\', '"', '\'':
				r.next()
				b.WriteByte(e)
			case 'n':
				r.next()
				b.WriteByte('\n')
			case 't':
				r.next()
				b.WriteByte('\t')
			case 'b':
				r.next()
				b.WriteByte('\b')
			case 'r':
				r.next()
				b.WriteByte('\r')
			case '\n', '\r':
				r.next()
				if e == '\r' {
					if c, ok := r.peek(); ok && c == '\n' {
						r.next()
					}
				}
				for {
					c, ok := r.peek()
					if !ok || (c != ' ' && c != '\t') {
						break
					}
					r.next()
				}
			case 'x':
				if r.off+2 < len(r.src) && isHex(r.src[r.off+1]) && isHex(r.src[r.off+2]) {
					r.next()
					v := hexVal(r.next())<<4 | hexVal(r.next())
					b.WriteByte(v)
				} else {
					b.WriteByte('\\')
				}
			default:
				if isDigit(e) {
					if r.off+2 < len(r.src) && isDigit(r.src[r.off+1]) && isDigit(r.src[r.off+2]) {
						v := int(r.src[r.off]-'0')*100 + int(r.src[r.off+1]-'0')*10 + int(r.src[r.off+2]-'0')
						if v > 255 {
							return "", r.errAt(escPos, "escape \\%s is not a byte (over 255)", string(r.src[r.off:r.off+3]))
						}
						r.next()
						r.next()
						r.next()
						b.WriteByte(byte(v))
						continue
					}
				}
				b.WriteByte('\\')
			}
		default:
			b.WriteByte(c)
		}
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
func hexVal(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// quoteAtom writes s as an atom, quoted and escaped when it would not read back as
// itself bare.
func quoteAtom(s string) string {
	if !mustQuote(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case '\b':
			b.WriteString(`\b`)
		default:
			if c < 0x20 || c == 0x7f {
				fmt.Fprintf(&b, `\%03d`, c)
			} else if c >= 0x80 {
				r, n := utf8.DecodeRuneInString(s[i:])
				if r == utf8.RuneError && n <= 1 {
					fmt.Fprintf(&b, `\%03d`, c)
				} else {
					b.WriteString(s[i : i+n])
				}
				i += n
				continue
			} else {
				b.WriteByte(c)
			}
		}
		i++
	}
	b.WriteByte('"')
	return b.String()
}

func mustQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == ';' || c == '"' || c == '\\' {
			return true
		}
		if c == '#' && i+1 < len(s) && (s[i+1] == '|' || s[i+1] == ';') {
			return true
		}
		if c == '|' && i+1 < len(s) && s[i+1] == '#' {
			return true
		}
	}
	return false
}
