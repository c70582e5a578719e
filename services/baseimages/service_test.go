package baseimages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/registry/registrytest"
	"github.com/kiln-ci/kiln/services/internal/browsertest"
)

// fakeRunner "builds" a spec by writing a small root filesystem that depends on the
// spec's text, and counts the builds.
type fakeRunner struct {
	dir    string
	builds atomic.Int64
	mu     sync.Mutex
}

func (f *fakeRunner) Build(ctx context.Context, log io.Writer, pool string, s *spec.Spec, contextDir string) (string, error) {
	f.builds.Add(1)
	text := s.String()
	sum := sha256.Sum256([]byte(text))
	id := hex.EncodeToString(sum[:8])
	f.mu.Lock()
	defer f.mu.Unlock()
	root := filepath.Join(f.dir, id)
	if _, err := os.Stat(root); err == nil {
		return id, nil
	}
	files := map[string]string{
		"etc/os-release":         "ID=debian\n",
		"var/lib/dpkg/status":    "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2\n\nPackage: opam\nStatus: install ok installed\nVersion: 2.1.2-1\n",
		"home/opam/spec":         s.From + "\n",
		"home/opam/.opam/config": "opam-version: \"2.0\"\n",
	}
	if strings.Contains(text, "ocaml-nox") {
		files["usr/bin/ocaml"] = "#!/bin/sh\necho 'The OCaml toplevel'\n"
		files["var/lib/dpkg/status"] += "\nPackage: ocaml-nox\nStatus: install ok installed\nVersion: 4.13.1-4\n"
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			return "", err
		}
	}
	fmt.Fprintf(log, "built %s\n", id)
	return id, nil
}

func (f *fakeRunner) Mount(id string) (string, func(), error) {
	return filepath.Join(f.dir, id), func() {}, nil
}

// fakeRootfs registers a tiny root filesystem under o's name instead of running
// mmdebstrap.
func fakeRootfs(st *image.Store, ctx context.Context, o image.DebianOptions) (image.Base, error) {
	name, err := o.LocalName()
	if err != nil {
		return image.Base{}, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := []byte(o.Recipe())
	tw.WriteHeader(&tar.Header{Name: "etc/recipe", Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)})
	tw.Write(data)
	tw.Close()
	return st.Import(ctx, name, &buf, image.Config{})
}

type serviceHarness struct {
	t      testing.TB
	svc    *Service
	runner *fakeRunner
	engine *current.Engine
	git    string
	reg    *prometheus.Registry
	stop   func()
}

// startService runs the service on an engine with the fake runner and root
// filesystems, publishing to the shared test registry.
func startService(t testing.TB, yaml, work, gitDir string, runner *fakeRunner, release func(context.Context, string, string) (string, error)) *serviceHarness {
	t.Helper()
	reg := registrytest.Shared(t)
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	pub := publisher(t, reg, credentials(t, reg), "svc/ocaml/opam")
	promReg := prometheus.NewRegistry()
	svc, err := NewService(&Service{Config: cfg, OpamGit: gitDir, Images: filepath.Join(work, "images"), Runner: runner,
		Publisher: pub, WorkDir: work, Release: release, EnsureRootfs: fakeRootfs}, promReg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := current.Open(current.Config{StateDir: filepath.Join(work, "engine"), Pools: fleetjob.EnginePools()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx, svc.Pipeline()) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; e.Close() }) }
	t.Cleanup(stop)
	return &serviceHarness{t: t, svc: svc, runner: runner, engine: e, git: gitDir, reg: promReg, stop: stop}
}

// publishTimeout bounds a wait for a publication: generous, as the builds and the
// pushes to a registry checking bcrypt passwords share the CPU with other tests.
const publishTimeout = 5 * time.Minute

// waitPublished waits until the index records a publication after since.
func (h *serviceHarness) waitPublished(since time.Time, what string) *Index {
	h.t.Helper()
	start := time.Now()
	deadline := start.Add(publishTimeout)
	for time.Now().Before(deadline) {
		ix, err := h.svc.Index.Load()
		if err != nil {
			h.t.Fatal(err)
		}
		for _, j := range h.engine.Jobs() {
			if j.State == current.JobFailed {
				h.t.Fatalf("%s: job %s failed: %s", what, j.ID, j.Message)
			}
		}
		if ix.Updated.After(since) {
			h.t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
			return ix
		}
		time.Sleep(100 * time.Millisecond)
	}
	var nodes []string
	for _, n := range h.engine.Graph().Nodes {
		nodes = append(nodes, fmt.Sprintf("%s=%s(%s)", n.Label, n.State, n.Message))
	}
	h.t.Fatalf("%s: nothing published after %s; jobs %+v\nnodes %v", what, publishTimeout, h.engine.Jobs(), nodes)
	return nil
}

func gitCommit(t testing.TB, dir, file, content string) string {
	t.Helper()
	os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644)
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", "change " + file}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	out, _ := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	return strings.TrimSpace(string(out))
}

// TestServicePipeline runs the service on the engine: everything is built and
// published once; a refresh with the same inputs runs nothing; a new opam
// repository commit rebuilds and republishes everything, saying why; retiring
// Debian 13 deprecates its tags; the index page shows it all in Chromium.
func TestServicePipeline(t *testing.T) {
	testenv.RequireCommand(t, "git", "docker-registry", "htpasswd")
	work := t.TempDir()
	repo := filepath.Join(t.TempDir(), "opam-repository")
	os.MkdirAll(repo, 0o755)
	exec.Command("git", "init", "-q", "-b", "master", repo).Run()
	first := gitCommit(t, repo, "repo", "opam-version: \"2.0\"\n")
	runner := &fakeRunner{dir: t.TempDir()}
	var releaseReads atomic.Int64
	release := func(ctx context.Context, mirror, suite string) (string, error) {
		releaseReads.Add(1)
		return "20260630", nil
	}
	yaml := "arches: [amd64, arm64]\nrefresh: 1h"
	h := startService(t, yaml, work, filepath.Join(repo, ".git"), runner, release)

	t0 := time.Now()
	ix := h.waitPublished(t0.Add(-time.Hour), "first publication")
	if n := runner.builds.Load(); n != 8 {
		t.Errorf("%d builds, want 8", n)
	}
	if len(ix.Tags) != 9 {
		t.Errorf("index of %d tags, want 9", len(ix.Tags))
	}
	m := testenv.Metrics(t, h.reg)
	for _, k := range []string{
		"kiln_baseimages_builds_total{arch=arm64,image=debian-13-ocaml-5.3,outcome=ok}",
		"kiln_baseimages_published_total{kind=image}",
		"kiln_baseimages_tags{state=current}",
	} {
		if m[k] == 0 {
			t.Errorf("metric %s = 0 (metrics: %v)", k, m)
		}
	}

	t.Run("refresh with the same inputs runs nothing", func(t *testing.T) {
		reads := releaseReads.Load()
		start := time.Now()
		h.svc.Refresh()
		for releaseReads.Load() < reads+2 && time.Since(start) < time.Minute {
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("inputs read again in %s", time.Since(start).Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond) // what a change would start has started by now
		if n := runner.builds.Load(); n != 8 {
			t.Errorf("%d builds after an unchanged refresh, want 8", n)
		}
	})

	t.Run("rebuild of one image from its job", func(t *testing.T) {
		jobs, err := h.engine.Query(current.Query{Op: "baseimages-build", KeyContains: "debian-12-opam-arm64", LatestOnly: true})
		if err != nil || len(jobs) != 1 {
			t.Fatalf("jobs of debian-12-opam-arm64: %v, %v", jobs, err)
		}
		before := runner.builds.Load()
		res, err := h.engine.Rebuild(jobs[0].ID)
		if err != nil || res.JobID == "" {
			t.Fatalf("rebuild: %+v, %v", res, err)
		}
		deadline := time.Now().Add(publishTimeout)
		for runner.builds.Load() == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // what else it would start has started by now
		if n := runner.builds.Load() - before; n != 1 {
			t.Errorf("%d builds after rebuilding one image, want 1", n)
		}
	})

	t.Run("a new opam repository commit republishes everything, saying why", func(t *testing.T) {
		second := gitCommit(t, repo, "README", "new\n")
		t1 := time.Now()
		h.svc.Refresh()
		ix := h.waitPublished(t1, "after a new commit")
		e := ix.Tags["debian-12-opam"]
		if e == nil || len(e.Why) == 0 || !strings.Contains(e.Why[0], "opam repository "+first[:12]+" -> "+second[:12]) {
			t.Errorf("why debian-12-opam moved: %+v", e)
		}
		// Steps cached by their spec: the fake runner counts calls, which the engine
		// made again for the new commit.
		if n := runner.builds.Load(); n != 17 {
			t.Errorf("%d builds, want 17 (8, 1 rebuilt, 8)", n)
		}
	})

	t.Run("index page", func(t *testing.T) {
		// Retire Debian 13 in a second run of the service on the same state.
		h.stop()
		h2 := startService(t, yaml+"\ndistros: [{name: debian-12}, {name: debian-13, retired: true}]", work, h.git, runner, release)
		t2 := time.Now()
		ix := h2.waitPublished(t2.Add(-time.Hour), "after retiring debian-13")
		for time.Since(t2) < publishTimeout && (ix.Tags["debian-13"] == nil || ix.Tags["debian-13"].Deprecated == "") {
			time.Sleep(100 * time.Millisecond)
			ix, _ = h2.svc.Index.Load()
		}
		routes := h2.svc.Index.Handlers()
		mux := httpMux(routes)
		srv := browsertest.Serve(t, h2.engine, []string{"/base-images", "/base-images/"}, mux)
		ctx := browsertest.Chromium(t, time.Minute)
		browsertest.Step(t, ctx, "open the index", chromedp.Navigate(srv.URL+"/base-images"), chromedp.WaitVisible("#tags"))
		if got := browsertest.Text(t, ctx, "#repository"); !strings.HasSuffix(got, "svc/ocaml/opam") {
			t.Errorf("repository %q", got)
		}
		for _, c := range []struct{ sel, want string }{
			{`#tag-debian-12-ocaml-4\.13 td.tag`, "debian-12-ocaml-4.13"},
			{`#tag-debian-12-ocaml-4\.13 .arch[data-arch="arm64"]`, "arm64: " + short(trimAlgo(ix.Tags["debian-12-ocaml-4.13"].Arches["arm64"].Digest))},
			{`#tag-debian-13-ocaml-5\.3`, "deprecated debian-13 is retired"},
			{`#tag-latest`, "debian-12-ocaml-4.13 (alias)"},
		} {
			if got := strings.Join(strings.Fields(browsertest.Text(t, ctx, c.sel)), " "); !strings.Contains(got, c.want) {
				t.Errorf("%s: %q, want %q in it", c.sel, got, c.want)
			}
		}
	})
}

func httpMux(routes map[string]http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.Handle(p, h)
	}
	return mux
}

// BenchmarkRefreshUnchanged measures a refresh of the inputs (the opam repository's
// head and the Debian releases) that finds them unchanged, on a service that has
// built and published the default matrix: the inputs are read again and no job
// runs.
func BenchmarkRefreshUnchanged(b *testing.B) {
	testenv.RequireCommand(b, "git", "docker-registry", "htpasswd")
	work := b.TempDir()
	repo := filepath.Join(b.TempDir(), "opam-repository")
	os.MkdirAll(repo, 0o755)
	exec.Command("git", "init", "-q", "-b", "master", repo).Run()
	gitCommit(b, repo, "repo", "opam-version: \"2.0\"\n")
	runner := &fakeRunner{dir: b.TempDir()}
	var reads atomic.Int64
	release := func(ctx context.Context, mirror, suite string) (string, error) { reads.Add(1); return "20260630", nil }
	h := startService(b, "arches: [amd64, arm64]", work, filepath.Join(repo, ".git"), runner, release)
	h.waitPublished(time.Now().Add(-time.Hour), "first publication")
	builds := runner.builds.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := reads.Load() + 2
		h.svc.Refresh()
		for reads.Load() < want {
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	if n := runner.builds.Load(); n != builds {
		b.Errorf("%d builds during unchanged refreshes", n-builds)
	}
}
