package opamrepo

import (
	"context"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

func TestHeadOfABranch(t *testing.T) {
	dir := repotest.GitDir(t)
	cases := []struct {
		name    string
		branch  string
		want    string
		wantErr string
	}{
		{"default branch", "", repotest.Master, ""},
		{"missing branch", "no-such-branch", "", "no branch no-such-branch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := &Repository{GitDir: dir, Branch: c.branch}
			head, err := o.readHead(context.Background())
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("error %v, want one naming %q and the repository", err, c.wantErr)
				}
				return
			}
			if err != nil || head != c.want {
				t.Fatalf("head %s (%v), want %s", head, err, c.want)
			}
		})
	}
}

func TestSolveLocalPackages(t *testing.T) {
	o := &Repository{GitDir: repotest.GitDir(t)}
	p := matrix.Debian("amd64")
	local := func(depends string) Local {
		return Local{Files: []LocalFile{{Name: "hello", Path: "hello.opam",
			Data: []byte("opam-version: \"2.0\"\ndepends: [ " + depends + " ]\n")}}}
	}
	cases := []struct {
		name    string
		l       Local
		want    []string // packages of the set to install (a trailing "." matches any version)
		lacks   []string
		wantErr string
	}{
		{"the compiler's switch and dune from opam", local(`"ocaml" {>= "4.08"} "dune" {>= "2.0"}`),
			[]string{"ocaml-system.4.13.1", "ocaml.4.13.1", "base-unix.base", "dune."}, []string{"hello.", "dune.2.9.3", "ocaml-base-compiler."}, ""},
		{"a test dependency from opam", local(`"ocaml" "dune" "fmt" {with-test}`), []string{"fmt.", "dune."}, []string{"hello."}, ""},
		{"a compiler the image lacks", local(`"ocaml" {>= "5.0"}`), nil, nil, "ocaml"},
		{"a tool besides", Local{Also: []opam.Atom{{Name: "ocamlformat", Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: "0.26.2"})}}},
			[]string{"ocamlformat.0.26.2", "dune."}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkgs, err := o.Solve(context.Background(), repotest.Master, p, c.l)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("solve: %v %v, want an error naming %q", pkgs, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			has := func(w string) bool {
				for _, p := range pkgs {
					if p == w || strings.HasSuffix(w, ".") && strings.HasPrefix(p, w) {
						return true
					}
				}
				return false
			}
			for _, w := range c.want {
				if !has(w) {
					t.Errorf("install %v lacks %s", pkgs, w)
				}
			}
			for _, w := range c.lacks {
				if has(w) {
					t.Errorf("install %v has %s", pkgs, w)
				}
			}
		})
	}
}
