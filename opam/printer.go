package opam

import (
	"strconv"
	"strings"
)

// String prints the file in opam syntax. Parsing the result gives back the same items
// and values.
func (f *File) String() string {
	var p printer
	p.items(f.Items, 0)
	return p.b.String()
}

// Format prints items in opam syntax, as the body of a file.
func Format(items []Item) string {
	var p printer
	p.items(items, 0)
	return p.b.String()
}

type printer struct {
	b strings.Builder
}

func (p *printer) indent(n int) {
	for i := 0; i < n; i++ {
		p.b.WriteString("  ")
	}
}

func (p *printer) items(items []Item, depth int) {
	for i := range items {
		it := &items[i]
		p.indent(depth)
		p.b.WriteString(it.Name)
		if sec := it.Section; sec != nil {
			if sec.HasLabel {
				p.b.WriteByte(' ')
				p.str(sec.Label)
			}
			p.b.WriteString(" {\n")
			p.items(sec.Items, depth+1)
			p.indent(depth)
			p.b.WriteString("}\n")
			continue
		}
		p.b.WriteString(": ")
		p.field(&it.Value, depth)
		p.b.WriteByte('\n')
	}
}

// field prints a field's value, one element per line for long or nested lists.
func (p *printer) field(v *Value, depth int) {
	if v.Kind != KList || len(v.Sub) == 0 {
		p.value(v, depth)
		return
	}
	inline := true
	n := 0
	for i := range v.Sub {
		e := &v.Sub[i]
		if e.Kind == KList || e.Kind == KOption || (e.Kind == KString && strings.IndexByte(e.S, '\n') >= 0) {
			inline = false
			break
		}
		n += len(e.S) + 3
	}
	if inline && n < 70 {
		p.value(v, depth)
		return
	}
	p.b.WriteString("[\n")
	for i := range v.Sub {
		p.indent(depth + 1)
		p.value(&v.Sub[i], depth+1)
		p.b.WriteByte('\n')
	}
	p.indent(depth)
	p.b.WriteByte(']')
}

func (p *printer) str(s string) {
	if strings.IndexByte(s, '\n') >= 0 {
		// Triple quotes keep multi-line text readable; a quote is escaped only where
		// it could close the string.
		p.b.WriteString(`"""`)
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\':
				p.b.WriteString(`\\`)
			case c == '"' && (i+1 == len(s) || s[i+1] == '"'):
				p.b.WriteString(`\"`)
			default:
				p.b.WriteByte(c)
			}
		}
		p.b.WriteString(`"""`)
		return
	}
	p.b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' || c == '"' {
			p.b.WriteByte('\\')
		}
		p.b.WriteByte(c)
	}
	p.b.WriteByte('"')
}

func isAtom(v *Value) bool { return v.Kind <= KIdent }

// wrap prints v, in parentheses when needed.
func (p *printer) wrap(v *Value, need bool, depth int) {
	if need {
		p.b.WriteByte('(')
		p.value(v, depth)
		p.b.WriteByte(')')
		return
	}
	p.value(v, depth)
}

func (p *printer) value(v *Value, depth int) {
	switch v.Kind {
	case KBool:
		if v.B {
			p.b.WriteString("true")
		} else {
			p.b.WriteString("false")
		}
	case KInt:
		p.b.WriteString(strconv.Itoa(v.I))
	case KString:
		p.str(v.S)
	case KIdent:
		p.b.WriteString(v.S)
	case KRelop, KEnvBinding:
		p.wrap(v.Lhs(), !isAtom(v.Lhs()), depth)
		p.b.WriteByte(' ')
		p.b.WriteString(v.Op.String())
		p.b.WriteByte(' ')
		p.wrap(v.Rhs(), !isAtom(v.Rhs()), depth)
	case KPrefixRelop:
		p.b.WriteString(v.Op.String())
		p.b.WriteByte(' ')
		p.wrap(v.Arg(), !isAtom(v.Arg()), depth)
	case KLogop:
		l, r := v.Lhs(), v.Rhs()
		if v.Op == OpAnd {
			p.wrap(l, l.Kind == KLogop && l.Op == OpOr, depth)
			p.b.WriteString(" & ")
			p.wrap(r, r.Kind == KLogop, depth)
		} else {
			p.value(l, depth)
			p.b.WriteString(" | ")
			p.wrap(r, r.Kind == KLogop && r.Op == OpOr, depth)
		}
	case KPfxop:
		p.b.WriteString(v.Op.String())
		a := v.Arg()
		if a.Kind == KPrefixRelop {
			p.b.WriteByte(' ')
		}
		p.wrap(a, a.Kind == KLogop, depth)
	case KList, KGroup:
		open, close := byte('['), byte(']')
		if v.Kind == KGroup {
			open, close = '(', ')'
		}
		p.b.WriteByte(open)
		for i := range v.Sub {
			if i > 0 {
				p.b.WriteByte(' ')
			}
			p.value(&v.Sub[i], depth)
		}
		p.b.WriteByte(close)
	case KOption:
		base := v.Arg()
		p.wrap(base, base.Kind == KLogop || base.Kind == KPfxop, depth)
		p.b.WriteString(" {")
		for i, o := range v.Options() {
			if i > 0 {
				p.b.WriteByte(' ')
			}
			p.value(&o, depth)
		}
		p.b.WriteByte('}')
	}
}
