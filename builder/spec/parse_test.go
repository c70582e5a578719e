package spec

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

func mustParseFile(t *testing.T, name string) *Spec {
	t.Helper()
	src, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(name, src)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return s
}

func TestParseOCamlCILinuxSpec(t *testing.T) {
	s := mustParseFile(t, "ocaml-ci-linux.spec")
	if s.From != "ocaml/opam@sha256:03668731d460043acc763d35e1d5dfc6e6fe68a02f987849ac74f855e3e42c10" {
		t.Errorf("from = %q", s.From)
	}
	if len(s.Ops) != 19 {
		t.Fatalf("got %d ops, want 19", len(s.Ops))
	}
	if c, ok := s.Ops[0].(Comment); !ok || c.Text != "debian-11-4.14.0_opam-2.1" {
		t.Errorf("op 0 = %#v", s.Ops[0])
	}
	if u, ok := s.Ops[1].(User); !ok || u.UID != 1000 || u.GID != 1000 || u.IsRoot() {
		t.Errorf("op 1 = %#v", s.Ops[1])
	}
	if e, ok := s.Ops[2].(Env); !ok || e != (Env{"CLICOLOR_FORCE", "1"}) {
		t.Errorf("op 2 = %#v", s.Ops[2])
	}
	if w, ok := s.Ops[4].(Workdir); !ok || w.Path != "/src" {
		t.Errorf("op 4 = %#v", s.Ops[4])
	}
	r, ok := s.Ops[9].(Run)
	if !ok {
		t.Fatalf("op 9 = %#v", s.Ops[9])
	}
	wantCache := []Cache{{ID: "opam-archives", Target: "/home/opam/.opam/download-cache"}}
	if !reflect.DeepEqual(r.Cache, wantCache) || !r.HostNetwork() || !strings.HasPrefix(r.Shell, "cd ~/opam-repository && (git cat-file") {
		t.Errorf("opam update step = %#v", r)
	}
	if c, ok := s.Ops[10].(Copy); !ok || !reflect.DeepEqual(c, Copy{Src: []string{"bondi.opam"}, Dst: "./"}) {
		t.Errorf("op 10 = %#v", s.Ops[10])
	}
	if r, ok := s.Ops[11].(Run); !ok || r.Shell != "opam pin add -yn bondi.dev './'" || len(r.Cache) != 0 || !r.HostNetwork() {
		t.Errorf("op 11 = %#v", s.Ops[11])
	}
	if e := s.Ops[12].(Env); e.Name != "DEPS" || !strings.HasSuffix(e.Value, "ocaml-options-vanilla.1") {
		t.Errorf("op 11 = %#v", e)
	}
	last := s.Ops[18].(Run)
	for _, want := range []string{
		"opam exec -- dune build --only-packages=bondi @install @check @runtest;\nres=$?;\n",
		`test "$res" != 1 && exit "$res";`,
		`grep -qF "\"debian-11\""`,
		`echo -e "The package \033[1m$pkg\033[0m failed`,
		"\n&& rm -rf _build",
	} {
		if !strings.Contains(last.Shell, want) {
			t.Errorf("last command lacks %q:\n%s", want, last.Shell)
		}
	}
	if last.HostNetwork() || len(last.Network) != 0 {
		t.Errorf("build step must have no network: %#v", last.Network)
	}
}

func TestParseMultiStage(t *testing.T) {
	s := mustParseFile(t, "multistage.spec")
	if len(s.Builds) != 1 || s.Builds[0].Name != "dev" {
		t.Fatalf("builds = %#v", s.Builds)
	}
	dev := s.Builds[0].Spec
	if dev.From != "ocaml/opam@sha256:00f4d3f38bbde3a7a28b1b4b8994eded60fb5ee78822082f425662b7f9463178" {
		t.Errorf("dev from = %q", dev.From)
	}
	// Backslash-newline in a string skips the newline and the indentation after it.
	r := dev.Ops[5].(Run)
	want := "cd ~/opam-repository && (git cat-file -e $OPAM_HASH || git fetch origin master) && git reset -q --hard $OPAM_HASH && git --no-pager log --no-decorate -n1 --oneline && opam update -u"
	if r.Shell != want {
		t.Errorf("continued string:\n got %q\nwant %q", r.Shell, want)
	}
	c := dev.Ops[len(dev.Ops)-2].(Copy)
	if !reflect.DeepEqual(c, Copy{Src: []string{"."}, Dst: "/src/", Exclude: []string{".git", "_build", "_opam"}}) {
		t.Errorf("copy = %#v", c)
	}
	if s.From != "debian:11" {
		t.Errorf("from = %q", s.From)
	}
	cp := s.Ops[1].(Copy)
	if cp.FromBuild != "dev" || cp.Dst != "/usr/local/bin/obuilder" || !reflect.DeepEqual(cp.Src, []string{"/src/_build/default/main.exe"}) {
		t.Errorf("copy from build = %#v", cp)
	}
	sec := s.Ops[2].(Run).Secrets
	wantSec := []Secret{{ID: "password", Target: "/secrets/password"}, {ID: "npm", Target: "/run/secrets/npm", BuildkitOptions: []Option{{"mode", "0400"}}}}
	if !reflect.DeepEqual(sec, wantSec) {
		t.Errorf("secrets = %#v", sec)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"ocaml-ci-linux.spec", "multistage.spec", "escapes.spec"} {
		s := mustParseFile(t, name)
		text := s.String()
		s2, err := ParseString(text)
		if err != nil {
			t.Fatalf("%s: reparse printed spec: %v\n%s", name, err, text)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Errorf("%s: print/parse changed the spec:\n%s", name, text)
		}
		if s2.String() != text {
			t.Errorf("%s: printing is not stable", name)
		}
	}
}

func TestPrintLayout(t *testing.T) {
	s, err := ParseString(`((from busybox) (shell /bin/sh -c) (run (network host) (cache (c (target /c))) (shell "echo \"hi\"")) (env A "two words") (env B "") (copy (src a "b c") (dst d/)))`)
	if err != nil {
		t.Fatal(err)
	}
	want := `((from busybox)
 (shell /bin/sh -c)
 (run (cache (c (target /c)))
      (network host)
      (shell "echo \"hi\""))
 (env A "two words")
 (env B "")
 (copy (src a "b c") (dst d/)))
`
	if got := s.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestStringEscapes(t *testing.T) {
	s, err := ParseString(`((from x) (env A "q\"b\\s\n\t\065\x41\z\ end") (env B "line \
      next") (env "C" 'a'))`)
	if err != nil {
		t.Fatal(err)
	}
	// As sexplib (parsexp) reads them, unknown escapes and "\ " keep their backslash.
	if got := s.Ops[0].(Env).Value; got != "q\"b\\s\n\tAA\\z\\ end" {
		t.Errorf("escapes: %q", got)
	}
	if got := s.Ops[1].(Env).Value; got != "line next" {
		t.Errorf("continuation: %q", got)
	}
	if got := s.Ops[2].(Env); got.Name != "C" || got.Value != "'a'" {
		t.Errorf("quoted name: %#v", got)
	}
}

func TestComments(t *testing.T) {
	s, err := ParseString("; header\n((from x) #| block #| nested |# |# (workdir /a) #;(workdir /b) (workdir c) ; end\n)")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Ops, []Op{Workdir{"/a"}, Workdir{"c"}}) {
		t.Errorf("ops = %#v", s.Ops)
	}
}

func TestUserName(t *testing.T) {
	s, err := ParseString(`((from x) (user (name ContainerAdministrator)) (user (gid 2) (uid 1)))`)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Ops, []Op{User{Name: "ContainerAdministrator"}, User{UID: 1, GID: 2}}) {
		t.Errorf("ops = %#v", s.Ops)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"", "1:1: empty spec"},
		{"((from x)", "1:1: unclosed '('"},
		{"((from x)))", "1:11: unexpected ')' with no matching '('"},
		{"((from x) (run (shell \"a)))", "1:23: unterminated string"},
		{"((workdir /))", "1:2: expected (from IMAGE) before (workdir …)"},
		{"()", "1:2: missing (from IMAGE)"},
		{"((from x)\n (frobnicate 1))", "2:2: unknown operation \"frobnicate\""},
		{"((from x)\n (run (shell a) (shell b)))", "2:17: run: field \"shell\" given twice"},
		{"((from x)\n (run (network host)))", "2:2: run: missing (shell COMMAND)"},
		{"((from x)\n (run (shel a)))", "2:7: run: unknown field \"shel\""},
		{"((from x)\n  (user (uid 10) (gid x)))", "2:23: user: gid \"x\" is not a non-negative integer"},
		{"((from x)\n  (user (uid -1) (gid 1)))", "user: uid \"-1\""},
		{"((from x) (user (uid 1)))", "user: missing (gid N)"},
		{"((from x) (copy (src a)))", "copy: missing (dst PATH)"},
		{"((from x) (copy (dst a)))", "copy: missing (src PATH…)"},
		{"((from x)\n (copy (from (build nope)) (src a) (dst b)))", "2:21: copy: unknown build \"nope\""},
		{"((build a ((from x))) (from y) (copy (from (build b)) (src a) (dst b)))", "builds in scope: a"},
		{"((build a ((from x))) (build a ((from x))) (from y))", "duplicate nested build \"a\""},
		{"((from x) (from y))", "a second (from …)"},
		{"((from x) (run (cache ((a) (target /x))) (shell x)))", "cache: expected (ID (target PATH))"},
		{"((from x) (run (secrets (\"a b\")) (shell x)))", "secret \"a b\": missing (target PATH)"},
		{"((from x)\n (copy (src) (dst a)))", "2:8: copy: (src) names no source"},
		{"((from x) (run (cache (a)) (shell x)))", "cache a: missing (target PATH)"},
		{"((from x) (env A))", "expected (env NAME VALUE)"},
		{"((from x) (shell))", "shell: expected (shell PROGRAM ARG…)"},
		{"((from x) atom)", "expected an operation"},
		{"#| open", "unterminated block comment"},
		{"(\"\\999\")", "not a byte"},
	}
	for _, c := range cases {
		_, err := Parse("t.spec", []byte(c.src))
		if err == nil {
			t.Errorf("%q: no error, want %q", c.src, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "t.spec:") {
			t.Errorf("%q: error %q, want it to contain %q", c.src, err, c.want)
		}
	}
}

func TestMountIDsAsOBuilder(t *testing.T) {
	for _, id := range []string{"my cache", "a/b", "..", "", "c:\\opam", "$HOME"} {
		t.Run(id, func(t *testing.T) {
			s, err := ParseString(fmt.Sprintf(`((from x) (run (cache (%s (target /c))) (secrets (%s (target /s))) (shell x)))`, quoteAtom(id), quoteAtom(id)))
			if err != nil {
				t.Fatal(err)
			}
			r := s.Ops[0].(Run)
			if r.Cache[0].ID != id || r.Secrets[0].ID != id {
				t.Errorf("ids = %q, %q; want %q", r.Cache[0].ID, r.Secrets[0].ID, id)
			}
		})
	}
}

func TestDeepNestingRefused(t *testing.T) {
	src := strings.Repeat("(", 5000) + strings.Repeat(")", 5000)
	if _, err := ParseString(src); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"ocaml-ci-linux.spec", "multistage.spec", "escapes.spec"} {
		src, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	f.Add(`((from x) (env A "\n\t\\\"") (copy (src "a b") (dst c)))`)
	f.Fuzz(func(t *testing.T, src string) {
		s, err := ParseString(src)
		if err != nil {
			return
		}
		text := s.String()
		s2, err := ParseString(text)
		if err != nil {
			t.Fatalf("printed spec does not parse: %v\n%s", err, text)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the spec:\n%s", text)
		}
		_ = s.Dockerfile(DockerfileOptions{BuildKit: true})
		_ = s.ReproduceNote()
	})
}
