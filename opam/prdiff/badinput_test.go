package prdiff_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/prdiff"
)

// TestBadInput makes, for each case, a pull request that cannot be tested as it
// stands and checks that its analysis fails with the named reason, about the path
// at fault, while a good package of the same pull request is still classified.
func TestBadInput(t *testing.T) {
	testenv.RequireCommand(t, "git")
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		reason prdiff.Reason
		path   string
	}{
		{
			name: "malformed opam file",
			change: func(t *testing.T, dir string) {
				write(t, dir, "packages/bad/bad.1/opam", "opam-version: \"2.0\"\ndepends: [ \"ocaml\"\n")
			},
			reason: prdiff.MalformedOpam,
			path:   "packages/bad/bad.1/opam",
		},
		{
			name:   "path outside packages",
			change: func(t *testing.T, dir string) { write(t, dir, "tools/hack.sh", "echo\n") },
			reason: prdiff.UnexpectedPath,
			path:   "tools/hack.sh",
		},
		{
			name:   "directory named for another package",
			change: func(t *testing.T, dir string) { write(t, dir, "packages/bad/other.1/opam", base) },
			reason: prdiff.UnexpectedPath,
			path:   "packages/bad/other.1",
		},
		{
			name: "symlink",
			change: func(t *testing.T, dir string) {
				write(t, dir, "packages/bad/bad.1/opam", base)
				if err := os.MkdirAll(filepath.Join(dir, "packages/bad/bad.1/files"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("/etc/passwd", filepath.Join(dir, "packages/bad/bad.1/files/passwd")); err != nil {
					t.Fatal(err)
				}
			},
			reason: prdiff.Symlink,
			path:   "packages/bad/bad.1/files/passwd",
		},
		{
			name: "50 MB file",
			change: func(t *testing.T, dir string) {
				write(t, dir, "packages/bad/bad.1/opam", base)
				write(t, dir, "packages/bad/bad.1/files/big.patch", strings.Repeat("x", 50<<20))
			},
			reason: prdiff.FileTooLarge,
			path:   "packages/bad/bad.1/files/big.patch",
		},
		{
			name: "merge conflict",
			change: func(t *testing.T, dir string) {
				write(t, dir, "packages/a/a.1/opam", strings.Replace(base, `"A"`, `"from the pull request"`, 1))
			},
			reason: prdiff.MergeConflict,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			git(t, dir, "init", "-q", "-b", "master")
			write(t, dir, "packages/a/a.1/opam", base)
			git(t, dir, "add", ".")
			git(t, dir, "commit", "-q", "-m", "base")
			git(t, dir, "checkout", "-q", "-b", "pr")
			write(t, dir, "packages/good/good.1/opam", base)
			tc.change(t, dir)
			git(t, dir, "add", ".")
			git(t, dir, "commit", "-q", "-m", "pr")
			head := git(t, dir, "rev-parse", "HEAD")
			git(t, dir, "checkout", "-q", "master")
			if tc.reason == prdiff.MergeConflict {
				write(t, dir, "packages/a/a.1/opam", strings.Replace(base, `"A"`, `"from master"`, 1))
				git(t, dir, "commit", "-q", "-am", "master moves on")
			}
			baseID := git(t, dir, "rev-parse", "HEAD")
			res, err := prdiff.Analyse(context.Background(), filepath.Join(dir, ".git"), baseID, head, nil, prdiff.Options{})
			if err != nil {
				t.Fatalf("analysis error instead of a failed analysis: %v", err)
			}
			if !res.Failed() {
				t.Fatalf("analysis did not fail: %+v", res)
			}
			found := false
			for _, p := range res.Problems {
				if p.Reason == tc.reason && p.Path == tc.path {
					found = true
				}
				if p.Message == "" {
					t.Errorf("problem %s without a message", p.Reason)
				}
			}
			if !found {
				t.Fatalf("no %s problem at %q: %v", tc.reason, tc.path, res.Problems)
			}
			if tc.reason == prdiff.MergeConflict {
				if msg := res.Problems[0].Message; !strings.Contains(msg, "please rebase") || !strings.Contains(msg, "packages/a/a.1/opam") {
					t.Errorf("conflict message %q does not ask for a rebase naming the file", msg)
				}
				return
			}
			good := opam.Package{Name: "good", Version: "1"}
			classified := false
			for _, c := range res.Changes {
				if c.Package == good && c.Kind == prdiff.NewPackage {
					classified = true
				}
			}
			if !classified {
				t.Errorf("the good package of the pull request was not classified: %v", res.Changes)
			}
		})
	}
}

func TestHasTests(t *testing.T) {
	tests := []struct {
		name string
		body string
		want bool
	}{
		{"none", `depends: ["ocaml" "dune"] build: ["dune" "build" "-p" name]`, false},
		{"test dependency", `depends: ["ocaml" "alcotest" {with-test}]`, true},
		{"test step in build", `build: [["dune" "build" "-p" name] ["dune" "runtest" "-p" name] {with-test}]`, true},
		{"run-test field", `run-test: ["make" "test"]`, true},
		{"empty run-test", `run-test: []`, false},
		{"with-test in a conjunction", `depends: ["ounit2" {with-test & >= "2.0"}]`, true},
		{"with-doc only", `depends: ["odoc" {with-doc}]`, false},
		{"package variable", `build: ["make" "PKG_TEST=%{foo:with-test}%"] depends: ["foo" {foo:with-test}]`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := opam.Parse("opam", []byte("opam-version: \"2.0\"\n"+tc.body+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := prdiff.HasTests(f); got != tc.want {
				t.Errorf("HasTests = %v, want %v", got, tc.want)
			}
		})
	}
}
