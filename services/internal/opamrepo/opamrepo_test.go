package opamrepo

import (
	"context"
	"strings"
	"testing"

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
		want    string // prefix of the packages to install, joined by spaces
		wantErr string
	}{
		{"everything in the image", local(`"ocaml" {>= "4.08"} "dune" {>= "2.0"}`), "", ""},
		{"a test dependency from opam", local(`"ocaml" "dune" "fmt" {with-test}`), "fmt.", ""},
		{"a compiler the image lacks", local(`"ocaml" {>= "5.0"}`), "", "ocaml"},
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
			got := strings.Join(pkgs, " ")
			if (c.want == "" && got != "") || !strings.HasPrefix(got, c.want) {
				t.Errorf("install %q, want %q…", got, c.want)
			}
		})
	}
}
