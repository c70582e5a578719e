package opam

import (
	"fmt"
	"strings"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tString
	tIdent
	tBool
	tInt
	tLBracket
	tRBracket
	tLPar
	tRPar
	tLBrace
	tRBrace
	tColon
	tRelop
	tAnd
	tOr
	tPfxop
	tEnvop
)

var tokNames = [...]string{"end of file", "string", "identifier", "bool", "integer", "'['", "']'", "'('", "')'", "'{'", "'}'", "':'", "comparison operator", "'&'", "'|'", "prefix operator", "environment update operator"}

type token struct {
	kind tokKind
	op   Op
	b    bool
	pos  Pos
	i    int
	s    string
}

func (t *token) describe() string {
	switch t.kind {
	case tString:
		return fmt.Sprintf("string %q", t.s)
	case tIdent:
		return fmt.Sprintf("identifier %q", t.s)
	case tInt:
		return fmt.Sprintf("integer %d", t.i)
	case tBool:
		return fmt.Sprintf("%t", t.b)
	case tRelop, tPfxop, tEnvop:
		return fmt.Sprintf("%s '%s'", tokNames[t.kind], t.op)
	}
	return tokNames[t.kind]
}

// lexer splits the text of an opam file into tokens, following opam's lexer.
type lexer struct {
	src       string
	off       int
	line      int
	lineStart int
	filename  string
	sb        strings.Builder
}

func (l *lexer) pos() Pos { return Pos{int32(l.line), int32(l.off - l.lineStart + 1)} }

func (l *lexer) errAt(p Pos, format string, args ...any) *Error {
	return &Error{Filename: l.filename, Pos: p, Msg: fmt.Sprintf(format, args...)}
}

func (l *lexer) newline() { l.line++; l.lineStart = l.off }

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isIChar(c byte) bool { return isAlpha(c) || isDigit(c) || c == '_' || c == '-' }

// idRun returns the length of the `id` (ichar* alpha ichar*) or `_` starting at i, 0
// when there is none.
func idRun(s string, i int, allowUnderscore bool) int {
	j := i
	alpha := false
	for j < len(s) && isIChar(s[j]) {
		if isAlpha(s[j]) {
			alpha = true
		}
		j++
	}
	if alpha {
		return j - i
	}
	if allowUnderscore && i < len(s) && s[i] == '_' {
		return 1
	}
	return 0
}

// identLen is the length of the longest identifier at i:
// (id | _) ('+' (id | _))* (':' id)?
func identLen(s string, i int) int {
	n := idRun(s, i, true)
	if n == 0 {
		return 0
	}
	j := i + n
	for j < len(s) && s[j] == '+' {
		m := idRun(s, j+1, true)
		if m == 0 {
			break
		}
		j += 1 + m
	}
	if j < len(s) && s[j] == ':' {
		if m := idRun(s, j+1, false); m > 0 {
			j += 1 + m
		}
	}
	return j - i
}

// intLen is the length of the longest integer at i: '-'? [0-9_]+
func intLen(s string, i int) int {
	j := i
	if j < len(s) && s[j] == '-' {
		j++
	}
	k := j
	for k < len(s) && (isDigit(s[k]) || s[k] == '_') {
		k++
	}
	if k == j {
		return 0
	}
	return k - i
}

func parseInt(s string) (int, bool) {
	neg := false
	if s[0] == '-' {
		neg = true
		s = s[1:]
	}
	if s == "" || s[0] == '_' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '_' {
			continue
		}
		d := int(s[i] - '0')
		if n > (1<<62-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		n = -n
	}
	return n, true
}

// next reads the next token into t.
func (l *lexer) next(t *token) error {
	s := l.src
	for l.off < len(s) {
		c := s[l.off]
		switch {
		case c == ' ' || c == '\t':
			l.off++
		case c == '\r':
			// As in opam, a carriage return is only allowed before a newline.
			if l.off+1 >= len(s) || s[l.off+1] != '\n' {
				return l.errAt(l.pos(), "'\\r' is not a valid token")
			}
			l.off++
		case c == '\n':
			l.off++
			l.newline()
		case c == '#':
			i := strings.IndexByte(s[l.off:], '\n')
			if i < 0 {
				l.off = len(s)
			} else {
				l.off += i
			}
		case c == '(' && l.off+1 < len(s) && s[l.off+1] == '*':
			if err := l.comment(); err != nil {
				return err
			}
		default:
			return l.token(t)
		}
	}
	*t = token{kind: tEOF, pos: l.pos()}
	return nil
}

func (l *lexer) comment() error {
	start := l.pos()
	s := l.src
	l.off += 2
	depth := 1
	for l.off < len(s) {
		switch {
		case s[l.off] == '*' && l.off+1 < len(s) && s[l.off+1] == ')':
			l.off += 2
			depth--
			if depth == 0 {
				return nil
			}
		case s[l.off] == '(' && l.off+1 < len(s) && s[l.off+1] == '*':
			l.off += 2
			depth++
		case s[l.off] == '\n':
			l.off++
			l.newline()
		default:
			l.off++
		}
	}
	return l.errAt(start, "unterminated comment")
}

func (l *lexer) at(i int) byte {
	if l.off+i < len(l.src) {
		return l.src[l.off+i]
	}
	return 0
}

// punct maps single-byte punctuation to its token.
var punct = [256]tokKind{':': tColon, '{': tLBrace, '}': tRBrace, '[': tLBracket, ']': tRBracket, '(': tLPar, ')': tRPar, '&': tAnd, '|': tOr}

func (l *lexer) token(t *token) error {
	s := l.src
	p := l.pos()
	c := s[l.off]
	kind, op, n := tEOF, OpNone, 1
	switch c {
	case '"':
		return l.str(p, t)
	case ':':
		if l.at(1) == '=' {
			kind, op, n = tEnvop, OpColonEq, 2
		} else {
			kind = tColon
		}
	case '=':
		switch l.at(1) {
		case '+':
			if l.at(2) == '=' {
				kind, op, n = tEnvop, OpEqPlusEq, 3
			} else {
				kind, op, n = tEnvop, OpEqPlus, 2
			}
		case ':':
			if l.at(2) == '=' {
				return l.errAt(p, "\"=:=\" is not a valid environment update operator")
			}
			kind, op, n = tEnvop, OpEqColon, 2
		default:
			kind, op = tRelop, OpEq
		}
	case '!':
		if l.at(1) == '=' {
			kind, op, n = tRelop, OpNeq, 2
		} else {
			kind, op = tPfxop, OpNot
		}
	case '?':
		kind, op = tPfxop, OpDefined
	case '<':
		if l.at(1) == '=' {
			kind, op, n = tRelop, OpLeq, 2
		} else {
			kind, op = tRelop, OpLt
		}
	case '>':
		if l.at(1) == '=' {
			kind, op, n = tRelop, OpGeq, 2
		} else {
			kind, op = tRelop, OpGt
		}
	case '~':
		kind, op = tRelop, OpGeq
	case '+':
		if l.at(1) == '=' {
			kind, op, n = tEnvop, OpPlusEq, 2
		}
	default:
		kind = punct[c]
	}
	if kind != tEOF {
		l.off += n
		*t = token{kind: kind, op: op, pos: p}
		return nil
	}
	il := intLen(s, l.off)
	dl := identLen(s, l.off)
	if il == 0 && dl == 0 {
		return l.errAt(p, "%q is not a valid token", s[l.off:l.off+1])
	}
	if il >= dl {
		text := s[l.off : l.off+il]
		v, ok := parseInt(text)
		if !ok {
			return l.errAt(p, "invalid integer %q", text)
		}
		l.off += il
		*t = token{kind: tInt, i: v, pos: p}
		return nil
	}
	text := s[l.off : l.off+dl]
	l.off += dl
	switch text {
	case "true":
		*t = token{kind: tBool, b: true, pos: p}
	case "false":
		*t = token{kind: tBool, pos: p}
	default:
		*t = token{kind: tIdent, s: text, pos: p}
	}
	return nil
}

// str reads a string starting at the opening quote, single or triple.
func (l *lexer) str(p Pos, t *token) error {
	s := l.src
	triple := strings.HasPrefix(s[l.off:], `"""`)
	if triple {
		l.off += 3
	} else {
		l.off++
	}
	start := l.off
	// Fast path: no escapes before the closing quote.
	var j int
	if triple {
		j = strings.Index(s[start:], `"""`)
	} else {
		j = strings.IndexByte(s[start:], '"')
	}
	if j >= 0 && strings.IndexByte(s[start:start+j], '\\') < 0 {
		body := s[start : start+j]
		if n := strings.Count(body, "\n"); n > 0 {
			l.line += n
			l.lineStart = start + strings.LastIndexByte(body, '\n') + 1
		}
		l.off = start + j + 1
		if triple {
			l.off += 2
		}
		*t = token{kind: tString, s: body, pos: p}
		return nil
	}
	b := &l.sb
	b.Reset()
	for l.off < len(s) {
		c := s[l.off]
		switch {
		case c == '"' && (!triple || strings.HasPrefix(s[l.off:], `"""`)):
			if triple {
				l.off += 3
			} else {
				l.off++
			}
			*t = token{kind: tString, s: b.String(), pos: p}
			return nil
		case c == '\n':
			b.WriteByte(c)
			l.off++
			l.newline()
		case c == '\\':
			if err := l.escape(b); err != nil {
				return err
			}
		default:
			b.WriteByte(c)
			l.off++
		}
	}
	return l.errAt(p, "unterminated string")
}

func hexVal(c byte) (int, bool) {
	switch {
	case isDigit(c):
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

func (l *lexer) escape(b *strings.Builder) error {
	s := l.src
	p := l.pos()
	l.off++ // the backslash
	if l.off >= len(s) {
		return l.errAt(p, "illegal escape sequence")
	}
	c := s[l.off]
	switch c {
	case '\r', '\n':
		if c == '\r' {
			if l.off+1 >= len(s) || s[l.off+1] != '\n' {
				break
			}
			l.off++
		}
		l.off++
		l.newline()
		for l.off < len(s) && (s[l.off] == ' ' || s[l.off] == '\t') {
			l.off++
		}
		return nil
	case '\\', '"', '\'', ' ':
		b.WriteByte(c)
		l.off++
		return nil
	case 'n':
		b.WriteByte('\n')
		l.off++
		return nil
	case 'r':
		b.WriteByte('\r')
		l.off++
		return nil
	case 't':
		b.WriteByte('\t')
		l.off++
		return nil
	case 'b':
		b.WriteByte('\b')
		l.off++
		return nil
	case 'x':
		if l.off+2 < len(s) {
			h, ok1 := hexVal(s[l.off+1])
			g, ok2 := hexVal(s[l.off+2])
			if ok1 && ok2 {
				b.WriteByte(byte(h*16 + g))
				l.off += 3
				return nil
			}
		}
	default:
		if l.off+2 < len(s) && isDigit(c) && isDigit(s[l.off+1]) && isDigit(s[l.off+2]) {
			n := int(c-'0')*100 + int(s[l.off+1]-'0')*10 + int(s[l.off+2]-'0')
			if n > 255 {
				return l.errAt(p, "illegal escape sequence \\%s (above 255)", s[l.off:l.off+3])
			}
			b.WriteByte(byte(n))
			l.off += 3
			return nil
		}
	}
	return l.errAt(p, "illegal escape sequence")
}
