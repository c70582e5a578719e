package spec

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Parse reads a spec from its S-expression text, in the form OBuilder reads: nested
// (build NAME SPEC) items, then (from IMAGE), then ops. file names the source in errors,
// which give line and column.
func Parse(file string, src []byte) (*Spec, error) {
	r := &reader{file: file, src: src, line: 1, col: 1}
	xs, err := r.readAll()
	if err != nil {
		return nil, err
	}
	if len(xs) == 0 {
		return nil, &SyntaxError{File: file, Pos: r.pos(), Msg: "empty spec: expected ((from IMAGE) OP…)"}
	}
	if len(xs) > 1 {
		return nil, &SyntaxError{File: file, Pos: xs[1].pos, Msg: "unexpected text after the spec (a spec is one list)"}
	}
	d := &decoder{file: file}
	return d.spec(xs[0], nil)
}

// ParseString is Parse of a string, for specs written in code.
func ParseString(src string) (*Spec, error) { return Parse("", []byte(src)) }

type decoder struct{ file string }

func (d *decoder) errAt(p Pos, format string, args ...any) error {
	return &SyntaxError{File: d.file, Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// show renders x briefly for an error message.
func show(x *sexp) string {
	s := x.String()
	if len(s) > 60 {
		s = s[:57] + "…"
	}
	return s
}

func (d *decoder) spec(x *sexp, scope []string) (*Spec, error) {
	if !x.isList {
		return nil, d.errAt(x.pos, "expected a spec ((from IMAGE) OP…), got the atom %s", show(x))
	}
	s := &Spec{}
	items := x.list
	i := 0
	seen := map[string]bool{}
	for ; i < len(items); i++ {
		it := items[i]
		head, ok := headOf(it)
		if !ok || head != "build" {
			break
		}
		if len(it.list) != 3 || it.list[1].isList {
			return nil, d.errAt(it.pos, "expected (build NAME ((from IMAGE) OP…)), got %s", show(it))
		}
		name := it.list[1].atom
		if name == "" {
			return nil, d.errAt(it.list[1].pos, "a nested build needs a non-empty name")
		}
		if seen[name] {
			return nil, d.errAt(it.list[1].pos, "duplicate nested build %q", name)
		}
		seen[name] = true
		child, err := d.spec(it.list[2], scope)
		if err != nil {
			return nil, err
		}
		scope = append(scope[:len(scope):len(scope)], name)
		s.Builds = append(s.Builds, Build{Name: name, Spec: child})
	}
	if i >= len(items) {
		return nil, d.errAt(x.end, "missing (from IMAGE)")
	}
	from := items[i]
	head, _ := headOf(from)
	if head != "from" {
		if head == "" {
			return nil, d.errAt(from.pos, "expected (from IMAGE), got %s", show(from))
		}
		return nil, d.errAt(from.pos, "expected (from IMAGE) before (%s …): a spec starts with its (build …) items and then (from IMAGE)", head)
	}
	if len(from.list) != 2 || from.list[1].isList || from.list[1].atom == "" {
		return nil, d.errAt(from.pos, "expected (from IMAGE) with one image reference, got %s", show(from))
	}
	s.From = from.list[1].atom
	for _, it := range items[i+1:] {
		op, err := d.op(it, scope)
		if err != nil {
			return nil, err
		}
		s.Ops = append(s.Ops, op)
	}
	return s, nil
}

// headOf returns the keyword of a list starting with an atom.
func headOf(x *sexp) (string, bool) {
	if !x.isList || len(x.list) == 0 || x.list[0].isList {
		return "", false
	}
	return x.list[0].atom, true
}

func (d *decoder) atoms(xs []*sexp, what string) ([]string, error) {
	var out []string
	for _, x := range xs {
		if x.isList {
			return nil, d.errAt(x.pos, "%s: expected an atom, got the list %s", what, show(x))
		}
		out = append(out, x.atom)
	}
	return out, nil
}

func (d *decoder) oneAtom(x *sexp, args []*sexp, what string) (string, error) {
	if len(args) != 1 || args[0].isList {
		return "", d.errAt(x.pos, "expected (%s VALUE) with one atom, got %s", what, show(x))
	}
	return args[0].atom, nil
}

func (d *decoder) op(x *sexp, scope []string) (Op, error) {
	head, ok := headOf(x)
	if !ok {
		return nil, d.errAt(x.pos, "expected an operation (KEYWORD …), got %s", show(x))
	}
	args := x.list[1:]
	switch head {
	case "comment":
		t, err := d.oneAtom(x, args, "comment")
		return Comment{Text: t}, err
	case "workdir":
		p, err := d.oneAtom(x, args, "workdir")
		if err == nil && p == "" {
			err = d.errAt(x.pos, "workdir: empty path")
		}
		return Workdir{Path: p}, err
	case "shell":
		a, err := d.atoms(args, "shell")
		if err == nil && len(a) == 0 {
			err = d.errAt(x.pos, "shell: expected (shell PROGRAM ARG…), got no arguments")
		}
		return Shell{Args: a}, err
	case "env":
		if len(args) != 2 || args[0].isList || args[1].isList {
			return nil, d.errAt(x.pos, "expected (env NAME VALUE), got %s", show(x))
		}
		name := args[0].atom
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return nil, d.errAt(args[0].pos, "env: invalid variable name %q", name)
		}
		return Env{Name: name, Value: args[1].atom}, nil
	case "user":
		return d.user(x, args)
	case "run":
		return d.run(x, args)
	case "copy":
		return d.copy(x, args, scope)
	case "from":
		return nil, d.errAt(x.pos, "a second (from …): a spec has one; put other stages in (build NAME …) before it")
	case "build":
		return nil, d.errAt(x.pos, "(build …) must come before (from …)")
	default:
		return nil, d.errAt(x.pos, "unknown operation %q (expected one of comment, workdir, shell, run, copy, user, env)", head)
	}
}

// fields splits record fields (NAME VALUE…) by name, refusing unknown and repeated
// ones.
func (d *decoder) fields(x *sexp, args []*sexp, op string, known ...string) (map[string]*sexp, error) {
	out := map[string]*sexp{}
	for _, a := range args {
		name, ok := headOf(a)
		if !ok {
			return nil, d.errAt(a.pos, "%s: expected a field (NAME …), got %s", op, show(a))
		}
		valid := false
		for _, k := range known {
			if k == name {
				valid = true
			}
		}
		if !valid {
			return nil, d.errAt(a.pos, "%s: unknown field %q (expected %s)", op, name, strings.Join(known, ", "))
		}
		if _, dup := out[name]; dup {
			return nil, d.errAt(a.pos, "%s: field %q given twice", op, name)
		}
		out[name] = a
	}
	return out, nil
}

func (d *decoder) user(x *sexp, args []*sexp) (Op, error) {
	f, err := d.fields(x, args, "user", "uid", "gid", "name")
	if err != nil {
		return nil, err
	}
	if n, ok := f["name"]; ok {
		if len(f) != 1 {
			return nil, d.errAt(x.pos, "user: give either (name NAME) or (uid N) (gid N)")
		}
		name, err := d.oneAtom(n, n.list[1:], "name")
		if err == nil && name == "" {
			err = d.errAt(n.pos, "user: empty name")
		}
		return User{Name: name}, err
	}
	u := User{}
	for _, k := range []string{"uid", "gid"} {
		v, ok := f[k]
		if !ok {
			return nil, d.errAt(x.pos, "user: missing (%s N)", k)
		}
		s, err := d.oneAtom(v, v.list[1:], k)
		if err != nil {
			return nil, err
		}
		n, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, 31)
		if err != nil || strings.HasPrefix(s, "_") {
			return nil, d.errAt(v.list[1].pos, "user: %s %q is not a non-negative integer", k, s)
		}
		if k == "uid" {
			u.UID = int(n)
		} else {
			u.GID = int(n)
		}
	}
	return u, nil
}

func (d *decoder) run(x *sexp, args []*sexp) (Op, error) {
	f, err := d.fields(x, args, "run", "cache", "network", "secrets", "tmpfs", "shell")
	if err != nil {
		return nil, err
	}
	r := Run{}
	sh, ok := f["shell"]
	if !ok {
		return nil, d.errAt(x.pos, "run: missing (shell COMMAND)")
	}
	if r.Shell, err = d.oneAtom(sh, sh.list[1:], "shell"); err != nil {
		return nil, err
	}
	if c, ok := f["cache"]; ok {
		for _, e := range c.list[1:] {
			id, target, opts, err := d.mount(e, "cache")
			if err != nil {
				return nil, err
			}
			r.Cache = append(r.Cache, Cache{ID: id, Target: target, BuildkitOptions: opts})
		}
	}
	if n, ok := f["network"]; ok {
		if r.Network, err = d.atoms(n.list[1:], "network"); err != nil {
			return nil, err
		}
	}
	if s, ok := f["secrets"]; ok {
		for _, e := range s.list[1:] {
			id, target, opts, err := d.mount(e, "secret")
			if err != nil {
				return nil, err
			}
			r.Secrets = append(r.Secrets, Secret{ID: id, Target: target, BuildkitOptions: opts})
		}
	}
	if t, ok := f["tmpfs"]; ok {
		if r.Tmpfs, err = d.atoms(t.list[1:], "tmpfs"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// mount decodes (ID (target PATH) (buildkit_options ((K V) …))?).
func (d *decoder) mount(e *sexp, what string) (string, string, []Option, error) {
	// As in OBuilder, an ID is any atom; the builder maps it to a safe file name.
	id, ok := headOf(e)
	if !ok {
		return "", "", nil, d.errAt(e.pos, "%s: expected (ID (target PATH)), got %s", what, show(e))
	}
	name := what + " " + quoteAtom(id)
	f, err := d.fields(e, e.list[1:], name, "target", "buildkit_options")
	if err != nil {
		return "", "", nil, err
	}
	t, ok := f["target"]
	if !ok {
		return "", "", nil, d.errAt(e.pos, "%s: missing (target PATH)", name)
	}
	target, err := d.oneAtom(t, t.list[1:], "target")
	if err != nil {
		return "", "", nil, err
	}
	if target == "" {
		return "", "", nil, d.errAt(t.pos, "%s: empty target", name)
	}
	var opts []Option
	if b, ok := f["buildkit_options"]; ok {
		if len(b.list) != 2 || !b.list[1].isList {
			return "", "", nil, d.errAt(b.pos, "%s: expected (buildkit_options ((KEY VALUE) …))", name)
		}
		for _, kv := range b.list[1].list {
			if !kv.isList || len(kv.list) != 2 || kv.list[0].isList || kv.list[1].isList {
				return "", "", nil, d.errAt(kv.pos, "%s: expected a (KEY VALUE) pair, got %s", name, show(kv))
			}
			opts = append(opts, Option{Key: kv.list[0].atom, Value: kv.list[1].atom})
		}
	}
	return id, target, opts, nil
}

func (d *decoder) copy(x *sexp, args []*sexp, scope []string) (Op, error) {
	f, err := d.fields(x, args, "copy", "from", "src", "dst", "exclude")
	if err != nil {
		return nil, err
	}
	c := Copy{}
	if fr, ok := f["from"]; ok {
		if len(fr.list) != 2 {
			return nil, d.errAt(fr.pos, "copy: expected (from context) or (from (build NAME)), got %s", show(fr))
		}
		v := fr.list[1]
		switch {
		case !v.isList && v.atom == "context":
		case v.isList && len(v.list) == 2 && !v.list[0].isList && v.list[0].atom == "build" && !v.list[1].isList && v.list[1].atom != "":
			c.FromBuild = v.list[1].atom
			if !slices.Contains(scope, c.FromBuild) {
				msg := fmt.Sprintf("copy: unknown build %q", c.FromBuild)
				if len(scope) > 0 {
					msg += fmt.Sprintf(" (builds in scope: %s)", strings.Join(scope, ", "))
				} else {
					msg += " (no (build NAME …) defined before it)"
				}
				return nil, d.errAt(v.list[1].pos, "%s", msg)
			}
		default:
			return nil, d.errAt(v.pos, "copy: invalid data source %s (expected context or (build NAME))", show(v))
		}
	}
	s, ok := f["src"]
	if !ok {
		return nil, d.errAt(x.pos, "copy: missing (src PATH…)")
	}
	if c.Src, err = d.atoms(s.list[1:], "copy src"); err != nil {
		return nil, err
	}
	if len(c.Src) == 0 {
		return nil, d.errAt(s.pos, "copy: (src) names no source: expected (src PATH…) with at least one path")
	}
	for i, p := range c.Src {
		if p == "" {
			return nil, d.errAt(s.list[1+i].pos, "copy: empty source path")
		}
	}
	t, ok := f["dst"]
	if !ok {
		return nil, d.errAt(x.pos, "copy: missing (dst PATH)")
	}
	if c.Dst, err = d.oneAtom(t, t.list[1:], "dst"); err != nil {
		return nil, err
	}
	if c.Dst == "" {
		return nil, d.errAt(t.pos, "copy: empty destination")
	}
	if e, ok := f["exclude"]; ok {
		if c.Exclude, err = d.atoms(e.list[1:], "copy exclude"); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Validate checks a spec built in code: a base image, known nested builds for copies,
// and well-formed fields.
func (s *Spec) Validate() error {
	if s == nil {
		return fmt.Errorf("nil spec")
	}
	if s.From == "" {
		return fmt.Errorf("spec: missing base image (from)")
	}
	// Printing and reparsing applies every check Parse does.
	_, err := ParseString(s.String())
	return err
}
