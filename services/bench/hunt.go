package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/internal/notify"
)

// Alerter sends a message (services/internal/notify.Notifier).
type Alerter interface {
	Send(m notify.Message) bool
}

// Hunt finds the first bad commit of a regression on a branch, by bisecting the
// commits since the last good run with interleaved runs of each probed commit against
// the good one, and alerts.
type Hunt struct {
	Store *store.Store
	// GitDir is a clone of the repository holding the branch's commits.
	GitDir string
	Job    Job // Command, Repeats, Timeout, CPUs, Env of the probes
	// Runner runs the probes (default HostRunner).
	Runner  Runner
	Options detect.Options
	Alert   Alerter
	BaseURL string
	Logger  *slog.Logger
}

// Found is a hunt's outcome: the regressed metrics and the first bad commit.
type Found struct {
	detect.Bisection
	Metrics []string `json:"metrics"`
}

// OnBranch hunts the regressions of c, a judged branch run, if it has any: the range
// is from the branch's previous passed run to c's commit.
func (h *Hunt) OnBranch(ctx context.Context, c Comparison) (*Found, error) {
	var keys []store.Key
	var changes []float64 // the regression of each key
	var names []string
	for _, r := range c.Rows {
		if r.Regression {
			keys = append(keys, r.Key)
			changes = append(changes, r.Verdict.Change)
			names = append(names, fmt.Sprintf("%s %+.1f %%", r.Key, 100*r.Verdict.Change))
		}
	}
	if c.Run.PR > 0 || len(keys) == 0 {
		return nil, nil
	}
	runs, err := h.Store.Runs(ctx, store.Filter{Repo: c.Run.Repo, Branch: c.Run.Branch, Env: c.Run.Env, PR: -1, State: store.Passed, To: c.Run.CommitTime})
	if err != nil {
		return nil, err
	}
	good := ""
	for _, r := range runs {
		if r.ID != c.Run.ID && r.Commit != c.Run.Commit {
			good = r.Commit
		}
	}
	if good == "" {
		return nil, fmt.Errorf("hunt %s: no earlier passed run of %s to start from", c.Run.Commit, c.Run.Branch)
	}
	out, err := repoDir(h.GitDir).git(ctx, "rev-list", "--reverse", "--first-parent", good+".."+c.Run.Commit)
	if err != nil {
		return nil, err
	}
	commits := append([]string{good}, strings.Fields(out)...)
	goodDir, err := repoDir(h.GitDir).worktree(ctx, good)
	if err != nil {
		return nil, err
	}
	defer repoDir(h.GitDir).removeWorktree(goodDir)
	probe := func(ctx context.Context, commit string) (bool, error) {
		dir, err := repoDir(h.GitDir).worktree(ctx, commit)
		if err != nil {
			return false, err
		}
		defer repoDir(h.GitDir).removeWorktree(dir)
		job := h.Job
		job.Dir, job.BaseDir = dir, goodDir
		runner := h.Runner
		if runner == nil {
			runner = HostRunner{}
		}
		o := runner.Run(ctx, job, nil)
		if o.Err != nil {
			return false, o.Err
		}
		for i, k := range keys {
			hm, ok1 := o.Head.Find(k.Benchmark, k.Test, k.Name)
			bm, ok2 := o.Base.Find(k.Benchmark, k.Test, k.Name)
			if !ok1 || !ok2 {
				continue
			}
			// A commit is bad when it carries most of the regression hunted, not
			// when it differs from the good one by any significant amount: a
			// small earlier change is not the regression's first bad commit.
			v := detect.Interleaved(bm.Value.Points(), hm.Value.Points(), detect.Noise{}, h.Options)
			if v.Regression(hm.Trend) && math.Abs(v.Change) >= math.Abs(changes[i])/2 {
				return true, nil
			}
		}
		return false, nil
	}
	b, err := detect.Bisect(ctx, commits, probe)
	if err != nil {
		return nil, err
	}
	found := &Found{Bisection: b, Metrics: names}
	if h.Logger != nil {
		h.Logger.Warn("bench regression", "repo", c.Run.Repo, "branch", c.Run.Branch, "first_bad", b.FirstBad, "probes", len(b.Probed))
	}
	if h.Alert != nil {
		h.Alert.Send(notify.Message{
			Title: fmt.Sprintf("%s: benchmark regression on %s", c.Run.Repo, c.Run.Branch),
			Text:  strings.Join(names, "; "),
			Fields: []notify.Field{
				{Name: "first bad commit", Value: b.FirstBad},
				{Name: "last good commit", Value: b.LastGood},
				{Name: "environment", Value: c.Run.Env},
				{Name: "commits probed", Value: fmt.Sprint(len(b.Probed))},
			},
			Link:     fmt.Sprintf("%s%s/r/%s?branch=%s", h.BaseURL, Prefix, c.Run.Repo, c.Run.Branch),
			Severity: notify.Warning,
			Time:     time.Now(),
		})
	}
	return found, nil
}

// repoDir is a git clone, with the commands the service runs in it.
type repoDir string

func (d repoDir) git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", string(d)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// worktree checks commit out in a new temporary folder.
func (d repoDir) worktree(ctx context.Context, commit string) (string, error) {
	dir, err := os.MkdirTemp("", "kiln-bench-")
	if err != nil {
		return "", err
	}
	dir = filepath.Join(dir, "src")
	if _, err := d.git(ctx, "worktree", "add", "-q", "--detach", dir, commit); err != nil {
		os.RemoveAll(filepath.Dir(dir))
		return "", err
	}
	return dir, nil
}

func (d repoDir) removeWorktree(dir string) {
	_, _ = d.git(context.Background(), "worktree", "remove", "--force", dir)
	os.RemoveAll(filepath.Dir(dir))
}
