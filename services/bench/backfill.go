package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/services/bench/store"
)

// Backfill benchmarks past commits of a branch that have no run yet, oldest first,
// with the bench section each commit's .kiln.yml has.
type Backfill struct {
	API    *API
	GitDir string // a clone holding the commits
	Repo   string // FORGE/OWNER/NAME, as the runs are stored
	Branch string
	Env    string
	CPUs   string
	Log    io.Writer
}

// BackfillReport says what a backfill did with each commit of the range.
type BackfillReport struct {
	Ran     []int64  `json:"ran"`     // the runs made
	Present []string `json:"present"` // commits that had a passed run already
	Skipped []string `json:"skipped"` // commits without a bench section
	Failed  []string `json:"failed"`  // commits whose run failed (stored as failed runs)
}

// Run backfills the commits of rng (a git range, A..B), following first parents.
func (b *Backfill) Run(ctx context.Context, rng string) (BackfillReport, error) {
	var rep BackfillReport
	repo := repoDir(b.GitDir)
	out, err := repo.git(ctx, "rev-list", "--reverse", "--first-parent", rng)
	if err != nil {
		return rep, err
	}
	runs, err := b.API.Store.Runs(ctx, store.Filter{Repo: b.Repo, Env: b.Env, PR: -1, State: store.Passed, Limit: 100000})
	if err != nil {
		return rep, err
	}
	have := map[string]bool{}
	for _, r := range runs {
		have[r.Commit] = true
	}
	log := b.Log
	if log == nil {
		log = io.Discard
	}
	for _, commit := range strings.Fields(out) {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if have[commit] {
			rep.Present = append(rep.Present, commit)
			continue
		}
		file, err := repo.git(ctx, "show", commit+":"+ConfigFile)
		cfg, ok, perr := ParseConfig([]byte(file))
		if err != nil || perr != nil || !ok {
			fmt.Fprintf(log, "%.12s: no usable bench section in %s, skipped\n", commit, ConfigFile)
			rep.Skipped = append(rep.Skipped, commit)
			continue
		}
		when, err := repo.git(ctx, "show", "-s", "--format=%cI", commit)
		if err != nil {
			return rep, err
		}
		t, _ := time.Parse(time.RFC3339, strings.TrimSpace(when))
		dir, err := repo.worktree(ctx, commit)
		if err != nil {
			return rep, err
		}
		fmt.Fprintf(log, "%.12s: %s, %d repeats\n", commit, cfg.Command, cfg.Repeats)
		o := Run(ctx, Job{Dir: dir, Command: cfg.Command, Env: cfg.Env, Repeats: cfg.Repeats, Timeout: time.Duration(cfg.Timeout), CPUs: b.CPUs}, log)
		repo.removeWorktree(dir)
		resp, err := b.API.Record(ctx, store.Run{Repo: b.Repo, Branch: b.Branch, Env: b.Env, Commit: commit, CommitTime: t}, o)
		if err != nil {
			return rep, err
		}
		rep.Ran = append(rep.Ran, resp.Run)
		if o.Err != nil || resp.Metrics == 0 {
			rep.Failed = append(rep.Failed, commit)
		}
	}
	return rep, nil
}
