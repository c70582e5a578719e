package host

import (
	"path/filepath"
	"testing"
)

func TestTablesOfAService(t *testing.T) {
	for _, tc := range []struct {
		name, database         string
		wantTarget, wantPrefix string
	}{
		{"a SQLite file of its own by default", "", filepath.Join("/var/kiln", "ocamlci.db"), ""},
		{"a shared PostgreSQL database, prefixed", "postgres://kiln@db/kiln", "postgres://kiln@db/kiln", "ocamlci_"},
		{"a shared SQLite file, prefixed", "/srv/kiln.db", "/srv/kiln.db", "ocamlci_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := &Env{StateDir: "/var/kiln", Database: tc.database}
			target, prefix := env.Tables("ocamlci", "ocamlci.db")
			if target != tc.wantTarget || prefix != tc.wantPrefix {
				t.Errorf("Tables = %q, %q; want %q, %q", target, prefix, tc.wantTarget, tc.wantPrefix)
			}
		})
	}
}
