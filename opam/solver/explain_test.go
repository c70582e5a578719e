package solver_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/solver"
)

// TestSolveExplainsRejections checks the reason given for each version rejected
// because of what is selected already.
func TestSolveExplainsRejections(t *testing.T) {
	for _, c := range []struct {
		name    string
		files   map[string]string
		request []string
		want    string
	}{
		{"a selected version conflicts with it",
			map[string]string{"a.1": `conflicts: ["b"]`, "b.1": ``},
			[]string{"a", "b"}, "b.1: a.1 conflicts with it"},
		{"it conflicts with a selected version",
			map[string]string{"a.1": ``, "b.1": `conflicts: ["a" {< "2"}]`},
			[]string{"a", "b"}, "b.1: it conflicts with a.1"},
		{"a selected version takes only another version as an optional dependency",
			map[string]string{"a.1": `depopts: ["b" {>= "2"}]`, "b.1": ``},
			[]string{"a", "b"}, "b.1: a.1 accepts only b {>= 2} as an optional dependency"},
		{"its dependency is chosen at another version",
			map[string]string{"a.1": `depends: ["b" {>= "2"} | "c" {>= "2"}]`, "b.1": ``, "b.2": ``, "c.1": ``, "c.2": ``},
			[]string{"b.1", "c.1", "a"}, "a.1: it needs b {>= 2} | c {>= 2}, but b.1, c.1 is chosen"},
		{"a selected version needs another version",
			map[string]string{"a.1": `depends: ["b" {>= "2"} | "c"]`, "b.1": ``, "b.2": `conflicts: ["a"]`, "c.1": `conflicts: ["a"]`},
			[]string{"a", "b"}, "a.1 needs b {>= 2} | c"},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo, err := repository.LoadDir(context.Background(), repotest.Files(t, c.files))
			if err != nil {
				t.Fatal(err)
			}
			req, err := solver.ParseRequest(c.request)
			if err != nil {
				t.Fatal(err)
			}
			sel, err := solver.NewUniverse(repo, solver.DebianAMD64()).Solve(context.Background(), solver.Request{Install: req})
			var f *solver.Failure
			if !errors.As(err, &f) {
				t.Fatalf("solved %v (error %v), want no solution", sel, err)
			}
			if !strings.Contains(f.Explanation, c.want) {
				t.Errorf("explanation does not say %q:\n%s", c.want, f.Explanation)
			}
		})
	}
}
