package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestImportAndResolveLocal(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Resolve(ctx, "kiln/tiny:1"); err == nil || !strings.Contains(err.Error(), "no such local base") {
		t.Fatalf("missing local base: %v", err)
	}
	tr := tarOf(t, entry{name: "etc/os-release", body: "ID=tiny\n"})
	data := tr.Bytes()
	b, err := st.Import(ctx, "tiny:1", bytes.NewReader(data), Config{Env: []string{"A=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.ID, "sha256:") || b.Ref != "kiln/tiny:1" {
		t.Errorf("base = %+v", b)
	}
	if err := st.Tag(b.ID, "other"); err != nil {
		t.Fatal(err)
	}
	if o, err := st.Resolve(ctx, "kiln/other"); err != nil || o.ID != b.ID || o.Ref != "kiln/other" {
		t.Errorf("tagged: %+v, %v", o, err)
	}
	got, err := st.Resolve(ctx, "kiln/tiny:1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != b.ID || readFile(t, filepath.Join(got.Rootfs, "etc/os-release")) != "ID=tiny\n" || got.Config.Env[0] != "A=1" {
		t.Errorf("resolved = %+v", got)
	}
	// The same stream gives the same id; different content another.
	b2, err := st.Import(ctx, "kiln/tiny:2", bytes.NewReader(data), Config{})
	if err != nil || b2.ID != b.ID {
		t.Errorf("reimport id %s, %v; want %s", b2.ID, err, b.ID)
	}
	b3, err := st.Import(ctx, "kiln/tiny:3", tarOf(t, entry{name: "x", body: "y"}), Config{})
	if err != nil || b3.ID == b.ID {
		t.Errorf("different content got id %s, %v", b3.ID, err)
	}
	list, names, err := st.List()
	if err != nil || len(list) != 2 || len(names[b.ID]) != 3 {
		t.Errorf("list = %d bases, names %v, %v", len(list), names, err)
	}
	if err := st.Remove(b3.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Resolve(ctx, "kiln/tiny:3"); err == nil {
		t.Error("removed base still resolves")
	}
}

func TestResolveTarball(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarOf(t, entry{name: "bin/", typ: tar.TypeDir}, entry{name: "bin/true", body: "ok", mode: 0o755}).Bytes())
	zw.Close()
	file := filepath.Join(t.TempDir(), "rootfs.tar.gz")
	if err := os.WriteFile(file, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := st.Resolve(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(b.Rootfs, "bin/true")) != "ok" {
		t.Error("tarball content missing")
	}
	// Unchanged file: same base without unpacking again (the rootfs is not replaced).
	marker := filepath.Join(b.Rootfs, "marker")
	os.WriteFile(marker, nil, 0o644)
	b2, err := st.Resolve(ctx, "file:"+file)
	if err != nil || b2.ID != b.ID || !exists(marker) {
		t.Errorf("second resolve: %+v, %v", b2, err)
	}
	os.Remove(marker)
	// A changed file is read again.
	later := time.Now().Add(time.Minute)
	os.WriteFile(file, tarOf(t, entry{name: "other", body: "z"}).Bytes(), 0o644)
	os.Chtimes(file, later, later)
	b3, err := st.Resolve(ctx, file)
	if err != nil || b3.ID == b.ID || !exists(filepath.Join(b3.Rootfs, "other")) {
		t.Errorf("changed tarball: %+v, %v", b3, err)
	}
	if _, err := st.Resolve(ctx, "/nonexistent/rootfs.tar"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing tarball: %v", err)
	}
}

func TestCorruptTarballRefused(t *testing.T) {
	st, _ := Open(t.TempDir())
	file := filepath.Join(t.TempDir(), "bad.tar.gz")
	os.WriteFile(file, []byte{0x1f, 0x8b, 1, 2, 3, 4, 5}, 0o644)
	if _, err := st.Resolve(context.Background(), file); err == nil {
		t.Fatal("corrupt tarball accepted")
	}
	entries, _ := os.ReadDir(filepath.Join(st.Root(), "bases"))
	if len(entries) != 0 {
		t.Errorf("a failed unpack left %d bases", len(entries))
	}
}
