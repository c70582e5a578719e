package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/services/internal/logarchive"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// fakePkg is an opam file of the fake fleet's repository; what its build does is
// said by x-fake (see fakeFleet).
func fakePkg(deps, fake string) string {
	s := "opam-version: \"2.0\"\nmaintainer: \"m@example.org\"\n"
	if deps != "" {
		s += "depends: [" + deps + "]\n"
	}
	if fake != "" {
		s += "x-fake: \"" + fake + "\"\n"
	}
	return s
}

// fakeFleet builds without a sandbox: it reads the steps of a job's spec and the
// opam files of its context, and each package's x-fake field says what its build
// does: build-fails, tests-fail, times-out, flaky (the infrastructure fails the first
// time), huge-log (prints a gigabyte, then fails), breaks-NAME (NAME fails to build
// when this package is installed). It counts the steps a builder with a cache keyed
// by the steps before would run, and those it would run without.
type fakeFleet struct {
	mu       sync.Mutex
	prefixes map[string]bool
	steps    int // steps without sharing
	shared   int // steps with sharing
	tries    map[string]int
	built    []string
}

var specInstall = regexp.MustCompile(`opam install ([A-Za-z0-9_+~.-]+)\)? \|\|`)

func (f *fakeFleet) run(ctx context.Context, j *current.Job, req fleetjob.Request, log io.Writer) (fleetjob.Result, error) {
	var pkgs []string
	for _, m := range specInstall.FindAllStringSubmatch(req.Spec, -1) {
		pkgs = append(pkgs, m[1])
	}
	if len(pkgs) == 0 {
		return fleetjob.Result{}, fmt.Errorf("no install step in the spec:\n%s", req.Spec)
	}
	fakes := map[string]string{}
	filepath.WalkDir(req.SourceDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "opam" {
			data, _ := os.ReadFile(p)
			if m := regexp.MustCompile(`x-fake: "([^"]*)"`).FindSubmatch(data); m != nil {
				fakes[filepath.Base(filepath.Dir(p))] = string(m[1])
			}
		}
		return nil
	})
	target := pkgs[len(pkgs)-1]
	f.mu.Lock()
	if f.prefixes == nil {
		f.prefixes, f.tries = map[string]bool{}, map[string]int{}
	}
	sw, _, _ := strings.Cut(req.CacheHint, "-")
	f.tries[sw+" "+target]++
	try := f.tries[sw+" "+target]
	f.built = append(f.built, target)
	prefix := ""
	for _, p := range pkgs[:len(pkgs)-1] {
		prefix += p + " "
		f.steps++
		if !f.prefixes[prefix] {
			f.prefixes[prefix] = true
			f.shared++
		}
	}
	f.mu.Unlock()
	fail := func(step, pkg string) (fleetjob.Result, error) {
		fmt.Fprintf(log, "#=== ERROR while compiling %s ===#\n%s%s %s (exit 31)\n", pkg, markerPrefix, step, pkg)
		return fleetjob.Result{}, current.WithLines(errors.New("step failed"), []string{"ERROR " + pkg})
	}
	for _, d := range pkgs[:len(pkgs)-1] {
		fmt.Fprintf(log, "installing %s\n", d)
		if fakes[d] == "build-fails" {
			return fail(stepDependency, d)
		}
	}
	name, _, _ := strings.Cut(target, ".")
	for _, d := range pkgs[:len(pkgs)-1] {
		if fakes[d] == "breaks-"+name {
			return fail(stepBuild, target)
		}
	}
	switch fakes[target] {
	case "build-fails":
		return fail(stepBuild, target)
	case "tests-fail":
		return fail(stepTest, target)
	case "times-out":
		return fleetjob.Result{}, current.Infra(current.FailWorkerLost, errors.New("timed out after 1h0m0s"))
	case "flaky":
		if try == 1 {
			return fleetjob.Result{}, current.Infra(current.FailWorkerLost, errors.New("worker w lost"))
		}
	case "huge-log":
		line := []byte(strings.Repeat("noise ", 170) + "\n")
		for n := 0; n < 1<<30; n += len(line) {
			log.Write(line)
		}
		return fail(stepBuild, target)
	}
	fmt.Fprintf(log, "installed %s\n", target)
	return fleetjob.Result{JobID: "fake"}, nil
}

type recordNotices struct {
	mu sync.Mutex
	ns []Notice
}

// Send takes its time, as a notifier may: a run seen done must have been told.
func (r *recordNotices) Send(n Notice) bool {
	time.Sleep(100 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ns = append(r.ns, n)
	return true
}

func (r *recordNotices) last() Notice {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ns) == 0 {
		return Notice{}
	}
	return r.ns[len(r.ns)-1]
}

type harness struct {
	t      *testing.T
	svc    *Service
	fleet  *fakeFleet
	repo   *gittest.Repo
	engine *current.Engine
}

func newHarness(t *testing.T, files map[string]string) *harness {
	h := &harness{t: t, repo: gittest.NewRepo(t), fleet: &fakeFleet{}}
	h.repo.Commit("packages", files)
	extra := gittest.NewRepo(t)
	extra.Commit("an extra repository", map[string]string{
		"repo":                        "opam-version: \"2.0\"\n",
		"packages/extra/extra.1/opam": fakePkg(`"lib"`, ""),
	})
	state := t.TempDir()
	cfg, err := Parse("test", []byte(fmt.Sprintf(`repository: {url: %s, branch: main}
with-test: true
retries: 2
switches:
  - {name: a, compiler: comp.1}
  - {name: b, compiler: comp.2, repositories: [extra=%s]}
`, h.repo.Dir, extra.Dir)))
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(filepath.Join(state, "hc.db"))
	if err != nil {
		t.Fatal(err)
	}
	logs, err := logarchive.Open(filepath.Join(state, "logs"), logarchive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archives, err := opamenv.NewArchives(filepath.Join(state, "archives"), opamenv.ArchivesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.svc = NewService(cfg)
	h.svc.Store, h.svc.Logs, h.svc.Archives, h.svc.Run = store, logs, archives, h.fleet.run
	h.svc.WorkDir, h.svc.ConfigPath = filepath.Join(state, "work"), filepath.Join(state, "config.yaml")
	os.MkdirAll(h.svc.WorkDir, 0o755)
	h.engine, err = current.Open(current.Config{StateDir: filepath.Join(state, "engine"), Pools: fleetjob.EnginePools(), RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pipe, err := h.svc.Pipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); h.engine.Run(ctx, pipe) }()
	t.Cleanup(func() { cancel(); <-done; h.engine.Close(); store.Close() })
	return h
}

// run starts a run and waits for it to end.
func (h *harness) run(o RunOptions) *Run {
	h.t.Helper()
	r, err := h.svc.StartRun(context.Background(), o)
	if err != nil {
		h.t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got, err := h.svc.Store.Run(context.Background(), r.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		if got.Status.Finished() {
			if got.Status != RunDone {
				h.t.Fatalf("run %d: %s: %s", got.ID, got.Status, got.Message)
			}
			return got
		}
	}
	h.t.Fatalf("run %d did not end; jobs: %+v", r.ID, h.engine.Jobs())
	return nil
}

func (h *harness) results(run int64) map[string]Result {
	h.t.Helper()
	rs, err := h.svc.Store.Results(context.Background(), run, ResultQuery{})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]Result{}
	for _, r := range rs {
		out[r.Switch+" "+r.Package] = r
	}
	return out
}

// testRepository has a package in each state on switch a (comp.1); on switch b
// (comp.2) only what does not need comp.1.
func testRepository() map[string]string {
	return map[string]string{
		"repo":                              "opam-version: \"2.0\"\n",
		"packages/comp/comp.1/opam":         fakePkg("", ""),
		"packages/comp/comp.2/opam":         fakePkg("", ""),
		"packages/lib/lib.1/opam":           fakePkg(`"comp"`, ""),
		"packages/good/good.1/opam":         fakePkg(`"lib"`, ""),
		"packages/user/user.1/opam":         fakePkg(`"lib"`, ""),
		"packages/bad/bad.1/opam":           fakePkg(`"lib"`, "build-fails"),
		"packages/testfail/testfail.1/opam": fakePkg(`"lib"`, "tests-fail"),
		"packages/partial/partial.1/opam":   fakePkg(`"bad"`, ""),
		"packages/nosol/nosol.1/opam":       fakePkg(`"lib" {>= "2"}`, ""),
		"packages/old/old.1/opam":           fakePkg(`"comp" {= "1"}`, ""),
		"packages/slow/slow.1/opam":         fakePkg(`"lib"`, "times-out"),
		"packages/flaky/flaky.1/opam":       fakePkg(`"lib"`, "flaky"),
		"packages/chatty/chatty.1/opam":     fakePkg(`"lib"`, "huge-log"),
	}
}

func TestRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("a fake build prints a gigabyte of log")
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "not what the checksum says") }))
	defer upstream.Close()
	files := testRepository()
	files["packages/badsum/badsum.1/opam"] = fakePkg(`"lib"`, "") + `url { src: "` + upstream.URL + `/badsum.tar.gz" checksum: "sha256=` + strings.Repeat("0", 64) + `" }` + "\n"
	files["packages/onbadsum/onbadsum.1/opam"] = fakePkg(`"badsum"`, "")
	h := newHarness(t, files)
	first := h.run(RunOptions{})
	res := h.results(first.ID)
	t.Run("every state", func(t *testing.T) {
		for _, c := range []struct {
			key   string
			state State
			kind  Kind
			tries int
		}{
			{"a good.1", Good, KindNone, 1},
			{"a lib.1", Good, KindNone, 1},
			{"a bad.1", Bad, KindBuild, 1},
			{"a testfail.1", Bad, KindTest, 1},
			{"a partial.1", Partial, KindDependency, 1},
			{"a nosol.1", NotAvailable, KindSolver, 0},
			{"b old.1", NotAvailable, KindSolver, 0},
			{"a old.1", Good, KindNone, 1},
			{"a slow.1", InternalFailure, KindTimeout, 3},
			{"a flaky.1", Good, KindNone, 2},
			{"a chatty.1", Bad, KindBuild, 1},
			{"b extra.1", Good, KindNone, 1},
			{"a badsum.1", Bad, KindBuild, 1},
			{"a onbadsum.1", Partial, KindDependency, 1},
		} {
			t.Run(c.key, func(t *testing.T) {
				r, ok := res[c.key]
				if !ok {
					t.Fatalf("no result for %s; results: %v", c.key, slices.Sorted(func(yield func(string) bool) {
						for k := range res {
							if !yield(k) {
								return
							}
						}
					}))
				}
				if r.State != c.state || r.Kind != c.kind || r.Attempts != c.tries {
					t.Errorf("%s: %s %s after %d tries (%s), want %s %s after %d", c.key, r.State, r.Kind, r.Attempts, r.Message, c.state, c.kind, c.tries)
				}
				if r.State != NotAvailable && (r.Log.Key != c.key[:1]+"/"+c.key[2:] || r.Log.JobID == "") {
					t.Errorf("%s: log %+v", c.key, r.Log)
				}
				if len(r.Maintainers) != 1 || r.Maintainers[0] != "m@example.org" {
					t.Errorf("%s: maintainers %v", c.key, r.Maintainers)
				}
			})
		}
		if _, ok := res["a extra.1"]; ok {
			t.Errorf("a package of switch b's extra repository was checked on switch a")
		}
		if res["a lib.1"].Revdeps != 9 {
			t.Errorf("lib has %d reverse dependencies, want 9", res["a lib.1"].Revdeps)
		}
		if first.Progress.Done != first.Progress.Total || first.Counts[Pending] != 0 {
			t.Errorf("a finished run with progress %+v, counts %v", first.Progress, first.Counts)
		}
	})
	t.Run("a gigabyte of log", func(t *testing.T) {
		data, whole, err := h.svc.Logs.Read(fmt.Sprint(first.ID), "a/chatty.1", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !whole || !strings.Contains(string(data), "bytes of log left out; the log printed 1073") ||
			!strings.Contains(string(data), markerPrefix+"build chatty.1") {
			t.Errorf("the log of chatty does not say it was cut, or lost its end (%d bytes)", len(data))
		}
	})
	t.Run("shared dependencies", func(t *testing.T) {
		t.Logf("dependency steps: %d with shared layers, %d without", h.fleet.shared, h.fleet.steps)
		if h.fleet.shared >= h.fleet.steps {
			t.Errorf("no step shared: %d with sharing, %d without", h.fleet.shared, h.fleet.steps)
		}
	})

	h.repo.Commit("good breaks, partial fixed", map[string]string{
		"packages/good/good.1/opam":       fakePkg(`"lib"`, "build-fails"),
		"packages/partial/partial.1/opam": fakePkg(`"lib"`, ""),
	})
	notices := &recordNotices{}
	h.svc.Notify = notices
	second := h.run(RunOptions{})
	t.Run("notified", func(t *testing.T) {
		n := notices.last()
		if n.Run == nil || n.Run.ID != second.ID || n.Run.Status != RunDone || n.Diff == nil || n.Diff.Old != first.ID || len(n.Diff.Of(NowBroken)) != 2 {
			t.Errorf("notice %+v", n)
		}
	})
	t.Run("diff", func(t *testing.T) {
		d, err := h.svc.diffOf(context.Background(), second)
		if err != nil || d == nil {
			t.Fatalf("diff: %v, %v", d, err)
		}
		var broken, fixed []string
		for _, c := range d.Of(NowBroken) {
			broken = append(broken, c.Switch+" "+c.Package)
		}
		for _, c := range d.Of(NowFixed) {
			fixed = append(fixed, c.Switch+" "+c.Package)
		}
		if !slices.Equal(broken, []string{"a good.1", "b good.1"}) || !slices.Equal(fixed, []string{"a partial.1", "b partial.1"}) {
			t.Errorf("now broken %v, now fixed %v", broken, fixed)
		}
	})

	h.repo.Git("checkout", "-q", "-b", "cand")
	h.repo.Commit("lib breaks user", map[string]string{"packages/lib/lib.1/opam": fakePkg(`"comp"`, "breaks-user")})
	h.repo.Git("checkout", "-q", "main")
	before := len(h.fleet.built)
	cand := h.run(RunOptions{Candidate: &CandidateRequest{Ref: "cand"}})
	t.Run("candidate", func(t *testing.T) {
		built := slices.Sorted(slices.Values(h.fleet.built[before:]))
		built = slices.Compact(built)
		want := []string{"bad.1", "chatty.1", "extra.1", "flaky.1", "good.1", "lib.1", "partial.1", "slow.1", "testfail.1", "user.1"}
		// badsum and onbadsum depend on lib too, but fail before the fleet
		if !slices.Equal(built, want) {
			t.Errorf("the candidate built %v, want %v (lib and its reverse dependencies)", built, want)
		}
		if cand.Kind != Candidate || cand.Candidate.Baseline != second.ID || !slices.Equal(cand.Candidate.Changed, []string{"lib.1"}) {
			t.Errorf("candidate run %+v", cand)
		}
		d, err := h.svc.diffOf(context.Background(), cand)
		if err != nil || d == nil {
			t.Fatalf("diff: %v, %v", d, err)
		}
		var broken []string
		for _, c := range d.Of(NowBroken) {
			broken = append(broken, c.Switch+" "+c.Package)
		}
		if !slices.Equal(broken, []string{"a user.1", "b user.1"}) {
			t.Errorf("the candidate's diff says now broken %v, want user.1 on both switches (all: %+v)", broken, d.Changes)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		ts := httptest.NewServer(h.svc.AdminHandler(Prefix))
		defer ts.Close()
		for _, c := range []struct {
			name, path, body string
			code             int
			want             string
		}{
			{"unknown switch", "/switch/remove", `{"name": "c"}`, 400, `no switch \"c\" (the switches are a, b)`},
			{"bad compiler", "/switch", `{"name": "c", "compiler": "ocaml"}`, 400, `compiler \"ocaml\"`},
			{"bad setting", "/set", `{"key": "retention", "value": "many"}`, 400, `retention \"many\": want a number of runs`},
			{"unknown setting", "/set", `{"key": "colour", "value": "red"}`, 400, `unknown setting \"colour\"`},
			{"not JSON", "/run", `{`, 400, "request body"},
			{"unknown run", "/run/99", ``, 404, "no such run"},
			{"candidate of nothing", "/run", `{"candidate": {"name": "x", "ref": "nope"}}`, 400, "candidate nope"},
		} {
			t.Run(c.name, func(t *testing.T) {
				method := "POST"
				if c.body == "" {
					method = "GET"
				}
				req, _ := http.NewRequest(method, ts.URL+Prefix+"/admin"+c.path, strings.NewReader(c.body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != c.code || !strings.Contains(string(body), c.want) {
					t.Errorf("%s %s: %d %s, want %d and %q", method, c.path, resp.StatusCode, body, c.code, c.want)
				}
			})
		}
		if cfg := h.svc.Config(); len(cfg.Switches) != 2 || cfg.Retention != DefaultRetention {
			t.Errorf("a refused change changed the configuration: %+v", cfg)
		}
		if _, err := os.Stat(h.svc.ConfigPath); err == nil {
			t.Errorf("a refused change was saved")
		}
		if _, err := h.svc.RemoveSwitch("b"); err != nil {
			t.Fatal(err)
		}
		third := h.run(RunOptions{})
		if len(third.Switches) != 1 || third.Counts.Total() == 0 {
			t.Errorf("after removing switch b: %+v", third)
		}
		if rs, _ := h.svc.Store.Results(context.Background(), first.ID, ResultQuery{Switch: "b"}); len(rs) == 0 {
			t.Errorf("the results of the first run on switch b were lost")
		}
	})
}
