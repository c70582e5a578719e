package ocamlci

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// sampleProject is the sample project with another greeting (a wrong one fails its
// test), and optionally a test that takes a minute.
func sampleProject(greeting string, slowTest bool) map[string]string {
	files := SampleFiles()
	files["src/hello.ml"] = fmt.Sprintf("let greet name = %q ^ \", \" ^ name\n", greeting)
	if slowTest {
		files["test/dune"] = "(test (name test_hello) (libraries hello unix))\n"
		files["test/test_hello.ml"] = "let () = Unix.sleep 60\n" + files["test/test_hello.ml"]
	}
	return files
}

func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=dev", "GIT_AUTHOR_EMAIL=dev@example.org",
		"GIT_COMMITTER_NAME=dev", "GIT_COMMITTER_EMAIL=dev@example.org")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func commitTree(t *testing.T, repo, branch string, files map[string]string, msg string) string {
	t.Helper()
	gitRun(t, repo, "checkout", "-q", "-B", branch)
	for rel, content := range files {
		p := filepath.Join(repo, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitRun(t, repo, "add", "-A")
	gitRun(t, repo, "commit", "-q", "-m", msg)
	return gitRun(t, repo, "rev-parse", "HEAD")
}

type ciHarness struct {
	t      *testing.T
	svc    *Service
	src    *forges.Git
	engine *current.Engine
	fleet  *cluster.Fleet
	state  string
	repo   forge.RepoID
}

// startCI runs the service with a real engine, an embedded fleet and a worker per pool
// building with runc. configure sets the sources (default: repoDir polled as git).
func startCI(t *testing.T, repoDir string, platforms []matrix.Platform, configure func(*Service)) *ciHarness {
	return startCIWith(t, repoDir, platforms, harnessOptions{configure: configure, workers: true})
}

// harnessOptions vary the harness of startCIWith.
type harnessOptions struct {
	configure func(*Service)
	workers   bool           // run a worker per pool in the test process
	policy    cluster.Policy // the fleet's policy (zero: the default)
	retries   int            // the engine's retries of infrastructure failures (0: its default; -1: none)
	noImages  bool           // leave the platforms' images unmade (for tests in which nothing builds)
}

func startCIWith(t *testing.T, repoDir string, platforms []matrix.Platform, o harnessOptions) *ciHarness {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "mmdebstrap")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	state := t.TempDir()

	for i := range platforms {
		if !o.noImages {
			platforms[i].Image = imagetest.DebianWith(t, *platforms[i].Debian).Ref
		}
	}
	runner, err := buildrun.New(buildrun.Options{Root: filepath.Join(state, "builder"), Images: imagetest.Store(t).Root()})
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(state, "fleet"), Listen: "127.0.0.1:0", Policy: o.policy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	seenPool := map[string]bool{}
	for _, p := range platforms {
		if seenPool[p.Pool] || !o.workers {
			continue
		}
		seenPool[p.Pool] = true
		nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: fleet.URL, Name: "worker-" + p.Pool})
		if err != nil {
			t.Fatal(err)
		}
		w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "w-" + p.Pool, Pool: p.Pool, Capacity: 2,
			StateDir: filepath.Join(state, "worker-"+p.Pool), Runner: runner, HealthEvery: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; nc.Close() })
	}

	return runCI(t, ctx, fleet, repoDir, state, o.retries, func(svc *Service) {
		svc.Platforms, svc.Images = platforms, imagetest.Store(t).Root()
		if o.configure != nil {
			o.configure(svc)
		}
	})
}

// runCI runs the service, with a real engine, on fleet, following repoDir (polled as
// git), with its state in state, until the test ends; configure sets what varies.
func runCI(t *testing.T, ctx context.Context, fleet *cluster.Fleet, repoDir, state string, retries int, configure func(*Service)) *ciHarness {
	t.Helper()
	idx, err := results.OpenIndex(filepath.Join(state, "ocamlci.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	src := &forges.Git{Repos: []forges.GitRepo{{Owner: "local", Name: "hello", Remote: repoDir}}, Every: 300 * time.Millisecond}
	svc := &Service{
		Forges:  forgeSet("git", src),
		Fleet:   fleet.Client,
		Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{}),
		WorkDir: filepath.Join(state, "work"),
		Index:   idx,
		BaseURL: "http://ci.test",
	}
	configure(svc)
	e, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), DefaultPoolSlots: 8, MaxRetries: retries})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); e.Run(runCtx, svc.Pipeline()) }()
	t.Cleanup(func() { stop(); <-runDone; e.Close() })
	return &ciHarness{t: t, svc: svc, src: src, engine: e, fleet: fleet, state: state, repo: forge.RepoID{Forge: "git", Owner: "local", Name: "hello"}}
}

// waitCommit waits until the commit's status is final (not queued or running).
func (h *ciHarness) waitCommit(commit string, timeout time.Duration) *results.CommitRecord {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := h.svc.Index.Commit(context.Background(), h.repo, commit)
		if err != nil {
			h.t.Fatal(err)
		}
		if c != nil && c.State != forge.Queued && c.State != forge.Running {
			return c
		}
		time.Sleep(200 * time.Millisecond)
	}
	c, _ := h.svc.Index.Commit(context.Background(), h.repo, commit)
	vs, _ := h.svc.Index.Variants(context.Background(), h.repo, commit)
	h.t.Fatalf("commit %s not finished after %s: %+v\nvariants: %+v\njobs: %+v", short(commit), timeout, c, vs, h.engine.Jobs())
	return nil
}

func TestEndToEndLocalRepository(t *testing.T) {
	testenv.Short(t, "builds a dune project in sandboxes on two platforms")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	good := commitTree(t, repoDir, "main", sampleProject("Hello", false), "hello")

	h := startCI(t, repoDir, matrix.Default(), nil)
	c := h.waitCommit(good, 15*time.Minute)
	if c.State != forge.Passed {
		t.Fatalf("good commit: %s (%s)\n%s", c.State, c.Title, c.Summary)
	}
	vs, _ := h.svc.Index.Variants(context.Background(), h.repo, good)
	names := map[string]forge.State{}
	for _, v := range vs {
		names[v.Name] = v.State
	}
	for _, want := range []string{"debian-12-4.13_amd64", "debian-12-4.13_arm64", "(lint-doc)", "(lint-opam)"} {
		if names[want] != forge.Passed {
			t.Errorf("variant %s: %q, want passed (all: %v)", want, names[want], names)
		}
	}
	// The build log starts with a Dockerfile to reproduce it and shows the test running.
	amd, _ := h.svc.Index.Variant(context.Background(), h.repo, good, "debian-12-4.13_amd64")
	logText := readJobLog(t, h.engine, amd.JobID)
	if !strings.Contains(logText, "FROM ") || !strings.Contains(logText, "test passed") {
		t.Errorf("amd64 log lacks the Dockerfile or the test output:\n%s", logText)
	}
	// The opam files are copied on their own before the tree: the dependency layer.
	if i, j := strings.Index(logText, "(copy (src hello.opam)"), strings.Index(logText, "(copy (src .)"); i < 0 || j < i {
		t.Errorf("amd64 log lacks the dependency layer before the tree:\n%s", logText)
	}

	browseAndRebuild(t, h, good, "debian-12-4.13_amd64")
	if c := h.waitCommit(good, 10*time.Minute); c.State != forge.Passed {
		t.Fatalf("rebuilt good commit: %s (%s)", c.State, c.Title)
	}

	// A pull request breaks the test: the status fails, with the error line in its text.
	bad := commitTree(t, repoDir, "fix-greeting", sampleProject("Hi", false), "say hi")
	h.src.Refresh()
	c = h.waitCommit(bad, 10*time.Minute)
	if c.State != forge.Failed {
		t.Fatalf("bad commit: %s (%s)", c.State, c.Title)
	}
	if !strings.Contains(c.Summary, `Error: expected "Hello, world" but got "Hi, world"`) {
		t.Errorf("status text lacks the failing line:\n%s", c.Summary)
	}

	// A slow commit is replaced by a fix before it finishes: its jobs are cancelled,
	// and the fix turns the branch green.
	slow := commitTree(t, repoDir, "fix-greeting", sampleProject("Hi", true), "slow")
	h.src.Refresh()
	waitVariantRunning(t, h, slow, "debian-12-4.13_amd64")
	fixed := commitTree(t, repoDir, "fix-greeting", sampleProject("Hello", false), "fix")
	h.src.Refresh()
	c = h.waitCommit(fixed, 10*time.Minute)
	if c.State != forge.Passed {
		t.Fatalf("fixed commit: %s (%s)\n%s", c.State, c.Title, c.Summary)
	}
	old, _ := h.svc.Index.Variant(context.Background(), h.repo, slow, "debian-12-4.13_amd64")
	if old == nil || old.Finished.IsZero() || old.State == forge.Passed {
		t.Fatalf("replaced commit's job was not cancelled: %+v", old)
	}
	detail, err := h.engine.Job(old.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if detail.FailureKind != current.FailCancelled {
		t.Errorf("replaced commit's job: %s (%s), want cancelled", detail.FailureKind, detail.Message)
	}
}

func waitVariantRunning(t *testing.T, h *ciHarness, commit, variant string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		v, _ := h.svc.Index.Variant(context.Background(), h.repo, commit, variant)
		if v != nil && v.JobID != "" && v.State == forge.Running {
			if l := readJobLog(t, h.engine, v.JobID); strings.Contains(l, "dune build") {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("variant %s of %s never ran", variant, short(commit))
}

func readJobLog(t *testing.T, e *current.Engine, id string) string {
	t.Helper()
	var b strings.Builder
	var off int64
	for {
		chunk, err := e.ReadLog(id, off, 1<<20)
		if err != nil {
			t.Fatalf("log of %s: %v", id, err)
		}
		b.Write(chunk.Data)
		if len(chunk.Data) == 0 || chunk.Next == off {
			return b.String()
		}
		off = chunk.Next
	}
}

// forgeSet is a set of one forge.
func forgeSet(name string, src forges.Source) *forges.Set {
	s := &forges.Set{}
	s.Add(name, src)
	return s
}
