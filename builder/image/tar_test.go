package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// TestTarWhileLinked tars a base while another builder imports it by hard links, which
// changes its files' ctimes: the stream must be whole and Tar must not fail.
func TestTarWhileLinked(t *testing.T) {
	testenv.RequireCommand(t, "tar")
	root := filepath.Join(t.TempDir(), "rootfs")
	const files = 2000
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range files {
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("f%04d", i)), make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		sorted bool
	}{{"unsorted", false}, {"sorted", true}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // an importer linking the base's files again and again
				defer wg.Done()
				links := t.TempDir()
				for ctx.Err() == nil {
					for i := 0; i < files && ctx.Err() == nil; i++ {
						name := fmt.Sprintf("f%04d", i)
						os.Link(filepath.Join(root, name), filepath.Join(links, name))
						os.Remove(filepath.Join(links, name))
					}
				}
			}()
			pr, pw := io.Pipe()
			errc := make(chan error, 1)
			go func() {
				err := Base{Ref: "test", Rootfs: root}.Tar(ctx, pw, c.sorted)
				pw.CloseWithError(err)
				errc <- err
			}()
			n := 0
			tr := tar.NewReader(pr)
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("read the stream: %v", err)
				}
				if h.Typeflag == tar.TypeReg {
					n++
				}
			}
			io.Copy(io.Discard, pr) // tar pads its stream past the end marker
			err := <-errc
			cancel()
			wg.Wait()
			if err != nil {
				t.Fatalf("Tar: %v", err)
			}
			if n != files {
				t.Fatalf("%d files in the stream, want %d", n, files)
			}
		})
	}
}

// TestTarFailsOnRealErrors checks that a missing root is still an error.
func TestTarFailsOnRealErrors(t *testing.T) {
	testenv.RequireCommand(t, "tar")
	err := Base{Ref: "gone", Rootfs: filepath.Join(t.TempDir(), "missing")}.Tar(context.Background(), io.Discard, false)
	if err == nil {
		t.Fatal("Tar of a missing root succeeded")
	}
}
