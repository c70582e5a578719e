package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-ci/kiln/internal/testenv"
)

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarOf(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return &buf
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func TestUnpackLayersWithWhiteouts(t *testing.T) {
	dir := t.TempDir()
	l1 := tarOf(t,
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/keep", body: "keep"},
		entry{name: "etc/gone", body: "gone"},
		entry{name: "opaque/", typ: tar.TypeDir},
		entry{name: "opaque/old", body: "old"},
		entry{name: "bin/sh", body: "#!sh", mode: 0o4755},
		entry{name: "bin/link", typ: tar.TypeSymlink, link: "sh"},
		entry{name: "bin/hard", typ: tar.TypeLink, link: "bin/sh"},
		entry{name: "replaced", typ: tar.TypeDir},
		entry{name: "replaced/x", body: "x"},
	)
	l2 := tarOf(t,
		entry{name: "etc/.wh.gone", body: ""},
		entry{name: "opaque/", typ: tar.TypeDir},
		entry{name: "opaque/new", body: "new"},
		entry{name: "opaque/.wh..wh..opq", body: ""},
		entry{name: "replaced", body: "now a file"},
		entry{name: "etc/keep", body: "changed"},
	)
	if _, err := unpackTo(context.Background(), dir, l1, l2); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "etc/keep")); got != "changed" {
		t.Errorf("etc/keep = %q", got)
	}
	if exists(filepath.Join(dir, "etc/gone")) || exists(filepath.Join(dir, "etc/.wh.gone")) {
		t.Error("whiteout did not remove etc/gone, or was written itself")
	}
	if exists(filepath.Join(dir, "opaque/old")) {
		t.Error("opaque directory kept a lower layer's file")
	}
	if got := readFile(t, filepath.Join(dir, "opaque/new")); got != "new" {
		t.Errorf("opaque/new = %q (the opaque layer's own file must stay)", got)
	}
	if got := readFile(t, filepath.Join(dir, "replaced")); got != "now a file" {
		t.Errorf("replaced = %q", got)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/link")); err != nil || l != "sh" {
		t.Errorf("symlink = %q, %v", l, err)
	}
	a, _ := os.Stat(filepath.Join(dir, "bin/sh"))
	b, _ := os.Stat(filepath.Join(dir, "bin/hard"))
	if !os.SameFile(a, b) {
		t.Error("hard link is not the same file")
	}
	if a.Mode()&os.ModeSetuid == 0 || a.Mode().Perm() != 0o755 {
		t.Errorf("bin/sh mode = %v, want setuid 0755", a.Mode())
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	cases := map[string]*bytes.Buffer{
		"dotdot":           tarOf(t, entry{name: "../escaped", body: "x"}),
		"nested dotdot":    tarOf(t, entry{name: "a/../../escaped", body: "x"}),
		"absolute symlink": tarOf(t, entry{name: "evil", typ: tar.TypeSymlink, link: outside}, entry{name: "evil/escaped", body: "x"}),
		"relative symlink": tarOf(t, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/evil", typ: tar.TypeSymlink, link: "../../../../../../../../" + outside}, entry{name: "d/evil/escaped", body: "x"}),
		"hard link out":    tarOf(t, entry{name: "h", typ: tar.TypeLink, link: "../../../../../../" + outside + "/target"}),
		"symlink then whiteout": tarOf(t,
			entry{name: "evil", typ: tar.TypeSymlink, link: outside}, entry{name: "evil/.wh.target", body: ""}),
	}
	if err := os.WriteFile(filepath.Join(outside, "target"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tr := range cases {
		dir := t.TempDir()
		_, err := unpackTo(context.Background(), dir, tr)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if exists(filepath.Join(outside, "escaped")) {
			t.Fatalf("%s: wrote outside the root", name)
		}
		if readFile(t, filepath.Join(outside, "target")) != "host" {
			t.Fatalf("%s: touched a host file", name)
		}
	}
	if !strings.Contains(errString(unpackTo(context.Background(), t.TempDir(), tarOf(t, entry{name: "../escaped", body: "x"}))), "leaves the root") {
		t.Error("error does not say the path leaves the root")
	}
}

func errString(_ int64, err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSymlinkInsideRootIsFollowed(t *testing.T) {
	// Merged-/usr layouts: bin -> usr/bin, and a later entry under bin/.
	dir := t.TempDir()
	l := tarOf(t,
		entry{name: "usr/bin/", typ: tar.TypeDir},
		entry{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		entry{name: "bin/tool", body: "tool"},
	)
	if _, err := unpackTo(context.Background(), dir, l); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "usr/bin/tool")); got != "tool" {
		t.Errorf("usr/bin/tool = %q", got)
	}
	// The same file twice, the second time through the link: the last one wins.
	dir = t.TempDir()
	l = tarOf(t,
		entry{name: "usr/bin/", typ: tar.TypeDir},
		entry{name: "usr/bin/tool", body: "first"},
		entry{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		entry{name: "bin/tool", body: "second"},
		entry{name: "bin/tool2", body: "x"},
	)
	if _, err := unpackTo(context.Background(), dir, l); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "usr/bin/tool")); got != "second" {
		t.Errorf("usr/bin/tool = %q", got)
	}
}

func TestLocalName(t *testing.T) {
	for in, want := range map[string]string{
		"kiln/debian:bookworm-ocaml": "kiln/debian:bookworm-ocaml",
		"debian":                     "kiln/debian:latest",
		"kiln/a/b":                   "kiln/a/b:latest",
	} {
		got, err := LocalName(in)
		if err != nil || got != want {
			t.Errorf("LocalName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"kiln/", "kiln/Upper", "kiln/a:", "kiln/a:b c", "kiln/../x:y x", "kiln//a"} {
		if _, err := LocalName(bad); err == nil {
			t.Errorf("LocalName(%q) accepted", bad)
		}
	}
}

func TestUnpackKeepsFileCapabilities(t *testing.T) {
	testenv.RequireRoot(t) // setting security.capability needs CAP_SETFCAP
	// security.capability v2 granting cap_net_raw (bit 13) permitted and effective.
	capv := string([]byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "ping", Typeflag: tar.TypeReg, Mode: 0o755, Size: 1, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capv}})
	tw.Write([]byte("x"))
	tw.Close()
	dir := t.TempDir()
	if _, err := unpackTo(context.Background(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64)
	n, err := unix.Getxattr(filepath.Join(dir, "ping"), "security.capability", got)
	if err != nil || string(got[:n]) != capv {
		t.Errorf("security.capability = %x, %v", got[:max(n, 0)], err)
	}
}
