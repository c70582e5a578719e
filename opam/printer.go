package opam

import (
	"slices"
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
	b     strings.Builder
	tasks []printTask
}

// printTask is a value still to print, or, when v is nil, text to write.
type printTask struct {
	v *Value
	s string
}

// maxIndent caps the indentation of nested sections, so that printing a file nested
// MaxDepth deep stays linear in its size.
const maxIndent = 16

func (p *printer) indent(n int) {
	for i := 0; i < min(n, maxIndent); i++ {
		p.b.WriteString("  ")
	}
}

// items prints items and the items of their sections, keeping the open sections on a
// stack of its own.
func (p *printer) items(items []Item, depth int) {
	type open struct {
		items []Item
		next  int
	}
	stack := []open{{items: items}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		d := depth + len(stack) - 1
		if top.next == len(top.items) {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				p.indent(d - 1)
				p.b.WriteString("}\n")
			}
			continue
		}
		it := &top.items[top.next]
		top.next++
		p.indent(d)
		p.b.WriteString(it.Name)
		if sec := it.Section; sec != nil {
			if sec.HasLabel {
				p.b.WriteByte(' ')
				p.str(sec.Label)
			}
			p.b.WriteString(" {\n")
			stack = append(stack, open{items: sec.Items})
			continue
		}
		p.b.WriteString(": ")
		p.field(&it.Value, d)
		p.b.WriteByte('\n')
	}
}

// field prints a field's value, one element per line for long or nested lists.
func (p *printer) field(v *Value, depth int) {
	if v.Kind != KList || len(v.Sub) == 0 {
		p.value(v)
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
		p.value(v)
		return
	}
	p.b.WriteString("[\n")
	for i := range v.Sub {
		p.indent(depth + 1)
		p.value(&v.Sub[i])
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

// text queues s to be written.
func (p *printer) text(s string) { p.tasks = append(p.tasks, printTask{s: s}) }

// sub queues v, in parentheses when need is set.
func (p *printer) sub(v *Value, need bool) {
	if need {
		p.text("(")
	}
	p.tasks = append(p.tasks, printTask{v: v})
	if need {
		p.text(")")
	}
}

// value prints v. The parts of a value still to print wait on p.tasks, so that
// nesting costs no Go stack: each value queues its parts in order, and the part
// queued first is printed first.
func (p *printer) value(v *Value) {
	base := len(p.tasks)
	p.tasks = append(p.tasks, printTask{v: v})
	for len(p.tasks) > base {
		t := p.tasks[len(p.tasks)-1]
		p.tasks = p.tasks[:len(p.tasks)-1]
		if t.v == nil {
			p.b.WriteString(t.s)
			continue
		}
		mark := len(p.tasks)
		p.parts(t.v)
		slices.Reverse(p.tasks[mark:])
	}
}

// parts writes the atoms of v and queues its other parts, in order.
func (p *printer) parts(v *Value) {
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
		p.sub(v.Lhs(), !isAtom(v.Lhs()))
		p.text(" " + v.Op.String() + " ")
		p.sub(v.Rhs(), !isAtom(v.Rhs()))
	case KPrefixRelop:
		p.text(v.Op.String() + " ")
		p.sub(v.Arg(), !isAtom(v.Arg()))
	case KLogop:
		l, r := v.Lhs(), v.Rhs()
		if v.Op == OpAnd {
			p.sub(l, l.Kind == KLogop && l.Op == OpOr)
			p.text(" & ")
			p.sub(r, r.Kind == KLogop)
		} else {
			p.sub(l, false)
			p.text(" | ")
			p.sub(r, r.Kind == KLogop && r.Op == OpOr)
		}
	case KPfxop:
		a := v.Arg()
		if a.Kind == KPrefixRelop {
			p.text(v.Op.String() + " ")
		} else {
			p.text(v.Op.String())
		}
		p.sub(a, a.Kind == KLogop)
	case KList, KGroup:
		open, close := "[", "]"
		if v.Kind == KGroup {
			open, close = "(", ")"
		}
		p.b.WriteString(open)
		for i := range v.Sub {
			if i > 0 {
				p.text(" ")
			}
			p.sub(&v.Sub[i], false)
		}
		p.text(close)
	case KOption:
		base := v.Arg()
		p.sub(base, base.Kind == KLogop || base.Kind == KPfxop)
		p.text(" {")
		opts := v.Options()
		for i := range opts {
			if i > 0 {
				p.text(" ")
			}
			p.sub(&opts[i], false)
		}
		p.text("}")
	}
}
