package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/bench/store"
)

func TestBackfill(t *testing.T) {
	testenv.RequireCommand(t, "git", "sh", "od")
	ctx := context.Background()
	work := gittest.NewRepo(t)
	var commits []string
	for i, kiln := range []string{
		"",                                 // c0: not benchmarked yet
		"bench:\n  command: sh bench.sh\n", // c1
		"bench:\n  command: sh bench.sh\n  repeats: 2\n", // c2
		"bench:\n  command: sh bench.sh; exit 1\n",       // c3: fails after printing
	} {
		files := map[string]string{"speed": "100", "bench.sh": benchScript, "n": fmt.Sprint(i)}
		if kiln != "" {
			files[".kiln.yml"] = kiln
		}
		commits = append(commits, work.Commit(fmt.Sprintf("c%d", i), files))
	}
	root := work.Git("rev-list", "--max-parents=0", "HEAD")
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "bench.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	api, err := NewAPI(API{Store: st, Logger: quiet}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b := &Backfill{API: api, GitDir: work.Dir, Repo: "git/local/lib", Branch: "main"}
	cases := []struct {
		name                          string
		rng                           string
		ran, present, skipped, failed int
	}{
		{"first pass", root + "^!", 0, 0, 1, 0},
		{"the rest", commits[0] + "..main", 3, 0, 0, 1},
		{"again: nothing left but the failed one", root + "~0..main", 1, 2, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, err := b.Run(ctx, c.rng)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Ran) != c.ran || len(rep.Present) != c.present || len(rep.Skipped) != c.skipped || len(rep.Failed) != c.failed {
				t.Errorf("report %+v, want ran %d present %d skipped %d failed %d", rep, c.ran, c.present, c.skipped, c.failed)
			}
		})
	}
	t.Run("runs stored with each commit's repeats", func(t *testing.T) {
		runs, _ := st.Runs(ctx, store.Filter{Repo: "git/local/lib", Branch: "main"})
		pts, _ := st.Series(ctx, store.Filter{Repo: "git/local/lib", Branch: "main"}, store.Key{Benchmark: "suite", Test: "sort", Name: "time"})
		samples := map[string]int{}
		for _, p := range pts {
			samples[p.Commit] = len(p.Value.Points())
		}
		if len(runs) != 4 || samples[commits[1]] != 5 || samples[commits[2]] != 2 {
			t.Errorf("%d runs, samples per commit %v", len(runs), samples)
		}
	})
}
