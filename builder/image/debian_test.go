package image_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestDebianBase(t *testing.T) {
	testenv.Short(t, "makes a Debian root filesystem with mmdebstrap")
	b := imagetest.Debian(t)
	v, err := os.ReadFile(filepath.Join(b.Rootfs, "etc/debian_version"))
	if err != nil || !strings.HasPrefix(string(v), "12.") {
		t.Fatalf("etc/debian_version = %q, %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(b.Rootfs, "usr/bin/apt-get")); err == nil {
		// minbase has apt; make sure the tree is complete enough to run things.
	} else {
		t.Errorf("no apt-get in the base: %v", err)
	}
	// The build host's own files stay out of the base.
	if data, err := os.ReadFile(filepath.Join(b.Rootfs, "etc/resolv.conf")); err != nil || len(data) != 0 {
		t.Errorf("etc/resolv.conf = %q, %v; want an empty file", data, err)
	}
	if _, err := os.Lstat(filepath.Join(b.Rootfs, "etc/hostname")); err == nil {
		t.Error("etc/hostname is in the base")
	}
	if b.Ref != "kiln/debian:bookworm" || !strings.HasPrefix(b.ID, "sha256:") {
		t.Errorf("base = %+v", b)
	}
	st := imagetest.Store(t)
	start := time.Now()
	again, err := st.Resolve(context.Background(), "kiln/debian:bookworm")
	if err != nil || again.ID != b.ID {
		t.Fatalf("resolve by name: %+v, %v", again, err)
	}
	t.Logf("cached resolve took %s", time.Since(start))
}

func TestDebianForeignArch(t *testing.T) {
	testenv.Short(t, "makes an arm64 Debian root filesystem under qemu")
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/qemu-aarch64"); err != nil {
		if testenv.InCI() {
			t.Fatalf("qemu-aarch64 binfmt handler not registered: %v", err)
		}
		t.Skip("qemu-aarch64 binfmt handler not registered")
	}
	b := imagetest.DebianWith(t, image.DebianOptions{Suite: "bookworm", Arch: "arm64"})
	if b.Config.Arch != "arm64" || b.Ref != "kiln/debian:bookworm-arm64" {
		t.Errorf("base = %+v", b)
	}
	if _, err := os.Stat(filepath.Join(b.Rootfs, "lib/ld-linux-aarch64.so.1")); err != nil {
		t.Errorf("not an arm64 tree: %v", err)
	}
}

// TestDebianCancelStopsPromptly cancels a base creation while mmdebstrap works: the call
// returns soon with an error, leaving nothing in the store and no mmdebstrap behind.
func TestDebianCancelStopsPromptly(t *testing.T) {
	testenv.Short(t, "starts mmdebstrap")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mmdebstrap")
	st, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := st.MakeDebian(ctx, image.DebianOptions{Suite: "bookworm", Packages: []string{"ocaml-nox"}, Name: "kiln/cancelled:test"})
		done <- err
	}()
	time.Sleep(4 * time.Second)
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled base creation succeeded")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("MakeDebian did not return within a minute of its cancellation")
	}
	if _, err := st.Resolve(context.Background(), "kiln/cancelled:test"); err == nil {
		t.Error("a cancelled base is in the store")
	}
}
