package opam

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func parseDeps(t *testing.T, src string) Formula[Dependency] {
	t.Helper()
	v := mustValue(t, src)
	f, err := ParseFilteredFormula("test", &v, true)
	if err != nil {
		t.Fatalf("ParseFilteredFormula(%s): %v", src, err)
	}
	return f
}

func parseFilter(t *testing.T, src string) Filter {
	t.Helper()
	v := mustValue(t, src)
	f, err := ParseFilter("test", &v)
	if err != nil {
		t.Fatalf("ParseFilter(%s): %v", src, err)
	}
	return f
}

func TestFilterEval(t *testing.T) {
	env := MapEnv(map[string]string{
		"os": "linux", "arch": "x86_64", "os-family": "debian", "os-distribution": "debian",
		"ocaml:version": "4.14.1", "with-test": "false", "conf-gmp:installed": "true",
		"foo:installed": "false", "opam-version": "2.1.5", "empty": "",
	})
	for _, c := range []struct {
		src  string
		want string
	}{
		{`os = "linux"`, "true"},
		{`os != "linux"`, "false"},
		{`arch = "arm64" | os = "linux"`, "true"},
		{`ocaml:version >= "4.08"`, "true"},
		{`ocaml:version < "4.14.1~"`, "false"},
		{`ocaml:version < "5.0"`, "true"},
		{`!with-test`, "true"},
		{`with-test & undefined-var`, "false"}, // false absorbs
		{`os = "linux" | undefined-var`, "true"},
		{`os = "linux" & undefined-var`, "<undefined>"},
		{`undefined-var = "x"`, "<undefined>"},
		{`!undefined-var`, "<undefined>"},
		{`?undefined-var`, "false"},
		{`?os`, "true"},
		{`conf-gmp+foo:installed`, "false"},
		{`conf-gmp:installed`, "true"},
		{`"%{os}%-%{arch}%" = "linux-x86_64"`, "true"},
		{`"%{conf-gmp:installed?yes:no}%" = "yes"`, "true"},
		{`"%{nothing?yes:no}%" = "no"`, "true"},
		{`opam-version >= "2.1"`, "true"},
		{`(os = "macos")`, "false"},
		{`"true"`, "true"},
	} {
		f := parseFilter(t, c.src)
		if got := f.Eval(env).String(); got != c.want {
			t.Errorf("%s = %s, want %s", c.src, got, c.want)
		}
	}
}

func TestInterpolate(t *testing.T) {
	env := MapEnv(map[string]string{"name": "foo", "lib": "/l", "jobs": "4", "dune:installed": "true"})
	for _, c := range []struct{ in, want string }{
		{"-j%{jobs}%", "-j4"},
		{"%{lib}%/%{name}%", "/l/foo"},
		{"%{undefined}%", "%{undefined}%"},
		{"%{dune:installed?--with-dune:}%", "--with-dune"},
		{"no vars", "no vars"},
		{"%{unclosed", "%{unclosed"},
	} {
		if got := Interpolate(c.in, env); got != c.want {
			t.Errorf("Interpolate(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestResolveDependencies(t *testing.T) {
	deps := parseDeps(t, `[
		"ocaml" {>= "4.08" & < "5.0"}
		"dune" {build & >= "3.0"}
		"alcotest" {with-test}
		"odoc" {with-doc}
		"foo-linux" {os = "linux"}
		"foo-mac" {os = "macos"}
		("a" | "b" {>= "2"})
		"self-dep" {= version}
		"post-dep" {post}
		"neg" {!(>= "1.0" & < "2.0")}
		"dev-only" {dev}
		"unknown" {undefined-var}
	]`)
	d := DepsEnv{Build: true, Self: Package{"me", "1.2"}, Vars: MapEnv(map[string]string{"os": "linux"})}
	got := d.Resolve(deps).Format(Atom.String)
	want := `"ocaml" {>= "4.08" & < "5.0"} & "dune" {>= "3.0"} & "foo-linux" & ("a" | "b" {>= "2"}) & "self-dep" {= "1.2"} & "neg" {< "1.0" | >= "2.0"}`
	if got != want {
		t.Errorf("resolved:\n got %s\nwant %s", got, want)
	}
	d.WithTest, d.Undefined = true, true
	got = d.Resolve(deps).Format(Atom.String)
	if !strings.Contains(got, `"alcotest"`) || !strings.Contains(got, `"unknown"`) {
		t.Errorf("with-test and undefined=true: %s", got)
	}
	// A filtered-out alternative disappears from a disjunction, as in opam.
	alt := parseDeps(t, `[("a" {os = "macos"} | "b")]`)
	d = DepsEnv{Vars: MapEnv(map[string]string{"os": "linux"})}
	if got := d.Resolve(alt).Format(Atom.String); got != `"b"` {
		t.Errorf("alternative: %s", got)
	}
}

func TestAtomMatchesAndSatisfied(t *testing.T) {
	deps := parseDeps(t, `["ocaml" {>= "4.08" & < "5.0"} ("lwt" {>= "5"} | "async")]`)
	r := (&DepsEnv{}).Resolve(deps)
	inst := map[PackageName]Version{"ocaml": "4.14.1", "lwt": "5.6.1"}
	look := func(n PackageName) (Version, bool) { v, ok := inst[n]; return v, ok }
	if !Satisfied(r, look) {
		t.Errorf("%s not satisfied by %v", r.Format(Atom.String), inst)
	}
	inst["ocaml"] = "5.0~beta1"
	if !Satisfied(r, look) {
		t.Errorf("5.0~beta1 < 5.0 should satisfy < 5.0")
	}
	inst["ocaml"] = "5.0.0"
	if Satisfied(r, look) {
		t.Errorf("ocaml 5.0.0 should not satisfy < 5.0")
	}
	inst["ocaml"] = "4.14.1"
	delete(inst, "lwt")
	if Satisfied(r, look) {
		t.Errorf("missing lwt|async should fail")
	}
	if got := Names(r); len(got) != 3 {
		t.Errorf("Names = %v", got)
	}
	a := r.Atoms()[0]
	if !a.Matches(Package{"ocaml", "4.08"}) || a.Matches(Package{"ocaml", "4.07.1"}) || a.Matches(Package{"dune", "4.08"}) {
		t.Errorf("Atom.Matches wrong for %s", a)
	}
}

func TestNormalForms(t *testing.T) {
	f := parseDeps(t, `["a" ("b" | ("c" & "d")) ("e" | "f")]`)
	show := func(cs [][]Dependency) string {
		var parts []string
		for _, c := range cs {
			var names []string
			for _, a := range c {
				names = append(names, string(a.Name))
			}
			parts = append(parts, strings.Join(names, ","))
		}
		return strings.Join(parts, " ")
	}
	if got := show(CNF(f)); got != "a b,c b,d e,f" {
		t.Errorf("CNF = %s", got)
	}
	if got := show(DNF(f)); got != "a,b,e a,b,f a,c,d,e a,c,d,f" {
		t.Errorf("DNF = %s", got)
	}
	if len(CNF(Formula[Dependency]{})) != 0 || len(DNF(Formula[Dependency]{})) != 1 {
		t.Errorf("normal forms of Empty")
	}
}

func TestTypedFieldsOfAFile(t *testing.T) {
	src := `opam-version: "2.0"
maintainer: ["a@b.c" "d@e.f"]
flags: [light-uninstall avoid-version]
conflict-class: "ocaml-core-compiler"
available: arch != "arm32" & os != "win32"
build: [
  ["dune" "subst"] {dev}
  ["dune" "build" "-p" name "-j" jobs "@runtest" {with-test}]
]
install: ["make" "install"]
depexts: [
  ["libgmp-dev"] {os-family = "debian"}
  ["gmp"] {os = "macos"}
]
pin-depends: [["foo.1.0" "git+https://x/foo"]]
extra-files: ["fix.patch" "md5=00000000000000000000000000000000"]
conflicts: ["bar" "baz" {< "2"}]
`
	f, err := ParseString("t.opam", src)
	if err != nil {
		t.Fatal(err)
	}
	if m := f.Maintainer(); len(m) != 2 {
		t.Errorf("Maintainer = %v", m)
	}
	if !f.HasFlag("avoid-version") || f.HasFlag("conf") {
		t.Errorf("Flags = %v", f.Flags())
	}
	if cc := f.ConflictClass(); len(cc) != 1 || cc[0] != "ocaml-core-compiler" {
		t.Errorf("ConflictClass = %v", cc)
	}
	av, _ := f.Available()
	if av.EvalBool(MapEnv(map[string]string{"arch": "arm32", "os": "linux"}), true) {
		t.Errorf("available on arm32")
	}
	build, err := f.Build()
	if err != nil || len(build) != 2 {
		t.Fatalf("Build = %v, %v", build, err)
	}
	env := (&DepsEnv{Self: Package{"foo", "1.0"}, Vars: MapEnv(map[string]string{"jobs": "4"})}).Env()
	if _, ok := build[0].Expand(env); ok {
		t.Errorf("dev command ran")
	}
	args, ok := build[1].Expand(env)
	if !ok || strings.Join(args, " ") != "dune build -p foo -j 4" {
		t.Errorf("build args = %q", args)
	}
	inst, _ := f.Install()
	if len(inst) != 1 || len(inst[0].Args) != 2 {
		t.Errorf("Install = %+v", inst)
	}
	dx, err := f.Depexts()
	if err != nil || len(dx) != 2 || dx[1].Packages[0] != "gmp" {
		t.Errorf("Depexts = %+v %v", dx, err)
	}
	pd, err := f.PinDepends()
	if err != nil || len(pd) != 1 || pd[0].Package.Name != "foo" {
		t.Errorf("PinDepends = %+v %v", pd, err)
	}
	ef, err := f.ExtraFiles()
	if err != nil || len(ef) != 1 || ef[0].Name != "fix.patch" {
		t.Errorf("ExtraFiles = %+v %v", ef, err)
	}
	cf, err := f.Conflicts()
	if err != nil || cf.Kind != FOr || len(cf.Sub) != 2 {
		t.Errorf("Conflicts = %+v %v", cf, err)
	}
}

func TestFilterSimplify(t *testing.T) {
	env := MapEnv(map[string]string{"os": "linux", "arch": "x86_64"})
	for _, c := range []struct{ src, want string }{
		{`os = "linux" & ocaml:version >= "4.08"`, `ocaml:version >= "4.08"`},
		{`os = "macos" & ocaml:version >= "4.08"`, `false`},
		{`arch = "x86_64" | with-test`, `true`},
		{`arch = "arm64" | with-test`, `with-test`},
		{`!(os = "linux") | !with-test`, `!with-test`},
		{`?os & ?foo`, `?foo`},
		{`"%{os}%-%{foo}%" = "linux-x"`, `"linux-%{foo}%" = "linux-x"`},
	} {
		f := parseFilter(t, c.src)
		if got := f.Simplify(env).String(); got != c.want {
			t.Errorf("Simplify(%s) = %s, want %s", c.src, got, c.want)
		}
	}
}

func TestTypedFieldErrorsHavePositions(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"depends: [\n  \"a\" {>= \"1\"}\n  42\n]", "f.opam:3:3: field depends: expected a package name"},
		{"available: [\"linux\" \"x\" 42 {a}]", "f.opam:1:"},
		{"build: [[\"make\"] [[\"x\"]]]", "f.opam:1:19: field build: expected a string or variable"},
		{"depexts: [[\"a\" 1]]", "f.opam:1:16: field depexts"},
		{"pin-depends: [[\"nodot\" \"url\"]]", "f.opam:1:16: field pin-depends"},
	} {
		f, err := ParseString("f.opam", c.src)
		if err != nil {
			t.Fatal(err)
		}
		var got error
		switch f.Items[0].Name {
		case "depends":
			_, got = f.Depends()
		case "available":
			_, got = f.Available()
		case "build":
			_, got = f.Build()
		case "depexts":
			_, got = f.Depexts()
		case "pin-depends":
			_, got = f.PinDepends()
		}
		if got == nil || !strings.HasPrefix(got.Error(), c.want) {
			t.Errorf("%s: error %v, want prefix %q", c.src, got, c.want)
		}
	}
}

func TestParseAtom(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"dune", `"dune"`},
		{"dune.3.17.0", `"dune" {= "3.17.0"}`},
		{"ocaml>=4.14", `"ocaml" {>= "4.14"}`},
		{"ocaml<5", `"ocaml" {< "5"}`},
		{"foo!=1.0~rc", `"foo" {!= "1.0~rc"}`},
		{"foo=v0.17", `"foo" {= "v0.17"}`},
		{"foo<=1", `"foo" {<= "1"}`},
		{"foo>1", `"foo" {> "1"}`},
		{"foo>=", "error"},
		{"f o", "error"},
		{">=1", "error"},
	} {
		a, err := ParseAtom(c.in)
		got := a.String()
		if err != nil {
			got = "error"
		}
		if got != c.want {
			t.Errorf("ParseAtom(%q) = %s (%v), want %s", c.in, got, err, c.want)
		}
	}
}

func TestRequired(t *testing.T) {
	f := (&DepsEnv{}).Resolve(parseDeps(t, `["a" ("b" {>= "1"} | ("b" {< "1"} & "c")) ("d" | "e")]`))
	got := fmt.Sprint(Required(f))
	if got != "[a b]" {
		t.Errorf("Required = %s, want [a b]", got)
	}
	if r := Required(Formula[Atom]{}); len(r) != 0 {
		t.Errorf("Required(Empty) = %v", r)
	}
}

func TestCNFAuxStaysLinear(t *testing.T) {
	pairs := func(n int) string {
		var alts []string
		for i := range n {
			alts = append(alts, fmt.Sprintf(`("a%d" & "b%d")`, i, i))
		}
		return "[" + strings.Join(alts, " | ") + "]"
	}
	tests := []struct {
		name    string
		deps    string
		limit   int
		clauses int // clauses of the result
		atoms   int // atoms of the result, new ones included
		aux     int // new atoms made
	}{
		{name: "small disjunction expanded", deps: pairs(3), limit: 64, clauses: 8, atoms: 24},
		{name: "at the limit", deps: pairs(6), limit: 64, clauses: 64, atoms: 384},
		{name: "past the limit", deps: pairs(7), limit: 64, clauses: 1, atoms: 7, aux: 7},
		{name: "forty pairs", deps: pairs(40), limit: 64, clauses: 1, atoms: 40, aux: 40},
		{name: "single clauses kept", deps: `[("a" & "b") | "c" | "d" | ("e" & "f")]`, limit: 2, clauses: 1, atoms: 4, aux: 2},
		{name: "conjunction of disjunctions", deps: `["a" ("b" | "c") ("d" | "e")]`, limit: 1, clauses: 3, atoms: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := parseDeps(t, tc.deps)
			var defs []Formula[Dependency]
			cs := CNFAux(f, tc.limit, func(g Formula[Dependency]) Dependency {
				defs = append(defs, g)
				return Dependency{Name: PackageName(fmt.Sprintf("aux%d", len(defs)))}
			})
			atoms := 0
			for _, c := range cs {
				atoms += len(c)
			}
			if len(cs) != tc.clauses || atoms != tc.atoms || len(defs) != tc.aux {
				t.Errorf("%d clauses, %d atoms, %d new atoms; want %d, %d, %d", len(cs), atoms, len(defs), tc.clauses, tc.atoms, tc.aux)
			}
			if tc.aux == 0 && fmt.Sprint(cs) != fmt.Sprint(CNF(f)) {
				t.Errorf("without new atoms the result differs from CNF:\n%v\n%v", cs, CNF(f))
			}
		})
	}
}

func BenchmarkDependsLongChain(b *testing.B) {
	src := "depends: [" + strings.Repeat(`"a" & `, 20000) + `"a"]`
	f, err := ParseString("opam", src)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := f.Depends(); err != nil {
			b.Fatal(err)
		}
	}
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestLongChainsAreLinear reads `&` and `|` chains of n and 2n atoms: doubling the
// chain must not quadruple the memory it takes to build the formula.
func TestLongChainsAreLinear(t *testing.T) {
	tests := []struct {
		name string
		src  func(n int) string
	}{
		{"and", func(n int) string { return "depends: [" + strings.Repeat(`"a" & `, n) + `"a"]` }},
		{"or", func(n int) string { return "depends: [" + strings.Repeat(`"a" | `, n) + `"a"]` }},
		{"or of ands", func(n int) string { return "depends: [" + strings.Repeat(`("a" & "b") | `, n/2) + `"a"]` }},
		{"condition", func(n int) string { return `depends: ["a" {` + strings.Repeat(`>= "1" & `, n) + `< "2"}]` }},
	}
	const n = 4000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cost := func(n int) (uint64, int) {
				f, err := ParseString("opam", tc.src(n))
				if err != nil {
					t.Fatal(err)
				}
				var d Formula[Dependency]
				b := allocated(func() { d, err = f.Depends() })
				if err != nil {
					t.Fatal(err)
				}
				return b, len(d.Sub) + len(d.Atoms()[0].Cond.Sub)
			}
			small, subs := cost(n)
			large, _ := cost(2 * n)
			if subs < n/2 {
				t.Errorf("%d operands in the top node, want a flat node of about %d", subs, n)
			}
			if large > 3*small {
				t.Errorf("reading %d atoms takes %d bytes, %d atoms %d bytes: more than linear", n, small, 2*n, large)
			}
		})
	}
}

// TestDeepFormulaLinear reads the package formula of a chain of groups nested MaxDepth
// deep: folding it from the leaves up copied the chain at every level (11 s, gigabytes).
func TestDeepFormulaLinear(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"and in groups", "depends: [" + strings.Repeat(`("a" & `, MaxDepth-1) + `"b"` + strings.Repeat(")", MaxDepth-1) + "]"},
		{"or in groups", "depends: [" + strings.Repeat(`("a" | `, MaxDepth-1) + `"b"` + strings.Repeat(")", MaxDepth-1) + "]"},
		{"condition groups", `depends: ["a" {` + strings.Repeat(`(>= "1" & `, MaxDepth-2) + `< "2"` + strings.Repeat(")", MaxDepth-2) + "}]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseString("deep.opam", tc.src)
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			deps, err := f.Depends()
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			atoms := deps.Atoms()
			if len(atoms) == 1 {
				c := atoms[0].Cond
				if n := len(c.Atoms()); n != MaxDepth-1 || len(c.Sub) != n {
					t.Errorf("condition has %d atoms in %d operands, want %d in one flat node", n, len(c.Sub), MaxDepth-1)
				}
			} else if len(atoms) != MaxDepth || len(deps.Sub) != MaxDepth {
				t.Errorf("formula has %d atoms in %d operands, want %d in one flat node", len(atoms), len(deps.Sub), MaxDepth)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
				t.Errorf("reading the formula allocated %d MB", n>>20)
			}
		})
	}
}

// TestNormalizeMatchesFolding checks that normalizing a formula built as written gives
// what folding it with And and Or from the leaves up gives.
func TestNormalizeMatchesFolding(t *testing.T) {
	for seed := range 8 {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(seed), 1))
			for range 200 {
				f := randomFormula(r, 5)
				want := fold(f)
				if got := normalize(clone(f)); !reflect.DeepEqual(got, want) {
					t.Fatalf("normalize(%s) = %#v, want %#v", f.Format(strconv.Itoa), got, want)
				}
			}
		})
	}
}

// randomFormula makes a formula as written, with empty and one-operand nodes.
func randomFormula(r *rand.Rand, depth int) Formula[int] {
	if depth == 0 || r.IntN(4) == 0 {
		if r.IntN(6) == 0 {
			return Formula[int]{}
		}
		return AtomOf(r.IntN(100))
	}
	sub := make([]Formula[int], r.IntN(4))
	for i := range sub {
		sub[i] = randomFormula(r, depth-1)
	}
	return node(r.IntN(2) == 0, sub)
}

func fold(f Formula[int]) Formula[int] {
	if f.Kind != FAnd && f.Kind != FOr {
		return f
	}
	sub := make([]Formula[int], len(f.Sub))
	for i := range f.Sub {
		sub[i] = fold(f.Sub[i])
	}
	if f.Kind == FAnd {
		return And(sub...)
	}
	return Or(sub...)
}

func clone(f Formula[int]) Formula[int] {
	if f.Sub != nil {
		sub := make([]Formula[int], len(f.Sub))
		for i := range f.Sub {
			sub[i] = clone(f.Sub[i])
		}
		f.Sub = sub
	}
	return f
}
