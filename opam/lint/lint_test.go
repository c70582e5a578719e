package lint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam"
)

const sha = "sha256=3844cbac432fe87a54c4b1a62ad2032f3b2bd319a2d55d5851a8c4b3d9862d74"

const clean = `opam-version: "2.0"
maintainer: "Jane Doe <jane@example.com>"
authors: ["Jane Doe"]
license: "MIT"
homepage: "https://example.com/foo"
bug-reports: "https://example.com/foo/issues"
dev-repo: "git+https://example.com/foo.git"
synopsis: "A clean package"
depends: [
  "ocaml" {>= "4.08"}
  "dune" {>= "3.0"}
  "alcotest" {with-test}
]
build: [
  ["dune" "subst"] {dev}
  ["dune" "build" "-p" name "-j" jobs]
]
url {
  src: "https://example.com/foo-1.0.tar.gz"
  checksum: "` + sha + `"
}
`

func input(text string, extra map[string]File) Input {
	in := Input{Package: opam.Package{Name: "foo", Version: "1.0"}, Dir: "packages/foo/foo.1.0", Files: map[string]File{"opam": {Data: []byte(text), Mode: 0o644}}}
	for k, v := range extra {
		in.Files[k] = v
	}
	return in
}

func allChecks() Context {
	return Context{Checks: OpamLint | Publication, CheckUpstream: true, New: true, Names: NewNames([]opam.PackageName{"bar", "Foo_Bar"})}
}

func TestCleanPackageHasNoFindings(t *testing.T) {
	for _, version := range []string{"", "2.1"} {
		ctx := allChecks()
		ctx.Opam = version
		if fs := Lint(input(clean, nil), ctx); len(fs) != 0 {
			t.Errorf("opam %q: clean package has findings:\n%v", version, fs)
		}
	}
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("fixture does not contain " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func add(text string) func(string) string { return func(s string) string { return s + text + "\n" } }

func TestRules(t *testing.T) {
	for _, c := range []struct {
		rule  string
		edit  func(string) string
		files map[string]File
		ctx   func(*Context)
		pkg   string
	}{
		{rule: "opam-1", edit: add(`depends: [`)},
		{rule: "opam-2", edit: add(`depends: [`), ctx: func(c *Context) { c.Opam = "2.1" }},
		{rule: "opam-2", edit: replace(`opam-version: "2.0"`, `opam-version: "2.1"`), ctx: func(c *Context) { c.Opam = "2.1" }},
		{rule: "opam-3", edit: add(`unknown-field: "x"`)},
		{rule: "opam-3", edit: add(`synopsis: "Again"`)},
		{rule: "opam-3", edit: replace(`"alcotest" {with-test}`, `"alcotest" {with-test} 42`)},
		{rule: "opam-4", edit: add(`name: "bar"`)},
		{rule: "opam-4", edit: add(`version: "2.0"`)},
		{rule: "opam-20", edit: replace(`opam-version: "2.0"`, `opam-version: "2.0.1"`)},
		{rule: "opam-21", edit: replace(`opam-version: "2.0"`, `opam-version: "1.2"`)},
		{rule: "opam-22", edit: replace(`homepage: "https://example.com/foo"`, `homepage: ""`)},
		{rule: "opam-23", edit: replace(`maintainer: "Jane Doe <jane@example.com>"`, ``)},
		{rule: "opam-24", edit: replace(`maintainer: "Jane Doe <jane@example.com>"`, `maintainer: "contact@ocamlpro.com"`)},
		{rule: "opam-25", edit: replace(`authors: ["Jane Doe"]`, ``)},
		{rule: "opam-26", edit: add(`remove: [["rm" "-rf" "x"]]`)},
		{rule: "opam-28", edit: add(`flags: [light-uninstall frobnicate]`)},
		{rule: "opam-29", edit: replace(`"alcotest" {with-test}`, `"alcotest" {with-test & ocaml:version >= "4.10"}`)},
		{rule: "opam-31", edit: add(`depopts: ["dune"]`)},
		{rule: "opam-32", edit: add(`available: ocaml-version >= "4.08"`)},
		{rule: "opam-33", edit: add(`os: ["linux"]`)},
		{rule: "opam-34", edit: add(`available: ocaml:version >= "4.08"`)},
		{rule: "opam-35", edit: replace(`homepage: "https://example.com/foo"`, ``)},
		{rule: "opam-36", edit: replace(`bug-reports: "https://example.com/foo/issues"`, ``)},
		{rule: "opam-37", edit: replace(`dev-repo: "git+https://example.com/foo.git"`, ``)},
		{rule: "opam-39", edit: add(`install: ["make" "install"]`)},
		{rule: "opam-41", edit: add(`install: [["cp" "%{lwt:lib}%/x" "y"]]`)},
		{rule: "opam-42", edit: replace(`git+https://example.com/foo.git`, `https://example.com/foo`)},
		{rule: "opam-43", edit: add(`conflicts: ["a" & "b"]`)},
		{rule: "opam-44", edit: add(`flags: plugin`)},
		{rule: "opam-45", edit: add(`install: [["cp" "%{lib" "y"]]`)},
		{rule: "opam-46", edit: add(`flags: conf`)},
		{rule: "opam-47", edit: replace(`A clean package`, `a clean package.`)},
		{rule: "opam-48", edit: add(`build-test: [["make" "test"]]`)},
		{rule: "opam-49", edit: add("extra-source \"p\" {\n  src: \"https://example.com/p.git\"\n  checksum: \"" + sha + "\"\n}")},
		{rule: "opam-50", edit: replace(`"dune" {>= "3.0"}`, `"dune" {>= "3.0" & build & post}`)},
		{rule: "opam-51", edit: replace(`"alcotest" {with-test}`, `"alcotest" {!build}`)},
		{rule: "opam-52", edit: add(`flags: light-uninstall`)},
		{rule: "opam-53", edit: add(`extra-files: ["fix.patch" "md5=00000000000000000000000000000000"]`), files: map[string]File{"files/fix.patch": {Data: []byte("x")}}},
		{rule: "opam-54", edit: add(`depexts: [["lib foo"] {os-family = "debian"}]`)},
		{rule: "opam-55", edit: add(`available: os != "darwin"`)},
		{rule: "opam-56", edit: add(`setenv: [FOO = "x"]`), ctx: func(c *Context) { c.Opam = "2.1" }},
		{rule: "opam-57", edit: replace(`synopsis: "A clean package"`, ``)},
		{rule: "opam-58", edit: replace(`"alcotest" {with-test}`, `"alcotest" {test}`)},
		{rule: "opam-59", edit: replace(`  checksum: "`+sha+`"`, ``)},
		{rule: "opam-61", edit: add(`run-test: [["dune" "test"] {with-test}]`)},
		{rule: "opam-62", edit: replace(`license: "MIT"`, `license: "MIT-ish"`)},
		{rule: "opam-62", edit: replace(`license: "MIT"`, `license: "MIT AND ISC"`), ctx: func(c *Context) { c.Opam = "2.1" }},
		{rule: "opam-65", edit: add(`pin-depends: ["bar.1.0" "git+file://relative/path"]`)},
		{rule: "opam-66", edit: replace(`"alcotest" {with-test}`, `"alcotest" {with-test & "yes"}`)},
		{rule: "opam-67", edit: replace(`https://example.com/foo-1.0.tar.gz`, `git+https://example.com/foo.git`)},
		{rule: "opam-67", edit: replace(`https://example.com/foo-1.0.tar.gz`, `https://example.com/foo-1.0.zip`), ctx: func(c *Context) { c.Opam = "2.1" }},
		{rule: "opam-68", edit: replace(`license: "MIT"`, ``)},
		{rule: "repo-unnecessary-field", edit: add(`name: "foo"`)},
		{rule: "repo-name-mismatch", edit: add(`name: "bar"`)},
		{rule: "repo-version-mismatch", edit: add(`version: "2.0"`)},
		{rule: "repo-dune-subst", edit: replace(`["dune" "subst"] {dev}`, `["dune" "subst"] {pinned}`)},
		{rule: "repo-weak-checksum", edit: replace(sha, `md5=00000000000000000000000000000000`)},
		{rule: "repo-weak-checksum", edit: add("extra-source \"p\" {\n  src: \"https://example.com/p.diff\"\n}")},
		{rule: "repo-forbidden-perm", files: map[string]File{"opam": {Data: []byte(clean), Mode: 0o755}}},
		{rule: "repo-unexpected-file", files: map[string]File{"descr": {Data: []byte("x")}}},
		{rule: "repo-maintainer-contact", edit: func(s string) string {
			s = strings.Replace(s, `Jane Doe <jane@example.com>`, `Jane Doe`, 1)
			return strings.Replace(s, `bug-reports: "https://example.com/foo/issues"`, ``, 1)
		}},
		{rule: "repo-default-tags", edit: add(`tags: ["topics" "to describe"]`)},
		{rule: "repo-pin-depends", edit: add(`pin-depends: ["bar.1.0" "git+https://example.com/bar.git"]`)},
		{rule: "repo-extra-files", edit: add(`extra-files: ["fix.patch" "` + sha + `"]`)},
		{rule: "repo-conf-package", edit: add(`depexts: ["libfoo-dev"]`)},
		{rule: "repo-conf-package", pkg: "conf-foo"},
		{rule: "repo-prefix-conflict-class", pkg: "arch-foo"},
		{rule: "repo-prefix-conflict-class", edit: add(`conflict-class: "ocaml-host-arch"`)},
		{rule: "repo-dune-build", edit: replace(`"dune" {>= "3.0"}`, `"dune" {build & >= "3.0"}`)},
		{rule: "repo-name-collision", pkg: "foo-bar"},
		{rule: "repo-restricted-prefix", pkg: "ocaml-option-foo"},
		{rule: "repo-version-twin", ctx: func(c *Context) { c.Twins = []opam.Version{"1.00"} }},
		{rule: "repo-missing-upper-bound", ctx: func(c *Context) { c.Checks = Archive }},
		{rule: "repo-archive-reason", ctx: func(c *Context) { c.Checks = Archive }},
		{rule: "repo-archive-commit", ctx: func(c *Context) { c.Checks = Archive }},
	} {
		text := clean
		if c.edit != nil {
			text = c.edit(text)
		}
		in := input(text, c.files)
		if c.pkg != "" {
			in.Package.Name = opam.PackageName(c.pkg)
			in.Dir = "packages/" + c.pkg + "/" + c.pkg + ".1.0"
		}
		ctx := allChecks()
		if c.ctx != nil {
			c.ctx(&ctx)
		}
		fs := Lint(in, ctx)
		found := false
		for _, f := range fs {
			r, ok := RuleByID(f.Rule)
			if !ok || r.Severity != f.Severity {
				t.Errorf("finding %s: rule not in the catalogue or severity differs (%+v)", f, r)
			}
			if f.Rule == c.rule {
				found = true
				if f.Message == "" || f.File == "" {
					t.Errorf("%s: finding without message or file: %+v", c.rule, f)
				}
			}
		}
		if !found {
			t.Errorf("%s did not fire; findings: %v\n%s", c.rule, fs, text)
		}
	}
}

func TestArchivedPackagePasses(t *testing.T) {
	text := strings.Replace(clean, `"dune" {>= "3.0"}`, `"dune" {>= "3.0" & < "4.0"}`, 1)
	text = strings.Replace(text, `"alcotest" {with-test}`, `"alcotest" {with-test & <= "1.7.0"}`, 1)
	text += "x-reason-for-archiving: [\"ocaml-version\"]\nx-opam-repository-commit-hash-at-time-of-archiving: \"abc\"\n"
	if fs := Lint(input(text, nil), Context{Checks: Archive}); len(fs) != 0 {
		t.Errorf("archived package has findings: %v", fs)
	}
}

func TestFindingPositions(t *testing.T) {
	fs := Lint(input(strings.Replace(clean, `"dune" {>= "3.0"}`, `"dune" {build & >= "3.0"}`, 1), nil), allChecks())
	for _, f := range fs {
		if f.Rule == "repo-dune-build" {
			if f.Pos.Line != 11 || !strings.HasPrefix(f.String(), "packages/foo/foo.1.0/opam:11:3: warning repo-dune-build:") {
				t.Errorf("finding %q at %v", f, f.Pos)
			}
			return
		}
	}
	t.Fatal("repo-dune-build did not fire")
}

func TestNameCollisions(t *testing.T) {
	n := NewNames([]opam.PackageName{"lwt", "Lwt_ppx", "ppx-deriving", "foo"})
	for _, c := range []struct {
		name string
		want string
	}{
		{"lwt-ppx", "Lwt_ppx"},
		{"ppx_deriving", "ppx-deriving"},
		{"LWT", "lwt"},
		{"lwt", ""},
		{"bar", ""},
	} {
		if got := strings.Join(n.Collisions(opam.PackageName(c.name)), ","); got != c.want {
			t.Errorf("Collisions(%s) = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestValidLicense(t *testing.T) {
	for _, c := range []struct {
		s      string
		now    bool
		opam21 bool
	}{
		{"MIT", true, true},
		{"mit", true, true},
		{"GPL-2.0+", true, true},
		{"LGPL-2.1-or-later WITH OCaml-LGPL-linking-exception", true, true},
		{"LGPL-3.0-only with LGPL-3.0-linking-exception", true, false},
		{"MIT AND ISC", true, false},
		{"(MIT OR Apache-2.0) AND BSD-3-Clause", true, false},
		{"LicenseRef-Proprietary", true, false},
		{"MIT-ish", false, false},
		{"MIT AND", false, false},
		{"(MIT", false, false},
		{"", false, false},
		{"GPL-2.0 WITH not-an-exception", false, false},
	} {
		if got := ValidLicense(c.s); got != c.now {
			t.Errorf("ValidLicense(%q) = %v", c.s, got)
		}
		if got := validLicense21(c.s); got != c.opam21 {
			t.Errorf("validLicense21(%q) = %v", c.s, got)
		}
	}
}

func TestReadDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "packages", "foo", "foo.1.0")
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "opam"), []byte(clean), 0o600)
	os.WriteFile(filepath.Join(dir, "files", "a.patch"), []byte("x"), 0o644)
	in, err := ReadDir(root, "packages/foo/foo.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if in.Package.String() != "foo.1.0" || len(in.Files) != 2 || in.Files["files/a.patch"].Data == nil {
		t.Fatalf("ReadDir = %+v", in)
	}
	fs := Lint(in, DefaultContext())
	var rules []string
	for _, f := range fs {
		rules = append(rules, f.Rule)
	}
	if strings.Join(rules, " ") != "repo-forbidden-perm" {
		t.Errorf("findings %v, want only repo-forbidden-perm (mode 600)", fs)
	}
	if _, err := ReadDir(root, "packages/missing"); err == nil {
		t.Error("ReadDir of a missing directory succeeded")
	}
}

func TestEveryRuleHasAFixture(t *testing.T) {
	src, err := os.ReadFile("lint_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Rules {
		if r.ID == "opam-0" {
			continue
		}
		if !strings.Contains(string(src), `rule: "`+r.ID+`"`) {
			t.Errorf("rule %s has no fixture in TestRules", r.ID)
		}
	}
}

func TestBlocksCI(t *testing.T) {
	for _, c := range []struct {
		f    Finding
		want bool
	}{
		{Finding{Rule: "opam-25", Severity: Warning}, true},
		{Finding{Rule: "repo-weak-checksum", Severity: Error}, true},
		{Finding{Rule: "repo-name-collision", Severity: Warning}, false},
	} {
		if got := c.f.BlocksCI(); got != c.want {
			t.Errorf("%s BlocksCI = %v", c.f.Rule, got)
		}
	}
}

func TestFindingJSONRoundTrip(t *testing.T) {
	in := []Finding{{Rule: "opam-25", Severity: Error, File: "x.opam", Message: "m"}, {Rule: "opam-35", Severity: Warning}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []Finding
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Severity != Error || out[1].Severity != Warning || out[0].Rule != "opam-25" {
		t.Fatalf("round trip of %s gave %+v", b, out)
	}
	var s Severity
	if err := s.UnmarshalText([]byte("fatal")); err == nil {
		t.Fatal("unknown severity accepted")
	}
}
