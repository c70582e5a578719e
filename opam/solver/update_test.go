package solver

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

// universeState is every candidate of a universe as the solver and the reverse
// index read it, one line each, sorted.
func universeState(u *Universe) string {
	u.fillListDeps()
	var lines []string
	for _, cs := range u.all() {
		for _, c := range cs {
			lines = append(lines, fmt.Sprintf("%s dead=%v %q unavailable=%q deps=%v counts=%v conflicts=%v depopts=%v list=%v",
				c, c.dead, c.deadWhy, c.Unavailable, c.Deps, c.counts, c.Conflicts, c.Depopts, c.listDeps))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// diffLines names the first line that differs.
func diffLines(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("updated: %s\nfresh:   %s", la[i], lb[i])
		}
	}
	return fmt.Sprintf("%d lines updated, %d fresh", len(la), len(lb))
}

func opamFile(body string) string { return "opam-version: \"2.0\"\n" + body }

func TestUpdateMatchesNewUniverse(t *testing.T) {
	var alts []string
	for i := range 70 {
		alts = append(alts, fmt.Sprintf(`("b" {= "%d"} & "c")`, i))
	}
	large := `depends: [` + strings.Join(alts, " | ") + `]`
	base := map[string]string{
		"packages/a/a.1/opam": opamFile(`depends: ["b" {>= "2"}]`),
		"packages/b/b.1/opam": opamFile(``),
		"packages/c/c.1/opam": opamFile(`depends: ["a"]`),
		"packages/d/d.1/opam": opamFile(`depends: ["x"]`),
		"packages/e/e.1/opam": opamFile(`depends: ["d"] depopts: ["c"]`),
		"packages/f/f.1/opam": opamFile(large),
		"packages/g/g.1/opam": opamFile(`depends: ["f"]`),
		"packages/h/h.1/opam": opamFile(`depends: ["c" {with-test}]`),
	}
	tests := []struct {
		name   string
		add    map[string]string // packages added or changed
		remove []string
	}{
		{"nothing changed", nil, nil},
		{"a new release makes a dead version installable", map[string]string{"packages/b/b.2/opam": opamFile(``)}, nil},
		{"a missing dependency appears", map[string]string{"packages/x/x.1/opam": opamFile(``)}, nil},
		{"a changed file frees its users", map[string]string{"packages/d/d.1/opam": opamFile(``)}, nil},
		{"a removed version kills its users, recursively", nil, []string{"b.1"}},
		{"a large disjunction changes", map[string]string{"packages/f/f.1/opam": opamFile(`depends: ["b" | "c"]`)}, nil},
		{"a large disjunction appears", map[string]string{"packages/g/g.1/opam": opamFile(large)}, nil},
		{"a version becomes unavailable", map[string]string{"packages/c/c.1/opam": opamFile(`depends: ["a"] available: false`)}, nil},
		{"a package goes", nil, []string{"f.1", "g.1"}},
	}
	for _, flags := range []Flags{{}, {WithTest: true}} {
		r0, err := repository.LoadDir(context.Background(), repotest.Files(t, base))
		if err != nil {
			t.Fatal(err)
		}
		u0 := NewUniverseFlags(r0, DebianAMD64(), flags)
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/with-test=%v", tc.name, flags.WithTest), func(t *testing.T) {
				pkgs := r0.Packages()
				pkgs = slices.DeleteFunc(slices.Clone(pkgs), func(p *repository.Package) bool {
					return slices.Contains(tc.remove, p.Package.String()) || tc.add["packages/"+string(p.Name)+"/"+p.Package.String()+"/opam"] != ""
				})
				if len(tc.add) > 0 {
					added, err := repository.LoadDir(context.Background(), repotest.Files(t, tc.add))
					if err != nil {
						t.Fatal(err)
					}
					pkgs = append(pkgs, added.Packages()...)
				}
				r1 := repository.New("", pkgs, nil)
				before := universeState(u0)
				got, want := universeState(u0.Update(r1)), universeState(NewUniverseFlags(r1, DebianAMD64(), flags))
				if got != want {
					t.Errorf("the updated universe differs from a new one:\n%s", diffLines(got, want))
				}
				if after := universeState(u0); after != before {
					t.Errorf("the update changed the universe it started from:\n%s", diffLines(after, before))
				}
			})
		}
	}
}

// TestUpdateRealMerges updates the universe of a base commit of the snapshot of
// opam-repository with merged pull requests, and of one merge to the next base.
func TestUpdateRealMerges(t *testing.T) {
	testenv.Short(t, "makes universes of the real opam repository")
	gitDir := repotest.GitDir(t)
	out, err := exec.Command("git", "--git-dir", gitDir, "rev-list", "--merges", "--parents", "--reverse", "--topo-order", repotest.Master).Output()
	if err != nil {
		t.Fatal(err)
	}
	var merges [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			merges = append(merges, f)
		}
	}
	ctx := context.Background()
	m := merges[len(merges)/2]
	r0, err := repository.LoadGit(ctx, gitDir, m[1])
	if err != nil {
		t.Fatal(err)
	}
	u0 := NewUniverse(r0, DebianAMD64())
	for _, to := range []struct{ name, commit string }{{"the merge", m[0]}, {"ten merges later", merges[len(merges)/2+10][0]}} {
		t.Run(to.name, func(t *testing.T) {
			r1, changes, err := r0.Update(ctx, gitDir, to.commit)
			if err != nil {
				t.Fatal(err)
			}
			got, want := u0.Update(r1), NewUniverse(r1, DebianAMD64())
			if a, b := universeState(got), universeState(want); a != b {
				t.Errorf("%d files changed: the updated universe differs from a new one:\n%s", len(changes), diffLines(a, b))
			}
			dune := opam.Package{Name: "dune", Version: r1.Latest("dune").Version}
			if a, b := len(got.DependsOn(got.Cand(dune), true)), len(want.DependsOn(want.Cand(dune), true)); a != b {
				t.Errorf("%d versions depend on %s in the updated universe, %d in a new one", a, dune, b)
			}
		})
	}
}
