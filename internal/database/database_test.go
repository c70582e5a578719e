package database_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/internal/database/databasetest"
)

func TestMain(m *testing.M) { databasetest.Main(m) }

func open(t *testing.T, target string) *database.DB {
	t.Helper()
	db, err := database.Open(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var things = database.Schema{Name: "things", Migrations: []string{
	`CREATE TABLE things (id {{id}}, name TEXT NOT NULL, body {{blob}});
	 CREATE INDEX things_name ON things (name)`,
	`ALTER TABLE things ADD COLUMN size BIGINT NOT NULL DEFAULT 0`,
}}

func TestMigrateAndQuery(t *testing.T) {
	databasetest.Each(t, func(t *testing.T, target string) {
		ctx := context.Background()
		db := open(t, target)
		if want := database.SQLite; database.IsPostgres(target) {
			if db.Backend() != database.Postgres {
				t.Fatalf("backend of %s = %s", db, db.Backend())
			}
		} else if db.Backend() != want {
			t.Fatalf("backend of %s = %s", db, db.Backend())
		}
		if err := db.Migrate(ctx, things); err != nil {
			t.Fatal(err)
		}
		other := database.Schema{Name: "other", Migrations: []string{`CREATE TABLE other (id {{id}})`}}
		if err := db.Migrate(ctx, other); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name, label string
			body        []byte
			wantID      int64
		}{
			{"first row gets id 1", "alpha", []byte{0, 1, 2, 255}, 1},
			{"ids increase", "beta", nil, 2},
			{"empty body", "gamma", []byte{}, 3},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var id int64
				err := db.QueryRowContext(ctx, `INSERT INTO things (name, body, size) VALUES ($1, $2, $3) RETURNING id`,
					c.label, c.body, len(c.body)).Scan(&id)
				if err != nil {
					t.Fatal(err)
				}
				if id != c.wantID {
					t.Errorf("id = %d, want %d", id, c.wantID)
				}
				var body []byte
				var size int64
				if err := db.QueryRowContext(ctx, `SELECT body, size FROM things WHERE id = $1`, id).Scan(&body, &size); err != nil {
					t.Fatal(err)
				}
				if string(body) != string(c.body) || size != int64(len(c.body)) {
					t.Errorf("read back %q (size %d), want %q", body, size, c.body)
				}
				var pos int
				q := `SELECT ` + db.Position("name", "$1") + ` FROM things WHERE id = $2`
				if err := db.QueryRowContext(ctx, q, c.label[1:], id).Scan(&pos); err != nil {
					t.Fatal(err)
				}
				if pos != 2 {
					t.Errorf("position of %q in %q = %d, want 2", c.label[1:], c.label, pos)
				}
			})
		}
		t.Run("migrating again changes nothing", func(t *testing.T) {
			if err := db.Migrate(ctx, things); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM kiln_migrations WHERE schema_name = $1`, "things").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Errorf("%d versions recorded for things, want 2", n)
			}
		})
		t.Run("a newer database is refused", func(t *testing.T) {
			older := database.Schema{Name: "things", Migrations: things.Migrations[:1]}
			err := db.Migrate(ctx, older)
			if err == nil || !strings.Contains(err.Error(), "newer than this program knows") {
				t.Errorf("err = %v, want a newer-version error", err)
			}
		})
		t.Run("a failed migration is not recorded", func(t *testing.T) {
			bad := database.Schema{Name: "bad", Migrations: []string{`CREATE TABLE bad (x BIGINT); INSERT INTO nowhere VALUES (1)`}}
			err := db.Migrate(ctx, bad)
			if err == nil || !strings.Contains(err.Error(), "migrate bad") || !strings.Contains(err.Error(), "migration 1") {
				t.Fatalf("err = %v, want migration 1 of bad to fail", err)
			}
			if ok, err := db.TableExists(ctx, db, "bad"); err != nil || ok {
				t.Errorf("table of the failed migration exists: %v %v", ok, err)
			}
		})
	})
}

func TestLegacyVersionTable(t *testing.T) {
	databasetest.Each(t, func(t *testing.T, target string) {
		ctx := context.Background()
		db := open(t, target)
		for _, stmt := range []string{
			`CREATE TABLE schema_version (version BIGINT NOT NULL)`,
			`INSERT INTO schema_version (version) VALUES (1)`,
			db.Expand(`CREATE TABLE things (id {{id}}, name TEXT NOT NULL, body {{blob}})`),
		} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		s := things
		s.Legacy = "schema_version"
		if err := db.Migrate(ctx, s); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO things (name, size) VALUES ('x', 1)`); err != nil {
			t.Errorf("migration 2 was not applied after the legacy version 1: %v", err)
		}
	})
}

func TestConcurrentMigrate(t *testing.T) {
	databasetest.Each(t, func(t *testing.T, target string) {
		ctx := context.Background()
		dbs := []*database.DB{open(t, target), open(t, target), open(t, target)}
		var wg sync.WaitGroup
		errs := make([]error, len(dbs))
		for i, db := range dbs {
			wg.Go(func() { errs[i] = db.Migrate(ctx, things) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTx(t *testing.T) {
	databasetest.Each(t, func(t *testing.T, target string) {
		ctx := context.Background()
		db := open(t, target)
		if err := db.Migrate(ctx, things); err != nil {
			t.Fatal(err)
		}
		failure := errors.New("no")
		cases := []struct {
			name    string
			err     error
			wantErr error
			want    int
		}{
			{"commit", nil, nil, 1},
			{"rollback on error", failure, failure, 1},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := db.Tx(ctx, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO things (name) VALUES ($1)`, c.name); err != nil {
						return err
					}
					return c.err
				})
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				var n int
				if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM things`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != c.want {
					t.Errorf("%d rows, want %d", n, c.want)
				}
			})
		}
	})
}

func TestRedact(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"password", "postgres://kiln:s3cret@db.example.org:5432/kiln?sslmode=disable", "postgres://kiln:***@db.example.org:5432/kiln?sslmode=disable"},
		{"password with @", "postgresql://kiln:a@b@db/kiln", "postgresql://kiln:***@db/kiln"},
		{"no password", "postgres://kiln@/kiln?host=/tmp", "postgres://kiln@/kiln?host=/tmp"},
		{"no user", "postgres://db/kiln", "postgres://db/kiln"},
		{"sqlite path", "/var/lib/kiln/kiln.db", "/var/lib/kiln/kiln.db"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := database.Redact(c.in); got != c.want {
				t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("postgres://u:pw@h/db")
	f.Add("x://:@")
	f.Add("/var/lib/kiln.db")
	f.Fuzz(func(t *testing.T, s string) {
		got := database.Redact(s)
		if again := database.Redact(got); again != got {
			t.Errorf("Redact(%q) = %q but Redact of that = %q", s, got, again)
		}
		_, rest, ok := strings.Cut(s, "://")
		at := strings.LastIndexByte(rest, '@')
		if !ok || at < 0 || !strings.Contains(rest[:at], ":") {
			if got != s {
				t.Errorf("Redact(%q) = %q, want it unchanged (no password)", s, got)
			}
			return
		}
		if !strings.HasSuffix(got, ":***"+rest[at:]) {
			t.Errorf("Redact(%q) = %q, want the password replaced by ***", s, got)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	cases := []struct{ name, target, want string }{
		{"empty target", "", "no SQLite path"},
		{"unreachable server hides the password", "postgres://kiln:s3cret@/kiln?host=/nonexistent&connect_timeout=5", "kiln:***@"},
		{"sqlite in a missing folder", "/nonexistent/dir/kiln.db", "/nonexistent/dir/kiln.db"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, err := database.Open(context.Background(), c.target)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded", c.target)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("err = %v, want it to contain %q and no password", err, c.want)
			}
		})
	}
}
