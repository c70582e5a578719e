package git

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestWorkTreeCommitsAndBranches(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w, err := Init(ctx, dir, "main")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("one\n"), 0o644)
	first, err := w.CommitAll(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Switch(ctx, "feature", true); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "a.txt"))
	os.WriteFile(filepath.Join(dir, "b.txt"), []byte("two\n"), 0o644)
	second, err := w.CommitAll(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	heads, err := repo.Heads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if heads["refs/heads/main"] != first || heads["refs/heads/feature"] != second || first == second {
		t.Fatalf("heads %v, want main=%s feature=%s", heads, first, second)
	}
	cases := []struct {
		name, commit, present, absent string
	}{
		{"first commit", first, "a.txt", "b.txt"},
		{"second commit: deletion and addition committed", second, "b.txt", "a.txt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "co")
			if err := repo.Checkout(ctx, c.commit, out); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(out, c.present)); err != nil {
				t.Errorf("%s missing: %v", c.present, err)
			}
			if _, err := os.Stat(filepath.Join(out, c.absent)); err == nil {
				t.Errorf("%s present", c.absent)
			}
		})
	}
	if err := w.Switch(ctx, "no-such-branch", false); err == nil {
		t.Error("switching to a missing branch succeeded")
	}
}
