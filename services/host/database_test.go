package host

import (
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/database/databasetest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// With --database on PostgreSQL, every service keeps its tables there, each with its
// prefix, and no SQLite file of its own.
func TestServeKeepsServiceTablesInTheDatabase(t *testing.T) {
	testenv.RequireCommand(t, "git", "tar")
	if help, _ := exec.Command(testenv.KilnBinary(t), "serve", "--help").CombinedOutput(); !regexp.MustCompile(`(?m)^\s+--database\s`).Match(help) {
		t.Skip("kiln serve has no --database flag yet")
	}
	url := databasetest.Postgres(t)
	dir := t.TempDir()
	opamRepo := gittest.NewRepo(t)
	opamRepo.Commit("packages", map[string]string{"packages/a/a.1/opam": "opam-version: \"2.0\"\n"})
	opamRepo.Git("checkout", "--quiet", "-b", "pr-1")
	opamRepo.Commit("a.2", map[string]string{"packages/a/a.2/opam": "opam-version: \"2.0\"\n"})
	config := filepath.Join(dir, "health-check.yaml")
	if err := os.WriteFile(config, []byte("repository: {url: "+opamRepo.Dir+"}\nswitches: [{name: a, compiler: ocaml-system.4.13.1}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	s := serve(t, "--service", "ocaml-ci,opam-repo-ci,health-check,bench", "--database", url, "--state-dir", state,
		"--nats-listen", testenv.FreeAddr(t), "--no-arm64", "--no-base-images", "--local-workers", "0",
		"--opam-repo-ci-repo", "local/opam-repository="+opamRepo.Dir, "--opam-repo-ci-base", "main", "--opam-repo-ci-no-base-images",
		"--health-check-config", config, "--health-check-no-base-images", "--bench-runner", "host")
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(query string, args ...any) int {
		var n int
		if err := db.QueryRow(query, args...).Scan(&n); err != nil {
			return -1 // the table may not be there yet
		}
		return n
	}
	for _, c := range []struct{ what, query string }{
		{"ocaml-ci's sample branch in its index", `SELECT COUNT(*) FROM ocamlci_ref_heads WHERE owner = 'local' AND repo = 'hello'`},
		{"opam-repo-ci's pull request in its index", `SELECT COUNT(*) FROM opamrepoci_ref_heads WHERE repo = 'opam-repository'`},
	} {
		t.Run(c.what, func(t *testing.T) {
			s.waitFor(c.what, func() bool { return count(c.query) > 0 })
		})
	}
	t.Run("every service's migrations under its prefix", func(t *testing.T) {
		rows, err := db.Query(`SELECT DISTINCT schema_name FROM kiln_migrations ORDER BY schema_name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		for _, want := range []string{"ocamlci_results", "opamrepoci_results", "healthcheck_store", "bench"} {
			if !slices.Contains(names, want) {
				t.Errorf("no migrations of %s in %v", want, names)
			}
		}
	})
	t.Run("no SQLite file of a service's own", func(t *testing.T) {
		for _, f := range []string{"ocamlci.db", "opamrepoci.db", "healthcheck.db", "bench/bench.db"} {
			if _, err := os.Stat(filepath.Join(state, f)); !os.IsNotExist(err) {
				t.Errorf("%s: %v, want none", f, err)
			}
		}
	})
}
