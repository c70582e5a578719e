package repository_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

func versions(ps []*repository.Package) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Package.String())
	}
	return fmt.Sprint(out)
}

func TestVersionsOpamConsidersEqual(t *testing.T) {
	const text = "opam-version: \"2.0\"\n"
	dir := fixture(t, map[string]string{
		"packages/ocaml/ocaml.5.5.0+introcaml/opam":  text,
		"packages/ocaml/ocaml.5.5.0+introcaml0/opam": text,
		"packages/ocaml/ocaml.5.4.0/opam":            text,
		"packages/foo/foo.1.0/opam":                  text,
		"packages/foo/foo.1.00/opam":                 text,
		"packages/foo/foo.01.0/opam":                 text,
		"packages/foo/foo.1.0.1/opam":                text,
	})
	for _, l := range loaders {
		t.Run(l.name, func(t *testing.T) {
			r, err := l.load(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name, got, want string
			}{
				{"ocaml versions", versions(r.Versions("ocaml")), "[ocaml.5.4.0 ocaml.5.5.0+introcaml0]"},
				{"foo versions", versions(r.Versions("foo")), "[foo.1.00 foo.1.0.1]"},
				{"shadowed", versions(r.Shadowed()), "[foo.01.0 foo.1.0 ocaml.5.5.0+introcaml]"},
				{"twins of the kept one", versions(r.Twins(opam.Package{Name: "ocaml", Version: "5.5.0+introcaml0"})), "[ocaml.5.5.0+introcaml]"},
				{"twins of a shadowed one", versions(r.Twins(opam.Package{Name: "foo", Version: "1.0"})), "[foo.01.0 foo.1.00]"},
				{"no twin", versions(r.Twins(opam.Package{Name: "foo", Version: "1.0.1"})), "[]"},
				{"shadowed version by name", fmt.Sprint(r.Get(opam.Package{Name: "ocaml", Version: "5.5.0+introcaml"}) != nil), "true"},
				{"count", fmt.Sprint(r.Len()), "4"},
			}
			for _, tc := range tests {
				if tc.got != tc.want {
					t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
				}
			}
		})
	}
}

func TestUpdateKeepsTheTwinOpamKeeps(t *testing.T) {
	const text = "opam-version: \"2.0\"\n"
	dir := fixture(t, map[string]string{"packages/ocaml/ocaml.5.5.0+introcaml/opam": text})
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("tag", "one")
	twin := filepath.Join(dir, "packages/ocaml/ocaml.5.5.0+introcaml0")
	if err := os.MkdirAll(twin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(twin, "opam"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", ".")
	git("commit", "-q", "-m", "twin")
	git("tag", "two")
	git("rm", "-q", "-r", "packages/ocaml/ocaml.5.5.0+introcaml0")
	git("commit", "-q", "-m", "no twin")
	gitDir := filepath.Join(dir, ".git")
	ctx := context.Background()
	one, err := repository.LoadGit(ctx, gitDir, "one")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		to, versions, shadowed string
	}{
		{"two", "[ocaml.5.5.0+introcaml0]", "[ocaml.5.5.0+introcaml]"},
		{"master", "[ocaml.5.5.0+introcaml]", "[]"},
	}
	r := one
	for _, s := range steps {
		t.Run(s.to, func(t *testing.T) {
			next, _, err := r.Update(ctx, gitDir, s.to)
			if err != nil {
				t.Fatal(err)
			}
			if got := versions(next.Versions("ocaml")); got != s.versions {
				t.Errorf("versions %s, want %s", got, s.versions)
			}
			if got := versions(next.Shadowed()); got != s.shadowed {
				t.Errorf("shadowed %s, want %s", got, s.shadowed)
			}
			r = next
		})
	}
}
