package builder_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"golang.org/x/sys/unix"
)

// probeDiskBudget is the per-step disk budget of the probe builder, small so that the
// disk probe writes little.
const probeDiskBudget = 256 << 20

// TestProbes runs steps that try to get out of the sandbox or past its limits, as a
// spec from a stranger's pull request might. Each run step exits 0 only when the
// attempt was refused; the limit probes check how the build failed and what it left.
func TestProbes(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probes call system calls by their amd64 numbers")
	}
	b, base := newBuilder(t, builder.Options{Limits: sandbox.Limits{Disk: probeDiskBudget}})
	limits := b.Limits()
	mustBuild(t, b, parse(t, "((from "+base+"))"), builder.BuildContext{}) // the base, imported once
	marker := filepath.Join(t.TempDir(), "host-only-file")
	if err := os.WriteFile(marker, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(secret, []byte("probe-secret-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	probes := []struct {
		name string
		// ops are the spec's operations after (from base).
		ops string
		// check looks at the result (nil: the build must succeed).
		check func(t *testing.T, b *builder.Builder, id, log string, err error, before int64)
	}{
		{name: "network: only loopback, no raw sockets",
			ops: `(run (shell "test $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ') = lo && ! perl -MSocket -e 'socket(my $s, AF_INET, SOCK_RAW, 1) or exit 1'"))`},
		{name: "host files: invisible, and the step's root owns none of them",
			ops: `(run (shell "! test -e ` + marker + ` && cat /proc/self/uid_map && awk '$2 == 0 { exit 1 }' /proc/self/uid_map"))`},
		{name: "namespaces: no new user namespace",
			ops: `(run (shell "command -v unshare && ! unshare -Ur true && ! perl -e 'exit(syscall(272, 0x10000000) == 0 ? 0 : 1)'"))`},
		{name: "mknod: no device nodes",
			ops: `(run (shell "! mknod /tmp/null c 1 3 && ! mknod /tmp/sda b 8 0"))`},
		{name: "mount: neither here nor in a nested namespace",
			ops: `(run (shell "! mount -t tmpfs none /mnt && ! unshare -Urm mount -t tmpfs none /mnt"))`},
		{name: "ptrace: kcmp and pidfd_getfd refused, ptrace of own children kept",
			ops: `(run (shell "perl -e 'exit(syscall(312, $$, $$, 0, 0, 0) == -1 ? 0 : 1)' && perl -e 'exit(syscall(438, 0, 0, 0) == -1 && $!{EPERM} ? 0 : 1)' && perl -e 'exit(syscall(101, 0, 0, 0, 0) == 0 ? 0 : 1)'"))`},
		{name: "proc and sys: read-only, no_new_privs, seccomp filter",
			ops: `(run (shell "! echo 1 2>/dev/null > /proc/sys/kernel/sysrq && ! echo b 2>/dev/null > /proc/sysrq-trigger && ! echo 1 2>/dev/null > /sys/kernel/mm/ksm/run && grep -q 'NoNewPrivs:.1' /proc/self/status && grep -q 'Seccomp:.2' /proc/self/status"))`},
		{name: "personality: ASLR can be turned off (setarch -R)",
			ops: `(run (shell "setarch -R true"))`},
		{name: "fork bomb: stopped by the pids limit",
			ops: fmt.Sprintf(`(run (shell "perl -e 'my @k; for (1..%d) { my $p = fork; last unless defined $p; if (!$p) { sleep 60; exit } push @k, $p } print scalar(@k), q{ processes started}, $/; kill 9, @k; exit(@k < %d ? 0 : 1)'"))`, limits.Pids+200, limits.Pids)},
		{name: "memory: killed past the default limit",
			ops: fmt.Sprintf(`(run (shell "dd if=/dev/zero of=/dev/null bs=%dM count=1 iflag=fullblock"))`, limits.Memory>>20+256),
			check: func(t *testing.T, b *builder.Builder, id, log string, err error, before int64) {
				if !errors.Is(err, builder.ErrMemoryLimit) || builder.IsInfrastructure(err) {
					t.Errorf("err = %v, want the build's fault %v", err, builder.ErrMemoryLimit)
				}
			}},
		{name: "disk: a step past its budget fails and leaves nothing",
			ops: fmt.Sprintf(`(run (shell "dd if=/dev/zero of=/big bs=1M count=%d || true; sync"))`, probeDiskBudget>>20+512),
			check: func(t *testing.T, b *builder.Builder, id, log string, err error, before int64) {
				if !errors.Is(err, builder.ErrDiskBudget) || builder.IsInfrastructure(err) {
					t.Errorf("err = %v, want the build's fault %v", err, builder.ErrDiskBudget)
				}
				metas, _ := b.Store().List()
				for _, m := range metas {
					if m.Size > probeDiskBudget {
						t.Errorf("snapshot %s of %d bytes committed (%s)", m.ID, m.Size, m.Description)
					}
				}
				if left, _ := os.ReadDir(filepath.Join(b.Store().Root(), "tmp")); len(left) > 0 {
					t.Errorf("work left in the store: %v", left)
				}
				if grown := storeBytes(t, b) - before; grown > 64<<20 {
					t.Errorf("the store grew by %d MiB", grown>>20)
				}
			}},
		{name: "secrets: the secret's mount point is not in the snapshot",
			ops: `(run (secrets (token (target /run/secrets/token))) (shell "cat /run/secrets/token > /dev/null"))`,
			check: func(t *testing.T, b *builder.Builder, id, log string, err error, before int64) {
				if err != nil {
					t.Fatalf("build: %v\n%s", err, log)
				}
				dir, release, err := b.Store().Mount(id)
				if err != nil {
					t.Fatal(err)
				}
				defer release()
				for _, p := range []string{"run/secrets/token", "run/secrets"} {
					if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
						t.Errorf("/%s is in the committed snapshot", p)
					}
				}
			}},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			before := storeBytes(t, b)
			s := parse(t, "((from "+base+") "+p.ops+")")
			id, log, err := build(t, b, s, builder.BuildContext{Secrets: map[string][]byte{"token": []byte("probe-secret-value")}})
			if p.check != nil {
				p.check(t, b, id, log, err, before)
			} else if err != nil {
				t.Errorf("probe not refused: %v\n%s", err, tail(log, 15))
			}
		})
	}
}

// storeBytes is the disk use of the builder's store, snapshots and work in progress.
func storeBytes(t *testing.T, b *builder.Builder) int64 {
	var total int64
	filepath.WalkDir(b.Store().Root(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestStepIgnoringFullDisk runs a step that writes until its disk is full, ignores the
// error and ends successfully, in a store on a 480 MiB file system.
func TestStepIgnoringFullDisk(t *testing.T) {
	tests := []struct {
		name   string
		limits sandbox.Limits
		want   error
		infra  bool
	}{
		{name: "the default budget stops it first: the build's fault", want: builder.ErrDiskBudget},
		{name: "no budget: the disk is full, the infrastructure's fault", limits: sandbox.Limits{Disk: -1}, want: builder.ErrDiskFull, infra: true},
	}
	_, base := newBuilder(t, builder.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=480m"); err != nil {
				t.Skipf("cannot mount a tmpfs: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
			b, _ := newBuilder(t, builder.Options{Root: filepath.Join(dir, "root"), MinFree: 32 << 20, Limits: tt.limits})
			mustBuild(t, b, parse(t, "((from "+base+"))"), builder.BuildContext{})
			before := storeBytes(t, b)
			s := parse(t, `((from `+base+`) (run (shell "dd if=/dev/zero of=/big bs=1M count=1000 status=none || true")))`)
			_, log, err := build(t, b, s, builder.BuildContext{})
			if !errors.Is(err, tt.want) || builder.IsInfrastructure(err) != tt.infra {
				t.Fatalf("err = %v, want %v (infrastructure: %v)\n%s", err, tt.want, tt.infra, tail(log, 10))
			}
			if grown := storeBytes(t, b) - before; grown > 1<<20 {
				t.Errorf("the store grew by %d KiB", grown>>10)
			}
		})
	}
}
