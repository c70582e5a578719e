package repository_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
)

// fixture writes files (path to text) to a new git repository with one commit and
// returns its folder.
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git:", err)
	}
	dir := t.TempDir()
	for path, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "master"},
		{"add", "."},
		{"-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "fixture"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// loaders index a fixture from its checkout and from its git commit.
var loaders = []struct {
	name string
	load func(ctx context.Context, dir string) (*repository.Repo, error)
}{
	{"dir", repository.LoadDir},
	{"git", func(ctx context.Context, dir string) (*repository.Repo, error) {
		return repository.LoadGit(ctx, filepath.Join(dir, ".git"), "master")
	}},
}

func TestHostileFilesAreBounded(t *testing.T) {
	const head = "opam-version: \"2.0\"\n"
	dir := fixture(t, map[string]string{
		"packages/ok/ok.1/opam":         head + `synopsis: "fine"`,
		"packages/wide/wide.1/opam":     head + "tags: [" + strings.Repeat(`"x" `, repository.MaxFileSize/4) + "]\n",
		"packages/fields/fields.1/opam": head + strings.Repeat("x-a: 1\n", repository.MaxFields),
		"packages/nested/nested.1/opam": head + "url {\n" + strings.Repeat("x-a: 1\n", repository.MaxFields) + "}\n",
		"packages/edge/edge.1/opam":     head + strings.Repeat("x-a: 1\n", repository.MaxFields-1),
	})
	want := map[string]string{
		"ok":     "",
		"edge":   "",
		"wide":   "packages/wide/wide.1/opam: 262173 bytes, more than the 262144 an opam file may have",
		"fields": "packages/fields/fields.1/opam: 1001 fields, more than the 1000",
		"nested": "packages/nested/nested.1/opam: 1002 fields, more than the 1000",
	}
	for _, l := range loaders {
		t.Run(l.name, func(t *testing.T) {
			r, err := l.load(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			for name, msg := range want {
				vs := r.Versions(opam.PackageName(name))
				if len(vs) != 1 {
					t.Fatalf("%s: %d versions", name, len(vs))
				}
				p := vs[0]
				switch {
				case msg == "" && p.Err != nil:
					t.Errorf("%s: %v", name, p.Err)
				case msg != "" && (p.Err == nil || !strings.Contains(p.Err.Error(), msg)):
					t.Errorf("%s: error %v, want %q", name, p.Err, msg)
				case msg != "" && (p.File != nil || len(p.Data) > repository.MaxFileSize):
					t.Errorf("%s: kept %d bytes and a parsed file", name, len(p.Data))
				}
			}
		})
	}
}

// BenchmarkWorstFileUnderTheBound indexes the largest files the bounds let through:
// one long line of short strings, and MaxFields short fields padded to MaxFileSize.
func BenchmarkWorstFileUnderTheBound(b *testing.B) {
	const head = "opam-version: \"2.0\"\n"
	line := head + "tags: [" + strings.Repeat(`"" `, (repository.MaxFileSize-len(head)-10)/3) + "]\n"
	fields := head + strings.Repeat("x-a: [0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0]\n", repository.MaxFields-2)
	for _, tc := range []struct{ name, text string }{{"line", line}, {"fields", fields}} {
		b.Run(tc.name, func(b *testing.B) {
			if len(tc.text) > repository.MaxFileSize {
				b.Fatalf("%d bytes", len(tc.text))
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := opam.ParseString("opam", tc.text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
