package opamrepoci

import (
	"path/filepath"
	"testing"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/prdiff"
)

func TestBaseJob(t *testing.T) {
	lib2, _ := opam.ParsePackage("lib.2")
	app1, _ := opam.ParsePackage("app.1")
	kinds := map[string]prdiff.Kind{"lib.2": prdiff.NewRelease, "lib.1": prdiff.Significant}
	job := func(pkg opam.Package, k Kind, revdep opam.Package) Job {
		j := Job{Package: pkg, Group: Compilers, Label: "4.13", Platform: "p", Kind: k, Revdep: revdep}
		j.Path = []string{pkg.String(), "compilers", "4.13", string(k)}
		if revdep.Name != "" {
			j.Path = append(j.Path, revdep.String())
		}
		return j
	}
	lib1, _ := opam.ParsePackage("lib.1")
	for _, tc := range []struct {
		name string
		job  Job
		want string // the base job's ID, "" for none
	}{
		{"a reverse dependency: its tests without the release", job(lib2, Revdep, app1), "app.1,compilers,4.13,tests"},
		{"a new release has no counterpart", job(lib2, Tests, opam.Package{}), ""},
		{"a changed package: the same job", job(lib1, LowerBounds, opam.Package{}), "lib.1,compilers,4.13,lower-bounds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := BaseJob(tc.job, kinds)
			got := ""
			if ok {
				got = b.ID()
			}
			if got != tc.want {
				t.Errorf("BaseJob(%s) = %q, want %q", tc.job.ID(), got, tc.want)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	failed := func(v Verdict, accept bool) Outcome {
		return Outcome{State: forge.Failed, Verdict: v, Job: Job{AcceptFailure: accept}}
	}
	passed := Outcome{State: forge.Passed}
	for _, tc := range []struct {
		name    string
		outs    []Outcome
		skipped int
		state   forge.State
		title   string
	}{
		{"only new failures fail", []Outcome{failed(NewFailure, false), failed(BaseFailure, false), passed}, 1,
			forge.Failed, "1 job failed, 1 skipped, 1 passed (1 also failing on master)"},
		{"failures on master too pass", []Outcome{failed(BaseFailure, false), passed, passed}, 0,
			forge.Passed, "0 jobs failed, 0 skipped, 2 passed (1 also failing on master)"},
		{"accepted failures do not count", []Outcome{failed(NewFailure, true), passed}, 0,
			forge.Passed, "0 jobs failed, 0 skipped, 1 passed (1 allowed to fail)"},
		{"a failure being compared keeps it running", []Outcome{failed(Comparing, false), passed}, 0,
			forge.Running, "0 jobs failed, 0 skipped, 1 passed (1 running)"},
		{"infrastructure errors", []Outcome{{State: forge.Error}, passed}, 0,
			forge.Error, "0 jobs failed, 0 skipped, 1 passed (1 errored)"},
		{"nothing to build", nil, 3, forge.Passed, "0 jobs failed, 3 skipped, 0 passed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Count(tc.outs, tc.skipped)
			if c.State() != tc.state || c.Title() != tc.title {
				t.Errorf("%s %q, want %s %q", c.State(), c.Title(), tc.state, tc.title)
			}
		})
	}
}

func TestLatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bases.json")
	l := &latches{path: path}
	for _, tc := range []struct {
		name, key, current, want string
		keep                     []string
	}{
		{"first sight latches the base", "pr h1", "b1", "b1", []string{"pr h1"}},
		{"a new base does not move it", "pr h1", "b2", "b1", []string{"pr h1"}},
		{"a new head takes the new base", "pr h2", "b2", "b2", []string{"pr h2"}},
		{"a forgotten head latches anew", "pr h1", "b3", "b3", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := l.base(tc.key, tc.current); got != tc.want {
				t.Errorf("base(%s, %s) = %s, want %s", tc.key, tc.current, got, tc.want)
			}
			if err := l.keep(tc.keep); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("kept across a restart", func(t *testing.T) {
		l.base("pr h9", "b9")
		if err := l.keep([]string{"pr h9"}); err != nil {
			t.Fatal(err)
		}
		again := &latches{path: path}
		if got := again.base("pr h9", "b10"); got != "b9" {
			t.Errorf("after a restart the base of h9 is %s, want b9", got)
		}
	})
}
