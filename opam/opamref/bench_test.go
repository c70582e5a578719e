package opamref_test

import (
	"context"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/opamref"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/opam/repository/repotest"
	"github.com/kiln-ci/kiln/opam/revdeps"
	"github.com/kiln-ci/kiln/opam/solver"
)

// BenchmarkLoadIndex loads and indexes the whole repository: kiln from git (no
// checkout), opam with `opam admin list` in a checkout (which reads every opam file).
func BenchmarkLoadIndex(b *testing.B) {
	o, _, dir := liveEnv(b)
	git := repotest.GitDir(b)
	b.Run("kiln-git", func(b *testing.B) {
		for b.Loop() {
			if _, err := repository.LoadGit(context.Background(), git, repotest.Master); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kiln-dir", func(b *testing.B) {
		for b.Loop() {
			if _, err := repository.LoadDir(context.Background(), dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kiln-universe", func(b *testing.B) {
		r, err := repository.LoadGit(context.Background(), git, repotest.Master)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			solver.NewUniverse(r, solver.DebianAMD64())
		}
	})
	b.Run("opam-admin-list", func(b *testing.B) {
		for b.Loop() {
			if _, err := o.Run(context.Background(), dir, "admin", "list", "-s"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUpdateOnePR updates the index from master's first parent to master (the
// last pull request of the snapshot).
func BenchmarkUpdateOnePR(b *testing.B) {
	_, r, _ := env(b)
	git := repotest.GitDir(b)
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

// BenchmarkRevdepsDune finds the recursive reverse dependencies of dune.3.24.0:
// kiln's dependency graph alone, kiln with the coinstallability filter, and opam's
// `opam list --depends-on dune.3.24.0 --recursive --all-versions` (opam's
// --coinstallable-with did not finish in 15 minutes here).
func BenchmarkRevdepsDune(b *testing.B) {
	o, r, _ := liveEnv(b)
	u := solver.NewUniverse(r, solver.DebianAMD64())
	dune := opam.Package{Name: "dune", Version: "3.24.0"}
	revdeps.Candidates(u, dune, revdeps.Options{}) // builds the reverse index once
	var n int
	b.Run("kiln-graph", func(b *testing.B) {
		for b.Loop() {
			cs, err := revdeps.Candidates(u, dune, revdeps.Options{Recursive: true})
			if err != nil {
				b.Fatal(err)
			}
			n = len(cs)
		}
		b.ReportMetric(float64(n), "versions")
	})
	b.Run("kiln-coinstallable", func(b *testing.B) {
		for b.Loop() {
			l, err := revdeps.Of(context.Background(), u, dune, revdeps.Options{Recursive: true})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(l)), "versions")
		}
	})
	b.Run("opam-graph", func(b *testing.B) {
		for b.Loop() {
			out, err := o.Run(context.Background(), "", "list", "-s", "--depends-on", "dune.3.24.0", "--recursive", "--all-versions")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(opamref.Lines(out))), "versions")
		}
	})
}

// BenchmarkSolveLatest solves the newest version of every package alone (kiln), and a
// sample of them with `opam install --dry-run` in an empty switch.
func BenchmarkSolveLatest(b *testing.B) {
	o, r, _ := liveEnv(b)
	u := solver.NewUniverse(r, solver.DebianAMD64())
	b.Run("kiln-every-package", func(b *testing.B) {
		for b.Loop() {
			var times []time.Duration
			start := time.Now()
			for _, n := range r.Names() {
				p := r.Latest(n)
				t0 := time.Now()
				u.Solve(context.Background(), solver.Request{Install: []opam.Atom{exact(p.Package)}})
				times = append(times, time.Since(t0))
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds()), "median-µs")
			b.ReportMetric(time.Since(start).Seconds(), "total-s")
		}
	})
	b.Run("opam-sample", func(b *testing.B) {
		var sample []string
		for _, n := range []opam.PackageName{"dune", "lwt", "cohttp-lwt-unix", "irmin", "ppxlib"} {
			sample = append(sample, r.Latest(n).Package.String())
		}
		for b.Loop() {
			for _, p := range sample {
				cmd := exec.Command(o.Bin, "install", "--dry-run", "-y", p)
				cmd.Env = append(cmd.Environ(), "OPAMROOT="+o.Root, "OPAMROOTISOK=1", "OPAMSWITCH=empty", "OPAMCOLOR=never")
				if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "install") {
					b.Fatalf("%s: %v: %s", p, err, out)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*len(sample)), "ms/solve")
	})
}
