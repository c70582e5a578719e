package testenv

import (
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var kiln struct {
	once sync.Once
	path string
	err  error
}

// KilnBinary builds the kiln command once per test process and returns its path. The
// binary lives in a temporary folder named after the test process, so tests that
// start kiln processes share it; folders of test processes that have ended are
// removed by the next build.
func KilnBinary(t testing.TB) string {
	t.Helper()
	Short(t, "builds the kiln binary")
	kiln.once.Do(func() {
		removeStaleBinaries()
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("kiln-test-bin-%d", os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			kiln.err = err
			return
		}
		kiln.path = filepath.Join(dir, "kiln")
		cmd := exec.Command("go", "build", "-o", kiln.path, "./cmd/kiln")
		cmd.Dir = Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			kiln.err = fmt.Errorf("go build ./cmd/kiln: %v\n%s", err, out)
		}
	})
	if kiln.err != nil {
		t.Fatal(kiln.err)
	}
	return kiln.path
}

// removeStaleBinaries removes the binary folders of test processes that have ended
// and are more than an hour old (a process id can be reused).
func removeStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "kiln-test-bin-*"))
	for _, dir := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "kiln-test-bin-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if fi, err := os.Stat(dir); err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if pid > 0 && pid <= math.MaxInt32 && syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		os.RemoveAll(dir)
	}
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
