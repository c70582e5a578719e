// Package debroot gives tests a Debian root filesystem made once with mmdebstrap and
// kept in the test cache, keyed by the recipe that made it.
package debroot

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"golang.org/x/sys/unix"
)

// Mirror is the Debian mirror the root filesystems come from.
var Mirror = "http://deb.debian.org/debian"

// Bookworm returns a Debian bookworm minbase root filesystem with the extra packages
// installed. Callers must not change it.
func Bookworm(t testing.TB, packages ...string) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mmdebstrap")
	args := []string{"--variant=minbase"}
	if len(packages) > 0 {
		args = append(args, "--include="+strings.Join(packages, ","))
	}
	args = append(args, "bookworm")
	recipe := "mmdebstrap " + strings.Join(args, " ") + " " + Mirror
	sum := sha256.Sum256([]byte(recipe))
	key := "bookworm-" + hex.EncodeToString(sum[:8])
	cache := testenv.CacheDir(t, "builder-rootfs")
	dir := filepath.Join(cache, key)
	if _, err := os.Stat(filepath.Join(dir, "etc", "debian_version")); err == nil {
		return dir
	}
	lock, err := os.OpenFile(filepath.Join(cache, key+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc", "debian_version")); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	t.Logf("making %s (%s)", dir, recipe)
	cmd := exec.Command("mmdebstrap", append(append(args, tmp), Mirror)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("%s: %v\n%s", recipe, err, out)
	}
	os.WriteFile(filepath.Join(tmp, "..", key+".recipe"), []byte(recipe+"\n"), 0o644)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}
