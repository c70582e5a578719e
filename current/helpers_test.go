package current

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/internal/database/databasetest"
)

func TestMain(m *testing.M) { databasetest.Main(m) }

var stateDatabases sync.Map // state folder → PostgreSQL URL

// postgresFor gives each state folder its own PostgreSQL database, the same one when an
// engine is opened again on the folder.
func postgresFor(t testing.TB, stateDir string) string {
	if url, ok := stateDatabases.Load(stateDir); ok {
		return url.(string)
	}
	url := databasetest.Postgres(t)
	stateDatabases.Store(stateDir, url)
	return url
}

// fileLogsOnly is the Config of a test about log files: SQLite, whatever
// KILN_TEST_DATABASE says.
func fileLogsOnly(t testing.TB, cfg Config) Config {
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.DBPath = filepath.Join(cfg.StateDir, "kiln.db")
	return cfg
}

// backends are the databases the engine's tests run on.
var backends = []database.Backend{database.SQLite, database.Postgres}

// eachBackend runs f as a subtest per backend with a Config whose Database is a fresh
// database of that backend (and StateDir a fresh folder).
func eachBackend(t *testing.T, f func(t *testing.T, cfg Config)) {
	t.Helper()
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			f(t, Config{StateDir: t.TempDir(), Database: databasetest.Target(t, b)})
		})
	}
}

// another is cfg with a new state folder and database of the same backend.
func another(t testing.TB, cfg Config) Config {
	b := database.SQLite
	if database.IsPostgres(cfg.Database) {
		b = database.Postgres
	}
	cfg.StateDir, cfg.Database = t.TempDir(), databasetest.Target(t, b)
	return cfg
}

// testLogStore opens the log store an engine on backend b would use.
func testLogStore(t testing.TB, b database.Backend) logStore {
	t.Helper()
	if b == database.SQLite {
		return &fileLogs{dir: t.TempDir()}
	}
	s, err := openStore(context.Background(), databasetest.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return &dbLogs{db: s.db}
}

// testEngine opens an engine in a temporary state folder, on SQLite unless
// KILN_TEST_DATABASE=postgres runs the whole suite on PostgreSQL.
func testEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Database == "" && cfg.DBPath == "" && os.Getenv("KILN_TEST_DATABASE") == "postgres" {
		cfg.Database = postgresFor(t, cfg.StateDir)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// running runs root on e until the test ends.
func running(t testing.TB, e *Engine, root AnyTerm) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, root) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// eventually waits until cond holds, failing t after a generous time.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nodeByLabel finds a node of the live graph.
func nodeByLabel(e *Engine, label string) (Node, bool) {
	for _, n := range e.Graph().Nodes {
		if n.Label == label {
			return n, true
		}
	}
	return Node{}, false
}

type sync32 struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *sync32) inc(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int{}
	}
	s.m[k]++
}

func (s *sync32) get(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

func (s *sync32) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.m {
		n += v
	}
	return n
}

func (s *sync32) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}
