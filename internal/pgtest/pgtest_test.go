package pgtest

import (
	"database/sql"
	"testing"
)

func TestServer(t *testing.T) {
	s := Start(t)
	cases := []struct {
		name  string
		query string
		want  string
	}{
		{"utf8 encoding", "SHOW server_encoding", "UTF8"},
		{"no tcp listener", "SHOW listen_addresses", ""},
		{"fsync off", "SHOW fsync", "off"},
	}
	url := s.NewDatabase(t)
	if other := s.NewDatabase(t); other == url {
		t.Fatalf("two databases share the URL %s", url)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got string
			if err := db.QueryRow(c.query).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("%s = %q, want %q", c.query, got, c.want)
			}
		})
	}
}
