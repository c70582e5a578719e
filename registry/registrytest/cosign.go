package registrytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// CosignVersion is the cosign release the tests verify signatures with.
const CosignVersion = "v2.5.3"

var cosignOnce sync.Mutex

// Cosign returns a cosign binary: $KILN_COSIGN when set, otherwise the one
// .ci/cosign-build keeps in the test cache, building it on first use (Debian 12 has no
// cosign package). In -short mode a missing build skips t.
func Cosign(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("KILN_COSIGN"); bin != "" {
		return bin
	}
	dir := testenv.CacheDir(t, "cosign-"+CosignVersion)
	bin := filepath.Join(dir, "cosign")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		testenv.Short(t, "building cosign "+CosignVersion+" takes minutes (run .ci/cosign-build first)")
	}
	testenv.RequireCommand(t, "go", "flock")
	cosignOnce.Lock()
	defer cosignOnce.Unlock()
	// The script knows what a complete build is and returns at once when the cache
	// holds one; while .ci/run builds it in the background, it waits on its lock.
	cmd := exec.Command("bash", filepath.Join(testenv.Root(), ".ci", "cosign-build"))
	cmd.Env = append(os.Environ(), "KILN_TEST_CACHE="+filepath.Dir(dir), "COSIGN_VERSION="+CosignVersion)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cosign %s: %v\n%s", CosignVersion, err, out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("cosign %s ready after %s", CosignVersion, d.Round(time.Second))
	}
	return bin
}
