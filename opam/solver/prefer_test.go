package solver_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/solver"
)

// smallRepo indexes a repository of a few opam files (see repotest.Files).
func smallRepo(t testing.TB, files map[string]string) *repository.Repo {
	t.Helper()
	r, err := repository.LoadDir(context.Background(), repotest.Files(t, files))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func platform(opamVersion string) solver.Platform {
	p := solver.DebianAMD64()
	p["opam-version"] = opamVersion
	return p
}

func TestAvoidVersionTriedLast(t *testing.T) {
	files := map[string]string{
		"lib.1.0":       ``,
		"lib.2.0":       `flags: avoid-version`,
		"lib.3.0~beta":  `flags: [avoid-version]`,
		"old.1.0":       ``,
		"old.2.0":       `flags: deprecated`,
		"b.1":           `flags: avoid-version`,
		"c.1":           ``,
		"either.1":      `depends: ["b" | "c"]`,
		"compiler.5.6":  `flags: avoid-version`,
		"compiler.5.2":  ``,
		"app.1":         `depends: ["compiler" "lib"]`,
		"onlyavoid.1.0": `flags: avoid-version`,
		// The newest ocaml needs a compiler flagged avoid-version: opam takes an older
		// ocaml rather than install any avoided version.
		"ocaml.5.6":    `depends: ["variants" {= "5.6"} | "base" {= "5.6"}]`,
		"ocaml.5.2":    `depends: ["variants" {= "5.2"} | "base" {= "5.2"}]`,
		"variants.5.6": `flags: avoid-version`,
		"variants.5.2": ``,
		"base.5.2":     ``,
		"findlib.1":    `depends: ["ocaml"]`,
		"cloning.1":    `flags: avoid-version`,
		"needsavoid.1": `depends: ["cloning" "lib"]`,
	}
	r := smallRepo(t, files)
	tests := []struct {
		name     string
		opam     string
		req      []string
		lower    bool
		want     []string
		notWant  []string
		wantFail bool
	}{
		{name: "newest not avoided", opam: "2.1.2", req: []string{"lib"}, want: []string{"lib.1.0"}},
		{name: "asked for explicitly", opam: "2.1.2", req: []string{"lib>=2.0"}, want: []string{"lib.3.0~beta"}},
		{name: "exact avoided version", opam: "2.1.2", req: []string{"lib.2.0"}, want: []string{"lib.2.0"}},
		{name: "alternative without the flag", opam: "2.1.2", req: []string{"either"}, want: []string{"c.1"}, notWant: []string{"b"}},
		{name: "dependencies too", opam: "2.1.2", req: []string{"app"}, want: []string{"compiler.5.2", "lib.1.0"}},
		{name: "lower bounds", opam: "2.1.2", req: []string{"lib"}, lower: true, want: []string{"lib.1.0"}},
		{name: "only avoided versions", opam: "2.1.2", req: []string{"onlyavoid"}, want: []string{"onlyavoid.1.0"}},
		// variants.5.2 lags by one (variants.5.6, avoided, counts as newer), base.5.2
		// by none: opam takes base.
		{name: "none at all if possible", opam: "2.1.2", req: []string{"findlib"}, want: []string{"ocaml.5.2", "base.5.2"}, notWant: []string{"variants"}},
		{name: "asked for through a constraint", opam: "2.1.2", req: []string{"findlib", "ocaml>=5.6"}, want: []string{"ocaml.5.6", "variants.5.6"}},
		{name: "needed by what is asked for", opam: "2.1.2", req: []string{"needsavoid"}, want: []string{"cloning.1", "lib.1.0"}},
		{name: "deprecated is a plain flag for opam 2.1", opam: "2.1.2", req: []string{"old"}, want: []string{"old.2.0"}},
		{name: "deprecated is avoided by opam 2.2", opam: "2.2.0", req: []string{"old"}, want: []string{"old.1.0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := solver.NewUniverse(r, platform(tc.opam))
			atoms, err := solver.ParseRequest(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			sel, err := u.Solve(context.Background(), solver.Request{Install: atoms, LowerBounds: tc.lower})
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprint(sel.Packages)
			for _, w := range tc.want {
				p, _ := opam.ParsePackage(w)
				if version(sel, p.Name) != p.Version {
					t.Errorf("selection %s, want %s", got, w)
				}
			}
			for _, n := range tc.notWant {
				if version(sel, opam.PackageName(n)) != "" {
					t.Errorf("selection %s has %s", got, n)
				}
			}
		})
	}
}

// pairs writes `depends: [ ("a0" & "b0") | ... ]` with n alternatives.
func pairs(n int) string {
	var alts []string
	for i := range n {
		alts = append(alts, fmt.Sprintf(`("a%d" & "b%d")`, i, i))
	}
	return "depends: [ " + strings.Join(alts, " | ") + " ]"
}

func TestLargeDisjunctionStaysLinear(t *testing.T) {
	files := map[string]string{
		"x.1":   pairs(40),
		"a39.1": ``,
		"b39.1": ``,
		"a0.1":  ``, // b0 is missing: the first alternative cannot hold
		"y.1":   pairs(40) + "\nconflicts: [\"a39\"]",
		"big.1": "depends: [" + strings.Repeat(` "a0"`, solver.MaxDependsAtoms+1) + "]",
		// An alternative inside an alternative, each large enough to need new atoms.
		"z.1": `depends: [ ` + strings.Repeat(`("a0" & "b0") | `, 10) + `(("a39" & "b39") | ` + strings.Repeat(`("a0" & "b0") | `, 10) + `"nope") ]`,
	}
	r := smallRepo(t, files)
	u := solver.NewUniverse(r, solver.DebianAMD64())
	tests := []struct {
		req  string
		want []string
		fail string
	}{
		{req: "x", want: []string{"x.1", "a39.1", "b39.1"}},
		{req: "z", want: []string{"z.1", "a39.1", "b39.1"}},
		{req: "y", fail: "y.1"},
		{req: "big", fail: "packages/big/big.1/opam: depends has 10001 package atoms"},
	}
	for _, tc := range tests {
		t.Run(tc.req, func(t *testing.T) {
			sel, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: opam.PackageName(tc.req)}}})
			if tc.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fail) {
					t.Fatalf("got %v, want an error with %q", err, tc.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range sel.Packages {
				got = append(got, p.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(slices.Sorted(slices.Values(tc.want))) {
				t.Errorf("selection %v, want %v", got, tc.want)
			}
		})
	}
}

func BenchmarkUniverseLargeDisjunction(b *testing.B) {
	r := smallRepo(b, map[string]string{"x.1": pairs(2000), "a1.1": ``, "b1.1": ``})
	for b.Loop() {
		solver.NewUniverse(r, solver.DebianAMD64())
	}
}

// TestOpamInstallCriteria checks that the solution is the one opam 2.1's criteria
// rank first, not the first one found newest-first: least version lag of what is
// asked for, then of every package (where avoid-version versions count as newer than
// the others), then fewest packages.
func TestOpamInstallCriteria(t *testing.T) {
	r := smallRepo(t, map[string]string{
		// ocaml.2 needs extra, whose release candidates (avoid-version) give it a lag of
		// 3; ocaml.1 and base.1 lag by 1 each: opam takes ocaml.1.
		"ocaml.2":      `depends: ["base" {= "2"} "extra"]`,
		"ocaml.1":      `depends: ["base" {= "1"}]`,
		"base.1":       ``,
		"base.2":       ``,
		"extra.1":      ``,
		"extra.2~rc1":  `flags: avoid-version`,
		"extra.2~rc2":  `flags: avoid-version`,
		"extra.2~rc3":  `flags: avoid-version`,
		"findlib.1":    `depends: ["ocaml"]`,
		"lib.2":        `depends: ["heavy" {< "2"}]`,
		"lib.1":        ``,
		"heavy.1":      ``,
		"heavy.2":      ``,
		"heavy.3":      ``,
		"compiler.1":   `depends: [("vanilla" & "config") | "variants" {= "1+a"}]`,
		"vanilla.1":    ``,
		"config.1":     ``,
		"variants.1+a": ``,
		"variants.1+b": ``,
		"variants.1+c": ``,
		"small.1":      `depends: ["one" | ("two" & "three")]`,
		"one.1":        ``,
		"two.1":        ``,
		"three.1":      ``,
		"oldreq.1":     ``,
		"oldreq.2":     `depends: ["missing"]`,
	})
	u := solver.NewUniverse(r, solver.DebianAMD64())
	tests := []struct {
		name, req string
		want      []string
	}{
		{"less lag over more packages", "findlib", []string{"base.1", "findlib.1", "ocaml.1"}},
		{"the request's lag first", "lib", []string{"heavy.1", "lib.2"}},
		{"lag before the number of packages", "compiler", []string{"compiler.1", "config.1", "vanilla.1"}},
		{"fewer packages at equal lag", "small", []string{"one.1", "small.1"}},
		{"uninstallable newer versions", "oldreq", []string{"oldreq.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{{Name: opam.PackageName(tc.req)}}})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range sel.Packages {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("selection %v, want %v", got, tc.want)
			}
		})
	}
}
