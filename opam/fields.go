package opam

import (
	"fmt"
	"strings"
)

// fieldErr puts the field name in an error, after its position.
func fieldErr(name string, err error) error {
	if e, ok := err.(*Error); ok {
		c := *e
		if !strings.HasPrefix(c.Msg, "field "+name+":") {
			c.Msg = "field " + name + ": " + c.Msg
		}
		return &c
	}
	return fmt.Errorf("field %s: %w", name, err)
}

func (f *File) errAt(v *Value, format string, args ...any) error {
	return &Error{Filename: f.Filename, Pos: v.Pos, Msg: fmt.Sprintf(format, args...)}
}

// StringField returns the string value of a field, "" when absent or not a string.
func (f *File) StringField(name string) string {
	if v, ok := f.Field(name); ok && v.Kind == KString {
		return v.S
	}
	return ""
}

// StringList returns a field holding a string or a list of strings.
func (f *File) StringList(name string) ([]string, error) {
	v, ok := f.Field(name)
	if !ok {
		return nil, nil
	}
	return f.stringList(name, v)
}

func (f *File) stringList(name string, v *Value) ([]string, error) {
	var out []string
	for _, e := range v.Elems() {
		if e.Kind != KString {
			return out, f.errAt(&e, "field %s: expected a string, found %s", name, e.Kind)
		}
		out = append(out, e.S)
	}
	return out, nil
}

// OpamVersion is the opam-version field.
func (f *File) OpamVersion() string { return f.StringField("opam-version") }

// Name is the name field ("" when absent: in a repository the directory gives it).
func (f *File) Name() PackageName { return PackageName(f.StringField("name")) }

// Version is the version field ("" when absent).
func (f *File) Version() Version { return Version(f.StringField("version")) }

// Maintainer lists the maintainer field.
func (f *File) Maintainer() []string { l, _ := f.StringList("maintainer"); return l }

// Authors lists the authors field.
func (f *File) Authors() []string { l, _ := f.StringList("authors"); return l }

// License lists the license field.
func (f *File) License() []string { l, _ := f.StringList("license"); return l }

// Homepage lists the homepage field.
func (f *File) Homepage() []string { l, _ := f.StringList("homepage"); return l }

// BugReports lists the bug-reports field.
func (f *File) BugReports() []string { l, _ := f.StringList("bug-reports"); return l }

// DevRepo is the dev-repo field.
func (f *File) DevRepo() string { return f.StringField("dev-repo") }

// Synopsis is the synopsis field.
func (f *File) Synopsis() string { return f.StringField("synopsis") }

// Description is the description field.
func (f *File) Description() string { return f.StringField("description") }

// Tags lists the tags field.
func (f *File) Tags() []string { l, _ := f.StringList("tags"); return l }

// Flags lists the flags field (light-uninstall, verbose, plugin, compiler, conf,
// avoid-version, deprecated, ...).
func (f *File) Flags() []string {
	v, ok := f.Field("flags")
	if !ok {
		return nil
	}
	var out []string
	for _, e := range v.Elems() {
		if e.Kind == KIdent || e.Kind == KString {
			out = append(out, e.S)
		}
	}
	return out
}

// HasFlag reports whether the flags field holds flag.
func (f *File) HasFlag(flag string) bool {
	for _, x := range f.Flags() {
		if x == flag {
			return true
		}
	}
	return false
}

func (f *File) formula(name string, conj bool) (Formula[Dependency], error) {
	v, ok := f.Field(name)
	if !ok {
		return Formula[Dependency]{}, nil
	}
	fm, err := ParseFilteredFormula(f.Filename, v, conj)
	if err != nil {
		return fm, fieldErr(name, err)
	}
	return fm, nil
}

// Depends is the depends field: all of it is required.
func (f *File) Depends() (Formula[Dependency], error) { return f.formula("depends", true) }

// Depopts is the depopts field: optional dependencies, a list meaning any of them.
func (f *File) Depopts() (Formula[Dependency], error) { return f.formula("depopts", false) }

// Conflicts is the conflicts field: the package cannot be installed with any of them.
func (f *File) Conflicts() (Formula[Dependency], error) { return f.formula("conflicts", false) }

// ConflictClass lists the conflict-class field.
func (f *File) ConflictClass() []PackageName {
	l, _ := f.StringList("conflict-class")
	out := make([]PackageName, len(l))
	for i, s := range l {
		out[i] = PackageName(s)
	}
	return out
}

// Available is the available field as a filter (true when absent).
func (f *File) Available() (Filter, error) {
	v, ok := f.Field("available")
	if !ok {
		return Filter{Kind: FilterBool, B: true}, nil
	}
	// opam accepts `available: [ filter ]` as well.
	if v.Kind == KList {
		fl, err := ParseFilterList(f.Filename, v.Sub)
		if err != nil {
			return fl, fieldErr("available", err)
		}
		return fl, nil
	}
	fl, err := ParseFilter(f.Filename, v)
	if err != nil {
		return fl, fieldErr("available", err)
	}
	return fl, nil
}

// Arg is one argument of a command: a string (with %{}% interpolations) or a
// variable, run only when Filter holds (Filter is nil when there is none).
type Arg struct {
	Value  Value
	Filter *Filter
}

// Command is one command of build, install, run-test, remove: its arguments and the
// filter deciding whether it runs (nil when there is none).
type Command struct {
	Args   []Arg
	Filter *Filter
	Pos    Pos
}

// Expand returns the arguments of the command that apply under env, interpolated.
// ok is false when the command itself is filtered out.
func (c *Command) Expand(env Env) (args []string, ok bool) {
	if c.Filter != nil && !c.Filter.EvalBool(env, false) {
		return nil, false
	}
	for _, a := range c.Args {
		if a.Filter != nil && !a.Filter.EvalBool(env, false) {
			continue
		}
		switch a.Value.Kind {
		case KString:
			args = append(args, Interpolate(a.Value.S, env))
		case KIdent:
			args = append(args, lookup(env, a.Value.S).String())
		}
	}
	return args, true
}

func (f *File) optFilter(opts []Value) (*Filter, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	fl, err := ParseFilterList(f.Filename, opts)
	if err != nil {
		return nil, err
	}
	return &fl, nil
}

// Commands reads a command-list field (build, install, run-test, remove, ...).
// A single command not wrapped in a list of lists is accepted, as opam does.
func (f *File) Commands(name string) ([]Command, error) {
	v, ok := f.Field(name)
	if !ok {
		return nil, nil
	}
	elems := v.Elems()
	// `build: ["make" "all"]` is one command, not two.
	single := true
	for i := range elems {
		b, _ := elems[i].Strip()
		if b.Kind == KList {
			single = false
		}
	}
	if single && len(elems) > 0 {
		elems = []Value{{Kind: KList, Sub: elems, Pos: v.Pos}}
	}
	var out []Command
	for i := range elems {
		base, opts := elems[i].Strip()
		if base.Kind != KList {
			return nil, f.errAt(base, "field %s: expected a command (a list of arguments), found %s", name, base.Kind)
		}
		cf, err := f.optFilter(opts)
		if err != nil {
			return nil, fieldErr(name, err)
		}
		c := Command{Filter: cf, Pos: base.Pos}
		for j := range base.Sub {
			a, aopts := base.Sub[j].Strip()
			if a.Kind != KString && a.Kind != KIdent {
				return nil, f.errAt(a, "field %s: expected a string or variable as argument, found %s", name, a.Kind)
			}
			af, err := f.optFilter(aopts)
			if err != nil {
				return nil, fieldErr(name, err)
			}
			c.Args = append(c.Args, Arg{Value: *a, Filter: af})
		}
		out = append(out, c)
	}
	return out, nil
}

// Build is the build field.
func (f *File) Build() ([]Command, error) { return f.Commands("build") }

// Install is the install field.
func (f *File) Install() ([]Command, error) { return f.Commands("install") }

// RunTest is the run-test field.
func (f *File) RunTest() ([]Command, error) { return f.Commands("run-test") }

// Remove is the remove field.
func (f *File) Remove() ([]Command, error) { return f.Commands("remove") }

// Checksum is one checksum, "algo=hex".
type Checksum struct {
	Algo string // md5, sha256, sha512
	Hex  string
}

func (c Checksum) String() string { return c.Algo + "=" + c.Hex }

// ParseChecksum splits "algo=hex"; a bare 32-digit hex string is an md5.
func ParseChecksum(s string) (Checksum, bool) {
	algo, hex, ok := strings.Cut(s, "=")
	if !ok {
		if len(s) == 32 && isHex(s) {
			return Checksum{"md5", s}, true
		}
		return Checksum{}, false
	}
	want := map[string]int{"md5": 32, "sha256": 64, "sha512": 128}[algo]
	if want == 0 || len(hex) != want || !isHex(hex) {
		return Checksum{Algo: algo, Hex: hex}, false
	}
	return Checksum{algo, hex}, true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if _, ok := hexVal(s[i]); !ok {
			return false
		}
	}
	return true
}

// URL is the url section (or one extra-source): where the sources come from.
type URL struct {
	Src       string
	Checksums []Checksum
	Mirrors   []string
	// BadChecksums holds checksum strings that are not algo=hex of the right length.
	BadChecksums []string
	Pos          Pos
}

func (f *File) urlSection(it *Item) (*URL, error) {
	u := &URL{Pos: it.Pos}
	for i := range it.Section.Items {
		x := &it.Section.Items[i]
		if x.Section != nil {
			continue
		}
		switch x.Name {
		case "src", "archive", "http", "git", "local":
			if x.Value.Kind != KString {
				return nil, f.errAt(&x.Value, "url %s: expected a string", x.Name)
			}
			u.Src = x.Value.S
		case "checksum":
			l, err := f.stringList("checksum", &x.Value)
			if err != nil {
				return nil, err
			}
			for _, s := range l {
				if c, ok := ParseChecksum(s); ok {
					u.Checksums = append(u.Checksums, c)
				} else {
					u.BadChecksums = append(u.BadChecksums, s)
				}
			}
		case "mirrors":
			l, err := f.stringList("mirrors", &x.Value)
			if err != nil {
				return nil, err
			}
			u.Mirrors = l
		}
	}
	return u, nil
}

// URL is the url section, nil when absent.
func (f *File) URL() (*URL, error) {
	it, ok := f.Section("url")
	if !ok {
		return nil, nil
	}
	return f.urlSection(it)
}

// ExtraSource is an extra-source section: a file fetched next to the sources.
type ExtraSource struct {
	Name string
	URL
}

// ExtraSources lists the extra-source sections.
func (f *File) ExtraSources() ([]ExtraSource, error) {
	var out []ExtraSource
	for i := range f.Items {
		it := &f.Items[i]
		if it.Section != nil && it.Name == "extra-source" {
			u, err := f.urlSection(it)
			if err != nil {
				return nil, err
			}
			out = append(out, ExtraSource{Name: it.Section.Label, URL: *u})
		}
	}
	return out, nil
}

// PinDepend is an entry of pin-depends: a package pinned to a URL.
type PinDepend struct {
	Package Package
	URL     string
}

// PinDepends reads the pin-depends field: `[ "name.version" "url" ]` or a list of them.
func (f *File) PinDepends() ([]PinDepend, error) {
	v, ok := f.Field("pin-depends")
	if !ok {
		return nil, nil
	}
	elems := v.Elems()
	if len(elems) == 2 && elems[0].Kind == KString && elems[1].Kind == KString {
		elems = []Value{*v}
	}
	var out []PinDepend
	for i := range elems {
		e := &elems[i]
		if e.Kind != KList || len(e.Sub) != 2 || e.Sub[0].Kind != KString || e.Sub[1].Kind != KString {
			return nil, f.errAt(e, "field pin-depends: expected [\"name.version\" \"url\"]")
		}
		p, ok := ParsePackage(e.Sub[0].S)
		if !ok {
			return nil, f.errAt(&e.Sub[0], "field pin-depends: %q is not name.version", e.Sub[0].S)
		}
		out = append(out, PinDepend{Package: p, URL: e.Sub[1].S})
	}
	return out, nil
}

// ExtraFile is an entry of extra-files: a file of the package's files/ directory and
// its checksum.
type ExtraFile struct {
	Name     string
	Checksum string
}

// ExtraFiles reads the extra-files field.
func (f *File) ExtraFiles() ([]ExtraFile, error) {
	v, ok := f.Field("extra-files")
	if !ok {
		return nil, nil
	}
	elems := v.Elems()
	if len(elems) == 2 && elems[0].Kind == KString && elems[1].Kind == KString {
		elems = []Value{*v}
	}
	var out []ExtraFile
	for i := range elems {
		e := &elems[i]
		if e.Kind != KList || len(e.Sub) != 2 || e.Sub[0].Kind != KString || e.Sub[1].Kind != KString {
			return nil, f.errAt(e, "field extra-files: expected [\"file\" \"checksum\"]")
		}
		out = append(out, ExtraFile{Name: e.Sub[0].S, Checksum: e.Sub[1].S})
	}
	return out, nil
}

// Depext is an entry of depexts: system packages required when Filter holds (nil
// when there is none).
type Depext struct {
	Packages []string
	Filter   *Filter
}

// Depexts reads the depexts field, `[["pkg" ...] {filter} ...]`.
func (f *File) Depexts() ([]Depext, error) {
	v, ok := f.Field("depexts")
	if !ok {
		return nil, nil
	}
	var out []Depext
	elems := v.Elems()
	// `depexts: ["libgmp-dev"] {os-family = "debian"}` and a bare list of strings are
	// single entries.
	if v.Kind == KList && len(elems) > 0 {
		if b, _ := elems[0].Strip(); b.Kind == KString {
			elems = []Value{*v}
		}
	}
	for i := range elems {
		base, opts := elems[i].Strip()
		if d, ok := legacyDepext(base); ok && len(opts) == 0 {
			out = append(out, d)
			continue
		}
		var pk []string
		for _, s := range base.Elems() {
			if s.Kind != KString {
				return nil, f.errAt(&s, "field depexts: expected a system package name, found %s", s.Kind)
			}
			pk = append(pk, s.S)
		}
		fl, err := f.optFilter(opts)
		if err != nil {
			return nil, fieldErr("depexts", err)
		}
		out = append(out, Depext{Packages: pk, Filter: fl})
	}
	return out, nil
}

// legacyDepext reads the opam 1.2 form `[["tag" ...] ["pkg" ...]]`, whose tags
// name an OS, family or distribution that must all match.
func legacyDepext(v *Value) (Depext, bool) {
	if v.Kind != KList || len(v.Sub) != 2 || v.Sub[0].Kind != KList || v.Sub[1].Kind != KList {
		return Depext{}, false
	}
	var d Depext
	for _, p := range v.Sub[1].Sub {
		if p.Kind != KString {
			return Depext{}, false
		}
		d.Packages = append(d.Packages, p.S)
	}
	var f *Filter
	for _, t := range v.Sub[0].Sub {
		if t.Kind != KString {
			return Depext{}, false
		}
		var any *Filter
		for _, name := range []string{"os", "os-family", "os-distribution"} {
			eq := Filter{Kind: FilterOp, Op: OpEq, Pos: t.Pos, Sub: []Filter{{Kind: FilterIdent, S: name}, {Kind: FilterString, S: t.S}}}
			if any == nil {
				any = &eq
			} else {
				any = &Filter{Kind: FilterOr, Sub: []Filter{*any, eq}, Pos: t.Pos}
			}
		}
		if f == nil {
			f = any
		} else {
			f = &Filter{Kind: FilterAnd, Sub: []Filter{*f, *any}, Pos: t.Pos}
		}
	}
	d.Filter = f
	return d, true
}

// Extensions returns the x-* fields by name.
func (f *File) Extensions() map[string]*Value {
	var out map[string]*Value
	for i := range f.Items {
		it := &f.Items[i]
		if it.Section == nil && strings.HasPrefix(it.Name, "x-") {
			if out == nil {
				out = map[string]*Value{}
			}
			out[it.Name] = &it.Value
		}
	}
	return out
}
