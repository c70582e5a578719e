package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// TestFleetBuilderJobs runs builder specs on worker processes with the sandboxed builder:
// one on the host's pool and one on a linux-arm64 worker, whose build runs under
// qemu-user emulation.
func TestFleetBuilderJobs(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc")
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/qemu-aarch64"); err != nil {
		if testenv.InCI() {
			t.Fatalf("qemu-aarch64 binfmt handler not registered: %v", err)
		}
		t.Skip("qemu-aarch64 binfmt handler not registered (qemu-user-static, binfmt-support)")
	}
	kilnBinary(t)
	amd := imagetest.Debian(t)
	arm := imagetest.DebianWith(t, image.DebianOptions{Suite: "bookworm", Arch: "arm64"})
	images := testenv.CacheDir(t, "images")
	tf := newTestFleet(t, Options{Policy: Policy{LeaseTTL: 20 * time.Second, DefaultCost: time.Second}})
	tf.worker("x86", "linux-x86_64", 1, "--runner", "builder", "--images", images, "--health-base", amd.Ref)
	tf.worker("arm", "linux-arm64", 1, "--runner", "builder", "--images", images)
	tf.waitWorkers(2)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from the source tree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	digest, err := tf.f.Client.PutSource(tf.ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ pool, base, machine, arch string }{
		{"linux-x86_64", amd.Ref, "x86_64", "amd64"},
		{"linux-arm64", arm.Ref, "aarch64", "arm64"},
	} {
		spec := `((from ` + c.base + `)
 (workdir /src)
 (copy (src hello.txt) (dst /src/hello.txt))
 (run (shell "cat /src/hello.txt && uname -m && dpkg --print-architecture")))`
		j := tf.submit(Request{Pool: c.pool, Spec: spec, Source: digest, CacheHint: "hello-" + c.arch})
		done := tf.wait(j.ID)
		log := tf.log(j.ID)
		if done.Result.Outcome != OutcomeOK || done.Result.Snapshot == "" {
			t.Fatalf("%s: %+v\n%s", c.pool, done.Result, log)
		}
		if !strings.Contains(log, "hello from the source tree\n"+c.machine+"\n"+c.arch+"\n") {
			t.Fatalf("%s: log does not show the build ran on %s:\n%s", c.pool, c.machine, log)
		}
		t.Logf("%s: built snapshot %s on %s in %s", c.pool, done.Result.Snapshot, done.Result.Worker, time.Duration(done.Result.Duration))
	}
	bad := tf.submit(Request{Pool: "linux-x86_64", Spec: "((from " + amd.Ref + ") (run (shell \"exit 7\")))"})
	if r := tf.wait(bad.ID).Result; r.Outcome != OutcomeFailed {
		t.Fatalf("failing build: %+v", r)
	}
	syntax := tf.submit(Request{Pool: "linux-x86_64", Spec: "((from"})
	if r := tf.wait(syntax.ID).Result; r.Outcome != OutcomeFailed || !strings.Contains(r.Message, "job ") {
		t.Fatalf("spec that does not parse: %+v", r)
	}
}
