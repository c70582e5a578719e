package opamref_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/lint"
	"github.com/kiln-ci/kiln/opam/opamref"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
)

var update = flag.Bool("update", false, "ask the real opam again and rewrite its recorded answers in testdata/ (also: KILN_OPAMREF_UPDATE=1)")

// updating reports whether this run asks opam and rewrites the recorded answers.
func updating() bool { return *update || os.Getenv("KILN_OPAMREF_UPDATE") == "1" }

// answersDir holds opam's recorded answers, one file per opam version and repository
// commit.
const answersDir = "testdata"

var (
	setupOnce sync.Once
	ref       *opamref.Opam
	repo      *repository.Repo
	checkout  string
	answers   *opamref.Answers // recorded by this run (-update), saved by TestMain
	setupErr  error
)

// env gives the repository at master, its checkout and an opam that answers: by
// default from the answers recorded in testdata/ for the installed opam's version and
// the repository's commit (kiln's side is computed anew on every run); with -update
// (or KILN_OPAMREF_UPDATE=1) the real opam, whose answers TestMain then saves.
func env(t testing.TB) (*opamref.Opam, *repository.Repo, string) {
	t.Helper()
	testenv.RequireCommand(t, "opam")
	git := repotest.GitDir(t)
	dir := repotest.Checkout(t)
	cache := testenv.CacheDir(t, "opamref")
	setupOnce.Do(func() {
		ctx := context.Background()
		checkout = dir
		repo, setupErr = repository.LoadGit(ctx, git, repotest.Master)
		if setupErr != nil {
			return
		}
		if updating() {
			ref, setupErr = opamref.Setup(ctx, cache, dir, repotest.Master)
			if setupErr == nil {
				answers = opamref.NewAnswers(ref.Version, repotest.Master)
				ref.Record(answers)
			}
			return
		}
		_, v, err := opamref.Binary(ctx)
		if err != nil {
			setupErr = err
			return
		}
		file := opamref.AnswersFile(answersDir, v, repotest.Master)
		a, err := opamref.LoadAnswers(file, v, repotest.Master)
		if err != nil {
			setupErr = fmt.Errorf("%w\n(no answers of opam %s at commit %s are recorded: run `go test ./opam/opamref -update` to ask opam)", err, v, repotest.Master)
			return
		}
		ref = opamref.Replay(a, dir)
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	return ref, repo, checkout
}

// liveEnv is env with the real opam whatever the mode, for benchmarks that time it.
func liveEnv(b *testing.B) (*opamref.Opam, *repository.Repo, string) {
	b.Helper()
	_, r, dir := env(b)
	o, err := opamref.Setup(context.Background(), testenv.CacheDir(b, "opamref"), dir, repotest.Master)
	if err != nil {
		b.Fatal(err)
	}
	return o, r, dir
}

// TestVersionOrderAgrees compares the order of the versions of every package, as
// `opam list --all --all-versions` prints them, with opam.CompareVersions.
func TestVersionOrderAgrees(t *testing.T) {
	o, r, _ := env(t)
	out, err := o.Query(context.Background(), "list", "-A", "--all-versions", "-s", "--color=never")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[opam.PackageName][]opam.Version{}
	for _, l := range opamref.Lines(out) {
		p, ok := opam.ParsePackage(l)
		if !ok {
			t.Fatalf("opam printed %q", l)
		}
		byName[p.Name] = append(byName[p.Name], p.Version)
	}
	pairs := 0
	for n, vs := range byName {
		ours := slices.Clone(vs)
		slices.SortStableFunc(ours, func(a, b opam.Version) int { return a.Compare(b) })
		if !slices.Equal(ours, vs) {
			t.Errorf("%s: opam orders %v, kiln %v", n, vs, ours)
		}
		for i := range vs {
			for j := i + 1; j < len(vs); j++ {
				pairs++
				if c := vs[i].Compare(vs[j]); c >= 0 {
					t.Errorf("%s: opam puts %s before %s, kiln compares %d", n, vs[i], vs[j], c)
				}
			}
		}
	}
	if len(byName) != len(r.Names()) {
		t.Errorf("opam lists %d names, kiln indexes %d", len(byName), len(r.Names()))
	}
	t.Logf("%d packages, %d ordered pairs of versions agree", len(byName), pairs)
}

var lintHead = regexp.MustCompile(`^(\S.*): (Passed|Warnings|Errors)\.$`)
var lintItem = regexp.MustCompile(`^\s+(warning|error)\s+(\d+):`)

// lintDifferences lists the opam lint checks whose verdicts kiln's lint (in its opam
// 2.1 mode) is known to give differently, with the reason.
var lintDifferences = map[int]string{}

// TestLintAgrees runs `opam lint` on a sample of the repository's files and compares
// the set of warning and error numbers with kiln's lint in its opam 2.1 mode.
func TestLintAgrees(t *testing.T) {
	o, r, dir := env(t)
	var sample []*repository.Package
	all := r.Packages()
	for i := 0; i < len(all); i += len(all) / 300 {
		sample = append(sample, all[i])
	}
	args := []string{"lint"}
	for _, p := range sample {
		args = append(args, filepath.Join(dir, p.Path, "opam"))
	}
	out, err := o.QueryAllowFail(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]int{}
	cur := ""
	for _, l := range strings.Split(string(out), "\n") {
		if m := lintHead.FindStringSubmatch(l); m != nil {
			cur = m[1]
			got[cur] = []int{}
		} else if m := lintItem.FindStringSubmatch(l); m != nil && cur != "" {
			n, _ := strconv.Atoi(m[2])
			got[cur] = append(got[cur], n)
		}
	}
	agree, differ := 0, 0
	for _, p := range sample {
		file := filepath.Join(dir, p.Path, "opam")
		want, ok := got[file]
		if !ok {
			t.Fatalf("opam lint printed no verdict for %s", file)
		}
		ctx := lint.Context{Checks: lint.OpamLint, Opam: "2.1"}
		var ours []int
		for _, f := range lint.LintFile(p.Path+"/opam", p.Data, p.Package, ctx) {
			if n := f.OpamNumber(); n > 0 && lintDifferences[n] == "" {
				ours = append(ours, n)
			}
		}
		var theirs []int
		for _, n := range want {
			if lintDifferences[n] == "" {
				theirs = append(theirs, n)
			}
		}
		slices.Sort(ours)
		slices.Sort(theirs)
		ours, theirs = slices.Compact(ours), slices.Compact(theirs)
		if slices.Equal(ours, theirs) {
			agree++
		} else {
			differ++
			t.Errorf("%s: opam lint %v, kiln %v", p.Package, theirs, ours)
		}
	}
	t.Logf("opam lint verdicts on %d files: %d agree, %d differ", len(sample), agree, differ)
}

// installabilityDifferences are the latest versions whose installability kiln and
// opam judge differently, with the reason.
var installabilityDifferences = map[string]string{}

// TestInstallabilityAgrees compares, for the newest version of every package, kiln's
// solver verdict with `opam list --installable` on the host platform (Debian 12,
// x86_64, opam 2.1, an empty switch).
func TestInstallabilityAgrees(t *testing.T) {
	testenv.Short(t, "opam takes many minutes to list installable packages the first time")
	o, r, _ := env(t)
	out, err := o.Query(context.Background(), "list", "--installable", "--all-versions", "-s", "--color=never")
	if err != nil {
		t.Fatal(err)
	}
	inst := map[string]bool{}
	for _, l := range opamref.Lines(out) {
		inst[l] = true
	}
	u := solver.NewUniverse(r, hostPlatform(t, o))
	agree, explained := 0, 0
	var differ []string
	for _, n := range r.Names() {
		p := r.Latest(n)
		_, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{exact(p.Package)}, AnySolution: true})
		ours, theirs := err == nil, inst[p.Package.String()]
		if ours == theirs {
			agree++
			continue
		}
		if why := installabilityDifferences[p.Package.String()]; why != "" {
			explained++
			continue
		}
		differ = append(differ, fmt.Sprintf("%s: opam %v, kiln %v (%v)", p.Package, theirs, ours, err))
	}
	for _, d := range differ {
		t.Error(d)
	}
	t.Logf("installability of %d latest versions: %d agree, %d differ with a known reason, %d unexplained", len(r.Names()), agree, explained, len(differ))
}

func exact(p opam.Package) opam.Atom {
	return opam.Atom{Name: p.Name, Constraint: opam.AtomOf(opam.Constraint{Op: opam.OpEq, Version: p.Version})}
}

// hostPlatform reads the global variables of the opam root.
func hostPlatform(t *testing.T, o *opamref.Opam) solver.Platform {
	p := solver.Platform{}
	for _, v := range []string{"arch", "os", "os-distribution", "os-family", "os-version", "opam-version"} {
		out, err := o.Query(context.Background(), "var", v)
		if err != nil {
			t.Fatal(err)
		}
		p[v] = strings.TrimSpace(string(out))
	}
	return p
}

// revdepsDifferences are sample packages whose reverse dependencies differ from
// opam's for a known reason.
var revdepsDifferences = map[string]string{
	// only opam: frama-c.20.0
	"mlgmpidl.1.3.0": "frama-c.20.0 needs why3 1.2.x, whose depopts say ocamlgraph {< 1.8.8} while frama-c " +
		"needs ocamlgraph >= 1.8.8: kiln's solver enforces depopt constraints on installed packages (as " +
		"opam-0install does for the CI services); opam's coinstallability check ignores them",
	// only opam: ozulip.0.1
	"ez_api.3.0.0": "with the test dependencies of every package (opam list --with-test), the solve of " +
		"{ez_api.3.0.0, ozulip.0.1} exhausts kiln's search budget; opam's SAT solver finds a solution",
}

// TestRevdepsAgree compares reverse dependencies with opam's for 100 packages, in the
// four variants opam-repository CI uses (plain, --recursive, --depopts, --with-test),
// each variant on a quarter of the sample. The sample takes every k-th package (by
// name) among those with between 1 and 150 candidate reverse dependencies: opam needs
// minutes per query for packages such as dune, which the benchmarks cover.
func TestRevdepsAgree(t *testing.T) {
	testenv.Short(t, "opam takes tens of seconds per reverse-dependency query the first time")
	o, r, _ := env(t)
	plat := hostPlatform(t, o)
	u := solver.NewUniverse(r, plat)
	ut := solver.NewUniverseFlags(r, plat, solver.Flags{WithTest: true})
	var eligible []opam.Package
	for _, n := range r.Names() {
		p := r.Latest(n).Package
		cs, err := revdeps.Candidates(u, p, revdeps.Options{Recursive: true, Depopts: true})
		if err == nil && len(cs) >= 1 && len(cs) <= 150 {
			eligible = append(eligible, p)
		}
	}
	if len(eligible) < 100 {
		t.Fatalf("only %d eligible packages", len(eligible))
	}
	step := len(eligible) / 100
	type query struct {
		pkg           opam.Package
		rec, dep, tst bool
		out           []byte
		err           error
	}
	qs := make([]*query, 100)
	for i := range qs {
		qs[i] = &query{pkg: eligible[i*step], rec: i%4 == 1, dep: i%4 == 2, tst: i%4 == 3}
	}
	// opam is single-threaded and slow here: ask it several questions at once.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, q := range qs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			q.out, q.err = o.Query(context.Background(), opamref.RevdepsArgs(q.pkg.String(), q.rec, q.dep, q.tst)...)
		})
	}
	wg.Wait()
	agree := 0
	for _, q := range qs {
		p, rec, dep, tst := q.pkg, q.rec, q.dep, q.tst
		uu := u
		if tst {
			uu = ut
		}
		if q.err != nil {
			t.Fatal(q.err)
		}
		theirs := opamref.Lines(q.out)
		got, err := revdeps.Of(context.Background(), uu, p, revdeps.Options{Recursive: rec, Depopts: dep})
		if err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, q := range got {
			ours = append(ours, q.String())
		}
		sort.Strings(theirs)
		sort.Strings(ours)
		variant := fmt.Sprintf("%s recursive=%v depopts=%v with-test=%v", p, rec, dep, tst)
		if slices.Equal(ours, theirs) {
			agree++
			continue
		}
		if why := revdepsDifferences[p.String()]; why != "" {
			t.Logf("%s differs (known: %s)", variant, why)
			continue
		}
		t.Errorf("%s:\n  only opam: %v\n  only kiln: %v", variant, minus(theirs, ours), minus(ours, theirs))
	}
	t.Logf("reverse dependencies of 100 packages: %d agree with opam", agree)
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// TestMain saves the answers opam gave in an -update run. A run limited by -run keeps
// the recorded answers it did not ask again; a full run writes exactly those it asked.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if answers != nil && code == 0 {
		if err := saveAnswers(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func saveAnswers() error {
	file := opamref.AnswersFile(answersDir, answers.OpamVersion, answers.Commit)
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		if old, err := opamref.LoadAnswers(file, answers.OpamVersion, answers.Commit); err == nil {
			answers.Merge(old)
		}
	}
	if err := answers.Save(file); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "opamref: wrote %d answers of opam %s to %s\n", answers.Len(), answers.OpamVersion, file)
	return nil
}
