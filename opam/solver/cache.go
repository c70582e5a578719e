package solver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// cacheMagic starts a cached universe; it changes whenever what is cached, or how
// the solver reads opam files, changes.
const cacheMagic = "kiln-universe-3\n"

// ErrStaleCache says a cached universe is not the one asked for (another commit,
// platform, flags or format).
var ErrStaleCache = errors.New("stale universe cache")

// WriteCache writes u, which must come from a repository loaded from a git commit,
// so that ReadCache can rebuild it without reading the repository. The opam files
// are not written: their git object ids are, for repository.Fill.
func (u *Universe) WriteCache(w io.Writer) error {
	if u.Repo.Commit == "" {
		return errors.New("universe cache: the repository was not loaded from a git commit")
	}
	u.fillListDeps()
	e := &encoder{strs: map[string]uint64{}}
	pkgs := append(u.Repo.Packages(), u.Repo.Shadowed()...)
	index := make(map[*repository.Package]uint64, len(pkgs))
	e.uint(uint64(len(u.Repo.Stray)))
	for _, s := range u.Repo.Stray {
		e.str(s)
	}
	e.uint(uint64(len(pkgs)))
	for i, p := range pkgs {
		index[p] = uint64(i)
		e.str(string(p.Name))
		e.str(string(p.Version))
		e.str(p.Path)
		e.str(p.OID)
		errText := ""
		if p.Err != nil {
			errText = p.Err.Error()
		}
		e.str(errText)
		e.uint(uint64(len(p.Extra)))
		for _, x := range p.Extra {
			e.str(x)
		}
	}
	// The versions of each name, as one group preceded by its length in bytes, so
	// that a reader can decode a group when it is first needed.
	byName := u.all()
	names := slices.Sorted(maps.Keys(byName))
	e.uint(uint64(len(names)))
	for _, name := range names {
		outer := e.buf
		e.buf = nil
		for _, c := range byName[name] {
			pi, ok := index[c.Pkg]
			if !ok {
				return fmt.Errorf("universe cache: %s is not in the repository", c)
			}
			e.cand(pi, c)
		}
		group := e.buf
		e.buf = outer
		e.str(string(name))
		e.uint(uint64(len(byName[name])))
		e.uint(uint64(len(group)))
		e.buf = append(e.buf, group...)
	}
	// The key, then the strings, then what refers to them.
	var head bytes.Buffer
	head.WriteString(cacheMagic)
	k := &encoder{}
	k.raw(u.Repo.Commit)
	k.uint(uint64(len(u.Platform)))
	for _, name := range slices.Sorted(maps.Keys(u.Platform)) {
		k.raw(name)
		k.raw(u.Platform[name])
	}
	k.bools(u.Flags.WithTest, u.Flags.WithDoc)
	k.uint(uint64(len(e.list)))
	for _, s := range e.list {
		k.raw(s)
	}
	head.Write(k.buf)
	if _, err := w.Write(head.Bytes()); err != nil {
		return fmt.Errorf("universe cache: %w", err)
	}
	sum := crc32.NewIEEE()
	sum.Write(head.Bytes())
	sum.Write(e.buf)
	e.buf = binary.BigEndian.AppendUint32(e.buf, sum.Sum32())
	if _, err := w.Write(e.buf); err != nil {
		return fmt.Errorf("universe cache: %w", err)
	}
	return nil
}

func (e *encoder) cand(pkg uint64, c *Cand) {
	e.uint(pkg)
	e.str(string(c.Version))
	e.str(c.Unavailable)
	e.str(c.deadWhy)
	e.bools(c.Avoid, c.Aux, c.dead)
	e.uint(uint64(len(c.Deps)))
	for _, cl := range c.Deps {
		e.atoms(cl)
	}
	e.atoms(c.Conflicts)
	e.atoms(c.Depopts)
	// Most often the list dependencies are the atoms of the clauses.
	same := sameAtoms(c.listDeps, c.Deps)
	e.bools(same)
	if !same {
		e.atoms(c.listDeps)
	}
	e.uint(uint64(len(c.Classes)))
	for _, k := range c.Classes {
		e.str(string(k))
	}
	e.uint(uint64(len(c.counts)))
	for _, k := range c.counts {
		e.uint(uint64(k))
	}
	e.atomFormula(c.Def)
}

// ReadCache rebuilds a universe from what WriteCache wrote, checking that it is the
// universe of commit for platform p with flags; it returns ErrStaleCache when not.
// The packages of its repository have no File: repository.Fill reads those needed.
func ReadCache(data []byte, commit string, p Platform, flags Flags) (*Universe, error) {
	if !bytes.HasPrefix(data, []byte(cacheMagic)) || len(data) < len(cacheMagic)+4 {
		return nil, ErrStaleCache
	}
	d := &decoder{data: data[:len(data)-4], off: len(cacheMagic)}
	if d.raw() != commit {
		return nil, ErrStaleCache
	}
	plat := Platform{}
	for range d.count() {
		k := d.raw()
		plat[k] = d.raw()
	}
	var got Flags
	got.WithTest, got.WithDoc = d.bool2()
	if d.err != nil {
		return nil, d.err
	}
	if !maps.Equal(plat, p) || got != flags {
		return nil, ErrStaleCache
	}
	if crc32.ChecksumIEEE(d.data) != binary.BigEndian.Uint32(data[len(data)-4:]) {
		return nil, errors.New("universe cache: checksum mismatch")
	}
	d.strings()
	stray := make([]string, d.count())
	for i := range stray {
		stray[i] = d.str()
	}
	pkgs := make([]*repository.Package, d.count())
	store := make([]repository.Package, len(pkgs))
	for i := range pkgs {
		pk := &store[i]
		pk.Name, pk.Version = opam.PackageName(d.str()), opam.Version(d.str())
		pk.Path, pk.OID = d.str(), d.str()
		if e := d.str(); e != "" {
			pk.Err = errors.New(e)
		}
		if n := d.count(); n > 0 {
			pk.Extra = make([]string, n)
			for j := range pk.Extra {
				pk.Extra[j] = d.str()
			}
		}
		pkgs[i] = pk
	}
	if d.err != nil {
		return nil, d.err
	}
	names := d.count()
	lz := &lazyCands{d: d, pkgs: pkgs, groups: make(map[opam.PackageName]group, names)}
	for range names {
		name := opam.PackageName(d.str())
		n, size := d.count(), d.count()
		lz.groups[name] = group{off: d.off, n: n}
		d.off += size
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(d.data) {
		return nil, fmt.Errorf("universe cache: %d bytes left over", len(d.data)-d.off)
	}
	u := &Universe{Repo: repository.New(commit, pkgs, stray), Platform: p, Flags: flags, env: opam.MapEnv(p),
		byName: make(map[opam.PackageName][]*Cand, names), lazy: lz}
	// Every version's list dependencies are in the cache.
	u.listOnce.Do(func() {})
	return u, nil
}

// sameAtoms reports whether as are the atoms of cls, in order.
func sameAtoms(as []opam.Atom, cls [][]opam.Atom) bool {
	i := 0
	for _, cl := range cls {
		for _, a := range cl {
			if i >= len(as) || as[i].Name != a.Name || !sameConstraint(as[i].Constraint, a.Constraint) {
				return false
			}
			i++
		}
	}
	return i == len(as)
}

func sameConstraint(f, g opam.Formula[opam.Constraint]) bool {
	if f.Kind != g.Kind || f.Atom != g.Atom || len(f.Sub) != len(g.Sub) {
		return false
	}
	for i := range f.Sub {
		if !sameConstraint(f.Sub[i], g.Sub[i]) {
			return false
		}
	}
	return true
}

// flatten lists the atoms of cls, in a slice cut from block.
func flatten(block *[]opam.Atom, cls [][]opam.Atom) []opam.Atom {
	n := 0
	for _, cl := range cls {
		n += len(cl)
	}
	if n == 0 {
		return nil
	}
	out := cut(block, n)[:0]
	for _, cl := range cls {
		out = append(out, cl...)
	}
	return out
}

// lazyCands holds the versions of a cached universe not decoded yet, by name.
type lazyCands struct {
	d      *decoder
	pkgs   []*repository.Package
	groups map[opam.PackageName]group
}

// group locates the n versions of a name in the cache.
type group struct{ off, n int }

// decode decodes the versions of a name (nil when the cache has none).
func (lz *lazyCands) decode(name opam.PackageName) []*Cand {
	g, ok := lz.groups[name]
	if !ok {
		return nil
	}
	delete(lz.groups, name)
	d := lz.d
	d.off = g.off
	cands := make([]Cand, g.n)
	out := make([]*Cand, g.n)
	for i := range cands {
		c := &cands[i]
		pi := d.uint()
		if pi >= uint64(len(lz.pkgs)) {
			d.fail()
			return nil
		}
		c.Pkg = lz.pkgs[pi]
		c.Name, c.Version = name, opam.Version(d.str())
		c.Unavailable, c.deadWhy = d.str(), d.str()
		c.Avoid, c.Aux, c.dead = d.bool3()
		if n := d.count(); n > 0 {
			c.Deps = make([][]opam.Atom, n)
			for j := range c.Deps {
				c.Deps[j] = d.atoms()
			}
		}
		c.Conflicts, c.Depopts = d.atoms(), d.atoms()
		if same, _ := d.bool2(); same {
			c.listDeps = flatten(&d.atomBlock, c.Deps)
		} else {
			c.listDeps = d.atoms()
		}
		if n := d.count(); n > 0 {
			c.Classes = make([]opam.PackageName, n)
			for j := range c.Classes {
				c.Classes[j] = opam.PackageName(d.str())
			}
		}
		c.counts = cut(&d.intBlock, d.count())
		for j := range c.counts {
			c.counts[j] = int(d.uint())
		}
		if len(c.counts) != len(c.Deps) {
			// The search reads one count per clause.
			d.fail()
		}
		c.Def = d.atomFormula(0)
		if d.err != nil {
			return nil
		}
		out[i] = c
	}
	return out
}

// encoder writes unsigned varints, and strings as indexes in a table of strings.
type encoder struct {
	buf  []byte
	strs map[string]uint64
	list []string
}

func (e *encoder) uint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }

func (e *encoder) raw(s string) {
	e.uint(uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) str(s string) {
	i, ok := e.strs[s]
	if !ok {
		i = uint64(len(e.list))
		e.strs[s] = i
		e.list = append(e.list, s)
	}
	e.uint(i)
}

func (e *encoder) bools(bs ...bool) {
	var b byte
	for i, x := range bs {
		if x {
			b |= 1 << i
		}
	}
	e.buf = append(e.buf, b)
}

func (e *encoder) atoms(as []opam.Atom) {
	e.uint(uint64(len(as)))
	for _, a := range as {
		e.str(string(a.Name))
		e.constraint(a.Constraint)
	}
}

func (e *encoder) constraint(f opam.Formula[opam.Constraint]) {
	e.buf = append(e.buf, byte(f.Kind))
	switch f.Kind {
	case opam.FAtom:
		e.buf = append(e.buf, byte(f.Atom.Op))
		e.str(string(f.Atom.Version))
	case opam.FAnd, opam.FOr:
		e.uint(uint64(len(f.Sub)))
		for _, g := range f.Sub {
			e.constraint(g)
		}
	}
}

func (e *encoder) atomFormula(f opam.Formula[opam.Atom]) {
	e.buf = append(e.buf, byte(f.Kind))
	switch f.Kind {
	case opam.FAtom:
		e.atoms([]opam.Atom{f.Atom})
	case opam.FAnd, opam.FOr:
		e.uint(uint64(len(f.Sub)))
		for _, g := range f.Sub {
			e.atomFormula(g)
		}
	}
}

// decoder reads what encoder wrote; the first error sticks and later reads give
// zero values.
type decoder struct {
	data []byte
	off  int
	strs []string
	err  error
	// Slices are cut from larger blocks, to allocate less.
	atomBlock []opam.Atom
	subBlock  []opam.Formula[opam.Constraint]
	intBlock  []int
}

// cut returns a slice of n elements cut from *block, refilled when too short.
func cut[T any](block *[]T, n int) []T {
	if n > len(*block) {
		*block = make([]T, max(n, 4096))
	}
	s := (*block)[:n:n]
	*block = (*block)[n:]
	return s
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("universe cache: corrupt at byte %d", d.off)
	}
	d.off = len(d.data)
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.data[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

// count reads a length, which cannot exceed the bytes left.
func (d *decoder) count() int {
	n := d.uint()
	if n > uint64(len(d.data)-d.off) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) raw() string {
	n := d.count()
	s := string(d.data[d.off : d.off+n])
	d.off += n
	return s
}

// strings reads the table of strings, all cut from one string.
func (d *decoder) strings() {
	n := d.count()
	base := d.off
	type span struct{ from, to int }
	spans := make([]span, n)
	for i := range spans {
		l := d.count()
		spans[i] = span{d.off, d.off + l}
		d.off += l
	}
	if d.err != nil {
		return
	}
	all := string(d.data[base:d.off])
	d.strs = make([]string, n)
	for i, sp := range spans {
		d.strs[i] = all[sp.from-base : sp.to-base]
	}
}

func (d *decoder) str() string {
	i := d.uint()
	if i >= uint64(len(d.strs)) {
		d.fail()
		return ""
	}
	return d.strs[i]
}

func (d *decoder) byte() byte {
	if d.off >= len(d.data) {
		d.fail()
		return 0
	}
	b := d.data[d.off]
	d.off++
	return b
}

func (d *decoder) bool2() (bool, bool) {
	b := d.byte()
	return b&1 != 0, b&2 != 0
}

func (d *decoder) bool3() (bool, bool, bool) {
	b := d.byte()
	return b&1 != 0, b&2 != 0, b&4 != 0
}

func (d *decoder) atoms() []opam.Atom {
	n := d.count()
	if n == 0 {
		return nil
	}
	as := cut(&d.atomBlock, n)
	for i := range as {
		as[i].Name = opam.PackageName(d.str())
		as[i].Constraint = d.constraint(0)
	}
	return as
}

// maxNesting bounds the nesting of formulas read back, as the parser bounds it.
const maxNesting = 10000

func (d *decoder) constraint(depth int) opam.Formula[opam.Constraint] {
	var f opam.Formula[opam.Constraint]
	f.Kind = opam.FormulaKind(d.byte())
	switch f.Kind {
	case opam.FEmpty:
	case opam.FAtom:
		f.Atom.Op = opam.Op(d.byte())
		f.Atom.Version = opam.Version(d.str())
	case opam.FAnd, opam.FOr:
		if depth >= maxNesting {
			d.fail()
			return f
		}
		f.Sub = cut(&d.subBlock, d.count())
		for i := range f.Sub {
			f.Sub[i] = d.constraint(depth + 1)
		}
	default:
		d.fail()
	}
	return f
}

func (d *decoder) atomFormula(depth int) opam.Formula[opam.Atom] {
	var f opam.Formula[opam.Atom]
	f.Kind = opam.FormulaKind(d.byte())
	switch f.Kind {
	case opam.FEmpty:
	case opam.FAtom:
		if as := d.atoms(); len(as) == 1 {
			f.Atom = as[0]
		} else {
			d.fail()
		}
	case opam.FAnd, opam.FOr:
		if depth >= maxNesting {
			d.fail()
			return f
		}
		f.Sub = make([]opam.Formula[opam.Atom], d.count())
		for i := range f.Sub {
			f.Sub[i] = d.atomFormula(depth + 1)
		}
	default:
		d.fail()
	}
	return f
}
