package healthcheck

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/builder/image/imagetest"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/logarchive"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/opamsourcestest"
)

// TestEndToEnd checks a repository of real packages (the compiler's, ocamlfind) and
// packages the test writes, one in each state, with real builds in sandboxes on an
// embedded fleet: every state is right, a dependency several packages need is built
// once, a second run after a change shows the diff, and a candidate branch that
// breaks one reverse dependency builds only what it affects and names it.
func TestEndToEnd(t *testing.T) {
	testenv.Short(t, "real opam builds in sandboxes")
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "runc", "git", "mmdebstrap", "tar")
	src := opamsourcestest.Serve(t)
	plat := matrix.Debian("amd64")
	imagetest.DebianWith(t, *plat.Debian)

	files := src.Repository(t, opamsourcestest.SystemSet)
	mylib := func(v string) string {
		return opamsourcestest.Opam("mylib", `depends: ["ocaml"]
build: [["sh" "-c" "cat mylib.txt"]]
install: [["sh" "-c" "mkdir -p %{lib}%/mylib && cp mylib.txt %{lib}%/mylib/version"]]
`+src.AddArchive(t, "mylib-"+v+".tar.gz", map[string]string{"mylib.txt": v + "\n"}))
	}
	user := func(name, extra string) string {
		return opamsourcestest.Opam(name, `depends: ["mylib" "ocamlfind"]
build: [["sh" "-c" "ocamlfind list >/dev/null && test -s %{lib}%/mylib/version`+extra+`"]]
`)
	}
	files["packages/mylib/mylib.1/opam"] = mylib("1")
	for _, n := range []string{"good1", "good3"} {
		files["packages/"+n+"/"+n+".1/opam"] = user(n, "")
	}
	files["packages/good2/good2.1/opam"] = user("good2", ` && { [ $(cat %{lib}%/mylib/version) = 1 ] || { echo Error: good2 needs mylib 1 >&2; exit 1; }; }`)
	files["packages/bad/bad.1/opam"] = opamsourcestest.Opam("bad", `depends: ["ocaml"]
build: [["sh" "-c" "echo Error: bad does not build >&2; exit 1"]]
`)
	files["packages/testfail/testfail.1/opam"] = opamsourcestest.Opam("testfail", `depends: ["mylib"]
build: [["true"]]
run-test: [["sh" "-c" "echo FAIL: test_version expected 2 >&2; exit 1"]]
`)
	files["packages/partial/partial.1/opam"] = opamsourcestest.Opam("partial", `depends: ["bad"]
build: [["true"]]
`)
	files["packages/nosol/nosol.1/opam"] = opamsourcestest.Opam("nosol", `depends: ["mylib" {>= "5"}]
build: [["true"]]
`)
	files["packages/slow/slow.1/opam"] = opamsourcestest.Opam("slow", `depends: ["ocaml"]
build: [["sleep" "3600"]]
`)
	repo := gittest.NewRepo(t)
	repo.Commit("packages", files)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	state := t.TempDir()
	fleet, err := host.StartFleet(ctx, host.FleetOptions{Listen: "127.0.0.1:0", Pools: []string{plat.Pool}, LocalWorkers: 1, Capacity: 2,
		StateDir: filepath.Join(state, "fleet"), Images: imagetest.Store(t).Root()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	cfg, err := Parse("e2e", []byte(fmt.Sprintf(`repository: {url: %s, branch: main}
with-test: true
job-timeout: 2m
retries: 1
switches:
  - {name: "4.13", compiler: ocaml-system.4.13.1}
`, repo.Dir)))
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(filepath.Join(state, "hc.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs, err := logarchive.Open(filepath.Join(state, "logs"), logarchive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	archives, err := opamenv.NewArchives(filepath.Join(state, "archives"), opamenv.ArchivesOptions{Register: reg})
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(cfg)
	svc.Store, svc.Logs, svc.Archives, svc.Fleet, svc.Metrics = store, logs, archives, fleet.Client, NewMetrics(reg)
	svc.WorkDir = filepath.Join(state, "work")
	os.MkdirAll(svc.WorkDir, 0o755)
	engine, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), Pools: fleetjob.EnginePools()})
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := svc.Pipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ectx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); engine.Run(ectx, pipe) }()
	t.Cleanup(func() { stop(); <-done; engine.Close() })

	run := func(o RunOptions) *Run {
		t.Helper()
		start := time.Now()
		r, err := svc.StartRun(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			got, err := store.Run(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Finished() {
				if got.Status != RunDone {
					t.Fatalf("run %d: %s: %s", got.ID, got.Status, got.Message)
				}
				t.Logf("run %d (%s) took %s: %v", got.ID, got.Kind, time.Since(start).Round(time.Second), got.Counts)
				return got
			}
		}
		t.Fatalf("run %d did not end; jobs: %+v", r.ID, engine.Jobs())
		return nil
	}
	results := func(id int64) map[string]Result {
		rs, err := store.Results(ctx, id, ResultQuery{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]Result{}
		for _, r := range rs {
			out[r.Package] = r
		}
		return out
	}
	steps := func() (built, cached float64) {
		m := testenv.Metrics(t, reg)
		return m["kiln_healthcheck_steps_total{result=built}"], m["kiln_healthcheck_steps_total{result=cached}"]
	}

	first := run(RunOptions{})
	res := results(first.ID)
	t.Run("states", func(t *testing.T) {
		for _, c := range []struct {
			pkg   string
			state State
			kind  Kind
		}{
			{"ocamlfind.1.9.6", Good, KindNone},
			{"mylib.1", Good, KindNone},
			{"good1.1", Good, KindNone},
			{"good2.1", Good, KindNone},
			{"bad.1", Bad, KindBuild},
			{"testfail.1", Bad, KindTest},
			{"partial.1", Partial, KindDependency},
			{"nosol.1", NotAvailable, KindSolver},
			{"slow.1", InternalFailure, KindTimeout},
		} {
			r := res[c.pkg]
			if r.State != c.state || r.Kind != c.kind {
				data, _, _ := logs.Read(fmt.Sprint(first.ID), r.Log.Key, 4000)
				t.Errorf("%s: %s %s (%s), want %s %s; log:\n%s", c.pkg, r.State, r.Kind, r.Message, c.state, c.kind, data)
			}
		}
		if r := res["slow.1"]; r.Attempts != 2 {
			t.Errorf("slow.1 tried %d times, want 2 (retried once)", r.Attempts)
		}
	})
	t.Run("dependencies built once", func(t *testing.T) {
		// The step that installs mylib.1 as a dependency is built by one build and
		// taken from the cache by the others.
		var saved, reused, users int
		for _, r := range res {
			if r.Log.Key == "" || r.Package == "mylib.1" {
				continue
			}
			data, _, err := logs.Read(fmt.Sprint(first.ID), r.Log.Key, 0)
			if err != nil {
				continue
			}
			lines := strings.Split(string(data), "\n")
			for i, l := range lines {
				if strings.Contains(l, "opam install mylib.1") && strings.HasPrefix(l, "/: (run ") {
					users++
					for _, next := range lines[i+1:] {
						if strings.HasPrefix(next, "---> saved as") {
							saved++
							break
						}
						if strings.HasPrefix(next, "---> using") {
							reused++
							break
						}
					}
				}
			}
		}
		built, cached := steps()
		t.Logf("mylib.1 installed as a dependency by %d builds: built %d times, from the cache %d times; all steps: %.0f built, %.0f from the cache (%.0f%% saved)",
			users, saved, reused, built, cached, 100*cached/(built+cached))
		if users < 3 || saved > 1 || reused < users-1 {
			t.Errorf("mylib.1 built %d times for %d builds (reused %d)", saved, users, reused)
		}
	})

	repo.Commit("bad fixed, good3 broken, slow removed", map[string]string{
		"packages/bad/bad.1/opam":     opamsourcestest.Opam("bad", "depends: [\"ocaml\"]\nbuild: [[\"true\"]]\n"),
		"packages/good3/good3.1/opam": user("good3", " && exit 1"),
		"packages/slow/slow.1/opam":   "\x00delete",
	})
	second := run(RunOptions{})
	t.Run("diff", func(t *testing.T) {
		d, err := svc.diffOf(ctx, second)
		if err != nil || d == nil {
			t.Fatalf("diff: %v, %v", d, err)
		}
		names := func(c Change) []string {
			var out []string
			for _, pc := range d.Of(c) {
				out = append(out, pc.Package)
			}
			return out
		}
		if got := names(NowBroken); !slices.Equal(got, []string{"good3.1"}) {
			t.Errorf("now broken: %v, want good3.1", got)
		}
		if got := names(NowFixed); !slices.Equal(got, []string{"bad.1", "partial.1"}) {
			t.Errorf("now fixed: %v, want bad.1 and partial.1", got)
		}
	})

	repo.Git("checkout", "-q", "-b", "mylib-2")
	repo.Commit("mylib 2 in place of 1", map[string]string{"packages/mylib/mylib.1/opam": mylib("2")})
	repo.Git("checkout", "-q", "main")
	cand := run(RunOptions{Candidate: &CandidateRequest{Ref: "mylib-2"}})
	t.Run("candidate", func(t *testing.T) {
		var built []string
		for p, r := range results(cand.ID) {
			if r.State != NotAvailable {
				built = append(built, p)
			}
		}
		slices.Sort(built)
		if want := []string{"good1.1", "good2.1", "good3.1", "mylib.1", "testfail.1"}; !slices.Equal(built, want) {
			t.Errorf("the candidate built %v, want %v (mylib and what depends on it)", built, want)
		}
		d, err := svc.diffOf(ctx, cand)
		if err != nil || d == nil {
			t.Fatalf("diff: %v, %v", d, err)
		}
		var broken []string
		for _, pc := range d.Of(NowBroken) {
			broken = append(broken, pc.Package)
		}
		if !slices.Equal(broken, []string{"good2.1"}) {
			t.Errorf("the candidate's diff: now broken %v, want good2.1 (all: %+v)", broken, d.Changes)
		}
	})
	t.Run("archives downloaded once", func(t *testing.T) {
		for p, n := range src.Requests() {
			if n > 1 {
				t.Errorf("%s downloaded %d times", p, n)
			}
		}
	})
}
