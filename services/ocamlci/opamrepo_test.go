package ocamlci

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
)

func TestSolveAgainstTheRealOpamRepository(t *testing.T) {
	o := &opamrepo.Repository{GitDir: repotest.GitDir(t)}
	head := repotest.Master
	p := matrix.Debian("amd64")
	solve := solveWith(o, head, false, nil, nil)

	a, err := Analyse(writeTree(t, map[string]string{"hello.opam": `opam-version: "2.0"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} ]
`}))
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := solve(context.Background(), a, p)
	if err != nil {
		t.Fatal(err)
	}
	// The switch is on the image's compiler; dune comes from opam, like the rest.
	set := " " + strings.Join(pkgs, " ") + " "
	if !strings.Contains(set, " ocaml-system.4.13.1 ") || !strings.Contains(set, " dune.") || strings.Contains(set, " dune.2.9.3 ") {
		t.Errorf("the set %v lacks the compiler's switch or dune from opam", pkgs)
	}

	// A test dependency comes from opam, at a version that works with OCaml 4.13.
	a.OpamFiles["hello.opam"] = []byte(`opam-version: "2.0"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} "fmt" {with-test} ]
`)
	pkgs, err = solve(context.Background(), a, p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(" "+strings.Join(pkgs, " "), " fmt.") {
		t.Errorf("install = %v, want fmt.*", pkgs)
	}
	lower, err := solveWith(o, head, true, nil, nil)(context.Background(), a, p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lower, " ") == strings.Join(pkgs, " ") {
		t.Errorf("lower bounds %v equal the newest versions", lower)
	}

	// A dependency the platform cannot have is explained.
	a.OpamFiles["hello.opam"] = []byte(`opam-version: "2.0"
depends: [ "ocaml" {>= "5.1"} ]
`)
	if _, err := solve(context.Background(), a, p); err == nil || !strings.Contains(err.Error(), "ocaml") {
		t.Errorf("solve for ocaml >= 5.1 on 4.13: %v", err)
	}
}

func TestExtraOpamRepositoriesOfKilnYml(t *testing.T) {
	gitDir := repotest.GitDir(t)
	extra := t.TempDir()
	gitRun(t, extra, "init", "-q", "-b", "main")
	commitTree(t, extra, "main", map[string]string{
		"repo": "opam-version: \"2.0\"\n",
		"packages/mylib/mylib.1.0/opam": `opam-version: "2.0"
depends: [ "ocaml" {>= "4.08"} "dune" ]
`,
	}, "mylib")
	src := writeTree(t, map[string]string{
		"hello.opam": `opam-version: "2.0"
depends: [ "ocaml" "dune" "mylib" ]
`,
		ConfigFile: "opam-repositories:\n  - name: mine\n    url: " + extra + "\nlint:\n  lower-bound: false\n",
	})
	s := offlineService(t, gitDir)
	plan, err := s.plan(context.Background(), AnalysisInput{Checkout: Checkout{Dir: src}, OpamCommit: repotest.Master}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if got := " " + strings.Join(plan.Variants[0].Install, " ") + " "; !strings.Contains(got, " mylib.1.0 ") {
		t.Errorf("install = %q, want mylib.1.0 from the extra repository", got)
	}
	// The extra repository's package is in the layer's repository, so the build needs
	// no opam repository add.
	l := plan.Variants[0].Opam
	if l == nil {
		t.Fatal("no dependency layer")
	}
	if _, err := os.Stat(filepath.Join(src, l.Dir, "repo/packages/mylib/mylib.1.0/opam")); err != nil {
		t.Errorf("the layer lacks mylib: %v", err)
	}

	// Without an opam repository to solve against, the configuration is refused clearly.
	s.Opam = nil
	_, err = s.plan(context.Background(), AnalysisInput{Checkout: Checkout{Dir: src}}, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "--opam-repository") {
		t.Errorf("plan without an opam repository: %v", err)
	}
}

func TestPinDependsAreSolvedFromTheirSource(t *testing.T) {
	gitDir := repotest.GitDir(t)
	lib := t.TempDir()
	gitRun(t, lib, "init", "-q", "-b", "main")
	commitTree(t, lib, "main", map[string]string{"mylib.opam": `opam-version: "2.0"
depends: [ "ocaml" "dune" "fmt" ]
`}, "mylib")
	src := writeTree(t, map[string]string{
		"hello.opam": `opam-version: "2.0"
depends: [ "ocaml" "dune" "mylib" ]
pin-depends: [ "mylib.1.0" "git+file://` + lib + `#main" ]
`,
		ConfigFile: "lint:\n  lower-bound: false\n",
	})
	s := offlineService(t, gitDir)
	plan, err := s.plan(context.Background(), AnalysisInput{Checkout: Checkout{Dir: src}, OpamCommit: repotest.Master}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	install := strings.Join(plan.Variants[0].Install, " ")
	if !strings.Contains(install, "mylib.1.0") || !strings.Contains(install, "fmt.") {
		t.Errorf("install = %q, want the pinned mylib.1.0 and its dependency fmt", install)
	}
	sp, _ := plan.Variants[0].Spec(plan.Analysis)
	if !strings.Contains(sp.String(), "opam pin add -yn mylib.1.0 'git+file://"+lib+"#main'") {
		t.Errorf("spec does not pin mylib:\n%s", sp)
	}

	// A source that is not git is refused with the reason.
	bad := writeTree(t, map[string]string{"hello.opam": `opam-version: "2.0"
pin-depends: [ "mylib.1.0" "https://example.org/mylib-1.0.tar.gz" ]
`})
	_, err = s.plan(context.Background(), AnalysisInput{Checkout: Checkout{Dir: bad}, OpamCommit: repotest.Master}, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "only git sources") {
		t.Errorf("plan with a tarball pin: %v", err)
	}
}

// offlineService is a service on the first default platform solving against the opam
// repository at gitDir, whose archive cache cannot reach any upstream (its layers leave
// the sources to the build).
func offlineService(t *testing.T, gitDir string) *Service {
	t.Helper()
	client := &http.Client{Transport: roundTripper(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("no network in this test")
	})}
	archives, err := opamenv.NewArchives(t.TempDir(), opamenv.ArchivesOptions{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	return &Service{Opam: &opamrepo.Repository{GitDir: gitDir}, Platforms: matrix.Default()[:1],
		Mirrors: git.NewMirrors(t.TempDir(), git.MirrorsOptions{}), Archives: archives}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLintFmtInstallsOcamlformatFromTheRepository(t *testing.T) {
	files := map[string]string{"hello.opam": "opam-version: \"2.0\"\ndepends: [ \"ocaml\" \"dune\" ]\n",
		"dune-project": "(lang dune 2.0)\n", ".ocamlformat": "version = 0.26.2\n", ConfigFile: "lint:\n  lower-bound: false\n"}
	cases := []struct {
		name     string
		withRepo bool
		want     string // in the (lint-fmt) spec; "" for no (lint-fmt) variant
	}{
		{"with an opam repository", true, "ocamlformat.0.26.2"},
		{"without", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := offlineService(t, repotest.GitDir(t))
			in := AnalysisInput{Checkout: Checkout{Dir: writeTree(t, files)}, OpamCommit: repotest.Master}
			if !c.withRepo {
				s.Opam, in.OpamCommit = nil, ""
			}
			plan, err := s.plan(context.Background(), in, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			var fmtVariant *Variant
			for i, v := range plan.Variants {
				if v.Kind == KindLintFmt {
					fmtVariant = &plan.Variants[i]
				}
			}
			if c.want == "" {
				if fmtVariant != nil {
					t.Fatalf("a (lint-fmt) variant without an opam repository: %+v", fmtVariant)
				}
				return
			}
			if fmtVariant == nil || fmtVariant.Opam == nil {
				t.Fatalf("no (lint-fmt) variant with a dependency layer: %+v", plan.Variants)
			}
			sp, err := fmtVariant.Spec(plan.Analysis)
			if err != nil {
				t.Fatal(err)
			}
			text := sp.String()
			if !strings.Contains(text, "opam install ") || !strings.Contains(text, c.want) || strings.Contains(text, "ocamlformat=") {
				t.Errorf("(lint-fmt) spec does not install %s in its layer:\n%s", c.want, text)
			}
		})
	}
}
