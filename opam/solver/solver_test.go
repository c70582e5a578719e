package solver_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/solver"
)

var (
	once sync.Once
	uni  *solver.Universe
	err0 error
)

func universe(t testing.TB) *solver.Universe {
	t.Helper()
	git := repotest.GitDir(t)
	once.Do(func() {
		r, err := repository.LoadGit(context.Background(), git, repotest.Master)
		if err != nil {
			err0 = err
			return
		}
		uni = solver.NewUniverse(r, solver.DebianAMD64())
	})
	if err0 != nil {
		t.Fatal(err0)
	}
	return uni
}

func solve(t testing.TB, u *solver.Universe, req solver.Request) *solver.Selection {
	t.Helper()
	sel, err := u.Solve(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func version(sel *solver.Selection, name opam.PackageName) opam.Version {
	for _, p := range sel.Packages {
		if p.Name == name {
			return p.Version
		}
	}
	return ""
}

// check verifies a selection against the rules: every dependency satisfied, no
// conflict, available, one version per name.
func check(t *testing.T, u *solver.Universe, sel *solver.Selection) {
	t.Helper()
	inst := map[opam.PackageName]opam.Version{}
	for _, p := range sel.Packages {
		inst[p.Name] = p.Version
	}
	for _, p := range sel.Packages {
		c := u.Cand(p)
		if c == nil {
			continue
		}
		if c.Unavailable != "" {
			t.Errorf("%s selected but unavailable: %s", p, c.Unavailable)
		}
		if !clausesHold(u, c.Deps, inst) {
			t.Errorf("%s: dependencies %v not satisfied", p, c.Deps)
		}
		for _, a := range c.Conflicts {
			if v, in := inst[a.Name]; in && a.MatchesVersion(v) {
				t.Errorf("%s conflicts with selected %s.%s", p, a.Name, v)
			}
		}
	}
}

// clausesHold reports whether the installed versions satisfy every clause; an
// auxiliary candidate's atom holds when its own clauses do.
func clausesHold(u *solver.Universe, cls [][]opam.Atom, inst map[opam.PackageName]opam.Version) bool {
	for _, cl := range cls {
		ok := false
		for _, a := range cl {
			if v, in := inst[a.Name]; in && a.MatchesVersion(v) {
				ok = true
			}
			if vs := u.Versions(a.Name); len(vs) == 1 && vs[0].Aux && clausesHold(u, vs[0].Deps, inst) {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func TestSolveDunePicksNewest(t *testing.T) {
	u := universe(t)
	sel := solve(t, u, solver.Request{Install: []opam.Atom{{Name: "dune"}}})
	check(t, u, sel)
	if got, want := version(sel, "dune"), u.Repo.Latest("dune").Version; got != want {
		t.Errorf("dune %s chosen, newest is %s", got, want)
	}
	if version(sel, "ocaml") == "" {
		t.Errorf("no compiler in %v", sel.Packages)
	}
	low := solve(t, u, solver.Request{Install: []opam.Atom{{Name: "dune"}}, LowerBounds: true})
	check(t, u, low)
	if version(low, "dune").Compare(version(sel, "dune")) >= 0 {
		t.Errorf("lower bounds chose dune %s, not older than %s", version(low, "dune"), version(sel, "dune"))
	}
}

func TestSolveConstraintAndExplanation(t *testing.T) {
	u := universe(t)
	atoms, err := solver.ParseRequest([]string{"dune<3.0", "ocaml>=5.0"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.Solve(context.Background(), solver.Request{Install: atoms})
	var f *solver.Failure
	if !errors.As(err, &f) {
		t.Fatalf("dune<3.0 with ocaml>=5.0 solved: %v", err)
	}
	if !strings.Contains(f.Explanation, "ocaml") || !strings.Contains(f.Explanation, "dune.") {
		t.Errorf("explanation does not name the packages:\n%s", f.Explanation)
	}
	_, err = u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: "no-such-package"}}})
	if err == nil || !strings.Contains(err.Error(), "no version of no-such-package") {
		t.Errorf("unknown package: %v", err)
	}
}

func TestSolvePinnedDev(t *testing.T) {
	u := universe(t)
	f, err := opam.ParseString("foo.opam", `opam-version: "2.0"
depends: [ "dune" {>= "3.0"} "alcotest" {with-test} "odoc" {with-doc} ]
`)
	if err != nil {
		t.Fatal(err)
	}
	pin := &repository.Package{Package: opam.Package{Name: "foo", Version: "dev"}, Path: "foo.opam", File: f}
	sel := solve(t, u, solver.Request{Install: []opam.Atom{{Name: "foo"}}, Pins: []*repository.Package{pin}})
	if version(sel, "foo") != "dev" || version(sel, "alcotest") != "" {
		t.Errorf("pin without tests: %v", sel.Packages)
	}
	sel = solve(t, u, solver.Request{Install: []opam.Atom{{Name: "foo"}}, Pins: []*repository.Package{pin}, WithTest: true})
	if version(sel, "alcotest") == "" {
		t.Errorf("pin with tests lacks alcotest: %v", sel.Packages)
	}
}

// TestSolveEveryLatest solves the newest version of every package alone and checks
// each solution; the installability verdicts are compared with opam's in
// opamref tests.
func TestSolveEveryLatest(t *testing.T) {
	u := universe(t)
	ok, fail, gaveUp := 0, 0, 0
	var times []time.Duration
	for _, n := range u.Repo.Names() {
		p := u.Repo.Latest(n)
		t0 := time.Now()
		sel, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: n, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: p.Version})}}, AnySolution: true})
		times = append(times, time.Since(t0))
		switch {
		case err == nil:
			ok++
			check(t, u, sel)
		case errors.Is(err, solver.ErrGaveUp):
			gaveUp++
			fail++
		default:
			fail++
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	var total time.Duration
	for _, d := range times {
		total += d
	}
	t.Logf("latest versions: %d installable, %d not (%d gave up); median %v, p99 %v, max %v, total %v",
		ok, fail, gaveUp, times[len(times)/2], times[len(times)*99/100], times[len(times)-1], total)
	if ok < len(times)/2 {
		t.Errorf("only %d of %d latest versions installable", ok, len(times))
	}
	_ = slices.Sort[[]int]
}

func TestParseRequest(t *testing.T) {
	got, err := solver.ParseRequest([]string{"dune", "ocaml.5.1.0", "lwt>=5.0", "odoc!=2.0"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`"dune"`, `"ocaml" {= "5.1.0"}`, `"lwt" {>= "5.0"}`, `"odoc" {!= "2.0"}`}
	for i, a := range got {
		if a.String() != want[i] {
			t.Errorf("%d: %s, want %s", i, a, want[i])
		}
	}
	for _, bad := range []string{"", ">=1", "dune>=", "du ne", "dune=<1"} {
		if _, err := solver.ParseRequest([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"dune", "dune.3.0", "dune>=3", "a<=b", "x!=y.z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		atoms, err := solver.ParseRequest([]string{s})
		if err == nil && len(atoms) != 1 {
			t.Fatalf("%q gave %d atoms", s, len(atoms))
		}
	})
}
