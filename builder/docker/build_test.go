package docker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestMain(m *testing.M) { dockertest.Main(m) }

func newRunner(t *testing.T) *docker.Runner {
	t.Helper()
	testenv.Short(t, "runs builds with a Docker engine on a Debian base")
	e := dockertest.Engine(t)
	imagetest.Debian(t)
	r, err := docker.NewRunner(e, imagetest.Store(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const testSpec = `
((build tool
  ((from kiln/debian:bookworm)
   (workdir /build)
   (run (shell "printf '#!/bin/sh\\necho tool-ok\\n' > tool && chmod +x tool"))))
 (from kiln/debian:bookworm)
 (comment "a test build")
 (user (uid 1000) (gid 1000))
 (workdir /home/u)
 (env GREETING "hello world")
 (copy (src a.txt lib) (dst ./) (exclude skip.me))
 (run (shell "cat a.txt lib/b.txt && test ! -e lib/skip.me && echo owner=$(stat -c %u:%g a.txt) && echo $GREETING"))
 (run (cache (kiln-test-cache (target /home/u/.cache)))
      (shell "echo run >> /home/u/.cache/count && wc -l < /home/u/.cache/count"))
 (run (secrets (token (target /run/secrets/token)))
      (shell "sha256sum < /run/secrets/token && test ! -w /run/secrets/token && echo secret-ok"))
 (run (shell "cat /sys/class/net/*/operstate 2>/dev/null | tr '\\n' ' '; ls /sys/class/net"))
 (user (uid 0) (gid 0))
 (copy (from (build tool)) (src /build/tool) (dst /usr/local/bin/tool))
 (run (shell "tool")))
`

func writeContext(t *testing.T, dir, a string) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte(a), 0o644)
	os.WriteFile(filepath.Join(dir, "lib", "b.txt"), []byte("file b\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "lib", "skip.me"), []byte("no\n"), 0o644)
}

func TestBuildCachedAndIncremental(t *testing.T) {
	r := newRunner(t)
	s, err := spec.ParseString(testSpec)
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := t.TempDir()
	writeContext(t, ctxDir, "file a\n")
	secrets := map[string][]byte{"token": []byte("s3cret")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var log1 bytes.Buffer
	res1, err := r.Build(ctx, s, docker.Options{Context: ctxDir, Secrets: secrets, Log: &log1})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log1.String())
	}
	out := log1.String()
	sum := sha256.Sum256([]byte("s3cret"))
	for _, want := range []string{"file a\nfile b\nowner=1000:1000\nhello world\n", hex.EncodeToString(sum[:]), "secret-ok", "tool-ok", "\n1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "eth0") {
		t.Errorf("a step without (network host) saw a network interface:\n%s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("secret value in the log")
	}

	var log2 bytes.Buffer
	res2, err := r.Build(ctx, s, docker.Options{Context: ctxDir, Secrets: secrets, Log: &log2})
	if err != nil {
		t.Fatalf("second build: %v", err)
	}
	if res2.ID != res1.ID {
		t.Errorf("second build id %s, want %s", res2.ID, res1.ID)
	}
	if n := strings.Count(log2.String(), "from cache"); n != 8 {
		t.Errorf("second build: %d cached steps, want 8:\n%s", n, log2.String())
	}
	if !strings.Contains(log2.String(), "tool-ok") {
		t.Error("cache hit did not replay the step's log")
	}

	// Changing a copied file reruns that copy and the steps after it only.
	writeContext(t, ctxDir, "file a, changed\n")
	var log3 bytes.Buffer
	res3, err := r.Build(ctx, s, docker.Options{Context: ctxDir, Secrets: secrets, Log: &log3})
	if err != nil {
		t.Fatalf("third build: %v", err)
	}
	if res3.ID == res1.ID {
		t.Error("changed context gave the same id")
	}
	if n := strings.Count(log3.String(), "from cache"); n != 1 {
		t.Errorf("after changing a file: %d cached steps, want 1 (the nested build's):\n%s", n, log3.String())
	}
	if !strings.Contains(log3.String(), "file a, changed") || !strings.Contains(log3.String(), "\n2\n") {
		t.Errorf("rebuilt steps did not see the change or the persistent cache:\n%s", log3.String())
	}
	// An excluded file changing changes nothing.
	os.WriteFile(filepath.Join(ctxDir, "lib", "skip.me"), []byte("other\n"), 0o644)
	res4, err := r.Build(ctx, s, docker.Options{Context: ctxDir, Secrets: secrets, Log: &bytes.Buffer{}})
	if err != nil || res4.ID != res3.ID {
		t.Errorf("excluded file changed the id: %v", err)
	}
}

func TestFailedStepNotCached(t *testing.T) {
	r := newRunner(t)
	s, err := spec.ParseString(`((from kiln/debian:bookworm) (run (shell "echo failing-step; exit 3")))`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		var log bytes.Buffer
		_, err := r.Build(context.Background(), s, docker.Options{Log: &log})
		var se *docker.StepError
		if !errors.As(err, &se) || se.ExitCode != 3 {
			t.Fatalf("build %d: err = %v", i, err)
		}
		if strings.Contains(log.String(), "from cache") || !strings.Contains(log.String(), "failing-step") {
			t.Errorf("build %d log:\n%s", i, log.String())
		}
	}
}

func TestCopyRefusesEscapes(t *testing.T) {
	r := newRunner(t)
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.Symlink("/etc", filepath.Join(dir, "link"))
	for _, src := range []string{"../etc/passwd", "sub/../../x", "link/passwd"} {
		s, err := spec.ParseString(`((from kiln/debian:bookworm) (copy (src "` + src + `") (dst /x)))`)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Build(context.Background(), s, docker.Options{Context: dir}); err == nil {
			t.Errorf("copy of %q succeeded", src)
		}
	}
}

func TestRenderedDockerfileBuilds(t *testing.T) {
	r := newRunner(t)
	ctxDir := t.TempDir()
	writeContext(t, ctxDir, "file a\n")
	s, err := spec.ParseString(`((from kiln/debian:bookworm) (workdir /src) (copy (src a.txt) (dst ./)) (run (shell "cat a.txt\necho second-line")))`)
	if err != nil {
		t.Fatal(err)
	}
	// The base must be an engine image first: a kiln build imports it.
	res, err := r.Build(context.Background(), s, docker.Options{Context: ctxDir})
	if err != nil {
		t.Fatal(err)
	}
	_ = res
	base, _ := imagetest.Store(t).Resolve(context.Background(), "kiln/debian:bookworm")
	df := strings.Replace(s.Dockerfile(spec.DockerfileOptions{}), "FROM kiln/debian:bookworm", "FROM kiln-base:"+strings.TrimPrefix(base.ID, "sha256:"), 1)
	var out bytes.Buffer
	if err := r.Engine.BuildDockerfile(context.Background(), df, ctxDir, "kiln-test-dockerfile:latest", &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "second-line") {
		t.Errorf("docker build output:\n%s", out.String())
	}
}

func TestLimits(t *testing.T) {
	r := newRunner(t)
	r.Memory = 64 << 20
	r.StepTimeout = 3 * time.Second
	s, err := spec.ParseString(`((from kiln/debian:bookworm) (run (shell "head -c 300m /dev/zero | tail > /dev/null")))`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Build(context.Background(), s, docker.Options{})
	var se *docker.StepError
	if !errors.As(err, &se) || !se.OOMKilled || !strings.Contains(err.Error(), "memory limit") {
		t.Errorf("memory hog: %v", err)
	}
	s, _ = spec.ParseString(`((from kiln/debian:bookworm) (run (shell "sleep 60")))`)
	_, err = r.Build(context.Background(), s, docker.Options{})
	if !errors.As(err, &se) || !se.TimedOut {
		t.Errorf("sleeper: %v", err)
	}
}

func TestMountTargetsCannotAddOptions(t *testing.T) {
	r := newRunner(t)
	s, err := spec.ParseString(`((from kiln/debian:bookworm)
 (run (cache (c1 (target "/x,src=/etc,type=bind"))) (shell "ls /x; ls / | grep -c x, || true; test ! -e /x/passwd && echo no-host-etc")))`)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if _, err := r.Build(context.Background(), s, docker.Options{Log: &log}); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "no-host-etc") {
		t.Errorf("log:\n%s", log.String())
	}
}

// TestSameIDsAsRuncBuilder builds one spec with the Docker backend and with the runc
// builder: every step must get the same id, so either backend's result is the other's.
func TestSameIDsAsRuncBuilder(t *testing.T) {
	r := newRunner(t)
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc")
	s, err := spec.ParseString(`
((build tool
  ((from kiln/debian:bookworm)
   (workdir /build)
   (run (shell "echo tool > tool"))))
 (from kiln/debian:bookworm)
 (user (uid 1000) (gid 1000))
 (workdir /home/u)
 (env A "1")
 (env A "2")
 (copy (src a.txt lib) (dst ./) (exclude skip.me))
 (copy (src .) (dst src/))
 (run (cache (ids-cache (target .cache))) (network host) (shell "ls"))
 (run (secrets (token (target /run/secrets/token))) (shell "true"))
 (user (uid 0) (gid 0))
 (copy (from (build tool)) (src /build/tool) (dst /usr/local/bin/tool)))`)
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := t.TempDir()
	writeContext(t, ctxDir, "ids\n")
	secrets := map[string][]byte{"token": []byte("x")}
	res, err := r.Build(context.Background(), s, docker.Options{Context: ctxDir, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(builder.Options{Root: t.TempDir(), Images: imagetest.Store(t)})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	id, err := b.Build(context.Background(), s, builder.BuildContext{Dir: ctxDir, Secrets: secrets}, &log)
	if err != nil {
		t.Fatalf("runc build: %v\n%s", err, log.String())
	}
	if id != res.ID {
		t.Errorf("runc builder id %s, docker backend id %s", id, res.ID)
	}
}

func TestCancelRemovesContainer(t *testing.T) {
	r := newRunner(t)
	s, err := spec.ParseString(`((from kiln/debian:bookworm) (run (shell "echo st''arted; sleep 120")))`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := &testenv.Buffer{}
	done := make(chan error, 1)
	go func() {
		_, err := r.Build(ctx, s, docker.Options{Log: log})
		done <- err
	}()
	for !strings.Contains(log.String(), "started") {
		select {
		case err := <-done:
			t.Fatalf("build ended early: %v\n%s", err, log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	out, err := exec.Command("docker", append(hostArgs(r.Engine), "ps", "-a", "-q")...).Output()
	if err != nil {
		t.Fatal(err)
	}
	if ids := strings.Fields(string(out)); len(ids) != 0 {
		t.Errorf("containers left after cancel: %v", ids)
	}
}

func hostArgs(e *docker.Engine) []string {
	if e.Host == "" {
		return nil
	}
	return []string{"--host", e.Host}
}
