package nixrun

import (
	"context"
	"path/filepath"
	"testing"
)

// TestToFree checks that a store whose free space cannot be measured here is not
// collected for want of free space, without running Nix.
func TestToFree(t *testing.T) {
	cases := []struct {
		name  string
		store func(dir string) string
	}{
		{name: "store not made yet", store: func(dir string) string { return filepath.Join(dir, "store") }},
		{name: "remote store", store: func(string) string { return "ssh-ng://builder" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			r, err := New(Options{WorkDir: filepath.Join(dir, "work"), Store: c.store(dir), MinFree: 1 << 62})
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.toFree(context.Background())
			if err != nil || got != 0 {
				t.Errorf("%d bytes to free, %v; want none", got, err)
			}
		})
	}
}
