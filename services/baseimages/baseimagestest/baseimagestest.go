// Package baseimagestest gives tests of the base-images service and of what uses its
// images the inputs they share: a small opam repository at a fixed commit, and a
// builder and an export folder kept in the test cache, so that tests building the
// same images reuse one another's steps and exports.
package baseimagestest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

// SmallOpamRepository is a git repository of a few packages of the shared snapshot,
// committed at a fixed date so that its commit is the same on every run.
func SmallOpamRepository(t testing.TB) (gitDir, commit string) {
	t.Helper()
	src := repotest.Checkout(t)
	dir := filepath.Join(t.TempDir(), "opam-repository")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"repo", "packages/ocaml-system", "packages/ocaml-config", "packages/ocaml", "packages/base-unix", "packages/cppo"} {
		cmd := exec.Command("cp", "-a", "--parents", p, dir)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("copy %s of the opam repository %s: %v: %s", p, src, err, out)
		}
	}
	run := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_DATE=2026-06-30T00:00:00Z", "GIT_COMMITTER_DATE=2026-06-30T00:00:00Z",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", "-b", "master")
	run("add", "-A")
	run("commit", "-q", "-m", "a few packages")
	return filepath.Join(dir, ".git"), run("rev-parse", "HEAD")
}

// Builder is the builder the base-images tests build with, its steps kept in the
// test cache, its bases in imagetest's store. It needs root, runc and mmdebstrap.
func Builder(t testing.TB) *builder.Builder {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "mmdebstrap", "git", "tar")
	b, err := builder.New(builder.Options{Root: filepath.Join(testenv.CacheDir(t, "base-images"), "builder"), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ExportDir is an export folder (OCI layout and export memos) kept in the test cache
// under name. Test packages that may run at the same time use different names: the
// layout's index is not written atomically.
func ExportDir(t testing.TB, name string) string {
	return filepath.Join(testenv.CacheDir(t, "base-images"), name)
}
