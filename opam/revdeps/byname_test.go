package revdeps_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
)

func TestByNameAndUnavailable(t *testing.T) {
	dir := repotest.Files(t, map[string]string{
		"lib.1":      ``,
		"lib.2":      ``,
		"old.1":      `depends: ["lib" {< "2"}]`,
		"new.1":      `depends: ["lib" {>= "2"}]`,
		"new.2":      `depends: ["lib" {>= "2"}]`,
		"any.1":      `depends: ["lib"]`,
		"macos.1":    `depends: ["lib"] available: os = "macos"`,
		"conflict.1": `depends: ["lib"] conflicts: ["lib" {= "1"}]`,
		"top.1":      `depends: ["old"]`,
	})
	r, err := repository.LoadDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	u := solver.NewUniverse(r, solver.DebianAMD64())
	tests := []struct {
		name   string
		of     string
		opts   revdeps.Options
		latest bool
		want   string
	}{
		{name: "one version", of: "lib.1", want: "[any.1 old.1]"},
		{name: "by name", of: "lib", want: "[any.1 conflict.1 new.1 new.2 old.1]"},
		{name: "by name, newest of each", of: "lib", latest: true, want: "[any.1 conflict.1 new.2 old.1]"},
		{name: "by name, recursive", of: "lib", opts: revdeps.Options{Recursive: true}, want: "[any.1 conflict.1 lib.1 lib.2 new.1 new.2 old.1 top.1]"},
		{name: "unavailable left out", of: "lib.2", opts: revdeps.Options{AnyInstallable: true}, want: "[any.1 conflict.1 new.1 new.2]"},
		{name: "unavailable counted", of: "lib.2", opts: revdeps.Options{AnyInstallable: true, All: true}, want: "[any.1 conflict.1 macos.1 new.1 new.2]"},
		{name: "unavailable never coinstallable", of: "lib.2", opts: revdeps.Options{All: true}, want: "[any.1 conflict.1 new.1 new.2]"},
		{name: "unavailable by name", of: "lib", opts: revdeps.Options{AnyInstallable: true, All: true}, want: "[any.1 conflict.1 macos.1 new.1 new.2 old.1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var list []opam.Package
			var err error
			if p, ok := opam.ParsePackage(tc.of); ok {
				list, err = revdeps.Of(context.Background(), u, p, tc.opts)
			} else {
				list, err = revdeps.OfName(context.Background(), u, opam.PackageName(tc.of), tc.opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.latest {
				list = revdeps.Latest(list)
			}
			if got := fmt.Sprint(list); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := revdeps.OfName(context.Background(), u, "nope", revdeps.Options{}); err == nil {
		t.Error("unknown name accepted")
	}
}

func TestCI(t *testing.T) {
	dir := repotest.Files(t, map[string]string{
		"lib.1":        ``,
		"lib.2":        ``,
		"direct.1":     `depends: ["lib"]`,
		"old.1":        `depends: ["lib" {< "2"}]`,
		"opt.1":        `depopts: ["lib"]`,
		"tst.1":        `depends: ["lib" {with-test}]`,
		"tstbad.1":     `depends: ["lib" {with-test} "nothere"]`,
		"rec.1":        `depends: ["direct"]`,
		"optrec.1":     `depends: ["opt"]`,
		"tstrec.1":     `depends: ["tst"]`,
		"conflict.1":   `depends: ["lib"] conflicts: ["lib" {= "2"}]`,
		"unrelated.1":  ``,
		"ocaml.4.13.1": ``,
		"ocaml.5.2.0":  ``,
		"needs5.1":     `depends: ["lib" "ocaml" {>= "5.0"}]`,
	})
	r, err := repository.LoadDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	plain := solver.NewUniverse(r, solver.DebianAMD64())
	withTest := solver.NewUniverseFlags(r, solver.DebianAMD64(), solver.Flags{WithTest: true})
	ocaml413 := opam.Atom{Name: "ocaml", Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: "4.13.1"})}
	tests := []struct {
		name string
		of   opam.Package
		hold []opam.Atom
		want string
	}{
		// direct and recursive dependencies, depopts (not followed), test dependencies
		// (not followed); never lib itself, nor versions not coinstallable with it.
		{"new release", opam.Package{Name: "lib", Version: "2"}, nil, "[direct.1 needs5.1 opt.1 rec.1 tst.1]"},
		{"older release", opam.Package{Name: "lib", Version: "1"}, nil, "[conflict.1 direct.1 needs5.1 old.1 opt.1 rec.1 tst.1]"},
		{"held compiler", opam.Package{Name: "lib", Version: "2"}, []opam.Atom{ocaml413}, "[direct.1 opt.1 rec.1 tst.1]"},
		{"leaf", opam.Package{Name: "rec", Version: "1"}, nil, "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, err := revdeps.CI(context.Background(), plain, withTest, tc.of, tc.hold...)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(list); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := revdeps.CI(context.Background(), plain, withTest, opam.Package{Name: "nope", Version: "1"}); err == nil {
		t.Error("unknown package accepted")
	}
	ocaml5 := opam.Atom{Name: "ocaml", Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: "5.2.0"})}
	if _, err := revdeps.CI(context.Background(), plain, withTest, opam.Package{Name: "ocaml", Version: "4.13.1"}, ocaml5); !errors.Is(err, revdeps.ErrNotInstallable) {
		t.Errorf("revdeps of a version that cannot be installed with the held atoms: %v, want ErrNotInstallable", err)
	}
}
