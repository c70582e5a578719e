package prdiff_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/prdiff"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func write(t *testing.T, dir, path, text string) {
	t.Helper()
	p := filepath.Join(dir, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// commitAndAnalyse commits the work tree of dir as a pull request and analyses it
// against baseID.
func commitAndAnalyse(t *testing.T, dir, baseID string) *prdiff.Result {
	t.Helper()
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "pr")
	head := git(t, dir, "rev-parse", "HEAD")
	res, err := prdiff.Analyse(context.Background(), filepath.Join(dir, ".git"), baseID, head, nil, prdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const base = `opam-version: "2.0"
synopsis: "A"
maintainer: "a@example.com"
depends: ["ocaml"]
`

func TestClassifyEachKind(t *testing.T) {
	testenv.RequireCommand(t, "git")
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "master")
	for _, p := range []string{"a/a.1", "b/b.1", "c/c.1", "d/d.1", "e/e.1"} {
		write(t, dir, "packages/"+p+"/opam", base)
	}
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "base")
	baseID := git(t, dir, "rev-parse", "HEAD")
	git(t, dir, "checkout", "-q", "-b", "pr")
	write(t, dir, "packages/a/a.1/opam", strings.Replace(base, `"A"`, `"A better synopsis"`, 1))
	write(t, dir, "packages/b/b.1/opam", strings.Replace(base, `["ocaml"]`, `["ocaml" "dune"]`, 1))
	write(t, dir, "packages/c/c.1/opam", base+"available: false\n")
	git(t, dir, "rm", "-q", "packages/d/d.1/opam")
	write(t, dir, "packages/e/e.2/opam", base)
	write(t, dir, "packages/new/new.0.1/opam", base)
	write(t, dir, "packages/e/e.1/files/fix.patch", "--- a\n+++ b\n")
	write(t, dir, "packages/e/e.1/README", "stray\n")
	write(t, dir, "README.md", "hello\n")
	res := commitAndAnalyse(t, dir, baseID)
	got := map[string]prdiff.Kind{}
	for _, c := range res.Changes {
		got[c.Package.String()] = c.Kind
	}
	want := map[string]prdiff.Kind{
		"a.1": prdiff.Insignificant, "b.1": prdiff.Significant, "c.1": prdiff.Unavailable,
		"d.1": prdiff.Deleted, "e.2": prdiff.NewRelease, "new.0.1": prdiff.NewPackage, "e.1": prdiff.Significant,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("changes %v, want %v", got, want)
	}
	if !slices.Equal(res.Unexpected, []string{"README.md", "packages/e/e.1/README"}) {
		t.Errorf("unexpected paths %v", res.Unexpected)
	}
	for _, c := range res.Changes {
		if c.Kind == prdiff.Deleted && len(c.Lint) > 0 {
			t.Errorf("deleted %s linted: %v", c.Package, c.Lint)
		}
		if c.Kind == prdiff.NewPackage && len(c.Lint) == 0 {
			t.Errorf("new package %s without lint findings (no url, no license...)", c.Package)
		}
	}
}

func TestVersionTwinIsFlagged(t *testing.T) {
	testenv.RequireCommand(t, "git")
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "master")
	write(t, dir, "packages/ocaml/ocaml.5.5.0+introcaml/opam", base)
	write(t, dir, "packages/foo/foo.1.0/opam", base)
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "base")
	baseID := git(t, dir, "rev-parse", "HEAD")
	write(t, dir, "packages/ocaml/ocaml.5.5.0+introcaml0/opam", base)
	write(t, dir, "packages/foo/foo.1.1/opam", base)
	res := commitAndAnalyse(t, dir, baseID)
	tests := []struct {
		pkg  string
		twin bool
	}{
		{"ocaml.5.5.0+introcaml0", true},
		{"foo.1.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.pkg, func(t *testing.T) {
			i := slices.IndexFunc(res.Changes, func(c prdiff.Change) bool { return c.Package.String() == tc.pkg })
			if i < 0 {
				t.Fatalf("%s not in the changes %v", tc.pkg, res.Changes)
			}
			c := res.Changes[i]
			if c.Kind != prdiff.NewRelease {
				t.Errorf("kind %q, want %q", c.Kind, prdiff.NewRelease)
			}
			found := slices.ContainsFunc(c.Lint, func(f lint.Finding) bool {
				return f.Rule == "repo-version-twin" && strings.Contains(f.Message, "'5.5.0+introcaml'")
			})
			if found != tc.twin {
				t.Errorf("twin flagged %v, want %v: %v", found, tc.twin, c.Lint)
			}
		})
	}
}
