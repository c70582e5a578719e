// Package repotest gives tests the shared snapshot of the opam repository as a bare
// git repository, unpacked once into the test cache.
package repotest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// Tarball is the name of the snapshot in the shared data folder.
const Tarball = "opam-repository-2026H1.git.tar"

// Master is the commit at the tip of master in the snapshot.
const Master = "89a06fb4a7950d434fafca1593197d35ae530eb2"

var mu sync.Mutex

// GitDir returns the path of the bare repository of the snapshot, unpacking it into the
// test cache the first time (keyed by the tarball's size and time). It skips t when the
// shared data or git is missing.
func GitDir(t testing.TB) string {
	t.Helper()
	testenv.RequireCommand(t, "git", "tar")
	tar := testenv.SharedData(t, Tarball)
	st, err := os.Stat(tar)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(testenv.CacheDir(t, "opam-repository"), fmt.Sprintf("%d-%d", st.Size(), st.ModTime().Unix()))
	git := filepath.Join(dir, "opam-repository.git")
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "ok")); err == nil {
		return git
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", tar, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v: %s", tar, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "ok"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return git
}

// Checkout returns a directory holding the files of the snapshot at master, made
// once in the test cache with git archive.
func Checkout(t testing.TB) string {
	t.Helper()
	git := GitDir(t)
	dir := filepath.Join(filepath.Dir(git), "master")
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, ".ok")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `git --git-dir="$1" archive "$2" | tar -x -C "$3"`, "sh", git, Master, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("check out %s: %v: %s", Master, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, ".ok"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Files writes a small repository checkout for a test: files maps NAME.VERSION to
// the text of its opam file after the line `opam-version: "2.0"`. It returns the
// folder holding packages/.
func Files(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for nv, body := range files {
		name, _, ok := strings.Cut(nv, ".")
		if !ok {
			t.Fatalf("repotest: %q is not NAME.VERSION", nv)
		}
		d := filepath.Join(dir, "packages", name, nv)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "opam"), []byte("opam-version: \"2.0\"\n"+body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
