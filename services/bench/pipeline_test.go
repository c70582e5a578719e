package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/internal/notify"
)

func TestTasks(t *testing.T) {
	repo := forge.RepoID{Forge: "gitea", Owner: "o", Name: "lib"}
	other := forge.RepoID{Forge: "gitea", Owner: "o", Name: "other"}
	refs := []forge.Ref{
		{Repo: repo, Name: "refs/heads/main", Commit: "m"},
		{Repo: repo, Name: "refs/pull/3/head", PR: 3, Commit: "p"},
		{Repo: other, Name: "refs/pull/1/head", PR: 1, Commit: "q"},
	}
	cases := []struct {
		name   string
		commit string
		base   string
	}{
		{"a branch has no base", "m", ""},
		{"a PR runs against its target's head", "p", "m"},
		{"a PR of a repository whose target is not followed", "q", ""},
	}
	tasks := Tasks(refs, "main")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if tasks[i].Ref.Commit != c.commit || tasks[i].Base != c.base {
				t.Errorf("task %+v, want base %q", tasks[i], c.base)
			}
		})
	}
}

// TestPipeline follows a plain git repository: main's heads are benchmarked as they
// come, a branch not listed in bench.branches is not, and a re-run runs a commit again.
func TestPipeline(t *testing.T) {
	testenv.RequireCommand(t, "git", "sh", "od")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work := t.TempDir()
	gitT(t, work, "init", "-q", "-b", "main")
	files := map[string]string{"speed": "100", "bench.sh": benchScript, ConfigFile: "bench:\n  command: sh bench.sh\n  repeats: 3\n"}
	first := commitFiles(t, work, files, "one")
	gitT(t, work, "checkout", "-q", "-b", "other")
	commitFiles(t, work, map[string]string{"n": "1"}, "other")
	gitT(t, work, "checkout", "-q", "main")

	state := t.TempDir()
	eng, err := current.Open(current.Config{StateDir: filepath.Join(state, "engine"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	st, err := store.Open(ctx, filepath.Join(state, "bench.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	api, err := NewAPI(API{Store: st, Logger: quiet}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	src := &forges.Git{Repos: []forges.GitRepo{{Owner: "local", Name: "lib", Remote: work}}, Every: 200 * time.Millisecond}
	set := &forges.Set{}
	set.Add("git", src)
	alerts := &chanAlerter{c: make(chan notify.Message, 4)}
	p := &Pipeline{Forges: set, Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{}), API: api,
		Runner: HostRunner{}, WorkDir: filepath.Join(state, "work"), Hunt: &Hunt{Store: st, Alert: alerts, Logger: quiet}}
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, p.Term()) }()
	defer func() { cancel(); <-done }()

	waitRuns := func(t *testing.T, n int) []store.Run {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			runs, err := st.Runs(ctx, store.Filter{Repo: "git/local/lib", State: store.Passed})
			if err != nil {
				t.Fatal(err)
			}
			if len(runs) >= n {
				return runs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d passed runs, want %d", len(runs), n)
			}
		}
	}
	t.Run("main's head", func(t *testing.T) {
		runs := waitRuns(t, 1)
		if runs[0].Commit != first || runs[0].Branch != "main" || runs[0].Env != "bench" || runs[0].Job == "" {
			t.Errorf("run %+v", runs[0])
		}
	})
	var second string
	t.Run("a new commit on main", func(t *testing.T) {
		second = commitFiles(t, work, map[string]string{"speed": "101"}, "two")
		src.Refresh()
		runs := waitRuns(t, 2)
		if runs[1].Commit != second {
			t.Errorf("second run of %s, want %s", runs[1].Commit, second)
		}
	})
	t.Run("the branch not listed has no run", func(t *testing.T) {
		runs, _ := st.Runs(ctx, store.Filter{Repo: "git/local/lib", Branch: "other"})
		if len(runs) != 0 {
			t.Errorf("runs of other: %+v", runs)
		}
	})
	var latest string
	t.Run("a regression on main is bisected and alerted", func(t *testing.T) {
		for i := range 3 {
			commitFiles(t, work, map[string]string{"n": fmt.Sprint(i)}, "more history")
			src.Refresh()
			waitRuns(t, 3+i)
		}
		bad := commitFiles(t, work, map[string]string{"speed": "130"}, "slower")
		latest = commitFiles(t, work, map[string]string{"README": "x"}, "readme")
		src.Refresh()
		select {
		case m := <-alerts.c:
			if len(m.Fields) == 0 || m.Fields[0].Value != bad || !strings.Contains(m.Text, "suite/sort/time") {
				t.Errorf("alert %+v, want the first bad commit %s", m, bad)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("no alert")
		}
	})
	t.Run("re-run of the head", func(t *testing.T) {
		// Once its job (its run, then the bisection) has ended.
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			done, err := eng.Query(current.Query{Op: "bench-run", KeyContains: latest, States: []current.JobState{current.JobOK, current.JobFailed}})
			if err == nil && len(done) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the job of %s did not end: %v", latest, err)
			}
		}
		n, err := p.Rerun(eng, forge.RepoID{Forge: "git", Owner: "local", Name: "lib"}, latest)
		if err != nil || n != 1 {
			t.Fatalf("Rerun started %d, %v", n, err)
		}
		runs := waitRuns(t, 7)
		n = 0
		for _, r := range runs {
			if r.Commit == latest {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d runs of %s, want 2 (the first and the re-run)", n, latest)
		}
	})
}

// chanAlerter hands the alerts sent to a channel.
type chanAlerter struct{ c chan notify.Message }

func (a *chanAlerter) Send(m notify.Message) bool { a.c <- m; return true }
