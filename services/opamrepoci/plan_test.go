package opamrepoci

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam/prdiff"
)

// gitRepo is a git repository made by a test, on branch master.
type gitRepo struct {
	t   *testing.T
	dir string
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	testenv.RequireCommand(t, "git")
	r := &gitRepo{t: t, dir: t.TempDir()}
	r.run("init", "-q", "-b", "master")
	return r
}

func (r *gitRepo) run(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes the opam files (NAME.VERSION → the text after opam-version) and
// other files (a path with a slash → its text), commits them and returns the commit.
func (r *gitRepo) commit(files map[string]string) string {
	r.t.Helper()
	for k, text := range files {
		p := k
		if !strings.Contains(k, "/") {
			name, _, _ := strings.Cut(k, ".")
			p = filepath.Join("packages", name, k, "opam")
			text = "opam-version: \"2.0\"\n" + text + "\n"
		}
		p = filepath.Join(r.dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.run("add", "-A")
	r.run("commit", "-q", "--allow-empty", "-m", "change")
	return r.run("rev-parse", "HEAD")
}

func (r *gitRepo) gitDir() string { return filepath.Join(r.dir, ".git") }

// baseRepo is a small opam repository: two compilers, a library and its users.
var baseRepo = map[string]string{
	"ocaml.4.13.1":        ``,
	"ocaml.5.2.0":         ``,
	"ocaml-system.4.13.1": ``,
	"alcotest.1":          ``,
	"lib.1":               `depends: ["ocaml"]`,
	"app.1":               `synopsis: "An app" depends: ["lib"]`,
	"app5.1":              `depends: ["lib" "ocaml" {>= "5.0"}]`,
	"tool.1":              `depends: ["app"]`,
	"flaky.1":             `depends: ["lib"] x-ci-accept-failures: ["debian-12"]`,
	"mine.1":              `depends: ["lib"]`,
}

func plan(t *testing.T, pl *Planner, r *gitRepo, base, head string) *Plan {
	t.Helper()
	res, err := Analyse(context.Background(), r.gitDir(), base, head, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pl.Plan(context.Background(), res)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func jobIDs(p *Plan) []string {
	var ids []string
	for _, j := range p.Jobs {
		ids = append(ids, j.ID())
	}
	return ids
}

func TestPlan(t *testing.T) {
	r := newGitRepo(t)
	base := r.commit(baseRepo)
	r.run("checkout", "-q", "-b", "pr")
	head := r.commit(map[string]string{
		"lib.2":        `depends: ["ocaml"] build: [["dune" "build"] ["dune" "runtest"] {with-test}]`,
		"mine.1":       `depends: ["lib" {>= "2"}]`,
		"macos-only.1": `depends: ["lib"] available: os = "macos"`,
		"needs5.1":     `depends: ["lib" "ocaml" {>= "5.0"}]`,
		"app.1":        `synopsis: "An app, better said" depends: ["lib"]`,
	})
	p := plan(t, &Planner{Config: Default()}, r, base, head)
	if p.Failed() {
		t.Fatalf("analysis failed: %v", p.Analysis.Problems)
	}
	want := []string{
		"lib.2,compilers,4.13,build",
		"lib.2,compilers,4.13,tests",
		"lib.2,compilers,4.13,lower-bounds",
		"lib.2,compilers,4.13,revdeps,app.1",
		"lib.2,compilers,4.13,revdeps,flaky.1",
		"lib.2,compilers,4.13,revdeps,tool.1",
		"lib.2,architectures,arm64,build",
		"lib.2,architectures,arm64,tests",
		"mine.1,compilers,4.13,build",
		"mine.1,compilers,4.13,lower-bounds",
		"mine.1,architectures,arm64,build",
	}
	if got := jobIDs(p); !slices.Equal(got, want) {
		t.Errorf("jobs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	t.Run("built packages", func(t *testing.T) {
		var built []string
		for _, b := range p.Built {
			built = append(built, b.String())
		}
		if want := []string{"lib.2", "macos-only.1", "mine.1", "needs5.1"}; !slices.Equal(built, want) {
			t.Errorf("built %v, want %v (app.1 changed its synopsis only)", built, want)
		}
	})
	t.Run("skipped where unavailable or not installable", func(t *testing.T) {
		var skipped []string
		for _, s := range p.Skipped {
			skipped = append(skipped, strings.Join(s.Path, ",")+": "+s.Reason)
		}
		want := []string{
			"macos-only.1,compilers,4.13: not available on debian-12-4.13_amd64 (available: os = \"macos\")",
			"macos-only.1,architectures,arm64: not available on debian-12-4.13_arm64 (available: os = \"macos\")",
			"needs5.1,compilers,4.13: cannot be installed with OCaml 4.13.1 on debian-12-4.13_amd64",
			"needs5.1,architectures,arm64: cannot be installed with OCaml 4.13.1 on debian-12-4.13_arm64",
		}
		if !slices.Equal(skipped, want) {
			t.Errorf("skipped:\n%s\nwant:\n%s", strings.Join(skipped, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("accepted failures", func(t *testing.T) {
		for _, j := range p.Jobs {
			if want := j.Revdep.Name == "flaky"; j.AcceptFailure != want {
				t.Errorf("%s: accept failure %v, want %v", j.ID(), j.AcceptFailure, want)
			}
		}
	})
	t.Run("lanes", func(t *testing.T) {
		for _, j := range p.Jobs {
			if j.Background {
				t.Errorf("%s in the background lane with 3 reverse dependencies", j.ID())
			}
		}
		cfg := Default()
		cfg.BackgroundRevdeps = 2
		for _, j := range plan(t, &Planner{Config: cfg}, r, base, head).Jobs {
			if want := j.Kind == Revdep; j.Background != want {
				t.Errorf("%s: background %v, want %v with more than 2 reverse dependencies", j.ID(), j.Background, want)
			}
		}
	})
	t.Run("tree", func(t *testing.T) {
		tree := p.Tree()
		var labels []string
		for _, n := range tree {
			labels = append(labels, n.Label)
		}
		if !slices.Equal(labels, []string{"lib.2", "mine.1"}) {
			t.Fatalf("tree roots %v", labels)
		}
		revdeps := tree[0].Children[0].Children[0].Children[3]
		if revdeps.Label != "revdeps" || len(revdeps.Children) != 3 || revdeps.Children[0].Job == nil || revdeps.Children[0].Job.ID() != "lib.2,compilers,4.13,revdeps,app.1" {
			t.Errorf("revdeps node %+v", revdeps)
		}
	})
	t.Run("parse job IDs back", func(t *testing.T) {
		for _, j := range p.Jobs {
			back, err := Default().ParseJob(j.ID())
			if err != nil {
				t.Fatal(err)
			}
			if back.ID() != j.ID() || back.Platform != j.Platform || back.Kind != j.Kind || back.Revdep != j.Revdep {
				t.Errorf("%s read back as %+v", j.ID(), back)
			}
		}
	})
}

// TestBadInputFailsOnlyItsPullRequest plans, in one repository with one planner, a
// pull request per kind of bad input, then a good one: each bad one is a failed
// analysis with its reason and no jobs, and the good one is planned as if alone.
func TestBadInputFailsOnlyItsPullRequest(t *testing.T) {
	r := newGitRepo(t)
	base := r.commit(baseRepo)
	tests := []struct {
		name   string
		files  map[string]string
		reason prdiff.Reason
	}{
		{"malformed opam file", map[string]string{"bad.1": `depends: [`}, prdiff.MalformedOpam},
		{"path outside packages", map[string]string{"scripts/x.sh": "echo\n"}, prdiff.UnexpectedPath},
		{"file over the limit", map[string]string{"packages/lib/lib.1/files/big": strings.Repeat("x", prdiff.MaxFileSize+1)}, prdiff.FileTooLarge},
		{"merge conflict", map[string]string{"lib.1": `depends: ["ocaml" {>= "4.08"}]`}, prdiff.MergeConflict},
	}
	pl := &Planner{Config: Default()}
	master := base
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.run("checkout", "-q", "-B", "pr-"+strings.ReplaceAll(tc.name, " ", "-"), base)
			files := map[string]string{"good.1": `depends: ["lib"]`}
			for k, v := range tc.files {
				files[k] = v
			}
			head := r.commit(files)
			if tc.reason == prdiff.MergeConflict {
				r.run("checkout", "-q", "master")
				master = r.commit(map[string]string{"lib.1": `depends: ["ocaml" {>= "4.02"}]`})
			}
			p := plan(t, pl, r, master, head)
			if !p.Failed() || len(p.Jobs) != 0 {
				t.Fatalf("failed %v with %d jobs", p.Failed(), len(p.Jobs))
			}
			if !slices.ContainsFunc(p.Analysis.Problems, func(x prdiff.Problem) bool { return x.Reason == tc.reason }) {
				t.Errorf("problems %v, want a %s", p.Analysis.Problems, tc.reason)
			}
		})
	}
	r.run("checkout", "-q", "-B", "pr-good", master)
	head := r.commit(map[string]string{"good.1": `depends: ["lib"]`})
	p := plan(t, pl, r, master, head)
	want := []string{"good.1,compilers,4.13,build", "good.1,compilers,4.13,lower-bounds", "good.1,architectures,arm64,build"}
	if p.Failed() || !slices.Equal(jobIDs(p), want) {
		t.Errorf("the good pull request: failed %v (%v), jobs %v, want %v", p.Failed(), p.Analysis.Problems, jobIDs(p), want)
	}
}

func TestPlannerUpdatesItsUniverses(t *testing.T) {
	r := newGitRepo(t)
	base := r.commit(baseRepo)
	prs := []struct {
		name  string
		files map[string]string
	}{
		{"a release with tests", map[string]string{"lib.2": `depends: ["ocaml" "alcotest" {with-test}]`}},
		{"a user changes its dependencies", map[string]string{"app.1": `depends: ["lib" {>= "1"} "mine"]`}},
		{"a release that needs OCaml 5", map[string]string{"needs5.1": `depends: ["lib" "ocaml" {>= "5.0"}]`, "lib.3": `depends: ["ocaml"]`}},
		{"a release a user cannot take", map[string]string{"lib.2": `depends: ["ocaml"]`, "tool.1": `depends: ["app" "lib" {< "2"}]`}},
	}
	heads := make([]string, len(prs))
	for i, pr := range prs {
		r.run("checkout", "-q", "-B", fmt.Sprintf("pr%d", i), base)
		heads[i] = r.commit(pr.files)
	}
	shared := &Planner{Config: Default()}
	for i, pr := range prs {
		t.Run(pr.name, func(t *testing.T) {
			got, err := json.Marshal(plan(t, shared, r, base, heads[i]))
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(plan(t, &Planner{Config: Default()}, r, base, heads[i]))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("planned after %d other pull requests:\n%s\nby a new planner:\n%s", i, got, want)
			}
		})
	}
	// One whole universe per platform and flags (debian-12-4.13_amd64 with and without
	// the test dependencies, debian-12-4.13_arm64), for the first pull request.
	if shared.made != 3 {
		t.Errorf("the planner made %d whole universes for %d pull requests, want 3", shared.made, len(prs))
	}
}

// TestPlanHoldsThePlatformsSwitch: on a platform whose switch is the image's
// ocaml-system, what needs another compiler package has no jobs.
func TestPlanHoldsThePlatformsSwitch(t *testing.T) {
	r := newGitRepo(t)
	files := maps.Clone(baseRepo)
	files["ocaml-system.4.13.1"] = `conflict-class: "ocaml-core-compiler"`
	files["ocaml-base-compiler.4.13.1"] = `conflict-class: "ocaml-core-compiler"`
	files["native.1"] = `depends: ["lib" "ocaml-base-compiler"]`
	base := r.commit(files)
	r.run("checkout", "-q", "-b", "pr")
	head := r.commit(map[string]string{
		"lib.2":    `depends: ["ocaml"]`,
		"native.2": `depends: ["ocaml-base-compiler"]`,
	})
	p := plan(t, &Planner{Config: Default()}, r, base, head)
	ids := jobIDs(p)
	tests := []struct {
		job  string
		want bool
	}{
		{"lib.2,compilers,4.13,revdeps,app.1", true},
		{"lib.2,compilers,4.13,revdeps,native.1", false},
		{"native.2,compilers,4.13,build", false},
	}
	for _, tc := range tests {
		t.Run(tc.job, func(t *testing.T) {
			if slices.Contains(ids, tc.job) != tc.want {
				t.Errorf("planned: %v, want %v (jobs %v)", !tc.want, tc.want, ids)
			}
		})
	}
	if !slices.ContainsFunc(p.Skipped, func(s Skip) bool { return s.Path[0] == "native.2" && strings.Contains(s.Reason, "cannot be installed") }) {
		t.Errorf("native.2 is not skipped as not installable: %+v", p.Skipped)
	}
}
