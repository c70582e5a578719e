package healthcheck

import (
	"context"
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/solver"
)

// snapshotSwitches are the switches the full-scale figures are measured on.
var snapshotSwitches = []Switch{
	{Name: "4.14", Compiler: "ocaml-base-compiler.4.14.2"},
	{Name: "5.2", Compiler: "ocaml-base-compiler.5.2.1"},
	{Name: "5.3", Compiler: "ocaml-base-compiler.5.3.0"},
}

func snapshotRepo(t testing.TB) *repository.Repo {
	t.Helper()
	git := repotest.GitDir(t)
	r, err := repository.LoadGit(context.Background(), git, repotest.Master)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func snapshotConfig(sws ...Switch) *Config {
	cfg := &Config{Switches: sws}
	cfg.Platform.Name = "debian-12-4.13_amd64"
	return cfg
}

// TestPlanMatchesPlainSolves checks the plan of a sample of the snapshot against a
// solve of each package on its own, in a universe of its own per switch: the same
// packages not available, with the same message, and each job installing the
// selection of its solve.
func TestPlanMatchesPlainSolves(t *testing.T) {
	repo := snapshotRepo(t)
	for _, c := range []struct {
		name string
		all  bool
		nth  int
	}{
		{"latest versions", false, 100},
		{"all versions", true, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			pkgs := Sample(Select(repo, c.all), c.nth)
			cfg := snapshotConfig(snapshotSwitches[0], snapshotSwitches[2])
			plan, err := (&Planner{Config: cfg}).Plan(context.Background(), 1, repo, pkgs)
			if err != nil {
				t.Fatal(err)
			}
			jobs := map[string]Job{}
			for _, j := range plan.Jobs {
				jobs[j.Key()] = j
			}
			na := map[string]string{}
			for _, r := range plan.Results {
				if r.State == NotAvailable {
					na[LogKey(r.Switch, r.Package)] = r.Message
				}
			}
			plat, err := cfg.platform()
			if err != nil {
				t.Fatal(err)
			}
			built, missing := 0, 0
			for _, sw := range cfg.Switches {
				u := solver.NewUniverse(repo, SwitchPlatform(plat, sw))
				comp, _ := opam.ParsePackage(sw.Compiler)
				for _, p := range pkgs {
					key := LogKey(sw.Name, p.String())
					sel, err := u.Solve(context.Background(), solver.Request{Install: []opam.Atom{exactAtom(p), exactAtom(comp)}})
					var f *solver.Failure
					switch {
					case errors.As(err, &f):
						missing++
						want := firstLine(f.Explanation)
						if f.GaveUp {
							want = "the solver gave up: " + want
						}
						if got, ok := na[key]; !ok || got != want {
							t.Errorf("%s: planned %v (not available: %v, %q), want not available: %q", key, jobs[key].Packages(), ok, got, want)
						}
					case err != nil:
						t.Fatalf("%s: %v", key, err)
					default:
						built++
						var want []string
						for _, s := range sel.Packages {
							want = append(want, s.String())
						}
						slices.Sort(want)
						got := slices.Sorted(slices.Values(jobs[key].Packages()))
						if !slices.Equal(got, want) {
							t.Errorf("%s: planned %v, want %v", key, got, want)
						}
					}
				}
			}
			if len(plan.Jobs) != built || len(na) != missing {
				t.Errorf("planned %d jobs and %d not available, plain solves %d and %d", len(plan.Jobs), len(na), built, missing)
			}
			if built == 0 || missing == 0 {
				t.Errorf("the sample has %d to build and %d not available: it checks little", built, missing)
			}
		})
	}
}

// TestPlanFullScale plans every package of the snapshot, latest versions and all
// versions, on three switches, and logs the counts by state, the time and the
// memory (the figures of docs/health-check.md). It takes minutes: it runs only with
// KILN_HEALTHCHECK_FULL_PLAN=1.
func TestPlanFullScale(t *testing.T) {
	if os.Getenv("KILN_HEALTHCHECK_FULL_PLAN") != "1" {
		t.Skip("the full-scale plan takes minutes: set KILN_HEALTHCHECK_FULL_PLAN=1 to run it")
	}
	repo := snapshotRepo(t)
	for _, c := range []struct {
		name string
		all  bool
	}{{"latest versions", false}, {"all versions", true}} {
		t.Run(c.name, func(t *testing.T) {
			pkgs := Select(repo, c.all)
			runtime.GC()
			var peak uint64
			start := time.Now()
			pl := &Planner{}
			for _, sw := range snapshotSwitches {
				pl.Config = snapshotConfig(sw)
				t0 := time.Now()
				p, err := pl.Plan(context.Background(), 1, repo, pkgs)
				if err != nil {
					t.Fatal(err)
				}
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				na := len(p.Results) - len(p.Jobs)
				t.Logf("%s (%s): %d to build, %d not available, planned in %s", sw.Name, sw.Compiler, len(p.Jobs), na, time.Since(t0).Round(time.Millisecond))
				if len(p.Jobs) == 0 || na == 0 || len(p.Results) != len(pkgs) {
					t.Errorf("%s: %d jobs and %d not available for %d packages", sw.Name, len(p.Jobs), na, len(pkgs))
				}
			}
			t.Logf("%d package versions on %d switches in %s; heap in use at most %d MiB", len(pkgs), len(snapshotSwitches), time.Since(start).Round(time.Millisecond), peak>>20)
		})
	}
}
