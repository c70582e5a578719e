package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var kiln struct {
	once sync.Once
	path string
	err  error
}

// KilnBinary builds the kiln command once per test process and returns its path. The
// binary lives in a temporary folder that is not removed, so tests that start kiln
// processes share it.
func KilnBinary(t testing.TB) string {
	t.Helper()
	Short(t, "builds the kiln binary")
	kiln.once.Do(func() {
		dir, err := os.MkdirTemp("", "kiln-test-bin-")
		if err != nil {
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
