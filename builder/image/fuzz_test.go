package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzUnpack feeds arbitrary tar streams to the unpacker: it may fail, but never
// panic nor write outside the root.
func FuzzUnpack(f *testing.F) {
	t := &testing.T{}
	f.Add(tarOf(t, entry{name: "a/b", body: "x"}, entry{name: "a/.wh.b"}).Bytes())
	f.Add(tarOf(t, entry{name: "l", typ: tar.TypeSymlink, link: "../.."}, entry{name: "l/x", body: "x"}).Bytes())
	f.Add(tarOf(t, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/.wh..wh..opq"}, entry{name: "h", typ: tar.TypeLink, link: "d"}).Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		os.Mkdir(root, 0o755)
		marker := filepath.Join(base, "marker")
		os.WriteFile(marker, []byte("m"), 0o644)
		unpackTo(context.Background(), root, bytes.NewReader(data))
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			if e.Name() != "root" && e.Name() != "marker" {
				t.Fatalf("unpack wrote %s outside the root", e.Name())
			}
		}
		if b, err := os.ReadFile(marker); err != nil || string(b) != "m" {
			t.Fatal("unpack changed a file outside the root")
		}
		removeTree(root)
	})
}
