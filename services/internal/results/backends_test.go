package results

import (
	"context"
	"testing"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/internal/database/databasetest"
)

func TestMain(m *testing.M) { databasetest.Main(m) }

// backends are the databases every index test runs on.
var backends = []database.Backend{database.SQLite, database.Postgres}

// newIndex opens an index in a fresh database of backend b, its tables prefixed as a
// service's are in a shared database.
func newIndex(t *testing.T, b database.Backend) *Index {
	t.Helper()
	idx, err := Open(context.Background(), databasetest.Target(t, b), "svc_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	return idx
}

// eachBackend runs f as a subtest per backend with a fresh index.
func eachBackend(t *testing.T, f func(t *testing.T, idx *Index)) {
	t.Helper()
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) { f(t, newIndex(t, b)) })
	}
}
