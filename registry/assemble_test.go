package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// writeTree makes a small root filesystem under dir, its times set to mtime.
func writeTree(t *testing.T, dir string, mtime time.Time, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("bin/tool", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "bin/tool"), filepath.Join(dir, "bin/a-hardlink")); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSymlink == 0 {
			os.Chtimes(p, mtime, mtime)
		}
		return err
	})
}

func assembleDigest(t *testing.T, src Rootfs) v1.Hash {
	t.Helper()
	a, err := Assemble(context.Background(), src, ImageConfig{Architecture: "amd64"}, AssembleOptions{Epoch: time.Unix(1700000000, 0), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	d, err := a.Image.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestAssembleReproducible(t *testing.T) {
	files := map[string]string{"bin/tool": "#!/bin/sh\necho hi\n", "etc/os-release": "ID=debian\n"}
	first := t.TempDir()
	writeTree(t, first, time.Now(), files)
	writeFile(t, first, "var/log/dpkg.log", "installed at 10:00\n")
	want := assembleDigest(t, Rootfs{Dir: first})
	for _, tc := range []struct {
		name   string
		change func(dir string)
		same   bool
	}{
		{"same content, other times and noise", func(dir string) {
			writeFile(t, dir, "var/log/dpkg.log", "installed at 11:00, another day\n")
			writeFile(t, dir, "etc/machine-id", "0123456789abcdef\n")
		}, true},
		{"a file changed", func(dir string) { writeFile(t, dir, "etc/os-release", "ID=ubuntu\n") }, false},
		{"a file added", func(dir string) { writeFile(t, dir, "etc/new", "") }, false},
		{"a mode changed", func(dir string) { os.Chmod(filepath.Join(dir, "bin/tool"), 0o755) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, time.Now().Add(-time.Hour), files)
			tc.change(dir)
			got := assembleDigest(t, Rootfs{Dir: dir})
			if (got == want) != tc.same {
				t.Errorf("digest %s, first assembly %s; want same=%v", got, want, tc.same)
			}
		})
	}
}

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type member struct {
	hdr  tar.Header
	data string
}

func tarOf(t testing.TB, ms []member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := m.hdr
		h.Size = int64(len(m.data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, m.data)
	}
	tw.Close()
	return b.Bytes()
}

func normaliseBytes(t testing.TB, in []byte) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	err := normalise(context.Background(), io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))), "in.tar", &out, AssembleOptions{Epoch: time.Unix(0, 0)})
	return out.Bytes(), err
}

func readTar(t *testing.T, b []byte) []member {
	t.Helper()
	var out []member
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out = append(out, member{hdr: *h, data: string(data)})
	}
}

// TestNormaliseTar gives tars of the same files in other orders, with other times
// and user names, and a hard link named before the file it links to.
func TestNormaliseTar(t *testing.T) {
	now := time.Now()
	file := member{tar.Header{Typeflag: tar.TypeReg, Name: "./usr/bin/z-tool", Mode: 0o755, Uid: 1000, Gid: 1000, Uname: "opam", ModTime: now}, "binary"}
	link := member{tar.Header{Typeflag: tar.TypeLink, Name: "./usr/bin/a-tool", Linkname: "./usr/bin/z-tool", ModTime: now}, ""}
	dir := member{tar.Header{Typeflag: tar.TypeDir, Name: "./usr/bin/", Mode: 0o755, ModTime: now}, ""}
	root := member{tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755, ModTime: now}, ""}
	cases := []struct {
		name string
		in   []member
	}{
		{"tar order", []member{root, dir, file, link}},
		{"reversed, other times", func() []member {
			f, d := file, dir
			f.hdr.ModTime, d.hdr.ModTime = now.Add(time.Hour), now.Add(-time.Hour)
			f.hdr.Uname = "someone"
			return []member{f, link, d}
		}()},
	}
	var want []byte
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normaliseBytes(t, tarOf(t, tc.in))
			if err != nil {
				t.Fatal(err)
			}
			ms := readTar(t, got)
			var names []string
			for _, m := range ms {
				names = append(names, m.hdr.Name)
				if !m.hdr.ModTime.Equal(time.Unix(0, 0)) || m.hdr.Uname != "" {
					t.Errorf("%s: time %s, user %q; want the epoch and no name", m.hdr.Name, m.hdr.ModTime, m.hdr.Uname)
				}
			}
			if len(ms) != 3 || ms[1].hdr.Typeflag != tar.TypeReg || ms[1].data != "binary" || ms[1].hdr.Uid != 1000 ||
				ms[2].hdr.Typeflag != tar.TypeLink || ms[2].hdr.Linkname != "usr/bin/a-tool" {
				t.Fatalf("normalised tar %v: want usr/bin/, usr/bin/a-tool holding the data (uid 1000), usr/bin/z-tool linking to it", names)
			}
			if want == nil {
				want = got
			} else if !bytes.Equal(got, want) {
				t.Errorf("normalised tar differs from the first case's")
			}
		})
	}
}

func FuzzNormalise(f *testing.F) {
	f.Add(tarOf(f, []member{{tar.Header{Typeflag: tar.TypeReg, Name: "a", Mode: 0o644}, "x"}, {tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"}, ""}}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, in []byte) {
		once, err := normaliseBytes(t, in)
		if err != nil {
			return
		}
		twice, err := normaliseBytes(t, once)
		if err != nil {
			t.Fatalf("normalising a normalised tar: %v", err)
		}
		if !bytes.Equal(once, twice) {
			t.Errorf("normalising a normalised tar changed it")
		}
	})
}
