package current

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenStoreReportsDamagedFile damages a database's pages and expects the open to
// name the file, instead of answering later queries with errors.
func TestOpenStoreReportsDamagedFile(t *testing.T) {
	const pageSize = 4096
	fill := func(t *testing.T, path string) {
		t.Helper()
		s, err := openStore(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			if _, err := s.db.Exec(`INSERT INTO results(op, digest, key, build, input_digest, state, ready_at, message)
				VALUES ('op', ?, 'k', 1, 'd', 'done', 0, ?)`, i, strings.Repeat("m", 200)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.close(); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		damage  func(b []byte)
		wantErr bool
	}{
		{"intact", func([]byte) {}, false},
		{"garbage in table pages", func(b []byte) {
			for i := 3 * pageSize; i < 6*pageSize && i < len(b); i++ {
				b[i] = byte(i * 7)
			}
		}, true},
		{"index page zeroed", func(b []byte) {
			clear(b[len(b)-2*pageSize : len(b)-pageSize])
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kiln.db")
			fill(t, path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < 10*pageSize {
				t.Fatalf("database of %d bytes: too small to damage", len(b))
			}
			tc.damage(b)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := openStore(context.Background(), path)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("intact database refused: %v", err)
				}
				s.close()
				return
			}
			if err == nil {
				s.close()
				t.Fatal("damaged database opened without error")
			}
			t.Logf("open: %v", err)
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("error does not name the damaged file: %v", err)
			}
		})
	}
}
