package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func tinyRootfs(t *testing.T) string {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc", "keep"), []byte("keep"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc", "gone"), []byte("gone"), 0o644)
	os.MkdirAll(filepath.Join(dir, "var", "old"), 0o755)
	os.WriteFile(filepath.Join(dir, "var", "old", "f"), []byte("f"), 0o644)
	return dir
}

// step prepares on parent, applies change to the root filesystem and commits id.
func step(t *testing.T, s *Store, parent, id string, change func(root string)) {
	t.Helper()
	w, err := s.Prepare(context.Background(), parent)
	if err != nil {
		t.Fatal(err)
	}
	change(w.Rootfs())
	if err := w.Commit(id, Meta{Description: id}, []byte("log of "+id)); err != nil {
		t.Fatal(err)
	}
}

func TestLayers(t *testing.T) {
	testenv.RequireRoot(t)
	for _, driver := range []Driver{Overlay, Copy} {
		t.Run(string(driver), func(t *testing.T) {
			s, err := Open(t.TempDir(), driver)
			if err != nil {
				t.Fatal(err)
			}
			s.MaxDepth = 3
			if err := s.Import(context.Background(), "base", tinyRootfs(t), Meta{}); err != nil {
				t.Fatal(err)
			}
			parent := "base"
			for i := 0; i < 6; i++ {
				id := fmt.Sprintf("s%d", i)
				step(t, s, parent, id, func(root string) {
					os.WriteFile(filepath.Join(root, fmt.Sprintf("file-%d", i)), []byte{byte(i)}, 0o644)
					if i == 1 {
						os.Remove(filepath.Join(root, "etc", "gone"))
						os.RemoveAll(filepath.Join(root, "var", "old"))
						os.MkdirAll(filepath.Join(root, "var", "old"), 0o755) // opaque directory
						os.WriteFile(filepath.Join(root, "var", "old", "new"), nil, 0o644)
					}
				})
				parent = id
			}
			dir, release, err := s.Mount(parent)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			for i := 0; i < 6; i++ {
				if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("file-%d", i))); err != nil {
					t.Errorf("file-%d missing: %v", i, err)
				}
			}
			for _, gone := range []string{"etc/gone", "var/old/f"} {
				if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
					t.Errorf("%s deleted in a lower step is back", gone)
				}
			}
			for _, kept := range []string{"etc/keep", "var/old/new"} {
				if _, err := os.Stat(filepath.Join(dir, kept)); err != nil {
					t.Errorf("%s missing: %v", kept, err)
				}
			}
			m, ok, err := s.Get(parent)
			if !ok || err != nil || m.Depth > s.MaxDepth || m.Parent != "s4" {
				t.Errorf("meta %+v ok %v err %v", m, ok, err)
			}
			if log, _ := s.Log("s3"); string(log) != "log of s3" {
				t.Errorf("log = %q", log)
			}
			// The base is untouched by the steps.
			if _, err := os.Stat(filepath.Join(s.FS("base"), "etc", "gone")); err != nil {
				t.Errorf("a step changed its base: %v", err)
			}
		})
	}
}

func TestCrashLeftovers(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	s, err := Open(root, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Import(context.Background(), "base", tinyRootfs(t), Meta{})
	w, err := s.Prepare(context.Background(), "base")
	if err != nil {
		t.Fatal(err)
	}
	// Pretend a dead process left its work (pid 1<<30 does not exist).
	dead := filepath.Join(root, "tmp", fmt.Sprintf("%d-abc", 1<<30))
	os.MkdirAll(filepath.Join(dead, "fs"), 0o755)
	if _, err := Open(root, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); err == nil {
		t.Error("work of a dead process was not removed")
	}
	if _, err := os.Stat(w.Rootfs()); err != nil {
		t.Error("work of a live process was removed")
	}
	w.Discard()
	if _, ok, _ := s.Get("base"); !ok {
		t.Error("base lost")
	}
	// A snapshot whose metadata a power loss cut short counts as absent and is replaced.
	step(t, s, "base", "damaged", func(string) {})
	os.WriteFile(filepath.Join(root, "snapshots", "damaged", "meta.json"), []byte(`{"id":"dam`), 0o600)
	if _, ok, err := s.Get("damaged"); ok || err != nil {
		t.Errorf("damaged snapshot: ok %v err %v", ok, err)
	}
	step(t, s, "base", "damaged", func(string) {})
	if m, ok, _ := s.Get("damaged"); !ok || m.Parent != "base" {
		t.Errorf("damaged snapshot not replaced: %+v %v", m, ok)
	}
	if _, _, err := s.Get("../x"); err == nil {
		t.Error("a path was accepted as a snapshot id")
	}
}
