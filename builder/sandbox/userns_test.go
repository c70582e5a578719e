package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSubIDsFile(t *testing.T) {
	tests := []struct {
		name, text string
		start, n   uint32
		wantErr    bool
	}{
		{name: "the user's first line", text: "alice:100000:65536\nkiln:165536:65536\nkiln:300000:10\n", start: 165536, n: 65536},
		{name: "no line for the user", text: "alice:100000:65536\n", wantErr: true},
		{name: "a bad line for the user", text: "kiln:x:65536\n", wantErr: true},
		{name: "other bad lines skipped", text: "junk\nkiln:200000:70000\n", start: 200000, n: 70000},
		{name: "empty file", text: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "subuid")
			os.WriteFile(f, []byte(tt.text), 0o644)
			start, n, err := subIDs(f, "kiln")
			if (err != nil) != tt.wantErr || start != tt.start || n != tt.n {
				t.Errorf("subIDs = %d, %d, %v; want %d, %d, error %v", start, n, err, tt.start, tt.n, tt.wantErr)
			}
		})
	}
}

func FuzzSubIDsFile(f *testing.F) {
	f.Add("kiln:100000:65536\n")
	f.Add("kiln:0:1\nkiln::\n:::\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(dir, "subuid")
		os.WriteFile(p, []byte(text), 0o644)
		if start, _, err := subIDs(p, "kiln"); err == nil && start == 0 {
			t.Errorf("range at 0 accepted from %q", text)
		}
	})
}
