package prdiff_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/opamref"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

type merge struct{ commit, base, head string }

// merges lists the merges of the snapshot (pull-request merges, and one merge of
// a branch into a pull request), parents before children.
func merges(t testing.TB, git string) []merge {
	out, err := exec.Command("git", "--git-dir", git, "log", "--merges", "--reverse", "--topo-order",
		"--format=%H %P%x09%s", repotest.Master).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ms []merge
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		ids, subject, _ := strings.Cut(l, "\t")
		f := strings.Fields(ids)
		if len(f) != 3 {
			continue
		}
		_ = subject
		ms = append(ms, merge{f[0], f[1], f[2]})
	}
	return ms
}

func TestAnalyseLastPR(t *testing.T) {
	git := repotest.GitDir(t)
	ms := merges(t, git)
	if len(ms) == 0 {
		t.Fatal("no merges")
	}
	m := ms[len(ms)-1]
	res, err := prdiff.Analyse(context.Background(), git, m.base, m.head, nil, prdiff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) == 0 {
		t.Fatalf("the last PR changed nothing: %+v", res)
	}
}

// TestReplayEveryPR analyses every pull-request merge of the snapshot: the merge of
// head into base must give the tree of the real merge commit, every changed package
// is classified and linted, an insignificant change must leave the package's
// dependencies, conflicts and availability as they were, and opam lint (2.1) must
// agree with kiln's lint on every changed opam file.
func TestReplayEveryPR(t *testing.T) {
	testenv.Short(t, "replays 789 pull requests")
	git := repotest.GitDir(t)
	ms := merges(t, git)
	if len(ms) < 780 {
		t.Fatalf("only %d pull-request merges found", len(ms))
	}
	ctx := context.Background()
	cur, err := repository.LoadGit(ctx, git, ms[0].base)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[prdiff.Kind]int{}
	unexpected, findings, treeDiff, shallow := 0, 0, 0, 0
	type linted struct {
		pkg  opam.Package
		data []byte
	}
	var files []linted
	for _, m := range ms {
		if cur.Commit != m.base {
			if cur, _, err = cur.Update(ctx, git, m.base); err != nil {
				t.Fatal(err)
			}
		}
		res, err := prdiff.Analyse(ctx, git, m.base, m.head, cur, prdiff.Options{})
		if errors.Is(err, prdiff.ErrNoMergeBase) {
			shallow++
			continue
		}
		if err != nil {
			t.Fatalf("PR merged in %s: %v", m.commit, err)
		}
		tree, err := exec.Command("git", "--git-dir", git, "rev-parse", m.commit+"^{tree}").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(tree)) != res.Merged {
			treeDiff++
		}
		next, _, err := cur.Update(ctx, git, res.Merged)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Changes {
			counts[c.Kind]++
			findings += len(c.Lint)
			old, now := cur.Get(c.Package), next.Get(c.Package)
			switch c.Kind {
			case prdiff.NewPackage, prdiff.NewRelease:
				if old != nil || now == nil {
					t.Errorf("%s: %s but before=%v after=%v", c.Package, c.Kind, old != nil, now != nil)
				}
			case prdiff.Deleted:
				if old == nil || now != nil {
					t.Errorf("%s: deleted but before=%v after=%v", c.Package, old != nil, now != nil)
				}
			case prdiff.Insignificant:
				if a, b := semantics(old), semantics(now); a != b {
					t.Errorf("%s: insignificant change %v alters %q into %q", c.Package, c.Fields, a, b)
				}
			}
			if now != nil && now.File != nil {
				files = append(files, linted{c.Package, now.Data})
			}
		}
		unexpected += len(res.Unexpected)
		cur = next
	}
	t.Logf("%d merges: %d cut by the shallow history, %d analysed: %v; %d unexpected paths; %d lint findings; %d merges differ from the real merge tree",
		len(ms), shallow, len(ms)-shallow, counts, unexpected, findings, treeDiff)
	if shallow > len(ms)/10 {
		t.Errorf("%d merges have no merge base", shallow)
	}
	if treeDiff > 0 {
		t.Errorf("%d merges differ from the merge commits", treeDiff)
	}

	// opam lint on every changed opam file, in one run.
	testenv.RequireCommand(t, "opam")
	o, err := opamref.Setup(ctx, testenv.CacheDir(t, "opamref"), repotest.Checkout(t), repotest.Master)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(testenv.CacheDir(t, "prdiff-lint"), repotest.Master)
	args := []string{"lint"}
	for i, f := range files {
		p := filepath.Join(dir, strconv.Itoa(i), string(f.pkg.Name), f.pkg.String(), "opam")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := o.QueryAllowFail(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	verdicts := parseLint(string(out))
	agree := 0
	for i, f := range files {
		p := filepath.Join(dir, strconv.Itoa(i), string(f.pkg.Name), f.pkg.String(), "opam")
		theirs, ok := verdicts[p]
		if !ok {
			t.Fatalf("no opam lint verdict for %s", p)
		}
		var ours []int
		for _, x := range lint.LintFile(p, f.data, f.pkg, lint.Context{Checks: lint.OpamLint, Opam: "2.1"}) {
			if n := x.OpamNumber(); n > 0 {
				ours = append(ours, n)
			}
		}
		slices.Sort(ours)
		ours = slices.Compact(ours)
		if slices.Equal(ours, theirs) {
			agree++
		} else if why := lintKnown[f.pkg.String()]; why != "" {
			t.Logf("%s: opam lint %v, kiln %v: known difference: %s", f.pkg, theirs, ours, why)
		} else {
			t.Errorf("%s: opam lint %v, kiln %v", f.pkg, theirs, ours)
		}
	}
	t.Logf("opam lint on %d changed files: %d agree", len(files), agree)
}

// lintKnown are the changed files on which opam 2.1's lint and kiln's differ, with
// the reason.
var lintKnown = map[string]string{
	"snoke.0.3": "opam 2.1 rejects the unquoted integer in `\"bogue\" {<= 20250815}` " +
		"(error 3, expected version-expr); kiln's parser reads an integer there and its lint " +
		"does not flag it (asked of the lint in notes/requests-for-opam.md)",
}

var lintHead = regexp.MustCompile(`^(\S.*): (Passed|Warnings|Errors)\.$`)
var lintItem = regexp.MustCompile(`^\s+(warning|error)\s+(\d+):`)

func parseLint(out string) map[string][]int {
	got := map[string][]int{}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if m := lintHead.FindStringSubmatch(l); m != nil {
			cur = m[1]
			got[cur] = []int{}
		} else if m := lintItem.FindStringSubmatch(l); m != nil && cur != "" {
			n, _ := strconv.Atoi(m[2])
			got[cur] = append(got[cur], n)
		}
	}
	for k, v := range got {
		slices.Sort(v)
		got[k] = slices.Compact(v)
	}
	return got
}

// semantics renders what of a package can affect a build: dependencies, conflicts,
// availability, commands and sources.
func semantics(p *repository.Package) string {
	if p == nil || p.File == nil {
		return "<none>"
	}
	f := p.File
	var b strings.Builder
	for _, name := range []string{"depends", "depopts", "conflicts", "available", "build", "install", "run-test", "conflict-class", "flags", "patches", "substs", "extra-files", "pin-depends", "depexts", "build-env", "setenv"} {
		if v, ok := f.Field(name); ok {
			fmt.Fprintf(&b, "%s: %s\n", name, v.String())
		}
	}
	if u, err := f.URL(); err == nil && u != nil {
		fmt.Fprintf(&b, "url: %s %v\n", u.Src, u.Checksums)
	}
	return b.String()
}

func BenchmarkAnalyseOnePR(b *testing.B) {
	git := repotest.GitDir(b)
	out, err := exec.Command("git", "--git-dir", git, "rev-parse", repotest.Master+"^1", repotest.Master+"^2").Output()
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(out))
	base, err := repository.LoadGit(context.Background(), git, f[0])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := prdiff.Analyse(context.Background(), git, f[0], f[1], base, prdiff.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
