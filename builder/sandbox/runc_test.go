package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// rootfs returns a writable Debian root filesystem for one test.
func rootfs(t *testing.T) (*sandbox.Runc, string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc")
	base := imagetest.Debian(t).Rootfs
	dir := t.TempDir()
	st, err := snapshot.Open(filepath.Join(dir, "store"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Import(context.Background(), "base", base, snapshot.Meta{}); err != nil {
		t.Fatal(err)
	}
	w, err := st.Prepare(context.Background(), "base")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Discard() })
	r, err := sandbox.NewRunc(filepath.Join(dir, "runc"))
	if err != nil {
		t.Fatal(err)
	}
	return r, w.Rootfs()
}

func sh(rootfs, cmd string) sandbox.Config {
	return sandbox.Config{Rootfs: rootfs, Args: []string{"/bin/sh", "-c", cmd},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cwd: "/"}
}

func TestRunc(t *testing.T) {
	r, root := rootfs(t)
	ctx := context.Background()

	t.Run("output and exit status", func(t *testing.T) {
		var out testenv.Buffer
		_, err := r.Run(ctx, sh(root, "echo hello; echo oops >&2; exit 3"), &out)
		var ee *sandbox.ExitError
		if !errors.As(err, &ee) || ee.Code != 3 || ee.OOMKilled {
			t.Fatalf("err = %v, want exit status 3", err)
		}
		if got := out.String(); !strings.Contains(got, "hello\n") || !strings.Contains(got, "oops\n") {
			t.Errorf("output = %q", got)
		}
	})

	t.Run("no network unless asked", func(t *testing.T) {
		var out testenv.Buffer
		if _, err := r.Run(ctx, sh(root, "cat /proc/net/dev | tail -n +3 | cut -d: -f1"), &out); err != nil {
			t.Fatal(err, out.String())
		}
		if ifs := strings.Fields(out.String()); len(ifs) != 1 || ifs[0] != "lo" {
			t.Errorf("interfaces without network = %q, want only lo", ifs)
		}
		cfg := sh(root, "cat /proc/net/dev | tail -n +3 | cut -d: -f1; test -s /etc/resolv.conf && echo resolv")
		cfg.HostNetwork = true
		out = testenv.Buffer{}
		if _, err := r.Run(ctx, cfg, &out); err != nil {
			t.Fatal(err, out.String())
		}
		if ifs := strings.Fields(out.String()); len(ifs) < 2 {
			t.Errorf("interfaces with host network = %q, want more than lo", ifs)
		}
	})

	t.Run("host files invisible", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "host-only-file")
		if err := os.WriteFile(marker, []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		var out testenv.Buffer
		_, err := r.Run(ctx, sh(root, "test -e "+marker+" && echo VIS$((0))IBLE; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /sys/fs/cgroup >/dev/null; hostname"), &out)
		if err != nil {
			t.Fatal(err, out.String())
		}
		if strings.Contains(out.String(), "VIS0IBLE") {
			t.Errorf("host file %s visible in the sandbox", marker)
		}
		if !strings.Contains(out.String(), "/bin/sh -c") {
			t.Errorf("pid 1 is not the command (no pid namespace?): %q", out.String())
		}
		if !strings.Contains(out.String(), "kiln") {
			t.Errorf("hostname not the sandbox's: %q", out.String())
		}
	})

	t.Run("memory limit", func(t *testing.T) {
		if sandbox.CgroupVersion() == 0 {
			t.Skip("no cgroup memory controller")
		}
		cfg := sh(root, "dd if=/dev/zero of=/dev/null bs=256M count=1")
		cfg.Limits.Memory = 64 << 20
		var out testenv.Buffer
		_, err := r.Run(ctx, cfg, &out)
		var ee *sandbox.ExitError
		if !errors.As(err, &ee) || !ee.OOMKilled {
			t.Fatalf("err = %v (output %q), want memory limit exceeded", err, out.String())
		}
		if !strings.Contains(err.Error(), "memory limit exceeded") {
			t.Errorf("error %q does not say memory limit exceeded", err)
		}
		cfg = sh(root, "dd if=/dev/zero of=/dev/null bs=16M count=1")
		cfg.Limits.Memory = 64 << 20
		if _, err := r.Run(ctx, cfg, &out); err != nil {
			t.Errorf("small allocation under the limit failed: %v", err)
		}
	})

	t.Run("pids limit", func(t *testing.T) {
		cfg := sh(root, "for i in $(seq 40); do sleep 5 & done; wait")
		cfg.Limits.Pids = 10
		var out testenv.Buffer
		if _, err := r.Run(ctx, cfg, &out); !strings.Contains(out.String(), "fork") && !strings.Contains(out.String(), "Resource temporarily unavailable") {
			t.Errorf("40 processes under a limit of 10: err %v, output %q", err, out.String())
		}
	})

	t.Run("timeout", func(t *testing.T) {
		cfg := sh(root, "echo start; sleep 60")
		cfg.Timeout = time.Second
		var out testenv.Buffer
		_, err := r.Run(ctx, cfg, &out)
		if !errors.Is(err, sandbox.ErrTimeout) {
			t.Fatalf("err = %v, want timeout", err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		var out testenv.Buffer
		go func() {
			for !strings.Contains(out.String(), "started") {
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
		}()
		_, err := r.Run(cctx, sh(root, "echo started; sleep 60"), &out)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want cancelled", err)
		}
	})

	t.Run("output streams line by line", func(t *testing.T) {
		out := &testenv.Buffer{}
		errc := make(chan error, 1)
		go func() {
			_, err := r.Run(ctx, sh(root, "echo first; sleep 3; echo second"), out)
			errc <- err
		}()
		deadline := time.Now().Add(2500 * time.Millisecond)
		for !strings.Contains(out.String(), "first") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		got := out.String()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "first") || strings.Contains(got, "second") {
			t.Errorf("while running, output = %q; want the first line only", got)
		}
	})

	t.Run("tmpfs", func(t *testing.T) {
		cfg := sh(root, "stat -f -c %T /bench; echo data > /bench/f && cat /bench/f")
		cfg.Tmpfs = []string{"/bench"}
		var out testenv.Buffer
		if _, err := r.Run(ctx, cfg, &out); err != nil {
			t.Fatal(err, out.String())
		}
		if got := strings.Fields(out.String()); len(got) != 2 || got[0] != "tmpfs" || got[1] != "data" {
			t.Errorf("output %q, want tmpfs and the file written there", out.String())
		}
		if _, err := os.Stat(filepath.Join(root, "bench", "f")); err == nil {
			t.Error("the file written in the tmpfs is in the root filesystem")
		}
	})

	t.Run("secrets and caches", func(t *testing.T) {
		cache := t.TempDir()
		cfg := sh(root, "cat /run/secrets/token; echo data > /cache/f; id -u")
		cfg.UID, cfg.GID = 1000, 1000
		os.Chown(cache, 1000, 1000)
		cfg.Secrets = []sandbox.Secret{{Target: "/run/secrets/token", Value: []byte("s3cr3t")}}
		cfg.Mounts = []sandbox.Mount{{Source: cache, Target: "/cache"}}
		var out testenv.Buffer
		if _, err := r.Run(ctx, cfg, &out); err != nil {
			t.Fatal(err, out.String())
		}
		if !strings.Contains(out.String(), "s3cr3t") || !strings.Contains(out.String(), "1000") {
			t.Errorf("output %q", out.String())
		}
		if data, _ := os.ReadFile(filepath.Join(cache, "f")); string(data) != "data\n" {
			t.Errorf("cache file = %q", data)
		}
		if _, err := os.Stat(filepath.Join(root, "run", "secrets", "token")); err == nil {
			if data, _ := os.ReadFile(filepath.Join(root, "run", "secrets", "token")); len(data) > 0 {
				t.Errorf("secret left in the root filesystem: %q", data)
			}
		}
	})
}

func TestStaleContainersRemoved(t *testing.T) {
	r, root := rootfs(t)
	// A command run by a process that dies: its runc is killed, the container lives on.
	var out testenv.Buffer
	cmdCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { r.Run(cmdCtx, sh(root, "echo started; sleep 600"), &out); close(done) }()
	defer func() { cancel(); <-done }()
	for !strings.Contains(out.String(), "started") {
		time.Sleep(20 * time.Millisecond)
	}
	// Rename its state as if a dead process (pid 1<<30) had made it.
	entries, _ := os.ReadDir(filepath.Join(r.Dir, "bundles"))
	if len(entries) != 1 {
		t.Fatalf("bundles: %v", entries)
	}
	fake := filepath.Join(r.Dir, "bundles", "kiln-1073741824-dead")
	os.Mkdir(fake, 0o700)
	if _, err := sandbox.NewRunc(r.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fake); err == nil {
		t.Error("bundle of a dead process kept")
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "bundles", entries[0].Name())); err != nil {
		t.Error("bundle of a live process removed")
	}
}
