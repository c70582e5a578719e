package servicedb

import (
	"context"
	"database/sql"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/database/databasetest"
)

func TestMain(m *testing.M) { databasetest.Main(m) }

var migrations = []string{`CREATE TABLE {p}names (name {{key}} NOT NULL PRIMARY KEY)`}

// localeDatabase makes, beside the fresh PostgreSQL database at target, a database
// sorting text as English does (ICU's en-US, as a server set up with en_US.UTF-8
// would), and returns its URL.
func localeDatabase(t *testing.T, target string) string {
	t.Helper()
	db, err := sql.Open("pgx", target)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/") + "_en"
	if _, err := db.Exec(`CREATE DATABASE ` + name + ` TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`); err != nil {
		t.Skipf("PostgreSQL cannot make a database with ICU's en-US collation (built without ICU?): %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Key columns sort by their bytes on every backend, as SQLite's BINARY collation
// does, also in a PostgreSQL database whose locale sorts otherwise.
func TestKeyColumnsSortByBytes(t *testing.T) {
	names := []string{"beta_x", "Zeta", "alpha", "beta-y", "Alpha"}
	want := slices.Clone(names)
	slices.Sort(want) // Go compares bytes
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return databasetest.SQLite(t) }},
		{"postgres", func(t *testing.T) string { return databasetest.Postgres(t) }},
		{"postgres with an English locale", func(t *testing.T) string { return localeDatabase(t, databasetest.Postgres(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, tc.target(t), "svc_", "names", migrations)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, n := range names {
				if _, err := db.ExecContext(ctx, db.Q(`INSERT INTO {p}names (name) VALUES ($1)`), n); err != nil {
					t.Fatal(err)
				}
			}
			got := query(t, db, `SELECT name FROM {p}names ORDER BY name`)
			if !slices.Equal(got, want) {
				t.Errorf("sorted %v, want %v", got, want)
			}
			after := want[slices.Index(want, "Zeta")+1:]
			if got := query(t, db, `SELECT name FROM {p}names WHERE name > 'Zeta' ORDER BY name`); !slices.Equal(got, after) {
				t.Errorf("after Zeta: %v, want %v", got, after)
			}
		})
	}
}

func query(t *testing.T, db *DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(db.Q(q), args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Services sharing one database each have their tables and migrations.
func TestPrefixesShareADatabase(t *testing.T) {
	databasetest.Each(t, func(t *testing.T, target string) {
		ctx := context.Background()
		dbs := map[string]*DB{}
		for _, p := range []string{"", "ocamlci_", "healthcheck_"} {
			db, err := Open(ctx, target, p, "names", migrations)
			if err != nil {
				t.Fatalf("prefix %q: %v", p, err)
			}
			defer db.Close()
			if _, err := db.ExecContext(ctx, db.Q(`INSERT INTO {p}names (name) VALUES ($1)`), "of "+p); err != nil {
				t.Fatal(err)
			}
			dbs[p] = db
		}
		for p, db := range dbs {
			if got := query(t, db, `SELECT name FROM {p}names`); !slices.Equal(got, []string{"of " + p}) {
				t.Errorf("prefix %q: its table holds %v", p, got)
			}
		}
		again, err := Open(ctx, target, "ocamlci_", "names", migrations)
		if err != nil {
			t.Fatalf("opening again: %v", err)
		}
		defer again.Close()
		got := query(t, again, `SELECT schema_name FROM kiln_migrations WHERE version = 1 ORDER BY schema_name`)
		if want := []string{"healthcheck_names", "names", "ocamlci_names"}; !slices.Equal(got, want) {
			t.Errorf("migrations recorded for %v, want %v", got, want)
		}
	})
}

func TestOpenRefusesPrefixesUnsafeInSQL(t *testing.T) {
	for _, p := range []string{"Upper_", "1st_", "a-b_", "x; DROP TABLE y; --"} {
		t.Run(p, func(t *testing.T) {
			db, err := Open(context.Background(), databasetest.SQLite(t), p, "names", migrations)
			if err == nil {
				db.Close()
				t.Fatalf("prefix %q accepted", p)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("the error does not name the prefix: %v", err)
			}
		})
	}
}
