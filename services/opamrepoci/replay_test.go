package opamrepoci

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// snapshotMerge is a merge of the snapshot: the pull request's head merged into base.
type snapshotMerge struct{ commit, base, head string }

// snapshotMerges lists the two-parent merges of the snapshot's master, oldest first.
func snapshotMerges(t testing.TB, gitDir string) []snapshotMerge {
	out, err := exec.Command("git", "--git-dir", gitDir, "rev-list", "--merges", "--parents", "--reverse", "--topo-order", repotest.Master).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ms []snapshotMerge
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			ms = append(ms, snapshotMerge{commit: f[0], base: f[1], head: f[2]})
		}
	}
	return ms
}

// malformedMerges are the merges of the snapshot whose pull requests bring opam
// files opam itself does not parse (opam 2.1's lint: "File format error" at the same
// place), fixed by later commits: their analysis fails with malformed-opam, as
// opam-repository CI's would have.
var malformedMerges = map[string]string{
	"2d0f6bf9cab2": `ocaml-variants.5.4.1+lrgrep: "flags: compiler avoid-version" (fixed by ef36dbff)`,
	"2a5379e7d418": `jext.0.1.0: "{>= "1.2.0"} & {< "3.0.0" }" (fixed by 9b9223c9)`,
}

// replayAllEnv, set to 1, replays every merge of the snapshot; otherwise a sample.
const replayAllEnv = "KILN_OPAMREPOCI_REPLAY_ALL"

// TestReplaySnapshot plans the pull requests of the shared snapshot of
// opam-repository (every merge with KILN_OPAMREPOCI_REPLAY_ALL=1, every 50th
// otherwise): analysis, lint and job plan on the default matrix, no builds. Nothing
// may fail but what the history cannot merge; every job must name itself, read back
// and have a spec and its opam layer (in the full replay, the first job of each kind
// and platform); no reverse dependency may be a package the pull request builds.
// It logs the tally of kinds, problems, lint findings and jobs, and the plan time
// per pull request.
func TestReplaySnapshot(t *testing.T) {
	gitDir := repotest.GitDir(t)
	ms := snapshotMerges(t, gitDir)
	if len(ms) < 780 {
		t.Fatalf("only %d merges in the snapshot", len(ms))
	}
	step := 50
	if os.Getenv(replayAllEnv) == "1" {
		step = 1
	}
	ctx := context.Background()
	cfg := Default()
	pl := &Planner{Config: cfg}
	specs := &Specs{Config: cfg}
	var cur *repository.Repo
	kinds := map[prdiff.Kind]int{}
	problems := map[prdiff.Reason]int{}
	rules := map[string]int{}
	jobKinds := map[Kind]int{}
	var times, cpus []time.Duration
	var jobs []int
	var lintErrors, lintWarnings, planned, withJobs, skipped int
	biggest, slowest := "", ""
	// report logs the tally so far; the plan times only at the end.
	report := func(final bool) {
		sortedJobs := slices.Sorted(slices.Values(jobs))
		ts, cs := slices.Sorted(slices.Values(times)), slices.Sorted(slices.Values(cpus))
		total := 0
		for _, n := range jobs {
			total += n
		}
		pct := func(l []time.Duration, q int) time.Duration { return l[len(l)*q/100].Round(time.Millisecond) }
		t.Logf("%d of %d merges planned (every %d; %s=1 for all)", planned, len(ms), step, replayAllEnv)
		t.Logf("kinds: %v; problems: %v", kinds, problems)
		t.Logf("lint: %d errors, %d warnings; by rule: %s", lintErrors, lintWarnings, topRules(rules, 12))
		t.Logf("jobs: %d in all (%v), %d skipped; %d pull requests with jobs; per pull request median %d, 90th percentile %d, max %d: %s",
			total, jobKinds, skipped, withJobs, sortedJobs[len(sortedJobs)/2], sortedJobs[len(sortedJobs)*9/10], sortedJobs[len(sortedJobs)-1], biggest)
		t.Logf("plan time per pull request (analysis, lint, plan): median %v, 90th percentile %v, max %v: %s; CPU time (git included): median %v, 90th percentile %v, max %v",
			pct(ts, 50), pct(ts, 90), ts[len(ts)-1].Round(time.Millisecond), slowest, pct(cs, 50), pct(cs, 90), cs[len(cs)-1].Round(time.Millisecond))
		if !final {
			t.Logf("(so far)")
		}
	}
	for i := 0; i < len(ms); i += step {
		m := ms[i]
		var err error
		if cur == nil {
			cur, err = repository.LoadGit(ctx, gitDir, m.base)
		} else if cur.Commit != m.base {
			cur, _, err = cur.Update(ctx, gitDir, m.base)
		}
		if err != nil {
			t.Fatal(err)
		}
		start, startCPU := time.Now(), cpuTime()
		res, err := Analyse(ctx, gitDir, m.base, m.head, cur)
		if err != nil {
			t.Fatalf("merge %s: %v", m.commit, err)
		}
		p, err := pl.Plan(ctx, res)
		if err != nil {
			t.Fatalf("merge %s: %v", m.commit, err)
		}
		d, cpu := time.Since(start), cpuTime()-startCPU
		if testing.Verbose() && d > 5*time.Second {
			t.Logf("merge %.12s: %v (%v CPU), %d packages built, %d jobs", m.commit, d.Round(time.Millisecond), cpu.Round(time.Millisecond), len(p.Built), len(p.Jobs))
		}
		cpus = append(cpus, cpu)
		planned++
		for _, pr := range res.Problems {
			problems[pr.Reason]++
			expected := pr.Reason == prdiff.MalformedOpam && malformedMerges[m.commit[:12]] != ""
			if pr.Reason != prdiff.NoMergeBase && pr.Reason != prdiff.UnexpectedPath && !expected {
				t.Errorf("merge %s: %s", m.commit, pr)
			}
		}
		for _, c := range res.Changes {
			kinds[c.Kind]++
		}
		lintErrors += p.Lint.Errors
		lintWarnings += p.Lint.Warnings
		for _, f := range p.Lint.Files {
			for _, x := range f.Findings {
				rules[x.Rule]++
			}
		}
		checkPlan(t, m.commit, p, cfg, specs)
		checkLayers(t, m.commit, pl, gitDir, res, p, step > 1)
		for _, j := range p.Jobs {
			jobKinds[j.Kind]++
		}
		skipped += len(p.Skipped)
		if len(p.Jobs) > 0 {
			withJobs++
		}
		if len(jobs) == 0 || len(p.Jobs) > slices.Max(jobs) {
			biggest = fmt.Sprintf("%.12s (%d packages built, %d jobs)", m.commit, len(p.Built), len(p.Jobs))
		}
		if len(times) == 0 || d > slices.Max(times) {
			slowest = fmt.Sprintf("%.12s (%d packages built, %d jobs)", m.commit, len(p.Built), len(p.Jobs))
		}
		jobs = append(jobs, len(p.Jobs))
		times = append(times, d)
		if testing.Verbose() && planned%100 == 0 {
			report(false)
		}
	}
	report(true)
}

// cpuTime is the CPU time of the process and of the children it waited for.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	var d time.Duration
	for _, r := range []syscall.Rusage{self, children} {
		d += time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return d
}

// checkPlan checks what every plan must hold.
func checkPlan(t *testing.T, merge string, p *Plan, cfg *Config, specs *Specs) {
	t.Helper()
	built := map[string]bool{}
	for _, b := range p.Built {
		built[b.String()] = true
	}
	for _, j := range p.Jobs {
		if !built[j.Package.String()] {
			t.Errorf("merge %.12s: job %s of a package the pull request does not build", merge, j.ID())
		}
		if j.Kind == Revdep && built[j.Revdep.String()] {
			t.Errorf("merge %.12s: job %s tests a package of the pull request as a reverse dependency", merge, j.ID())
		}
		back, err := cfg.ParseJob(j.ID())
		if err != nil || back.Platform != j.Platform || back.Kind != j.Kind || back.Revdep != j.Revdep {
			t.Errorf("merge %.12s: job %s reads back as %+v (%v)", merge, j.ID(), back, err)
		}
		if _, err := specs.Spec(j); err != nil {
			t.Errorf("merge %.12s: %v", merge, err)
		}
	}
}

// checkLayers checks that the jobs of a plan (all, or the first of each kind and
// platform) have their opam layers: a solution with the platform's switch in the
// merged tree.
func checkLayers(t *testing.T, merge string, pl *Planner, gitDir string, res *prdiff.Result, p *Plan, all bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, j := range p.Jobs {
		k := j.Platform + " " + string(j.Kind)
		if seen[k] && !all {
			continue
		}
		seen[k] = true
		if _, err := pl.LayerRequest(context.Background(), gitDir, res, j); err != nil {
			t.Errorf("merge %.12s: %v", merge, err)
		}
	}
}

func topRules(m map[string]int, n int) string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var parts []string
	for i, x := range l {
		if i == n {
			parts = append(parts, fmt.Sprintf("%d more rules", len(l)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", x.k, x.v))
	}
	return strings.Join(parts, ", ")
}

// largestMerge is the merge of the snapshot whose analysis builds the most
// packages, with that number.
func largestMerge(b testing.TB, gitDir string) (snapshotMerge, int) {
	ctx := context.Background()
	var best snapshotMerge
	most := -1
	var cur *repository.Repo
	for _, m := range snapshotMerges(b, gitDir) {
		var err error
		if cur == nil {
			cur, err = repository.LoadGit(ctx, gitDir, m.base)
		} else if cur.Commit != m.base {
			cur, _, err = cur.Update(ctx, gitDir, m.base)
		}
		if err != nil {
			b.Fatal(err)
		}
		res, err := prdiff.Analyse(ctx, gitDir, m.base, m.head, cur, prdiff.Options{NoLint: true})
		if err != nil {
			continue // cut by the shallow history
		}
		n := 0
		for _, c := range res.Changes {
			if c.Built() {
				n++
			}
		}
		if n > most {
			best, most = m, n
		}
	}
	return best, most
}

// BenchmarkPlanLargestPR analyses and plans the snapshot's pull request that builds
// the most packages: with a new planner each time (new-planner: the solver universes
// of the merged tree are made from nothing in each run), and with a planner that has
// the universes of the base already (base-known: as the service's has them after a
// first pull request on that base, or on the one before; they are updated with the
// pull request's packages).
func BenchmarkPlanLargestPR(b *testing.B) {
	gitDir := repotest.GitDir(b)
	m, built := largestMerge(b, gitDir)
	ctx := context.Background()
	base, err := repository.LoadGit(ctx, gitDir, m.base)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		baseKnown bool
	}{{"new-planner", false}, {"base-known", true}} {
		b.Run(tc.name, func(b *testing.B) {
			var p *Plan
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				pl := &Planner{Config: Default()}
				if tc.baseKnown {
					knowBase(pl, base)
				}
				b.StartTimer()
				startCPU := cpuTime()
				res, err := Analyse(ctx, gitDir, m.base, m.head, base)
				if err != nil {
					b.Fatal(err)
				}
				if p, err = pl.Plan(ctx, res); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - startCPU
			}
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			b.ReportMetric(float64(len(p.Built)), "packages-built")
			b.ReportMetric(float64(len(p.Jobs)), "jobs")
			b.ReportMetric(float64(p.Counts()[Revdep]), "revdep-jobs")
			b.Logf("merge %.12s: %d packages built (%d found in the analysis), %d jobs %v, %d skipped", m.commit, len(p.Built), built, len(p.Jobs), p.Counts(), len(p.Skipped))
		})
	}
}

// knowBase makes the planner's universes of the base tree, as planning a pull request
// on it does.
func knowBase(pl *Planner, base *repository.Repo) {
	res := &prdiff.Result{Merged: base.Commit, Repo: base}
	for _, t := range pl.Config.targets() {
		pl.universe(res, t.platform, false)
		if t.revdeps {
			pl.universe(res, t.platform, true)
		}
	}
}

// BenchmarkRevdepsDune lists the reverse dependencies of dune.3.24.0 on the
// snapshot's master as the planner does (revdeps.CI: what opam-repository CI's three
// `opam list --depends-on dune.3.24.0 --coinstallable-with dune.3.24.0
// --all-versions` queries, --depopts, --recursive and --with-test --depopts, list
// together), on Debian 12 amd64: with every OCaml, and with only the image's 4.13.1
// as the planner's universes have it. The universes are made in each run.
func BenchmarkRevdepsDune(b *testing.B) {
	ctx := context.Background()
	r, err := repository.LoadGit(ctx, repotest.GitDir(b), repotest.Master)
	if err != nil {
		b.Fatal(err)
	}
	dune := opam.Package{Name: "dune", Version: "3.24.0"}
	plat := Default().platforms["debian-12-4.13_amd64"]
	anyOCaml := plat
	anyOCaml.Vars = maps.Clone(plat.Vars)
	delete(anyOCaml.Vars, "ocaml:version")
	for _, tc := range []struct {
		name string
		plat matrix.Platform
	}{{"every-ocaml", anyOCaml}, {"ocaml-4.13.1", plat}} {
		b.Run(tc.name, func(b *testing.B) {
			var n int
			startCPU := cpuTime()
			for b.Loop() {
				pl, res := &Planner{Config: Default()}, &prdiff.Result{Merged: repotest.Master, Repo: r}
				list, err := revdeps.CI(ctx, pl.universe(res, tc.plat, false), pl.universe(res, tc.plat, true), dune)
				if err != nil {
					b.Fatal(err)
				}
				n = len(list)
			}
			b.ReportMetric(float64(n), "versions")
			b.ReportMetric((cpuTime()-startCPU).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}
