package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRemoveStaleBinaries(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	old := time.Now().Add(-2 * time.Hour)
	cases := []struct {
		name string
		pid  string
		old  bool
		kept bool
	}{
		{"ended process, old", "2147483000", true, false},
		{"ended process, recent", "2147483001", false, true},
		{"running process", "1", true, true},
		{"this process", fmt.Sprint(os.Getpid()), true, true},
		{"not a process id", "abc", true, true},
	}
	for _, c := range cases {
		dir := filepath.Join(tmp, "kiln-test-bin-"+c.pid)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if c.old {
			if err := os.Chtimes(dir, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	removeStaleBinaries()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := os.Stat(filepath.Join(tmp, "kiln-test-bin-"+c.pid))
			if kept := err == nil; kept != c.kept {
				t.Errorf("kept = %v, want %v", kept, c.kept)
			}
		})
	}
}
