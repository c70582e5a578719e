package builder

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlanCopyDestinations(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lib", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "lib", "a.ml"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "lib", "sub", "b.ml"), []byte("b"), 0o644)
	os.WriteFile(filepath.Join(dir, "lib", "_build"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "top.txt"), []byte("t"), 0o644)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cases := []struct {
		src  []string
		dst  string
		want []string
	}{
		{[]string{"."}, "/src/", []string{"/src", "/src/lib", "/src/lib/a.ml", "/src/lib/sub", "/src/lib/sub/b.ml", "/src/top.txt"}},
		{[]string{"lib", "top.txt"}, "/d/", []string{"/d/lib", "/d/lib/a.ml", "/d/lib/sub", "/d/lib/sub/b.ml", "/d/top.txt"}},
		{[]string{"top.txt"}, "/etc/renamed", []string{"/etc/renamed"}},
		{[]string{"/lib/sub"}, "/x", []string{"/x", "/x/b.ml"}},
	}
	for _, c := range cases {
		p, err := planCopy(root, c.src, c.dst, []string{"_build"})
		if err != nil {
			t.Errorf("%v -> %s: %v", c.src, c.dst, err)
			continue
		}
		var got []string
		for _, it := range p.items {
			got = append(got, it.dst)
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%v -> %s: got %v, want %v", c.src, c.dst, got, c.want)
		}
	}
	if _, err := planCopy(root, []string{"lib", "top.txt"}, "/single", nil); err == nil {
		t.Error("two sources into a destination without '/' accepted")
	}
	d1, _ := mustPlan(t, root, "lib").digest()
	os.WriteFile(filepath.Join(dir, "lib", "a.ml"), []byte("changed"), 0o644)
	d2, _ := mustPlan(t, root, "lib").digest()
	os.WriteFile(filepath.Join(dir, "lib", "_build"), []byte("excluded files do not count"), 0o644)
	d3, _ := mustPlan(t, root, "lib").digest()
	if d1 == d2 || d2 != d3 {
		t.Errorf("digests: %s, after a change %s, after an excluded change %s", d1, d2, d3)
	}
}

func mustPlan(t *testing.T, root *os.Root, src string) *copyPlan {
	p, err := planCopy(root, []string{src}, "/dst/", []string{"_build"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzPlanCopy checks that no source path, however written, leads outside the context.
func FuzzPlanCopy(f *testing.F) {
	for _, s := range []string{".", "a", "../a", "a/../../b", "/etc", "link/x", "sub/./..", "..", "a//b", "sub/link"} {
		f.Add(s)
	}
	dir := f.TempDir()
	ctx := filepath.Join(dir, "ctx")
	os.MkdirAll(filepath.Join(ctx, "sub"), 0o755)
	os.WriteFile(filepath.Join(ctx, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("s"), 0o644)
	os.Symlink("../secret", filepath.Join(ctx, "link"))
	os.Symlink("../../secret", filepath.Join(ctx, "sub", "link"))
	os.Symlink(dir, filepath.Join(ctx, "abs"))
	root, err := os.OpenRoot(ctx)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := planCopy(root, []string{src}, "/dst/", nil)
		if err != nil {
			return
		}
		for _, it := range p.items {
			if strings.HasPrefix(path.Clean("/"+it.src), "/..") || strings.Contains(it.src, "..") {
				t.Fatalf("source %q planned item %q outside the context", src, it.src)
			}
			if !strings.HasPrefix(it.dst, "/dst") {
				t.Fatalf("source %q planned destination %q", src, it.dst)
			}
			if it.mode.IsRegular() {
				data, err := root.ReadFile(it.src)
				if err == nil && string(data) == "s" {
					t.Fatalf("source %q reads the file outside the context", src)
				}
			}
		}
		if _, err := p.digest(); err != nil && !strings.Contains(err.Error(), "escapes") {
			t.Logf("digest: %v", err)
		}
	})
}
