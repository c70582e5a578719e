package ocamlci

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/services/internal/matrix"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const helloOpam = `opam-version: "2.0"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} "alcotest" {with-test & >= "1.0"} ]
build: [ ["dune" "build" "-p" name "-j" jobs] ]
`

func TestAnalyseFindsOpamFilesLikeTheOCamlService(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"hello.opam":                   helloOpam,
		"dune-project":                 "(lang dune 2.0)\n",
		"sub/lib.opam":                 helloOpam,
		"vendor/pkg/opam":              helloOpam,
		"a/b/c/too-deep.opam":          helloOpam,
		"test/fixture.opam":            helloOpam,
		"tests/other/x.opam":           helloOpam,
		"_opam/lib/ocaml.opam":         helloOpam,
		".ocamlformat":                 "profile = default\nversion = 0.26.2\n",
		"app.opam.locked":              "opam-version: \"2.0\"\nx-opam-monorepo-version: \"0.3\"\n",
		"plain.opam.locked":            "opam-version: \"2.0\"\n",
		"src/dune":                     "(library (name hello))\n",
		"src/hello.ml":                 "let x = 1\n",
		"doc/manual/deeper/notes.opam": helloOpam,
	})
	a, err := Analyse(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for p := range a.OpamFiles {
		paths = append(paths, p)
	}
	got := strings.Join(sortedKeys(a.OpamFiles), " ")
	if want := "hello.opam sub/lib.opam vendor/pkg/opam"; got != want {
		t.Errorf("opam files = %q, want %q", got, want)
	}
	if want := []string{"hello.dev", "lib.dev", "pkg.dev"}; !reflect.DeepEqual(a.Packages, want) {
		t.Errorf("packages = %v, want %v", a.Packages, want)
	}
	if a.OCamlFormat != "0.26.2" || !a.Dune {
		t.Errorf("ocamlformat %q dune %v", a.OCamlFormat, a.Dune)
	}
	if want := []string{"app.opam.locked"}; !reflect.DeepEqual(a.MonorepoLocks, want) {
		t.Errorf("monorepo locks = %v, want %v", a.MonorepoLocks, want)
	}
}

func TestAnalyseNamesTheBrokenFile(t *testing.T) {
	dir := writeTree(t, map[string]string{"ok.opam": helloOpam, "bad.opam": "opam-version: \"2.0\"\ndepends: [ \"dune\" {>= } ]\n"})
	_, err := Analyse(dir)
	if err == nil || !strings.Contains(err.Error(), "bad.opam:2") {
		t.Fatalf("error = %v, want one naming bad.opam line 2", err)
	}
	dir = writeTree(t, map[string]string{"ok.opam": helloOpam, ".ocamlformat": "version = \"0.1\" x\n"})
	if _, err := Analyse(dir); err == nil || !strings.Contains(err.Error(), ".ocamlformat:1") {
		t.Fatalf("error = %v, want one naming .ocamlformat line 1", err)
	}
	dir = writeTree(t, map[string]string{"ok.opam": helloOpam, ConfigFile: "lint:\n  fmt: maybe\n"})
	if _, err := Analyse(dir); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Fatalf("error = %v, want one naming %s", err, ConfigFile)
	}
}

func TestSystemSolveOnDebianPlatform(t *testing.T) {
	p := matrix.Debian("amd64")
	ok := writeTree(t, map[string]string{"hello.opam": `opam-version: "2.0"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} "odoc" {with-doc} ]
`})
	a, err := Analyse(ok)
	if err != nil {
		t.Fatal(err)
	}
	if pkgs, err := SystemSolve(nil, a, p); err != nil || len(pkgs) != 0 {
		t.Fatalf("SystemSolve = %v, %v; want nothing to install", pkgs, err)
	}
	a.OpamFiles["hello.opam"] = []byte(helloOpam) // alcotest with-test is not provided
	_, err = SystemSolve(nil, a, p)
	if err == nil || !strings.Contains(err.Error(), "alcotest (not provided)") {
		t.Fatalf("SystemSolve error = %v, want alcotest not provided", err)
	}
	a.OpamFiles["hello.opam"] = []byte(`opam-version: "2.0"
depends: [ "ocaml" {>= "5.0"} ]
`)
	_, err = SystemSolve(nil, a, p)
	if err == nil || !strings.Contains(err.Error(), "the platform has 4.13.1") {
		t.Fatalf("SystemSolve error = %v, want a version mismatch", err)
	}
}

func TestPlanWithoutOpamRepository(t *testing.T) {
	// cppo 1.6.9's opam files: cppo needs what the image has, cppo_ocamlbuild does not.
	files := map[string]string{
		"cppo.opam":            "opam-version: \"2.0\"\ndepends: [ \"ocaml\" {>= \"4.02.3\"} \"dune\" {>= \"1.10\"} \"base-unix\" ]\n",
		"cppo_ocamlbuild.opam": "opam-version: \"2.0\"\ndepends: [ \"ocaml\" \"dune\" {>= \"1.10\"} \"ocamlbuild\" \"ocamlfind\" \"cppo\" {>= \"1.6.0\"} ]\n",
		"dune-project":         "(lang dune 1.10)\n",
	}
	cases := []struct {
		name       string
		files      map[string]string
		wantBuilds string // "" when the builds run
		wantLints  []string
	}{
		{"needs packages", files, "ocamlbuild (not provided)", []string{"(lint-opam)"}},
		{"needs only the image", map[string]string{"cppo.opam": files["cppo.opam"], "dune-project": files["dune-project"]}, "", []string{"(lint-doc)", "(lint-opam)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Service{Platforms: matrix.Default()}
			plan, err := s.plan(context.Background(), AnalysisInput{Checkout: Checkout{Dir: writeTree(t, c.files)}}, t.Logf)
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			var lints []string
			builds := 0
			for _, v := range plan.Variants {
				if v.Kind != KindBuild {
					lints = append(lints, v.Name)
					continue
				}
				builds++
				_, err := v.Spec(plan.Analysis)
				switch {
				case c.wantBuilds == "" && err != nil:
					t.Errorf("%s: %v", v.Name, err)
				case c.wantBuilds != "" && (err == nil || !strings.Contains(err.Error(), c.wantBuilds) || !strings.Contains(err.Error(), "--opam-repository")):
					t.Errorf("%s: %v, want a failure naming %q with the hint at --opam-repository", v.Name, err, c.wantBuilds)
				}
			}
			if builds != 2 {
				t.Errorf("%d builds, want one per platform", builds)
			}
			if strings.Join(lints, ",") != strings.Join(c.wantLints, ",") {
				t.Errorf("lints %v, want %v", lints, c.wantLints)
			}
		})
	}
}
