package builder

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	cases := []struct {
		name    string
		secrets []string
		writes  []string
		want    string
	}{
		{"whole value", []string{"hunter22"}, []string{"pw=hunter22\n"}, "pw=***\n"},
		{"split across writes", []string{"hunter22"}, []string{"pw=hun", "ter", "22 ok\n"}, "pw=*** ok\n"},
		{"prefix that is not the value", []string{"hunter22"}, []string{"hunt", "ing\n"}, "hunting\n"},
		{"held back until flush", []string{"hunter22"}, []string{"end hunte"}, "end hunte"},
		{"trailing newline of a file", []string{"tok-123\n"}, []string{"[tok-123]\n"}, "[***]\n"},
		{"each line of a multi-line value", []string{"line-one\nline-two\n"}, []string{"x line-two y\n", "line-one\n"}, "x *** y\n***\n"},
		{"several values, longest first", []string{"abcd", "abcdefgh"}, []string{"abcdefgh abcd\n"}, "*** ***\n"},
		{"short values are left alone", []string{"ab"}, []string{"ab cab\n"}, "ab cab\n"},
		{"no secrets", nil, []string{"plain\n"}, "plain\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			vals := map[string][]byte{}
			for i, s := range c.secrets {
				vals[fmt.Sprint(i)] = []byte(s)
			}
			r := NewRedactor(&out, vals)
			for _, w := range c.writes {
				if n, err := r.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != c.want {
				t.Errorf("got %q, want %q", out.String(), c.want)
			}
		})
	}
}

func TestCacheFileName(t *testing.T) {
	ids := []string{"opam-archives", "my cache", "a/b", "a%2Fb", "%a", ".", "..", "", "c:\\opam", "../x",
		strings.Repeat("x", 200), strings.Repeat("x", 201), strings.Repeat("é", 150), "~x", "%~x"}
	seen := map[string]string{}
	for _, id := range ids {
		t.Run(fmt.Sprintf("%q", id), func(t *testing.T) {
			n := CacheFileName(id)
			if plainCacheName(id) && n != id {
				t.Errorf("plain id renamed to %q", n)
			}
			if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") || len(n) > 200 {
				t.Errorf("unsafe file name %q", n)
			}
			if other, dup := seen[n]; dup {
				t.Errorf("%q and %q both map to %q", id, other, n)
			}
			seen[n] = id
		})
	}
}

func TestCopyResolvesImageLinks(t *testing.T) {
	ctx := t.TempDir()
	os.WriteFile(filepath.Join(ctx, "x"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(ctx, "d", "e"), 0o755)
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "run", "lock"), 0o755)
	os.MkdirAll(filepath.Join(rootfs, "var"), 0o755)
	os.Symlink("/run", filepath.Join(rootfs, "var", "run"))
	os.Symlink("../../run/lock", filepath.Join(rootfs, "var", "lock"))
	os.Symlink("/", filepath.Join(rootfs, "up"))
	cases := []struct {
		name     string
		src, dst string
		want     string // path under rootfs that must exist
	}{
		{"absolute link in the parent", "x", "/var/run/x", "run/x"},
		{"relative link climbing", "x", "/var/lock/y", "run/lock/y"},
		{"link to the root", "x", "/up/up/z", "z"},
		{"directory onto a link to one", "d", "/var/run", "run/e"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, err := os.OpenRoot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			p, err := planCopy(src, []string{c.src}, c.dst, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.write(rootfs, os.Getuid(), os.Getgid()); err != nil {
				t.Fatalf("copy to %s: %v", c.dst, err)
			}
			if _, err := os.Stat(filepath.Join(rootfs, c.want)); err != nil {
				t.Errorf("%s: %v", c.want, err)
			}
		})
	}
	if fi, err := os.Lstat(filepath.Join(rootfs, "var", "run")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the image's /var/run link was replaced: %v %v", fi, err)
	}
	t.Run("workdir through a link", func(t *testing.T) {
		if err := mkdirInRoot(rootfs, "/var/run/w", os.Getuid(), os.Getgid()); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(rootfs, "run", "w")); err != nil || !fi.IsDir() {
			t.Errorf("run/w: %v", err)
		}
	})
}
