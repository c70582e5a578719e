package builder_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// newBuilder returns a builder in a fresh root, and the reference of a Debian base.
func newBuilder(t testing.TB, opts builder.Options) (*builder.Builder, string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc")
	base := imagetest.Debian(t)
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	opts.Images = imagetest.Store(t)
	b, err := builder.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b, base.Ref
}

func parse(t testing.TB, text string) *spec.Spec {
	t.Helper()
	s, err := spec.Parse("test.spec", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func build(t testing.TB, b *builder.Builder, s *spec.Spec, bc builder.BuildContext) (string, string, error) {
	t.Helper()
	var log testenv.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id, err := b.Build(ctx, s, bc, &log)
	return id, log.String(), err
}

func mustBuild(t testing.TB, b *builder.Builder, s *spec.Spec, bc builder.BuildContext) (string, string) {
	t.Helper()
	id, log, err := build(t, b, s, bc)
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log)
	}
	return id, log
}

func TestBuildCachesSteps(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	ctx := t.TempDir()
	os.WriteFile(filepath.Join(ctx, "a.txt"), []byte("alpha\n"), 0o644)
	os.WriteFile(filepath.Join(ctx, "b.txt"), []byte("beta\n"), 0o644)
	s := parse(t, `((from `+base+`)
 (workdir /src)
 (run (shell "echo step-one $(date +%s%N) > one"))
 (copy (src a.txt) (dst a.txt))
 (run (shell "cat a.txt one; echo ran-two $(date +%s%N)"))
 (copy (src b.txt) (dst ./))
 (run (shell "cat b.txt; echo ran-three $(date +%s%N)")))`)
	id1, log1 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if !strings.Contains(log1, "FROM ") || !strings.Contains(log1, "alpha") {
		t.Fatalf("log lacks the Dockerfile or the output:\n%s", log1)
	}
	run1 := b.Stats()

	id2, log2 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if id1 != id2 {
		t.Errorf("second build id %s != first %s", id2, id1)
	}
	if got := b.Stats(); got.Run != run1.Run {
		t.Errorf("second build ran %d steps, want 0 (all cached)", got.Run-run1.Run)
	}
	if outputOf(log1, "ran-three") != outputOf(log2, "ran-three") {
		t.Errorf("cached log differs from the first:\n%s\n---\n%s", log1, log2)
	}

	// Changing b.txt re-runs only the copy of b.txt and the step after it.
	os.WriteFile(filepath.Join(ctx, "b.txt"), []byte("beta-2\n"), 0o644)
	before := b.Stats()
	id3, log3 := mustBuild(t, b, s, builder.BuildContext{Dir: ctx})
	if id3 == id1 {
		t.Error("changing a copied file did not change the final id")
	}
	if got := b.Stats().Run - before.Run; got != 2 {
		t.Errorf("after changing b.txt %d steps ran, want 2", got)
	}
	if outputOf(log3, "ran-two") != outputOf(log1, "ran-two") {
		t.Error("the step before the changed copy ran again")
	}
	if outputOf(log3, "ran-three") == outputOf(log1, "ran-three") || !strings.Contains(log3, "beta-2") {
		t.Errorf("the step after the changed copy did not run again:\n%s", log3)
	}
}

// outputOf returns the line of log starting with marker.
func outputOf(log, marker string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, marker) {
			return l
		}
	}
	return ""
}

func TestFailedStepsAreNotCached(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	s := parse(t, `((from `+base+`) (run (shell "echo trying; exit 7")))`)
	for i := 0; i < 2; i++ {
		before := b.Stats()
		_, log, err := build(t, b, s, builder.BuildContext{})
		var e *builder.Error
		if !errors.As(err, &e) || e.Fault != builder.BuildFault {
			t.Fatalf("err = %v, want a build fault", err)
		}
		if !strings.Contains(err.Error(), "exit status 7") || !strings.Contains(log, "trying") {
			t.Errorf("err %q, log %q", err, log)
		}
		if builder.IsInfrastructure(err) {
			t.Error("a failing command is reported as an infrastructure error")
		}
		if got := b.Stats().Run - before.Run; got != 1 {
			t.Errorf("build %d ran %d steps, want 1 (failures are not cached)", i, got)
		}
	}
}

func TestConcurrentIdenticalStepsRunOnce(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	s := parse(t, `((from `+base+`) (run (shell "sleep 2; echo once $(date +%s%N)")))`)
	mustBuild(t, b, parse(t, `((from `+base+`))`), builder.BuildContext{})
	before := b.Stats()
	var wg sync.WaitGroup
	logs := make([]string, 4)
	ids := make([]string, 4)
	for i := range logs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if ids[i], logs[i], err = build(t, b, s, builder.BuildContext{}); err != nil {
				t.Errorf("build %d: %v\n%s", i, err, logs[i])
			}
		}()
	}
	wg.Wait()
	if got := b.Stats().Run - before.Run; got != 1 {
		t.Errorf("4 identical concurrent builds ran the step %d times, want 1", got)
	}
	for i := range logs {
		if ids[i] != ids[0] || outputOf(logs[i], "once") != outputOf(logs[0], "once") || outputOf(logs[i], "once") == "" {
			t.Errorf("build %d: id %s log %q; build 0: id %s log %q", i, ids[i], logs[i], ids[0], logs[0])
		}
	}
}

func TestCancelOnlyWhenAllWaitersCancel(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	mustBuild(t, b, parse(t, `((from `+base+`))`), builder.BuildContext{})
	s := parse(t, `((from `+base+`) (run (shell "echo started; sleep 3; echo finished")))`)
	ctx1, cancel1 := context.WithCancel(context.Background())
	var log1, log2 testenv.Buffer
	errc1, errc2 := make(chan error, 1), make(chan error, 1)
	go func() { _, err := b.Build(ctx1, s, builder.BuildContext{}, &log1); errc1 <- err }()
	waitFor(t, &log1, "started")
	go func() { _, err := b.Build(context.Background(), s, builder.BuildContext{}, &log2); errc2 <- err }()
	waitFor(t, &log2, "started")
	cancel1()
	if err := <-errc1; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: err = %v", err)
	}
	if err := <-errc2; err != nil {
		t.Fatalf("the other waiter's build failed: %v\n%s", err, log2.String())
	}
	if !strings.Contains(log2.String(), "finished") {
		t.Errorf("step did not finish for the remaining waiter:\n%s", log2.String())
	}

	// With every waiter gone, the step is cancelled.
	s = parse(t, `((from `+base+`) (run (shell "echo started; sleep 5; echo finished")))`)
	ctx3, cancel3 := context.WithCancel(context.Background())
	var log3 testenv.Buffer
	errc3 := make(chan error, 1)
	go func() { _, err := b.Build(ctx3, s, builder.BuildContext{}, &log3); errc3 <- err }()
	waitFor(t, &log3, "started")
	cancel3()
	<-errc3
	before := b.Stats()
	if _, log, err := build(t, b, s, builder.BuildContext{}); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, log)
	}
	if b.Stats().Run == before.Run {
		t.Error("a step whose only waiter cancelled went on running")
	}
}

func TestCopyCannotEscapeContext(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	dir := t.TempDir()
	ctxDir := filepath.Join(dir, "context")
	os.Mkdir(ctxDir, 0o755)
	os.WriteFile(filepath.Join(dir, "outside.txt"), []byte("host-secret-content\n"), 0o644)
	os.Symlink("../outside.txt", filepath.Join(ctxDir, "link-out"))
	os.Symlink(dir, filepath.Join(ctxDir, "dir-out"))
	os.Mkdir(filepath.Join(ctxDir, "sub"), 0o755)
	os.Symlink("/etc/shadow", filepath.Join(ctxDir, "sub", "abs-link"))
	bc := builder.BuildContext{Dir: ctxDir}
	for _, src := range []string{"../outside.txt", "sub/../../outside.txt", "dir-out/outside.txt"} {
		_, log, err := build(t, b, parse(t, `((from `+base+`) (copy (src `+src+`) (dst /x)))`), bc)
		if err == nil {
			t.Errorf("copy %s: no error; log:\n%s", src, log)
			continue
		}
		if builder.IsInfrastructure(err) || !strings.Contains(err.Error(), "escapes") {
			t.Errorf("copy %s: err = %v, want a build error saying it escapes the context", src, err)
		}
	}
	// Links are copied as links, never followed out of the context.
	_, log := mustBuild(t, b, parse(t, `((from `+base+`)
	 (copy (src link-out sub) (dst /in/))
	 (run (shell "ls -l /in /in/sub; cat /in/link-out || true; cat /in/sub/abs-link | head -c 20 | wc -c")))`), bc)
	if strings.Count(log, "host-secret-content") > 0 {
		t.Errorf("content from outside the context was copied:\n%s", log)
	}
}

func TestNetworkOnlyWhenAsked(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	s := parse(t, `((from `+base+`) (run (shell "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")))`)
	_, log := mustBuild(t, b, s, builder.BuildContext{})
	if ifs := strings.Fields(afterStep(log, "(run")); len(ifs) != 1 || ifs[0] != "lo" {
		t.Errorf("without (network host): interfaces %q, want [lo]", ifs)
	}
	s = parse(t, `((from `+base+`) (run (network host) (shell "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")))`)
	_, log = mustBuild(t, b, s, builder.BuildContext{})
	if ifs := strings.Fields(afterStep(log, "(run")); len(ifs) < 2 {
		t.Errorf("with (network host): interfaces %q, want the host's", ifs)
	}
}

// afterStep returns the output of the first step whose line contains marker: the log
// lines after it, up to the line saying whether it ran or came from the cache.
func afterStep(log, marker string) string {
	i := strings.Index(log, "\n/: "+marker)
	if i < 0 {
		return ""
	}
	rest := log[i+1:]
	rest = rest[strings.Index(rest, "\n")+1:]
	if j := strings.Index(rest, "---> "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func TestHostFilesInvisible(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	marker := filepath.Join(t.TempDir(), "host-marker")
	os.WriteFile(marker, []byte("x"), 0o644)
	s := parse(t, `((from `+base+`) (run (shell "if test -e `+marker+`; then echo HOST-$((1+1)); fi; ls /")))`)
	_, log := mustBuild(t, b, s, builder.BuildContext{})
	if strings.Contains(log, "HOST-2") {
		t.Errorf("host file visible in the sandbox:\n%s", log)
	}
}

func TestMemoryLimit(t *testing.T) {
	if sandbox.CgroupVersion() == 0 {
		t.Skip("no cgroup memory controller")
	}
	b, base := newBuilder(t, builder.Options{Limits: sandbox.Limits{Memory: 64 << 20}})
	_, log, err := build(t, b, parse(t, `((from `+base+`) (run (shell "dd if=/dev/zero of=/dev/null bs=300M count=1")))`), builder.BuildContext{})
	if !errors.Is(err, builder.ErrMemoryLimit) || builder.IsInfrastructure(err) {
		t.Fatalf("err = %v, want memory limit exceeded (build fault)\n%s", err, log)
	}
	if !strings.Contains(log, "memory limit exceeded") {
		t.Errorf("log does not say memory limit exceeded:\n%s", log)
	}
}

func TestSecrets(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	value := "tok-" + time.Now().Format("150405.000000")
	sum := sha256.Sum256([]byte(value))
	text := `((from ` + base + `) (run (secrets (token (target /run/secrets/token))) (shell "sha256sum /run/secrets/token; echo $(cat /run/secrets/token | wc -c)")))`
	s := parse(t, text)
	id, log := mustBuild(t, b, s, builder.BuildContext{Secrets: map[string][]byte{"token": []byte(value)}})
	if !strings.Contains(log, hex.EncodeToString(sum[:])) {
		t.Fatalf("secret not readable in the step:\n%s", log)
	}
	if strings.Contains(log, value) || strings.Contains(id, value) {
		t.Errorf("secret value in the log or id")
	}
	// The id does not depend on the value, and the value is not in the store.
	id2, _ := mustBuild(t, b, parse(t, text), builder.BuildContext{Secrets: map[string][]byte{"token": []byte("other")}})
	if id2 != id {
		t.Errorf("step id depends on the secret's value")
	}
	err := filepath.Walk(b.Store().Root(), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() < 1<<20 {
			if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(value)) {
				t.Errorf("secret value stored in %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := build(t, b, parse(t, strings.Replace(text, "wc -c", "wc -l", 1)), builder.BuildContext{}); err == nil || !strings.Contains(err.Error(), `secret "token" was not provided`) {
		t.Errorf("missing secret: err = %v", err)
	}
}

func TestMultiStage(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	s := parse(t, `((build stage1 ((from `+base+`) (workdir /out) (run (shell "echo built-in-stage > artifact"))))
	 (from `+base+`)
	 (copy (from (build stage1)) (src /out/artifact) (dst /artifact))
	 (run (shell "cat /artifact")))`)
	_, log := mustBuild(t, b, s, builder.BuildContext{})
	if strings.Count(log, "built-in-stage") < 1 || !strings.Contains(afterStep(log, "(run (shell \"cat"), "built-in-stage") {
		t.Errorf("artifact not copied from the stage:\n%s", log)
	}
}

func TestCacheMounts(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	s1 := parse(t, `((from `+base+`) (run (cache (things (target /var/cache/things))) (shell "echo kept > /var/cache/things/f")))`)
	mustBuild(t, b, s1, builder.BuildContext{})
	s2 := parse(t, `((from `+base+`) (run (cache (things (target /var/cache/things))) (shell "cat /var/cache/things/f")))`)
	_, log := mustBuild(t, b, s2, builder.BuildContext{})
	if !strings.Contains(log, "kept") {
		t.Errorf("cache content not kept between builds:\n%s", log)
	}

	// A missing workdir is made, owned by the step's user.
	_, log = mustBuild(t, b, parse(t, `((from `+base+`) (user (uid 1000) (gid 1000)) (workdir /home/u/src)
	 (run (shell "touch here && stat -c owner=%u .")))`), builder.BuildContext{})
	if !strings.Contains(log, "owner=1000") {
		t.Errorf("workdir not made for the step's user:\n%s", log)
	}

	// A new cache belongs to the step's user.
	_, log = mustBuild(t, b, parse(t, `((from `+base+`) (user (uid 1000) (gid 1000))
	 (run (cache (mine (target /tmp/c))) (shell "touch /tmp/c/x && stat -c owner=%u /tmp/c")))`), builder.BuildContext{})
	if !strings.Contains(log, "owner=1000") {
		t.Errorf("cache not owned by the step's user:\n%s", log)
	}

	// Two steps using the cache at once: the one that ends first sets the new version,
	// the other's changes are dropped.
	slow := parse(t, `((from `+base+`) (run (cache (race (target /c))) (shell "echo started; sleep 3; echo slow >> /c/log")))`)
	fast := parse(t, `((from `+base+`) (run (cache (race (target /c))) (shell "echo fast >> /c/log")))`)
	var slowLog testenv.Buffer
	done := make(chan error, 1)
	go func() { _, err := b.Build(context.Background(), slow, builder.BuildContext{}, &slowLog); done <- err }()
	waitFor(t, &slowLog, "started")
	mustBuild(t, b, fast, builder.BuildContext{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, log = mustBuild(t, b, parse(t, `((from `+base+`) (run (cache (race (target /c))) (shell "echo reading; cat /c/log")))`), builder.BuildContext{})
	if out := afterStep(log, "(run"); !strings.Contains(out, "fast") || strings.Contains(out, "slow") {
		t.Errorf("cache after a race = %q, want only the first finisher's change", out)
	}
}

func TestGCAndHealth(t *testing.T) {
	b, base := newBuilder(t, builder.Options{})
	if err := b.Health(context.Background(), base); err != nil {
		t.Fatalf("health: %v", err)
	}
	a, _ := mustBuild(t, b, parse(t, `((from `+base+`) (run (shell "head -c 3000000 /dev/urandom > /a")))`), builder.BuildContext{})
	time.Sleep(10 * time.Millisecond)
	c, _ := mustBuild(t, b, parse(t, `((from `+base+`) (run (shell "head -c 3000000 /dev/urandom > /c")))`), builder.BuildContext{})
	metas, _ := b.Store().List()
	var total int64
	for _, m := range metas {
		total += m.Size
	}
	// A budget that fits everything but one small step removes the least recently used leaf.
	rep, err := b.GC(context.Background(), builder.GCOptions{Budget: total - 1, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0] != a {
		t.Errorf("removed %v, want only %s (least recently used)", rep.Removed, a)
	}
	if _, ok, _ := b.Store().Get(c); !ok {
		t.Error("the more recent step was removed")
	}
	// A budget of 1 byte removes everything but what a running build uses.
	s := parse(t, `((from `+base+`) (run (shell "echo started; sleep 3")))`)
	done := make(chan struct{})
	var log testenv.Buffer
	go func() {
		defer close(done)
		b.Build(context.Background(), s, builder.BuildContext{}, &log)
	}()
	waitFor(t, &log, "started")
	if _, err := b.GC(context.Background(), builder.GCOptions{Budget: 1, MinFree: 1}); err != nil {
		t.Fatal(err)
	}
	<-done
	if !strings.Contains(log.String(), "Build succeeded") {
		t.Errorf("build racing the collector failed:\n%s", log.String())
	}
	metas, _ = b.Store().List()
	if len(metas) != 2 {
		t.Errorf("after collecting with a build running, %d snapshots left, want 2 (its base and its step)", len(metas))
	}
	if err := b.Health(context.Background(), base); err != nil {
		t.Fatalf("health after gc: %v", err)
	}
}

// waitFor waits until the log holds text (giving up after two minutes, when the
// build has evidently failed or hung).
func waitFor(t *testing.T, log *testenv.Buffer, text string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(log.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", text, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
