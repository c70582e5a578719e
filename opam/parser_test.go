package opam

import (
	"strings"
	"testing"
)

func mustValue(t *testing.T, src string) Value {
	t.Helper()
	v, err := ParseValue("test", src)
	if err != nil {
		t.Fatalf("ParseValue(%q): %v", src, err)
	}
	return v
}

// shape prints a value fully parenthesised, to check how it was grouped.
func shape(v *Value) string {
	switch v.Kind {
	case KBool, KInt, KString, KIdent:
		return v.String()
	case KRelop, KEnvBinding:
		return "(" + shape(v.Lhs()) + v.Op.String() + shape(v.Rhs()) + ")"
	case KLogop:
		return "(" + shape(v.Lhs()) + " " + v.Op.String() + " " + shape(v.Rhs()) + ")"
	case KPrefixRelop, KPfxop:
		return "(" + v.Op.String() + shape(v.Arg()) + ")"
	case KList, KGroup, KOption:
		var parts []string
		for i := range v.Sub {
			parts = append(parts, shape(&v.Sub[i]))
		}
		switch v.Kind {
		case KList:
			return "[" + strings.Join(parts, " ") + "]"
		case KGroup:
			return "G(" + strings.Join(parts, " ") + ")"
		}
		return "O(" + parts[0] + " {" + strings.Join(parts[1:], " ") + "})"
	}
	return "?"
}

func TestPrecedence(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{`a & b | c`, `((a & b) | c)`},
		{`a | b & c`, `(a | (b & c))`},
		{`a & b & c`, `((a & b) & c)`},
		{`a | b | c`, `((a | b) | c)`},
		{`!a & b`, `((!a) & b)`},
		{`!a {b}`, `(!O(a {b}))`},
		{`a & b {c}`, `(a & O(b {c}))`},
		{`a = b & c != "d"`, `((a=b) & (c!="d"))`},
		{`!a = b`, `(!(a=b))`},
		{`?x`, `(?x)`},
		{`>= "1.0" & < "2.0"`, `((>="1.0") & (<"2.0"))`},
		{`"a" {>= "1" & build} "b"`, ``},
		{`["a" {>= "1" & build} "b"]`, `[O("a" {((>="1") & build)}) "b"]`},
		{`a {x} {y}`, `O(O(a {x}) {y})`},
		{`(a | b) & c`, `(G((a | b)) & c)`},
		{`PATH += "x"`, `(PATH+="x")`},
		{`PATH =+= "x"`, `(PATH=+="x")`},
		{`A := "x"`, `(A:="x")`},
		{`A =: "x"`, `(A=:"x")`},
		{`A =+ "x"`, `(A=+"x")`},
		{`~ "1.0"`, `(>="1.0")`},
		{`-12`, `-12`},
		{`1_000`, `1000`},
		{`ocaml:version >= "4.08"`, `(ocaml:version>="4.08")`},
		{`a+b:installed`, `a+b:installed`},
		{`_:version`, `_:version`},
		{`true & false`, `(true & false)`},
		{`truex`, `truex`},
		{`1a`, `1a`},
	} {
		if c.want == "" {
			if _, err := ParseValue("test", c.src); err == nil {
				t.Errorf("ParseValue(%q) accepted several values", c.src)
			}
			continue
		}
		v := mustValue(t, c.src)
		if got := shape(&v); got != c.want {
			t.Errorf("%s parsed as %s, want %s", c.src, got, c.want)
		}
	}
}

func TestAtoms(t *testing.T) {
	for _, c := range []struct {
		src  string
		kind Kind
		s    string
		i    int
		b    bool
	}{
		{`"a\"b\\c"`, KString, `a"b\c`, 0, false},
		{`"\n\t\r\b\ \'"`, KString, "\n\t\r\b '", 0, false},
		{`"\065\x41\x6a"`, KString, "AAj", 0, false},
		{"\"a\\\n    b\"", KString, "ab", 0, false},
		{"\"line1\nline2\"", KString, "line1\nline2", 0, false},
		{`"""a "quoted" word"""`, KString, `a "quoted" word`, 0, false},
		{`""""""`, KString, ``, 0, false},
		{`""`, KString, ``, 0, false},
		{`"""x\""""`, KString, `x"`, 0, false},
		{`foo-bar_baz`, KIdent, `foo-bar_baz`, 0, false},
		{`conf-gmp:installed`, KIdent, `conf-gmp:installed`, 0, false},
		{`42`, KInt, ``, 42, false},
		{`-7`, KInt, ``, -7, false},
		{`true`, KBool, ``, 0, true},
		{`false`, KBool, ``, 0, false},
	} {
		v := mustValue(t, c.src)
		if v.Kind != c.kind || v.S != c.s || v.I != c.i || v.B != c.b {
			t.Errorf("ParseValue(%q) = %v %q %d %v, want %v %q %d %v", c.src, v.Kind, v.S, v.I, v.B, c.kind, c.s, c.i, c.b)
		}
	}
}

func TestFileAndSections(t *testing.T) {
	src := `opam-version: "2.0" # comment
(* a (* nested *) comment *)
name: "foo"
depends: [
  "ocaml" {>= "4.08"}
  "dune" {>= "3.0" & build}
]
url {
  src: "https://example.com/foo.tar.gz"
  checksum: "sha256=` + strings.Repeat("a", 64) + `"
}
extra-source "patch.diff" {
  src: "https://example.com/p.diff"
  checksum: "md5=` + strings.Repeat("b", 32) + `"
}
x-ci-accept-failures: ["debian-11"]
`
	f, err := Parse("foo.opam", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	crlf, err := Parse("crlf.opam", []byte(strings.ReplaceAll(src, "\n", "\r\n")))
	if err != nil || !EqualFiles(f, crlf) {
		t.Errorf("CRLF line ends: %v", err)
	}
	if len(f.Items) != 6 {
		t.Fatalf("got %d items, want 6", len(f.Items))
	}
	if f.Name() != "foo" || f.OpamVersion() != "2.0" {
		t.Errorf("name %q opam-version %q", f.Name(), f.OpamVersion())
	}
	d, _ := f.Field("depends")
	if d.Pos != (Pos{4, 10}) {
		t.Errorf("depends value at %v, want 4:10", d.Pos)
	}
	if p := d.Sub[1].Pos; p != (Pos{6, 3}) {
		t.Errorf("dune at %v, want 6:3", p)
	}
	u, err := f.URL()
	if err != nil || u.Src != "https://example.com/foo.tar.gz" || len(u.Checksums) != 1 || u.Checksums[0].Algo != "sha256" {
		t.Errorf("URL() = %+v, %v", u, err)
	}
	es, err := f.ExtraSources()
	if err != nil || len(es) != 1 || es[0].Name != "patch.diff" || es[0].Checksums[0].Algo != "md5" {
		t.Errorf("ExtraSources() = %+v, %v", es, err)
	}
	if x := f.Extensions(); len(x) != 1 || x["x-ci-accept-failures"] == nil {
		t.Errorf("Extensions() = %v", x)
	}
	g, err := ParseString("printed", f.String())
	if err != nil || !EqualFiles(f, g) {
		t.Errorf("round trip failed (%v):\n%s", err, f.String())
	}
}

func TestErrorsHavePositions(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"name: \"x\"\ndepends: [ \"a\" {>= } ]", "f:2:20: unexpected '}'"},
		{"name: \"x", "f:1:7: unterminated string"},
		{"name: \"x\\q\"", "f:1:9: illegal escape sequence"},
		{"(* open", "f:1:1: unterminated comment"},
		{"name \"x\"", "f:1:9: unexpected end of file, expected '{'"},
		{"name: \"x\" \"y\"", "f:1:11: unexpected string \"y\", expected a field name"},
		{"x: [a b", "f:1:8: unexpected end of file"},
		{"x: a = b = c", "f:1:10: unexpected comparison operator '='"},
		{"x: \"\\300\"", "f:1:5: illegal escape sequence \\300"},
		{"x: $", "f:1:4: \"$\" is not a valid token"},
		{"x: a =:= b", "f:1:6: \"=:=\" is not a valid"},
		{"url {\n  src: \"a\"\n", "f:3:1: unexpected end of file, expected '}'"},
		{"x: " + strings.Repeat("[", 10001), "f:1:10004: values nested more than 10000 deep"},
		{"x: " + strings.Repeat("(", 10001), "values nested more than 10000 deep"},
		{"x: " + strings.Repeat("!", 10001) + "a", "values nested more than 10000 deep"},
		{"x: a" + strings.Repeat(" {b", 10001), "values nested more than 10000 deep"},
		{"x: 99999999999999999999", "invalid integer"},
		{"x: a\r y: b", "f:1:5: '\\r' is not a valid token"},
	} {
		_, err := Parse("f", []byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", c.src, err, c.want)
		}
	}
}

func TestPrinterRoundTripsBuiltValues(t *testing.T) {
	a := Value{Kind: KIdent, S: "a"}
	b := Value{Kind: KIdent, S: "b"}
	c := Value{Kind: KIdent, S: "c"}
	or := Value{Kind: KLogop, Op: OpOr, Sub: []Value{a, b}}
	and := Value{Kind: KLogop, Op: OpAnd, Sub: []Value{or, c}}
	if got := and.String(); got != "(a | b) & c" {
		t.Errorf("printed %q", got)
	}
	neq := Value{Kind: KPfxop, Op: OpNot, Sub: []Value{{Kind: KPrefixRelop, Op: OpEq, Sub: []Value{{Kind: KString, S: "1"}}}}}
	back := mustValue(t, neq.String())
	if !Equal(&neq, &back) {
		t.Errorf("%s reparsed as %s", neq.String(), shape(&back))
	}
	for _, s := range []string{"a\"b", "x\\y", "multi\nline \"quoted\"", "ends with quote\n\"", "\"\"\"\n", "tab\there"} {
		v := Value{Kind: KString, S: s}
		back := mustValue(t, v.String())
		if back.S != s {
			t.Errorf("string %q printed as %s reparsed as %q", s, v.String(), back.S)
		}
	}
}
