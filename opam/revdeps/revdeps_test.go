package revdeps_test

import (
	"context"
	"slices"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
)

func TestDirectAndRecursive(t *testing.T) {
	git := repotest.GitDir(t)
	r, err := repository.LoadGit(context.Background(), git, repotest.Master)
	if err != nil {
		t.Fatal(err)
	}
	u := solver.NewUniverse(r, solver.DebianAMD64())
	p := opam.Package{Name: "ocplib-endian", Version: r.Latest("ocplib-endian").Version}
	direct, err := revdeps.Of(context.Background(), u, p, revdeps.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := revdeps.Of(context.Background(), u, p, revdeps.Options{Recursive: true, AnyInstallable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(direct) == 0 || len(rec) <= len(direct) {
		t.Fatalf("direct %d, recursive %d", len(direct), len(rec))
	}
	for _, d := range direct {
		if !slices.Contains(rec, d) {
			t.Errorf("%s direct but not recursive", d)
		}
		c := u.Cand(d)
		found := false
		for _, cl := range c.Deps {
			for _, a := range cl {
				found = found || a.Matches(p)
			}
		}
		if !found {
			t.Errorf("%s listed but does not depend on %s", d, p)
		}
	}
	if !slices.Contains(rec, p) || slices.Contains(direct, p) {
		t.Errorf("the recursive list holds the package itself, the direct one does not")
	}
	if _, err := revdeps.Of(context.Background(), u, opam.Package{Name: "nope", Version: "1"}, revdeps.Options{}); err == nil {
		t.Error("unknown package accepted")
	}
}
