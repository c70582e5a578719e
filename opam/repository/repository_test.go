package repository_test

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
)

var (
	loadOnce sync.Once
	master   *repository.Repo
	loadErr  error
)

func load(t testing.TB) (string, *repository.Repo) {
	t.Helper()
	git := repotest.GitDir(t)
	loadOnce.Do(func() { master, loadErr = repository.LoadGit(context.Background(), git, repotest.Master) })
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return git, master
}

func TestLoadGitIndexesEveryOpamFile(t *testing.T) {
	git, r := load(t)
	out, err := exec.Command("git", "--git-dir", git, "ls-tree", "-r", "--name-only", repotest.Master, "--", "packages").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(l, "/opam") && strings.Count(l, "/") == 3 {
			want++
		}
	}
	if r.Len() != want || want < 18000 {
		t.Fatalf("indexed %d versions, the tree has %d opam files", r.Len(), want)
	}
	if errs := r.Errors(); len(errs) > 0 {
		t.Errorf("%d files do not parse, first: %v", len(errs), errs[0].Err)
	}
	dune := r.Versions("dune")
	if len(dune) < 20 || !slices.IsSortedFunc(dune, func(a, b *repository.Package) int { return a.Version.Compare(b.Version) }) {
		t.Fatalf("dune versions not sorted or missing: %d", len(dune))
	}
	if got := r.Latest("dune").File.Name(); got != "" && got != "dune" {
		t.Errorf("latest dune names itself %q", got)
	}
	if p := r.Get(opam.Package{Name: "dune", Version: "3.24.0"}); p == nil || p.OID == "" || len(p.Data) == 0 {
		t.Fatalf("dune.3.24.0 missing or empty: %+v", p)
	}
}

func TestLoadDirMatchesLoadGit(t *testing.T) {
	_, r := load(t)
	dir := repotest.Checkout(t)
	d, err := repository.LoadDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != r.Len() {
		t.Fatalf("directory has %d versions, git %d", d.Len(), r.Len())
	}
	d.All(func(p *repository.Package) bool {
		q := r.Get(p.Package)
		if q == nil || string(q.Data) != string(p.Data) || !slices.Equal(q.Extra, p.Extra) {
			t.Fatalf("%s differs between directory and git", p.Package)
		}
		return true
	})
}

// TestUpdateEqualsFreshLoad walks the last merges of the snapshot forward and back
// with Update and compares each result with a fresh load.
func TestUpdateEqualsFreshLoad(t *testing.T) {
	git, r := load(t)
	out, err := exec.Command("git", "--git-dir", git, "rev-list", "--first-parent", "-n", "6", repotest.Master).Output()
	if err != nil {
		t.Fatal(err)
	}
	commits := strings.Fields(string(out))
	cur := r
	for _, c := range commits[1:] {
		next, changes, err := cur.Update(context.Background(), git, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) == 0 {
			t.Fatalf("no change between %s and %s", cur.Commit, c)
		}
		fresh, err := repository.LoadGit(context.Background(), git, c)
		if err != nil {
			t.Fatal(err)
		}
		same(t, next, fresh)
		cur = next
	}
	if cur.Len() == r.Len() && cur.Commit == r.Commit {
		t.Fatal("update did not move")
	}
	back, _, err := cur.Update(context.Background(), git, repotest.Master)
	if err != nil {
		t.Fatal(err)
	}
	same(t, back, r)
}

func same(t *testing.T, a, b *repository.Repo) {
	t.Helper()
	if a.Len() != b.Len() || !slices.Equal(a.Names(), b.Names()) || !slices.Equal(a.Stray, b.Stray) {
		t.Fatalf("%s: %d versions vs %d", b.Commit, a.Len(), b.Len())
	}
	b.All(func(p *repository.Package) bool {
		q := a.Get(p.Package)
		if q == nil || q.OID != p.OID || !slices.Equal(q.Extra, p.Extra) || (q.File == nil) != (p.File == nil) {
			t.Fatalf("%s: %s differs after update", b.Commit, p.Package)
		}
		return true
	})
}

func TestBadCommitIsNamed(t *testing.T) {
	git, _ := load(t)
	_, err := repository.LoadGit(context.Background(), git, "no-such-branch")
	if err == nil || !strings.Contains(err.Error(), "no-such-branch") {
		t.Fatalf("error %v does not name the commit", err)
	}
}

func BenchmarkLoadGit(b *testing.B) {
	git := repotest.GitDir(b)
	for b.Loop() {
		if _, err := repository.LoadGit(context.Background(), git, repotest.Master); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdateOnePR(b *testing.B) {
	git, r := load(b)
	prev, _, err := r.Update(context.Background(), git, repotest.Master+"^1")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := prev.Update(context.Background(), git, repotest.Master); err != nil {
			b.Fatal(err)
		}
	}
}
