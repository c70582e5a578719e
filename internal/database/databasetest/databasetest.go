// Package databasetest gives tests a fresh database on each backend: a SQLite file in
// a temporary folder, and a new database on one PostgreSQL server per test process
// (internal/pgtest), started on first use.
package databasetest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/internal/pgtest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

var shared struct {
	mu       sync.Mutex
	main     bool
	started  bool
	server   *pgtest.Server
	missing  string // why the server could not start
	failed   bool   // a test failed: the server's cleanup prints its log
	cleanups []func()
}

// Main runs a package's tests from its TestMain, then stops the shared PostgreSQL
// server if a test started one. Without it each test starts its own server.
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.main = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	shared.failed = code != 0
	for i := len(shared.cleanups) - 1; i >= 0; i-- {
		shared.cleanups[i]()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// processTB lets pgtest.Start register its cleanups for the end of the process while
// reporting through the test that started the server.
type processTB struct {
	testing.TB
}

func (processTB) Cleanup(f func()) { shared.cleanups = append(shared.cleanups, f) }

// Failed and Logf serve the cleanups, which run after every test has ended.
func (processTB) Failed() bool { return shared.failed }
func (processTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (p processTB) Skip(args ...any) { p.Skipf("%s", fmt.Sprint(args...)) }
func (p processTB) Skipf(format string, args ...any) {
	shared.missing = fmt.Sprintf(format, args...)
	p.TB.Skipf(format, args...)
}
func (p processTB) Fatal(args ...any) { p.Fatalf("%s", fmt.Sprint(args...)) }
func (p processTB) Fatalf(format string, args ...any) {
	shared.missing = fmt.Sprintf(format, args...)
	p.TB.Fatalf(format, args...)
}

// Postgres returns the URL of a new empty database on the process's PostgreSQL server,
// skipping t (failing it under CI) when PostgreSQL cannot run here.
func Postgres(t testing.TB) string {
	t.Helper()
	shared.mu.Lock()
	if !shared.main {
		shared.mu.Unlock()
		return pgtest.Start(t).NewDatabase(t)
	}
	if !shared.started {
		shared.started = true
		shared.missing = "PostgreSQL did not start"
		func() {
			defer shared.mu.Unlock() // also when Start ends the test
			shared.server = pgtest.Start(processTB{t})
			shared.missing = ""
		}()
	} else {
		shared.mu.Unlock()
	}
	if shared.server == nil {
		if testenv.InCI() {
			t.Fatalf("PostgreSQL is not available: %s", shared.missing)
		}
		t.Skipf("PostgreSQL is not available: %s", shared.missing)
	}
	return shared.server.NewDatabase(t)
}

// SQLite returns the path of a new SQLite database file in a temporary folder.
func SQLite(t testing.TB) string {
	return filepath.Join(t.TempDir(), "test.db")
}

// Each runs f as a subtest named after each backend, with a fresh database's target.
func Each(t *testing.T, f func(t *testing.T, target string)) {
	t.Helper()
	for _, b := range []database.Backend{database.SQLite, database.Postgres} {
		t.Run(string(b), func(t *testing.T) { f(t, Target(t, b)) })
	}
}

// Target returns a fresh database of backend b.
func Target(t testing.TB, b database.Backend) string {
	t.Helper()
	if b == database.Postgres {
		return Postgres(t)
	}
	return SQLite(t)
}
