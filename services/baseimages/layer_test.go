package baseimages

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var testEpoch = time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC)

// tree makes files (path → content; "dir/" for a directory, "->target" for a symlink)
// under dir with modification time mtime.
func tree(t *testing.T, dir string, files map[string]string, mtime time.Time) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case p[len(p)-1] == '/':
			os.MkdirAll(full, 0o755)
		case len(c) > 2 && c[:2] == "->":
			if err := os.Symlink(c[2:], full); err != nil {
				t.Fatal(err)
			}
			ts := unix.NsecToTimespec(mtime.UnixNano())
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		os.Chtimes(full, mtime, mtime)
	}
}

func layerEntries(t *testing.T, data []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
		if h.Uname != "" || !h.AccessTime.IsZero() {
			t.Errorf("%s: host detail kept: uname %q atime %v", h.Name, h.Uname, h.AccessTime)
		}
	}
}

func TestWriteDiff(t *testing.T) {
	old := map[string]string{"etc/a": "a", "etc/b": "b", "usr/lib/x": "x", "usr/share/doc/": "", "gone/file": "g", "link": "->etc/a"}
	cases := []struct {
		name  string
		files map[string]string // the new tree (over old for a diff)
		diff  bool
		want  []string
	}{
		{name: "without a tree below: all, sorted", files: old, want: []string{"etc/", "etc/a", "etc/b", "gone/", "gone/file", "link", "usr/", "usr/lib/", "usr/lib/x", "usr/share/", "usr/share/doc/"}},
		{name: "diff: changed, added, removed; unchanged left out", diff: true,
			files: map[string]string{"etc/a": "a", "etc/b": "B", "usr/lib/x": "x", "usr/lib/y": "y", "usr/share/doc/": "", "link": "->etc/b"},
			want:  []string{".wh.gone", "etc/", "etc/b", "link", "usr/", "usr/lib/", "usr/lib/y"}},
		{name: "diff of an unchanged tree is empty", diff: true, files: old, want: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			tree(t, base, old, testEpoch.Add(-time.Hour))
			dir := t.TempDir()
			tree(t, dir, c.files, testEpoch.Add(-time.Hour))
			oldDir := ""
			if c.diff {
				oldDir = base
				// The directories' times differ in a real diff only when their entries do.
				for _, d := range []string{"etc", "usr", "usr/lib", "usr/share", "usr/share/doc", "gone", "."} {
					os.Chtimes(filepath.Join(base, d), testEpoch, testEpoch)
					os.Chtimes(filepath.Join(dir, d), testEpoch, testEpoch)
				}
			}
			var buf bytes.Buffer
			if _, err := WriteDiff(context.Background(), &buf, dir, oldDir); err != nil {
				t.Fatal(err)
			}
			got := layerEntries(t, buf.Bytes())
			if !slices.Equal(got, c.want) {
				t.Errorf("entries:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}
