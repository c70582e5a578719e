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
