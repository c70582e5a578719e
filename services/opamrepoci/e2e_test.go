package opamrepoci

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamsourcestest"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// realSet are the real packages of the e2e repository: the system compiler's and
// ocamlfind, built from its real source archive.
var realSet = []string{"ocaml.4.13.1", "ocaml-system.4.13.1", "ocaml-config.2", "base-unix.base", "base-threads.base",
	"base-bigarray.base", "ocamlfind.1.9.6"}

// testOpam is an opam file of a package the test writes.
func testOpam(name, body string) string {
	return `opam-version: "2.0"
synopsis: "A package of the end-to-end test"
description: "Written by the test."
maintainer: "test@example.org"
authors: "test"
license: "MIT"
homepage: "https://example.org/` + name + `"
bug-reports: "https://example.org/` + name + `/issues"
dev-repo: "git+https://example.org/` + name + `.git"
` + body
}

// e2eConfig is the matrix of the test: Debian 12 on amd64 only (its image made from
// the Debian mirror, its switch on the system compiler), without lower bounds.
func e2eConfig(t *testing.T) *Config {
	p := matrix.Debian("amd64")
	var vars []string
	for k, v := range p.Vars {
		vars = append(vars, fmt.Sprintf("%q: %q", k, v))
	}
	cfg, err := Parse("e2e", []byte(fmt.Sprintf(`platforms:
  - {name: amd64, distro: %s, ocaml: %q, arch: amd64, pool: %s, debian: {suite: %s, packages: [%s]}, vars: {%s}, compiler: [%s]}
compilers:
  - {platform: amd64, lower-bounds: false}
`, p.Distro, p.OCaml, p.Pool, p.Debian.Suite, strings.Join(p.Debian.Packages, ", "), strings.Join(vars, ", "), strings.Join(p.Compiler, ", "))))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestEndToEndGitea: a pull request on a real Gitea adds a release of a library whose
// tests fail and that breaks one reverse dependency that already failed on master
// and one that did not; real builds in sandboxes; the statuses, the comment and the
// UI say which failures are the pull request's.
func TestEndToEndGitea(t *testing.T) {
	testenv.Short(t, "runs a Gitea server and real opam builds in sandboxes")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "mmdebstrap", "tar")
	src := opamsourcestest.Serve(t)
	plat := matrix.Debian("amd64")
	imagetest.DebianWith(t, *plat.Debian) // made once for every test; the service finds it in the store
	srv := giteatest.Start(t)
	srv.CreateRepo(t, "opam-repository", false)

	files := src.Repository(t, realSet)
	lib := func(v, test string) string {
		return testOpam("mylib", `depends: ["ocaml"]
build: [["sh" "-c" "cat mylib.txt"]]
install: [["sh" "-c" "mkdir -p %{lib}%/mylib && cp mylib.txt %{lib}%/mylib/version"]]
run-test: [["sh" "-c" "`+test+`"]]
`+src.AddArchive(t, "mylib-"+v+".tar.gz", map[string]string{"mylib.txt": v + "\n"}))
	}
	files["packages/mylib/mylib.1/opam"] = lib("1", "test -s mylib.txt")
	files["packages/goodrev/goodrev.1/opam"] = testOpam("goodrev", `depends: ["mylib"]
build: [["sh" "-c" "v=$(cat %{lib}%/mylib/version); [ $v = 1 ] || { echo Error: goodrev needs mylib 1, not $v >&2; exit 1; }"]]
`)
	files["packages/oldrev/oldrev.1/opam"] = testOpam("oldrev", `depends: ["mylib"]
build: [["sh" "-c" "echo Error: oldrev has never built >&2; exit 1"]]
`)
	files["packages/passrev/passrev.1/opam"] = testOpam("passrev", `depends: ["mylib" "ocamlfind"]
build: [["ocamlfind" "list"]]
`)
	work := newGitRepo(t)
	work.commit(files)
	work.run("checkout", "-q", "-b", "release")
	head := work.commit(map[string]string{"packages/mylib/mylib.2/opam": lib("2", "echo FAIL: test_api expected 2, got 3 >&2; exit 1")})
	// The repository's default branch is main (giteatest's), the base here.
	work.run("push", "-q", srv.PushURL(srv.Admin, "opam-repository"), "master:main", "release")
	admin, err := sdk.NewClient(strings.TrimSuffix(srv.URL, "/"), sdk.SetToken(srv.Token))
	if err != nil {
		t.Fatal(err)
	}
	// Gitea records pushed branches in the background: until then it knows no head.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		_, _, err := admin.CreatePullRequest(srv.Admin, "opam-repository", sdk.CreatePullRequestOption{Head: "release", Base: "main", Title: "mylib 2"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create the pull request: %v", err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	client, err := gitea.NewClient(ctx, srv.URL, srv.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &forges.Gitea{Client: client, BaseURL: "http://ci.test", Poll: 2 * time.Second}
	set := &forges.Set{}
	set.Add("gitea", g)
	h := startFleet(t, ctx, plat.Pool)
	idx, err := results.OpenIndex(filepath.Join(h.state, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	svc := &Service{Forges: set, Mirrors: git.NewMirrors(filepath.Join(h.state, "mirrors"), git.MirrorsOptions{}), Config: e2eConfig(t), Images: imagetest.Store(t).Root(),
		Fleet: h.fleet.Client, Index: idx, WorkDir: filepath.Join(h.state, "work"), BaseURL: "http://ci.test", Prefix: Prefix, BaseBranch: "main"}
	h.run(t, ctx, svc.Pipeline())

	repo := gitea.Repo{Owner: srv.Admin, Name: "opam-repository"}
	id := forge.RepoID{Forge: "gitea", Owner: srv.Admin, Name: "opam-repository"}
	start := time.Now()
	comment := waitComment(t, client, repo, 1, 20*time.Minute, func() string {
		vs, _ := idx.Variants(context.Background(), id, head)
		return fmt.Sprintf("variants: %+v\njobs: %+v", vs, h.engine.Jobs())
	})
	t.Logf("pull request tested in %s", time.Since(start).Round(time.Second))
	vs, _ := idx.Variants(context.Background(), id, head)
	for _, v := range vs {
		t.Logf("%s: %s %s", v.Name, v.State, v.Finished.Sub(v.Started).Round(time.Second))
	}

	const title = "2 jobs failed, 0 skipped, 2 passed (1 also failing on master)"
	t.Run("statuses", func(t *testing.T) {
		sts, err := client.Statuses(context.Background(), repo, head)
		if err != nil {
			t.Fatal(err)
		}
		st := sts[StatusContext]
		if st.State != forge.Failed || !strings.HasPrefix(st.Description, title) {
			t.Errorf("%s: %s %q, want failed %q…", StatusContext, st.State, st.Description, title)
		}
		if st.TargetURL != "http://ci.test/opam-repo-ci/gitea/"+srv.Admin+"/opam-repository/commit/"+head {
			t.Errorf("%s links to %q", StatusContext, st.TargetURL)
		}
		if l, ok := sts[LintContext]; !ok || !strings.HasPrefix(l.Description, "lint ") {
			t.Errorf("%s: %+v (all: %+v)", LintContext, l, sts)
		}
	})
	t.Run("comment", func(t *testing.T) {
		order := []string{"opam-ci: " + title, "#### New in this PR", "mylib.2,compilers,4.13,tests", "test_api expected 2, got 3",
			"mylib.2,compilers,4.13,revdeps,goodrev.1", "goodrev needs mylib 1, not 2",
			"#### Also failing on master (not counted)", "mylib.2,compilers,4.13,revdeps,oldrev.1", "oldrev has never built"}
		inOrder(t, comment, order)
		for _, passed := range []string{"passrev.1", ",build"} {
			if strings.Contains(comment, passed) {
				t.Errorf("the comment names %s, which passed:\n%s", passed, comment)
			}
		}
	})
	ui, err := results.NewUI(idx, h.engine, nil, results.Options{Prefix: Prefix, Tree: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("UI", func(t *testing.T) {
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, httptest.NewRequest("GET", "/opam-repo-ci/gitea/"+srv.Admin+"/opam-repository/commit/"+head, nil))
		inOrder(t, rec.Body.String(), []string{title, "Summary of errors", "mylib.2,compilers,4.13,revdeps,goodrev.1", "new in this PR",
			"mylib.2,compilers,4.13,revdeps,oldrev.1", "also fails on master", `class="tree"`})
		v, _ := idx.Variant(context.Background(), id, head, "mylib.2,compilers,4.13,revdeps,goodrev.1")
		if v == nil {
			t.Fatal("no variant of goodrev")
		}
		log := readLog(t, h.engine, v.JobID)
		i, j := strings.Index(log, "To reproduce mylib.2,compilers,4.13,revdeps,goodrev.1 locally:"), strings.Index(log, "opam reinstall goodrev.1")
		if i < 0 || j < i || strings.Count(log[:i], "\n") > 2 {
			t.Errorf("goodrev's log does not start with the commands to reproduce it:\n%s", log[:min(len(log), 2000)])
		}
		// Built offline over the layer of the 8 versions it installs (the compiler's 6, mylib.2, goodrev.1), not the tree.
		if !strings.Contains(log, "This job ran the same steps over a minimal opam layer") || !strings.Contains(log, "holds the 8 package versions") ||
			strings.Contains(log, "with the network for") {
			t.Errorf("goodrev's log does not say it ran offline over its minimal layer:\n%s", log)
		}
	})
	t.Run("the comment is kept in place", func(t *testing.T) {
		ours := func() []gitea.Comment {
			cs, err := client.Comments(context.Background(), repo, 1)
			if err != nil {
				t.Fatal(err)
			}
			var out []gitea.Comment
			for _, c := range cs {
				if strings.Contains(c.Body, CommentMarker) {
					out = append(out, c)
				}
			}
			return out
		}
		before := ours()
		if len(before) != 1 {
			t.Fatalf("%d comments of the service on the pull request, want 1", len(before))
		}
		if err := client.UpsertComment(context.Background(), repo, 1, CommentMarker, "edited"); err != nil {
			t.Fatal(err)
		}
		after := ours()
		if len(after) != 1 || after[0].ID != before[0].ID || after[0].Body != CommentMarker+"\nedited" {
			t.Errorf("after an update: %+v, want comment %d edited", after, before[0].ID)
		}
	})
	t.Run("browser", func(t *testing.T) {
		browsePullRequest(t, h.engine, idx, ui, "/opam-repo-ci/gitea/"+srv.Admin+"/opam-repository/commit/"+head, id, head)
	})
}

// fleetHarness is an embedded fleet with a worker building with runc, and an engine.
type fleetHarness struct {
	state  string
	fleet  *cluster.Fleet
	engine *current.Engine
}

func startFleet(t *testing.T, ctx context.Context, pool string) *fleetHarness {
	h := &fleetHarness{state: t.TempDir()}
	runner, err := buildrun.New(buildrun.Options{Root: filepath.Join(h.state, "builder"), Images: imagetest.Store(t).Root()})
	if err != nil {
		t.Fatal(err)
	}
	h.fleet, err = cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(h.state, "fleet"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.fleet.Close)
	nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: h.fleet.URL, Name: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "w", Pool: pool, Capacity: 2,
		StateDir: filepath.Join(h.state, "worker"), Runner: runner, HealthEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done; nc.Close() })
	h.engine, err = current.Open(current.Config{StateDir: filepath.Join(h.state, "engine"), Pools: fleetjob.EnginePools()})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// run runs the pipeline until the test ends.
func (h *fleetHarness) run(t *testing.T, ctx context.Context, p current.Term[current.Unit]) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); h.engine.Run(ctx, p) }()
	t.Cleanup(func() { cancel(); <-done; h.engine.Close() })
}

// waitComment waits for the service's comment on pull request n and returns it.
func waitComment(t *testing.T, c *gitea.Client, repo gitea.Repo, n int, timeout time.Duration, state func() string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		cs, err := c.Comments(context.Background(), repo, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range cs {
			if strings.Contains(cm.Body, CommentMarker) {
				return cm.Body
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no comment on %s#%d after %s\n%s", repo, n, timeout, state())
	return ""
}

// inOrder checks that text holds each of want, in order.
func inOrder(t *testing.T, text string, want []string) {
	t.Helper()
	at := 0
	for _, w := range want {
		i := strings.Index(text[at:], w)
		if i < 0 {
			t.Fatalf("no %q after byte %d of:\n%s", w, at, text)
		}
		at += i + len(w)
	}
}

// readLog reads a finished job's log.
func readLog(t *testing.T, e *current.Engine, id string) string {
	t.Helper()
	var b strings.Builder
	var off int64
	for {
		chunk, err := e.ReadLog(id, off, 1<<20)
		if err != nil {
			if errors.Is(err, current.ErrNotFound) {
				return b.String()
			}
			t.Fatal(err)
		}
		b.Write(chunk.Data)
		if len(chunk.Data) == 0 || chunk.Done {
			return b.String()
		}
		off = chunk.Next
	}
}
