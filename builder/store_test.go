package builder_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/snapshot"
	"golang.org/x/sys/unix"
)

func TestCopyDriver(t *testing.T) {
	b, base := newBuilder(t, builder.Options{Driver: snapshot.Copy})
	if b.Store().Driver() != snapshot.Copy {
		t.Fatalf("driver %s", b.Store().Driver())
	}
	s := parse(t, `((from `+base+`) (run (shell "echo one > /one; rm /etc/issue")) (run (shell "cat /one; test -e /etc/issue || echo issue-gone")))`)
	_, log := mustBuild(t, b, s, builder.BuildContext{})
	if !strings.Contains(log, "one\nissue-gone") {
		t.Errorf("log:\n%s", log)
	}
	before := b.Stats()
	mustBuild(t, b, s, builder.BuildContext{})
	if b.Stats().Run != before.Run {
		t.Error("copy driver: second build not cached")
	}
}

// TestDeepChainsFlatten builds more steps than the overlay depth limit: past it a step
// starts from a flattened full copy, and every earlier change (additions and
// deletions) is still seen.
func TestDeepChainsFlatten(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	b.Store().MaxDepth = 4
	var ops strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&ops, "(run (shell \"echo %d > /step-%d; rm -f /step-%d\"))\n", i, i, i-2)
	}
	s := parse(t, `((from `+base+`) `+ops.String()+` (run (shell "ls / | grep step- | tr '\n' ' '; echo; test -e /etc/debian_version && echo base-ok")))`)
	id, log := mustBuild(t, b, s, builder.BuildContext{})
	if !strings.Contains(log, "step-8 step-9 \nbase-ok") {
		t.Errorf("after 10 steps over a depth limit of 4, / holds:\n%s", log)
	}
	m, _, _ := b.Store().Get(id)
	if m.Depth > 4 {
		t.Errorf("final snapshot stacks %d layers, limit 4", m.Depth)
	}
	full := 0
	metas, _ := b.Store().List()
	for _, m := range metas {
		if m.Full && m.Parent != "" {
			full++
		}
	}
	if full == 0 {
		t.Error("no step was flattened")
	}
}

// TestFullDisk fills the store's file system during a step: the build fails at once
// with an infrastructure error, and the store stays usable.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	_, base := newBuilder(t, builder.Options{})
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=480m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	// No disk budget: the step fills the disk (TestStepIgnoringFullDisk has the budget).
	b, _ := newBuilder(t, builder.Options{Root: filepath.Join(dir, "root"), MinFree: 32 << 20, Limits: sandbox.Limits{Disk: -1}})
	ok := parse(t, `((from `+base+`) (run (shell "echo small > /small")))`)
	okID, _ := mustBuild(t, b, ok, builder.BuildContext{})

	s := parse(t, `((from `+base+`) (run (shell "echo filling; dd if=/dev/zero of=/big bs=1M count=2000 status=none")))`)
	_, log, err := build(t, b, s, builder.BuildContext{})
	if !errors.Is(err, builder.ErrDiskFull) || !builder.IsInfrastructure(err) {
		t.Fatalf("err = %v, want an infrastructure error (disk full)\n%s", err, log)
	}
	// The failed step left nothing behind; earlier snapshots are intact and usable.
	if _, ok, _ := b.Store().Get(okID); !ok {
		t.Error("an earlier snapshot disappeared")
	}
	var st unix.Statfs_t
	unix.Statfs(dir, &st)
	if free := int64(st.Bavail) * int64(st.Bsize); free < 200<<20 {
		t.Errorf("only %d bytes free after the failed step: its work was not removed", free)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "root", "store", "tmp"))
	if len(entries) != 0 {
		t.Errorf("work left in store/tmp: %v", entries)
	}
	_, log = mustBuild(t, b, parse(t, `((from `+base+`) (run (shell "echo small > /small")) (run (shell "cat /small")))`), builder.BuildContext{})
	if !strings.Contains(log, "small") {
		t.Errorf("build after the full disk:\n%s", log)
	}
}
