// Package dockertest gives tests a Docker engine: the machine's own when one answers,
// otherwise a dockerd started for the test process (as root) and stopped by Main.
package dockertest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/internal/testenv"
)

var (
	once     sync.Once
	engine   *docker.Engine
	daemon   *docker.Daemon
	dir      string
	startErr error
)

// Engine returns a reachable Docker engine, starting dockerd on first use when needed.
func Engine(t testing.TB) *docker.Engine {
	t.Helper()
	testenv.RequireCommand(t, "docker")
	once.Do(start)
	if startErr != nil {
		if testenv.InCI() {
			t.Fatalf("no Docker engine: %v", startErr)
		}
		t.Skipf("no Docker engine: %v", startErr)
	}
	return engine
}

func start() {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e := &docker.Engine{}
	if _, err := e.Version(ctx); err == nil {
		engine = e
		return
	}
	if os.Geteuid() != 0 {
		startErr = fmt.Errorf("no engine answers and starting dockerd needs root")
		return
	}
	d, err := os.MkdirTemp("", "kiln-dockerd-")
	if err != nil {
		startErr = err
		return
	}
	logf, _ := os.Create(d + ".log")
	dm, err := docker.StartDaemon(ctx, d, logf)
	if err != nil {
		startErr = fmt.Errorf("%v (log: %s.log)", err, d)
		os.RemoveAll(d)
		return
	}
	daemon, dir = dm, d
	engine = &docker.Engine{Host: dm.Host}
}

// Main runs the tests, then stops the dockerd they started, if any. Call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the dockerd started for the tests and removes its data.
func Stop() {
	if daemon != nil {
		daemon.Stop()
		os.RemoveAll(dir)
		os.Remove(dir + ".log")
		daemon = nil
	}
}
