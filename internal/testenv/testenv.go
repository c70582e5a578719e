// Package testenv is what kiln's tests share: what the machine offers (root, commands,
// the shared data set, a cache that outlives one run), skipping a test with the reason
// where something it needs is missing, and a few helpers (the kiln binary, free ports,
// a concurrent buffer, the count of open files). Under CI (CI=true) a missing requirement
// fails the test instead, because .ci/run installs everything the tests need.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// InCI reports whether the tests run under CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// missing skips t, or fails it under CI, saying what is missing.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI provides everything the tests need, but: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips t unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root (run the tests as root, as .ci/run does)")
	}
}

// RequireCommand skips t unless every named command is on PATH; it returns the path of
// the first one.
func RequireCommand(t testing.TB, names ...string) string {
	t.Helper()
	var first string
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			missing(t, "needs the %q command (sudo .ci/install installs it)", n)
			return ""
		}
		if first == "" {
			first = p
		}
	}
	return first
}

// Short skips t in -short mode with the reason given.
func Short(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped in -short mode: %s", why)
	}
}

// Root returns the directory of the kiln module (the one holding go.mod).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// SharedData returns the path of the shared data folder (../shared/data beside the
// project) or of the file rel inside it, skipping t when it is absent.
func SharedData(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(Root(), "..", "shared", "data", rel)
	if _, err := os.Stat(p); err != nil {
		missing(t, "needs the shared data set at %s (see ../shared/data/README.md): %v", p, err)
	}
	return p
}

// CacheRoot returns the folder that holds the test cache: $KILN_TEST_CACHE, or by
// default /var/cache/kiln-test (a folder in the user cache directory when not root).
// .ci/gitea-build and .ci/baseimages.go choose it the same way.
func CacheRoot() string {
	if base := os.Getenv("KILN_TEST_CACHE"); base != "" {
		return base
	}
	if os.Geteuid() == 0 {
		return "/var/cache/kiln-test"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kiln-test")
	}
	return filepath.Join(os.TempDir(), "kiln-test")
}

// CacheDir returns a directory that outlives one test run, for things slow to make
// (root filesystems, built servers): the folder name in CacheRoot, created if need be.
// Callers key what they store by what produced it.
func CacheDir(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(CacheRoot(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("test cache %s: %v", dir, err)
	}
	return dir
}

// OpenFiles counts the files this process has open, skipping the test where that cannot
// be told.
func OpenFiles(t testing.TB) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}
