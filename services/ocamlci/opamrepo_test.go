package ocamlci

import (
	"context"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

func TestSolveAgainstTheRealOpamRepository(t *testing.T) {
	o := &OpamRepository{GitDir: repotest.GitDir(t)}
	head, err := o.readHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if head != repotest.Master {
		t.Fatalf("head = %s, want %s", head, repotest.Master)
	}
	p := DebianPlatform("amd64")
	solve := o.Solver(head, false)

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
	if len(pkgs) != 0 {
		t.Errorf("ocaml and dune are in the image, yet the solve installs %v", pkgs)
	}

	// A test dependency comes from opam, at a version that works with OCaml 4.13.
	a.OpamFiles["hello.opam"] = []byte(`opam-version: "2.0"
depends: [ "ocaml" {>= "4.08"} "dune" {>= "2.0"} "fmt" {with-test} ]
`)
	pkgs, err = solve(context.Background(), a, p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.Join(pkgs, " "), "fmt.") {
		t.Errorf("install = %v, want fmt.*", pkgs)
	}
	lower, err := o.Solver(head, true)(context.Background(), a, p)
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
