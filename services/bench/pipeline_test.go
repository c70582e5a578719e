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
	"github.com/kiln-ci/kiln/git/gittest"
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
	work := gittest.NewRepo(t)
	files := map[string]string{"speed": "100", "bench.sh": benchScript, ConfigFile: "bench:\n  command: sh bench.sh\n  repeats: 3\n"}
	first := work.Commit("one", files)
	work.Git("checkout", "-q", "-b", "other")
	work.Commit("other", map[string]string{"n": "1"})
	work.Git("checkout", "-q", "main")

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
	src := &forges.Git{Repos: []forges.GitRepo{{Owner: "local", Name: "lib", Remote: work.Dir}}, Every: 200 * time.Millisecond}
	set := &forges.Set{}
	set.Add("git", src)
	alerts := &chanAlerter{c: make(chan notify.Message, 4)}
	p := &Pipeline{Forges: set, Mirrors: git.NewMirrors(filepath.Join(state, "mirrors"), git.MirrorsOptions{}), API: api,
		Runner: HostRunner{}, WorkDir: filepath.Join(state, "work"), Hunt: &Hunt{Store: st, Alert: alerts, Logger: quiet}, Logs: eng}
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
	t.Run("each metric's lines are placed in the job's log", func(t *testing.T) {
		run := waitRuns(t, 1)[0]
		ch, err := eng.ReadLog(run.Job, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		log := strings.Split(string(ch.Data), "\n")
		pts, err := st.RunPoints(ctx, run.ID)
		if err != nil || len(pts) == 0 {
			t.Fatalf("points of run %d: %v, %v", run.ID, pts, err)
		}
		for _, p := range pts {
			if p.Job != run.Job || len(p.LogLines) != len(p.Lines) || len(p.LogLines) == 0 {
				t.Errorf("%s: job %q, output lines %v, log lines %v", p.Key, p.Job, p.Lines, p.LogLines)
				continue
			}
			for _, l := range p.LogLines {
				if l.First < 1 || l.First > len(log) || !strings.Contains(log[l.First-1], `"name": "`+p.Name+`"`) {
					t.Errorf("%s placed on log line %d of %d, which does not print it:\n%s", p.Key, l.First, len(log), ch.Data)
				}
			}
		}
	})
	var second string
	t.Run("a new commit on main", func(t *testing.T) {
		second = work.Commit("two", map[string]string{"speed": "101"})
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
			work.Commit("more history", map[string]string{"n": fmt.Sprint(i)})
			src.Refresh()
			waitRuns(t, 3+i)
		}
		bad := work.Commit("slower", map[string]string{"speed": "130"})
		latest = work.Commit("readme", map[string]string{"README": "x"})
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
		waitJobEnded(t, eng, latest)
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
	t.Run("a scheduled run of main's head", func(t *testing.T) {
		scheduledHead := work.Commit("nightly", map[string]string{ConfigFile: "bench:\n  command: sh bench.sh\n  repeats: 3\n  schedule: 1h\n"})
		src.Refresh()
		runs := waitRuns(t, 8)
		waitJobEnded(t, eng, scheduledHead)
		p.runDue(eng, time.Now().Add(30*time.Minute), quiet)
		p.runDue(eng, time.Now().Add(61*time.Minute), quiet)
		runs = waitRuns(t, len(runs)+1)
		if last := runs[len(runs)-1]; last.Commit != scheduledHead || runs[len(runs)-2].Commit != scheduledHead {
			t.Errorf("the last runs are of %s and %s, want two of %s", runs[len(runs)-2].Commit, last.Commit, scheduledHead)
		}
	})
}

// waitJobEnded waits for the end of the benchmark job of commit.
func waitJobEnded(t *testing.T, eng *current.Engine, commit string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		done, err := eng.Query(current.Query{Op: "bench-run", KeyContains: commit, States: []current.JobState{current.JobOK, current.JobFailed}})
		if err == nil && len(done) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job of %s did not end: %v", commit, err)
		}
	}
}

// chanAlerter hands the alerts sent to a channel.
type chanAlerter struct{ c chan notify.Message }

func (a *chanAlerter) Send(m notify.Message) bool { a.c <- m; return true }

func TestTaskKeyLabels(t *testing.T) {
	repo := forge.RepoID{Forge: "gitea", Owner: "o", Name: "lib"}
	pr := func(labels ...string) Task {
		return Task{Ref: forge.Ref{Repo: repo, Name: "refs/pull/3/head", PR: 3, Commit: "p", Labels: labels}, Base: "m"}
	}
	cases := []struct {
		name string
		a, b Task
		same bool
	}{
		{"the same labels in another order", pr("benchmark", "ci"), pr("ci", "benchmark"), true},
		{"a label added runs the PR again", pr(), pr("benchmark"), false},
		{"a label removed runs it again", pr("benchmark", "ci"), pr("ci"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.a.key() == c.b.key(); got != c.same {
				t.Errorf("keys %q and %q: same %v, want %v", c.a.key(), c.b.key(), got, c.same)
			}
		})
	}
}

func TestScheduleDue(t *testing.T) {
	cfg := func(s string) Config {
		c, _, err := ParseConfig([]byte("bench:\n  schedule: \"" + s + "\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	repo := forge.RepoID{Forge: "git", Owner: "local", Name: "lib"}
	main1 := forge.Ref{Repo: repo, Name: "refs/heads/main", Commit: "a"}
	main2 := forge.Ref{Repo: repo, Name: "refs/heads/main", Commit: "b"}
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	p := &Pipeline{}
	steps := []struct {
		name string
		note *forge.Ref // noted at now with config
		cfg  Config
		now  time.Time
		want []string // commits due at now
	}{
		{name: "noted every 2h", note: &main1, cfg: cfg("2h"), now: t0},
		{name: "not due after 1h", now: t0.Add(time.Hour)},
		{name: "due after 2h", now: t0.Add(2 * time.Hour), want: []string{"a"}},
		{name: "not due again at once", now: t0.Add(2*time.Hour + time.Minute)},
		{name: "the same head noted again keeps its time", note: &main1, cfg: cfg("2h"), now: t0.Add(3 * time.Hour)},
		{name: "due 2h after the last run", now: t0.Add(4 * time.Hour), want: []string{"a"}},
		{name: "a new head counts from its run", note: &main2, cfg: cfg("2h"), now: t0.Add(5 * time.Hour)},
		{name: "not due at the old head's time", now: t0.Add(6 * time.Hour)},
		{name: "the new head is due", now: t0.Add(7 * time.Hour), want: []string{"b"}},
		{name: "a cron expression", note: &main2, cfg: cfg("0 3 * * *"), now: t0.Add(8 * time.Hour)},
		{name: "due at 3:00", now: time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC), want: []string{"b"}},
		{name: "the schedule removed", note: &main2, cfg: Config{}, now: time.Date(2026, 12, 4, 4, 0, 0, 0, time.UTC)},
		{name: "never due", now: time.Date(2026, 12, 9, 3, 0, 0, 0, time.UTC)},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.note != nil {
				p.noteSchedule(*s.note, s.cfg, s.now)
			}
			var got []string
			for _, r := range p.due(s.now) {
				got = append(got, r.Commit)
			}
			if strings.Join(got, " ") != strings.Join(s.want, " ") {
				t.Errorf("due at %s: %v, want %v", s.now, got, s.want)
			}
		})
	}
}

func TestNotBenchmarked(t *testing.T) {
	parse := func(s string) Config {
		c, _, err := ParseConfig([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	always, label, never := parse("bench:\n"), parse("bench:\n  pull-requests: label\n"), parse("bench:\n  pull-requests: never\n")
	pr := func(labels ...string) forge.Ref { return forge.Ref{Name: "refs/pull/3/head", PR: 3, Labels: labels} }
	cases := []struct {
		name    string
		cfg     Config
		ref     forge.Ref
		skipped bool
	}{
		{"a PR, always", always, pr(), false},
		{"a PR with the label", label, pr("ci", "benchmark"), false},
		{"a PR without the label", label, pr("ci"), true},
		{"a PR with the label, never", never, pr("benchmark"), true},
		{"main", always, forge.Ref{Name: "refs/heads/main"}, false},
		{"a branch not listed", always, forge.Ref{Name: "refs/heads/dev"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if why := notBenchmarked(c.cfg, true, c.ref); (why != "") != c.skipped {
				t.Errorf("not benchmarked because %q, want skipped %v", why, c.skipped)
			}
		})
	}
}
