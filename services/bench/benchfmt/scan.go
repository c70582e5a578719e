package benchfmt

import (
	"fmt"
)

// jsonState is where the incremental syntax check is inside a JSON text.
type jsonState uint8

const (
	stKey     jsonState = iota // after '{' or ',' in an object: a key or (right after '{') '}'
	stKeyStr                   // inside a key
	stKeyEsc                   // after '\' in a key
	stColon                    // after a key, waiting for ':'
	stValue                    // waiting for a value (after ':' or ',' in an array, or '[')
	stStr                      // inside a string value
	stStrEsc                   // after '\' in a string value
	stAfter                    // after a value: ',' or the closing bracket
	stNum                      // inside a number
	stLiteral                  // inside true, false or null
)

// syntax checks one JSON object byte by byte, so that a malformed object is noticed
// where it breaks, without holding more than the nesting stack.
type syntax struct {
	state   jsonState
	stack   []byte // '{' or '['
	empty   bool   // the container just opened ('{' or '[' seen, nothing else)
	literal string // the rest of the literal being read
	num     []byte // the number being read (for its grammar only; kept short)
}

// errSyntax is a byte that cannot continue the JSON text.
type errSyntax struct {
	b    byte
	want string
}

func (e *errSyntax) Error() string {
	return fmt.Sprintf("unexpected %s, expected %s", describe(e.b), e.want)
}

func describe(b byte) string {
	switch {
	case b == '\n':
		return "end of line"
	case b < 0x20 || b >= 0x7f:
		return fmt.Sprintf("byte 0x%02x", b)
	}
	return fmt.Sprintf("%q", rune(b))
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// start begins an object at its '{'.
func (s *syntax) start() {
	s.stack = append(s.stack[:0], '{')
	s.state = stKey
	s.empty = true
}

// step takes one byte; done reports that the outermost object closed with it.
func (s *syntax) step(b byte) (done bool, err error) {
	switch s.state {
	case stKeyStr, stStr:
		switch {
		case b == '"':
			if s.state == stKeyStr {
				s.state = stColon
			} else {
				s.state = stAfter
			}
		case b == '\\':
			s.state++ // the matching escape state
		case b < 0x20:
			return false, &errSyntax{b, "the end of the string"}
		}
		return false, nil
	case stKeyEsc, stStrEsc:
		s.state--
		return false, nil
	case stNum:
		if numByte(b) {
			if len(s.num) < 64 {
				s.num = append(s.num, b)
			}
			return false, nil
		}
		if !validNumber(s.num) {
			return false, &errSyntax{b, "a digit"}
		}
		s.state = stAfter
		return s.after(b)
	case stLiteral:
		if len(s.literal) == 0 || b != s.literal[0] {
			return false, &errSyntax{b, fmt.Sprintf("%q", s.literal)}
		}
		s.literal = s.literal[1:]
		if s.literal == "" {
			s.state = stAfter
		}
		return false, nil
	}
	if isSpace(b) {
		return false, nil
	}
	switch s.state {
	case stKey:
		switch {
		case b == '"':
			s.state, s.empty = stKeyStr, false
		case b == '}' && s.empty:
			return s.close()
		default:
			return false, &errSyntax{b, "a key in double quotes"}
		}
	case stColon:
		if b != ':' {
			return false, &errSyntax{b, "':' after the key"}
		}
		s.state = stValue
	case stValue:
		return s.value(b)
	case stAfter:
		return s.after(b)
	}
	return false, nil
}

func (s *syntax) value(b byte) (bool, error) {
	empty := s.empty
	s.empty = false
	switch {
	case b == '"':
		s.state = stStr
	case b == '{':
		s.stack = append(s.stack, '{')
		s.state, s.empty = stKey, true
	case b == '[':
		s.stack = append(s.stack, '[')
		s.state, s.empty = stValue, true
	case b == ']' && empty && s.stack[len(s.stack)-1] == '[':
		return s.close()
	case b == '-' || (b >= '0' && b <= '9'):
		s.state, s.num = stNum, append(s.num[:0], b)
	case b == 't':
		s.state, s.literal = stLiteral, "rue"
	case b == 'f':
		s.state, s.literal = stLiteral, "alse"
	case b == 'n':
		s.state, s.literal = stLiteral, "ull"
	default:
		return false, &errSyntax{b, "a value"}
	}
	return false, nil
}

func (s *syntax) after(b byte) (bool, error) {
	if isSpace(b) {
		return false, nil
	}
	top := s.stack[len(s.stack)-1]
	switch {
	case b == ',' && top == '{':
		s.state = stKey
	case b == ',' && top == '[':
		s.state = stValue
	case b == '}' && top == '{', b == ']' && top == '[':
		return s.close()
	default:
		return false, &errSyntax{b, "',' or the closing bracket"}
	}
	return false, nil
}

func (s *syntax) close() (bool, error) {
	s.stack = s.stack[:len(s.stack)-1]
	s.state = stAfter
	return len(s.stack) == 0, nil
}

func numByte(b byte) bool {
	return (b >= '0' && b <= '9') || b == '.' || b == 'e' || b == 'E' || b == '+' || b == '-'
}

// validNumber checks JSON's number grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?
func validNumber(n []byte) bool {
	i := 0
	digits := func() int {
		j := i
		for i < len(n) && n[i] >= '0' && n[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < len(n) && n[i] == '-' {
		i++
	}
	switch d := digits(); {
	case d == 0:
		return false
	case d > 1 && n[i-d] == '0':
		return false
	}
	if i < len(n) && n[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(n) && (n[i] == 'e' || n[i] == 'E') {
		i++
		if i < len(n) && (n[i] == '+' || n[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(n)
}
