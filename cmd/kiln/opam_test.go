package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

// commitAll commits the files of dir, a git work tree made on the first call.
func commitAll(t *testing.T, dir, msg string) {
	t.Helper()
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "-A"},
		{"-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", msg},
	} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
}

func runRevdeps(t *testing.T, args ...string) string {
	t.Helper()
	c := opamRevdepsCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetArgs(args)
	if err := c.Execute(); err != nil {
		t.Fatalf("revdeps %v: %v", args, err)
	}
	return out.String()
}

// TestRevdepsAnswerCache checks that a repeated revdeps call on the same commit reads
// the stored answer, and that another commit is asked again.
func TestRevdepsAnswerCache(t *testing.T) {
	testenv.RequireCommand(t, "git")
	repo := repotest.Files(t, map[string]string{
		"a.1": ``,
		"b.1": `depends: ["a"]`,
	})
	commitAll(t, repo, "one")
	git := filepath.Join(repo, ".git")
	cache := t.TempDir()
	args := []string{"a.1", "--repo", git, "--cache-dir", cache}
	stored := func() []string {
		files, _ := filepath.Glob(filepath.Join(cache, "*.revdeps"))
		return files
	}
	steps := []struct {
		name, want string
		answers    int
		before     func()
	}{
		{"first call computes and stores", "b.1\n", 1, func() {}},
		{"same commit reads the stored answer", "marker.1\n", 1, func() {
			if err := os.WriteFile(stored()[0], []byte("marker.1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"new commit is asked again", "b.1\nc.1\n", 2, func() {
			if err := os.MkdirAll(filepath.Join(repo, "packages/c/c.1"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(repo, "packages/c/c.1/opam"), []byte("opam-version: \"2.0\"\ndepends: [\"a\"]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			commitAll(t, repo, "two")
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.before()
			if got := runRevdeps(t, args...); got != st.want {
				t.Errorf("revdeps printed %q, want %q", got, st.want)
			}
			if n := len(stored()); n != st.answers {
				t.Errorf("%d answers stored, want %d", n, st.answers)
			}
		})
	}
}
