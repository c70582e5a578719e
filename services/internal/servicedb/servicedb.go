// Package servicedb opens the database a service keeps its tables in (an index of
// results, the runs of a health check): by default a SQLite file of its own, or a
// database every service shares (a postgres:// URL), where each service's tables carry
// its prefix so that they do not collide.
package servicedb

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/kiln-ci/kiln/internal/database"
)

// DB is a service's open database.
type DB struct {
	*database.DB
	prefix string
	names  *strings.Replacer
}

var validPrefix = regexp.MustCompile(`^([a-z][a-z0-9_]*)?$`)

// Open opens the database at target (a SQLite file's path or a postgres:// URL) and
// applies the migrations of the schema name, recorded as prefix+name. In migrations and
// in statements given to Q, {p} stands for prefix; in migrations {{key}} is a text
// column that compares and sorts by its bytes (SQLite's BINARY collation, "C" in
// PostgreSQL whatever the database's locale), besides database.Expand's {{id}} and
// {{blob}}.
func Open(ctx context.Context, target, prefix, name string, migrations []string) (*DB, error) {
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("table prefix %q: want lower-case letters, digits and _, starting with a letter", prefix)
	}
	conns := 1 // one writer at a time in a SQLite file, as before
	key := "TEXT"
	if database.IsPostgres(target) {
		conns, key = 4, `TEXT COLLATE "C"` // a few per service: several share one server
	}
	db, err := database.Open(ctx, target, database.MaxConns(conns))
	if err != nil {
		return nil, err
	}
	s := &DB{DB: db, prefix: prefix, names: strings.NewReplacer("{p}", prefix)}
	schema := database.Schema{Name: prefix + name, Migrations: make([]string, len(migrations))}
	for i, m := range migrations {
		schema.Migrations[i] = strings.ReplaceAll(s.Q(m), "{{key}}", key)
	}
	if err := db.Migrate(ctx, schema); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Prefix is what the names of the service's tables start with.
func (db *DB) Prefix() string { return db.prefix }

// Q replaces {p} in a statement with the prefix of the service's tables.
func (db *DB) Q(stmt string) string { return db.names.Replace(stmt) }
