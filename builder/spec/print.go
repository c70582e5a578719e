package spec

import (
	"strconv"
	"strings"
)

// String prints the spec in the layout OBuilder uses: one op a line, the fields of
// run one a line. Parsing the result gives back an equal spec.
func (s *Spec) String() string {
	var b strings.Builder
	printSpec(&b, s, 0)
	b.WriteByte('\n')
	return b.String()
}

// OpString prints one op on one line, as build logs show it.
func OpString(op Op) string { return opSexp(op).String() }

func printSpec(b *strings.Builder, s *Spec, col int) {
	b.WriteByte('(')
	first := true
	item := func() {
		if !first {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(" ", col+1))
		}
		first = false
	}
	for _, c := range s.Builds {
		item()
		b.WriteString("(build ")
		b.WriteString(quoteAtom(c.Name))
		b.WriteByte('\n')
		b.WriteString(strings.Repeat(" ", col+3))
		printSpec(b, c.Spec, col+3)
		b.WriteByte(')')
	}
	item()
	b.WriteString(list(atom("from"), atom(s.From)).String())
	for _, op := range s.Ops {
		item()
		x := opSexp(op)
		one := x.String()
		switch op.(type) {
		case Run:
			if len(x.list) > 2 || col+1+len(one) > 100 {
				b.WriteString("(run ")
				for i, f := range x.list[1:] {
					if i > 0 {
						b.WriteByte('\n')
						b.WriteString(strings.Repeat(" ", col+6))
					}
					b.WriteString(f.String())
				}
				b.WriteByte(')')
				continue
			}
		case Copy:
			if col+1+len(one) > 100 {
				b.WriteString("(copy ")
				for i, f := range x.list[1:] {
					if i > 0 {
						b.WriteByte('\n')
						b.WriteString(strings.Repeat(" ", col+7))
					}
					b.WriteString(f.String())
				}
				b.WriteByte(')')
				continue
			}
		}
		b.WriteString(one)
	}
	b.WriteByte(')')
}

func atom(s string) *sexp       { return &sexp{atom: s} }
func list(xs ...*sexp) *sexp    { return &sexp{isList: true, list: xs} }
func atoms(ss []string) []*sexp { return mapAtoms(ss) }
func mapAtoms(ss []string) []*sexp {
	out := make([]*sexp, len(ss))
	for i, s := range ss {
		out[i] = atom(s)
	}
	return out
}

// String prints x on one line.
func (x *sexp) String() string {
	if !x.isList {
		return quoteAtom(x.atom)
	}
	parts := make([]string, len(x.list))
	for i, y := range x.list {
		parts[i] = y.String()
	}
	return "(" + strings.Join(parts, " ") + ")"
}

func mountSexp(id, target string, opts []Option) *sexp {
	x := list(atom(id), list(atom("target"), atom(target)))
	if len(opts) > 0 {
		kvs := make([]*sexp, len(opts))
		for i, o := range opts {
			kvs[i] = list(atom(o.Key), atom(o.Value))
		}
		x.list = append(x.list, list(atom("buildkit_options"), list(kvs...)))
	}
	return x
}

func opSexp(op Op) *sexp {
	switch o := op.(type) {
	case Comment:
		return list(atom("comment"), atom(o.Text))
	case Workdir:
		return list(atom("workdir"), atom(o.Path))
	case Shell:
		return list(append([]*sexp{atom("shell")}, atoms(o.Args)...)...)
	case Env:
		return list(atom("env"), atom(o.Name), atom(o.Value))
	case User:
		if o.Name != "" {
			return list(atom("user"), list(atom("name"), atom(o.Name)))
		}
		return list(atom("user"),
			list(atom("uid"), atom(strconv.Itoa(o.UID))),
			list(atom("gid"), atom(strconv.Itoa(o.GID))))
	case Run:
		x := list(atom("run"))
		if len(o.Cache) > 0 {
			c := list(atom("cache"))
			for _, m := range o.Cache {
				c.list = append(c.list, mountSexp(m.ID, m.Target, m.BuildkitOptions))
			}
			x.list = append(x.list, c)
		}
		if len(o.Network) > 0 {
			x.list = append(x.list, list(append([]*sexp{atom("network")}, atoms(o.Network)...)...))
		}
		if len(o.Secrets) > 0 {
			c := list(atom("secrets"))
			for _, m := range o.Secrets {
				c.list = append(c.list, mountSexp(m.ID, m.Target, m.BuildkitOptions))
			}
			x.list = append(x.list, c)
		}
		if len(o.Tmpfs) > 0 {
			x.list = append(x.list, list(append([]*sexp{atom("tmpfs")}, atoms(o.Tmpfs)...)...))
		}
		x.list = append(x.list, list(atom("shell"), atom(o.Shell)))
		return x
	case Copy:
		x := list(atom("copy"))
		if o.FromBuild != "" {
			x.list = append(x.list, list(atom("from"), list(atom("build"), atom(o.FromBuild))))
		}
		x.list = append(x.list, list(append([]*sexp{atom("src")}, atoms(o.Src)...)...))
		x.list = append(x.list, list(atom("dst"), atom(o.Dst)))
		if len(o.Exclude) > 0 {
			x.list = append(x.list, list(append([]*sexp{atom("exclude")}, atoms(o.Exclude)...)...))
		}
		return x
	default:
		return list(atom("unknown-op"))
	}
}
