package opamrepoci

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// fakeForge is plain git whose non-base branches are pull requests, and which keeps
// the statuses and comments it is given.
type fakeForge struct {
	git      *forges.Git
	mu       sync.Mutex
	statuses map[string]forge.Status // check name + " " + commit
	comments map[string]string       // head commit → body (one per marker: the service has one)
	writes   int
}

func (f *fakeForge) Refs() current.Term[[]forge.Ref] {
	return current.Map(f.git.Refs(), func(refs []forge.Ref) []forge.Ref {
		out := make([]forge.Ref, len(refs))
		for i, r := range refs {
			if r.Name != "refs/heads/master" {
				r.PR = int(crc32.ChecksumIEEE([]byte(r.Name))%1000) + 1        // a number of its own
				r.Title = fmt.Sprintf("%s, one of %d refs", r.Name, len(refs)) // edited when a branch comes
			}
			out[i] = r
		}
		return out
	})
}

func (f *fakeForge) Publish(ctx context.Context, ref forge.Ref, st forge.Status, vs []forge.Variant) error {
	return f.PublishCheck(ctx, ref, forge.Check{}, st, vs)
}

func (f *fakeForge) PublishCheck(ctx context.Context, ref forge.Ref, c forge.Check, st forge.Status, vs []forge.Variant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[c.Name+" "+ref.Commit] = st
	return nil
}

func (f *fakeForge) Comment(ctx context.Context, ref forge.Ref, marker, body string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.comments[ref.Commit] = forge.WithMarker(body, marker)
	f.writes++
	return nil
}

// fakeFleet fails the builds whose spec names one of the failing jobs, with a
// failing line naming the job.
type fakeFleet struct {
	// contexts are the package versions of each build's context as it ran
	// (layerPackages), by folder.
	contexts map[string]string
	failing  []string
	// blocking jobs run until cancelled.
	blocking []string
	mu       sync.Mutex
	runs     []fleetjob.Request
}

func (f *fakeFleet) run(ctx context.Context, j *current.Job, req fleetjob.Request) (fleetjob.Result, error) {
	f.mu.Lock()
	f.runs = append(f.runs, req)
	if f.contexts == nil {
		f.contexts = map[string]string{}
	}
	f.contexts[req.SourceDir] = layerPackages(req.SourceDir)
	f.mu.Unlock()
	j.Logf("building %s", req.CacheHint)
	for _, id := range f.blocking {
		if strings.Contains(req.Spec, id+"\n") || strings.Contains(req.Spec, id+")") {
			<-ctx.Done()
			return fleetjob.Result{}, current.Infra(current.FailCancelled, context.Cause(ctx))
		}
	}
	for _, id := range f.failing {
		if strings.Contains(req.Spec, id+"\n") || strings.Contains(req.Spec, id+")") {
			return fleetjob.Result{}, current.WithLines(errors.New("the build failed"), []string{"# Error: " + id + " is broken"})
		}
	}
	return fleetjob.Result{}, nil
}

func (f *fakeFleet) count(keep func(fleetjob.Request) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.runs {
		if keep(r) {
			n++
		}
	}
	return n
}

func TestPullRequestFailuresComparedWithMaster(t *testing.T) {
	r := newGitRepo(t)
	r.commit(baseRepo)
	r.run("checkout", "-q", "-b", "release")
	head := r.commit(map[string]string{"lib.2": `depends: ["ocaml"] build: [["make" "test"] {with-test}]`})
	r.run("checkout", "-q", "master")
	r.run("checkout", "-q", "-b", "broken")
	broken := r.commit(map[string]string{"packages/bad/bad.1/opam": "opam-version: \"2.0\"\ndepends: [\n"})
	r.run("checkout", "-q", "master")
	base := r.run("rev-parse", "HEAD")

	state := t.TempDir()
	ff := &fakeForge{git: &forges.Git{Repos: []forges.GitRepo{{Owner: "o", Name: "opam-repository", Remote: r.dir}}, Every: 200 * time.Millisecond},
		statuses: map[string]forge.Status{}, comments: map[string]string{}}
	set := &forges.Set{}
	set.Add("git", ff)
	fleet := &fakeFleet{failing: []string{
		"lib.2,compilers,4.13,tests",         // the release's tests: new, it has no counterpart on master
		"lib.2,compilers,4.13,revdeps,app.1", // broken here, and on master (below)
		"app.1,compilers,4.13,tests",
		"lib.2,compilers,4.13,revdeps,mine.1",  // broken by the release only
		"lib.2,compilers,4.13,revdeps,flaky.1", // broken, and allowed to fail on debian-12
	}, blocking: []string{"slow.1,compilers,4.13,build"}}
	idx, err := results.OpenIndex(filepath.Join(state, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	svc := &Service{Forges: set, Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{}), Config: Default(),
		Run: fleet.run, Index: idx, WorkDir: filepath.Join(state, "work"), BaseURL: "http://ci.test", Prefix: Prefix}
	e, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), DefaultPoolSlots: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx, svc.Pipeline()) }()
	t.Cleanup(func() { cancel(); <-done; e.Close() })

	repo := forge.RepoID{Forge: "git", Owner: "o", Name: "opam-repository"}
	c := waitFinal(t, ff, idx, repo, head)
	vs, err := idx.Variants(context.Background(), repo, head)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]results.VariantRecord{}
	for _, v := range vs {
		byName[v.Name] = v
	}
	t.Run("status counts only the new failures", func(t *testing.T) {
		want := fmt.Sprintf("2 jobs failed, 0 skipped, %d passed (1 also failing on master, 1 allowed to fail)", len(vs)-4)
		if c.State != forge.Failed || c.Title != want {
			t.Errorf("status %s %q, want failed %q", c.State, c.Title, want)
		}
		ff.mu.Lock()
		st, ok := ff.statuses[StatusContext+" "+head]
		lint, lok := ff.statuses[LintContext+" "+head]
		ff.mu.Unlock()
		if !ok || st.Title != want || st.State != forge.Failed {
			t.Errorf("forge status %q: %+v", StatusContext, st)
		}
		if !lok || !strings.HasPrefix(lint.Title, "lint ") {
			t.Errorf("forge status %q: %+v", LintContext, lint)
		}
	})
	for _, tc := range []struct {
		job        string
		state      forge.State
		label      string
		notCounted bool
	}{
		{"lib.2,compilers,4.13,tests", forge.Failed, "new in this PR", false},
		{"lib.2,compilers,4.13,revdeps,mine.1", forge.Failed, "new in this PR", false},
		{"lib.2,compilers,4.13,revdeps,app.1", forge.Failed, "also fails on master", true},
		{"lib.2,compilers,4.13,revdeps,flaky.1", forge.Failed, "failure accepted", true},
		{"lib.2,compilers,4.13,build", forge.Passed, "", false},
	} {
		t.Run("variant "+tc.job, func(t *testing.T) {
			v, ok := byName[tc.job]
			if !ok {
				t.Fatalf("no variant %s among %v", tc.job, vs)
			}
			if v.State != tc.state || !strings.HasPrefix(v.Message, tc.label) || v.Experimental != tc.notCounted {
				t.Errorf("%s: %s %q experimental=%v, want %s %q… %v", tc.job, v.State, v.Message, v.Experimental, tc.state, tc.label, tc.notCounted)
			}
			if tc.state == forge.Failed && !strings.Contains(v.Message, "# Error: "+tc.job+" is broken") {
				t.Errorf("%s: message %q lacks the failing line", tc.job, v.Message)
			}
		})
	}
	t.Run("only failures are built on master, in the background", func(t *testing.T) {
		onBase := fleet.count(func(r fleetjob.Request) bool { return !strings.Contains(r.CacheHint, "lib.2") })
		urgent := fleet.count(func(r fleetjob.Request) bool { return !strings.Contains(r.CacheHint, "lib.2") && r.Urgent })
		if onBase != 2 || urgent != 0 {
			t.Errorf("%d builds on master (%d urgent), want 2 (app.1 and mine.1 with their tests, not flaky.1), none urgent", onBase, urgent)
		}
	})
	t.Run("builds take only their minimal opam layer, offline", func(t *testing.T) {
		fleet.mu.Lock()
		runs := slices.Clone(fleet.runs)
		fleet.mu.Unlock()

		byHint := map[string]fleetjob.Request{}
		for _, r := range runs {
			byHint[r.CacheHint] = r
		}
		const plat = "debian-12-4.13_amd64-"
		for _, tc := range []struct {
			hint     string
			packages string // the layer's repository
		}{
			{plat + "lib.2", "lib.2 ocaml-system.4.13.1 ocaml.4.13.1"},
			{plat + "lib.2-mine.1", "lib.2 mine.1 ocaml-system.4.13.1 ocaml.4.13.1"},
			{plat + "app.1", "app.1 lib.1 ocaml-system.4.13.1 ocaml.4.13.1"}, // on master: lib.1
		} {
			t.Run(tc.hint, func(t *testing.T) {
				r, ok := byHint[tc.hint]
				if !ok {
					t.Fatalf("no build %s among %d", tc.hint, len(runs))
				}
				if got := fleet.contexts[r.SourceDir]; got != tc.packages {
					t.Errorf("context %s holds %q, want %q", r.SourceDir, got, tc.packages)
				}
				if _, err := os.Stat(r.SourceDir); err == nil {
					t.Errorf("the context %s of a finished build is left", r.SourceDir)
				}
				if strings.Contains(r.Spec, "network") || strings.Contains(r.Spec, RepoDir) || strings.Contains(r.Spec, downloadCache.ID) {
					t.Errorf("the spec uses the network, the whole tree or the shared download cache:\n%s", r.Spec)
				}
			})
		}
		// Every build on the platform starts from the same switch.
		switches := map[string]bool{}
		for _, r := range runs {
			if strings.HasPrefix(r.CacheHint, plat) && !strings.Contains(r.CacheHint, "slow.1") {
				first, _, _ := strings.Cut(r.Spec[strings.Index(r.Spec, "(copy (src ")+len("(copy (src "):], ")")
				switches[first] = true
			}
		}
		if len(switches) != 1 {
			t.Errorf("the builds start from the switches %v, want one", slices.Collect(maps.Keys(switches)))
		}
		// lib.2 has no test dependencies: its build and tests install one set.
		var dirs []string
		for _, r := range runs {
			if r.CacheHint == plat+"lib.2" {
				dirs = append(dirs, r.SourceDir)
			}
		}
		if len(dirs) != 3 || dirs[0] != dirs[1] || dirs[1] != dirs[2] {
			t.Errorf("lib.2's build, tests and lower bounds take the contexts %v, want one", dirs)
		}
	})
	t.Run("one comment with the summary of errors", func(t *testing.T) {
		ff.mu.Lock()
		body := ff.comments[head]
		ff.mu.Unlock()
		order := []string{CommentMarker, "2 jobs failed", "#### New in this PR", "lib.2,compilers,4.13,tests", "# Error: lib.2,compilers,4.13,tests is broken",
			"lib.2,compilers,4.13,revdeps,mine.1", "#### Also failing on master", "lib.2,compilers,4.13,revdeps,app.1"}
		at := 0
		for _, w := range order {
			i := strings.Index(body[at:], w)
			if i < 0 {
				t.Fatalf("comment lacks %q after byte %d:\n%s", w, at, body)
			}
			at += i + len(w)
		}
	})
	t.Run("a malformed opam file fails the pull request, and it alone", func(t *testing.T) {
		c := waitFinal(t, ff, idx, repo, broken)
		if c.State != forge.Failed || c.Title != "the pull request cannot be tested as it stands" {
			t.Errorf("status %s %q", c.State, c.Title)
		}
		ff.mu.Lock()
		body := ff.comments[broken]
		ff.mu.Unlock()
		if !strings.Contains(body, "packages/bad/bad.1/opam") {
			t.Errorf("no comment names the malformed file:\n%s", body)
		}
		if n := fleet.count(func(r fleetjob.Request) bool { return strings.Contains(r.CacheHint, "bad.1") }); n != 0 {
			t.Errorf("%d builds of the broken pull request, want none", n)
		}
	})
	t.Run("a new master commit and an edited title restart nothing", func(t *testing.T) {
		runs := fleet.count(func(r fleetjob.Request) bool { return strings.Contains(r.CacheHint, "lib.2") })
		moved := r.commit(map[string]string{"other.1": `depends: ["ocaml"]`})
		// A pull request opened after master moved, seen in the same read of the refs.
		r.run("checkout", "-q", "-b", "late")
		late := r.commit(map[string]string{"late.1": `depends: ["ocaml"]`})
		r.run("checkout", "-q", "master")
		waitFinal(t, ff, idx, repo, late)
		for _, tc := range []struct {
			ref, head, want string
		}{
			{"refs/heads/release", head, base},
			{"refs/heads/late", late, moved},
		} {
			key := PR{Repo: repo, Ref: tc.ref}.key() + " " + tc.head
			if got := svc.latch.base(key, "none"); got != tc.want {
				t.Errorf("%s: base latched = %s, want %s", tc.ref, short(got), short(tc.want))
			}
		}
		if n := fleet.count(func(r fleetjob.Request) bool { return strings.Contains(r.CacheHint, "lib.2") }); n != runs {
			t.Errorf("%d builds of the release after master moved, want %d: the new base or title restarted the pull request", n, runs)
		}
	})
	t.Run("a superseded head is cancelled", func(t *testing.T) {
		r.run("checkout", "-q", "-b", "slow")
		first := r.commit(map[string]string{"slow.1": `depends: ["ocaml"]`})
		deadline := time.Now().Add(time.Minute)
		for {
			v, _ := idx.Variant(context.Background(), repo, first, "slow.1,compilers,4.13,build")
			if v != nil && v.State == forge.Running {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the build of slow.1 never ran: %+v", v)
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.run("rm", "-r", "-q", "packages/slow")
		second := r.commit(map[string]string{"slow.2": `depends: ["ocaml"]`})
		r.run("checkout", "-q", "master")
		waitFinal(t, ff, idx, repo, second)
		for {
			c, _ := idx.Commit(context.Background(), repo, first)
			ff.mu.Lock()
			st := ff.statuses[StatusContext+" "+first]
			ff.mu.Unlock()
			if c != nil && c.State == forge.Cancelled && st.State == forge.Cancelled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the first head: index %+v, forge status %+v; want both cancelled", c, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if v, _ := idx.Variant(context.Background(), repo, first, "slow.1,compilers,4.13,build"); v == nil || v.State != forge.Cancelled {
			t.Errorf("the first head's running build: %+v, want cancelled", v)
		}
	})
	t.Run("only pull requests are recorded", func(t *testing.T) {
		refs, err := idx.Refs(context.Background(), repo, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range refs {
			if rr.Name == "refs/heads/master" {
				t.Errorf("the base branch is listed as tested: %+v", rr)
			}
		}
	})
}

// waitFinal waits until the commit's report is final: its comment is written.
func waitFinal(t *testing.T, ff *fakeForge, idx *results.Index, repo forge.RepoID, commit string) *results.CommitRecord {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ff.mu.Lock()
		_, done := ff.comments[commit]
		ff.mu.Unlock()
		c, err := idx.Commit(context.Background(), repo, commit)
		if err != nil {
			t.Fatal(err)
		}
		if done && c != nil {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	c, _ := idx.Commit(context.Background(), repo, commit)
	vs, _ := idx.Variants(context.Background(), repo, commit)
	t.Fatalf("%s not final: %+v\n%+v", short(commit), c, vs)
	return nil
}

// layerPackages lists the package versions of the opam layer that is a build's
// whole context, or says what else the context holds.
func layerPackages(ctxDir string) string {
	all, _ := os.ReadDir(filepath.Join(ctxDir, opamenv.ContextDir))
	top, err := os.ReadDir(ctxDir)
	// The job's layer, and the switch it starts from.
	layers, _ := filepath.Glob(filepath.Join(ctxDir, opamenv.ContextDir, "*", "switch"))
	if err != nil || len(top) != 1 || len(layers) != 1 || len(all) != 2 {
		return fmt.Sprintf("not a layer and its switch alone: %v, %v (%v)", top, all, err)
	}
	pkgs, _ := filepath.Glob(filepath.Join(filepath.Dir(layers[0]), "repo", "packages", "*", "*"))
	var names []string
	for _, p := range pkgs {
		names = append(names, filepath.Base(p))
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}
