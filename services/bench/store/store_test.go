package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/database/databasetest"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
)

func results(t *testing.T, out string) []benchfmt.Benchmark {
	t.Helper()
	o, err := benchfmt.Parse(strings.NewReader(out), benchfmt.Limits{})
	if err != nil || len(o.Errors) > 0 {
		t.Fatalf("test results do not parse: %v %v", err, o.Errors)
	}
	return o.Benchmarks
}

func bench(metrics ...string) string {
	return `{"name": "b", "results": [{"name": "t", "metrics": [` + strings.Join(metrics, ",") + `]}]}`
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// suite runs the same checks on a store and returns the transcript of its answers.
func suite(t *testing.T, s *Store, reopen func() *Store) string {
	ctx := context.Background()
	var transcript strings.Builder
	record := func(label string, v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(&transcript, "%s: %s\n", label, b)
	}
	created := t0.Add(time.Hour)
	add := func(t *testing.T, r Run) int64 {
		r.Created = created
		id, err := s.AddRun(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	t.Run("runs on main with metrics", func(t *testing.T) {
		for i := range 5 {
			id := add(t, Run{Repo: "o/r", Branch: "main", Commit: fmt.Sprintf("c%d", i), CommitTime: t0.Add(time.Duration(i) * time.Minute), Env: "x86"})
			err := s.PutMetrics(ctx, id, Head, results(t, bench(
				fmt.Sprintf(`{"name": "time", "value": [%d, %d], "units": "ms", "trend": "lower-is-better"}`, 10+i, 12+i),
				fmt.Sprintf(`{"name": "gc/minor", "value": {"min": 1, "avg": %d, "max": 9}}`, 2+i))))
			if err != nil {
				t.Fatal(err)
			}
			state := Passed
			if i == 3 {
				state = Failed
			}
			if err := s.Finish(ctx, id, state, "", Machine{CPU: "test cpu", Kernel: "6.1"}); err != nil {
				t.Fatal(err)
			}
		}
		runs, err := s.Runs(ctx, Filter{Repo: "o/r", Branch: "main"})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 5 || runs[0].Commit != "c0" || runs[3].State != Failed || runs[4].Machine.CPU != "test cpu" {
			t.Errorf("runs: %+v", runs)
		}
		for i := range runs {
			runs[i].Finished = time.Time{}
		}
		record("runs", runs)
	})
	t.Run("series skips failed runs and keeps the newest", func(t *testing.T) {
		pts, err := s.Series(ctx, Filter{Repo: "o/r", Branch: "main", Env: "x86", Limit: 3}, Key{"b", "t", "time"})
		if err != nil {
			t.Fatal(err)
		}
		var commits []string
		for _, p := range pts {
			commits = append(commits, p.Commit)
		}
		// the 3 newest passed runs: c1, c2 and c4 (c3 failed)
		if strings.Join(commits, " ") != "c1 c2 c4" {
			t.Errorf("series commits %v, want c1 c2 c4", commits)
		}
		if len(pts) == 3 && (pts[2].Central != 15 || pts[2].Lo != 14 || pts[2].Hi != 16 || pts[2].Units != "ms") {
			t.Errorf("last point %+v", pts[2])
		}
		record("series", pts)
	})
	t.Run("range by commit time", func(t *testing.T) {
		pts, err := s.Series(ctx, Filter{Repo: "o/r", From: t0.Add(time.Minute), To: t0.Add(2 * time.Minute)}, Key{"b", "t", "gc/minor"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != 2 || pts[0].Central != 3 || pts[0].Lo != 1 || pts[0].Hi != 9 {
			t.Errorf("range points %+v", pts)
		}
		record("range", pts)
	})
	t.Run("pull request with an interleaved base", func(t *testing.T) {
		spans := []LogSpan{{Arm: Base, Line: 1, LogLine: 12}, {Line: 1, LogLine: 20}, {Arm: Base, Line: 4, LogLine: 30}}
		id := add(t, Run{Repo: "o/r", PR: 7, Commit: "p1", Base: "c4", CommitTime: t0.Add(time.Hour), Env: "x86", Job: "j7", Log: spans})
		if err := s.PutMetrics(ctx, id, Base, results(t, bench(`{"name": "time", "value": [15, 16]}`))); err != nil {
			t.Fatal(err)
		}
		if err := s.PutMetrics(ctx, id, Head, results(t, bench(`{"name": "time", "value": [30, 31]}`))); err != nil {
			t.Fatal(err)
		}
		// sent again: replaces the arm's metrics
		if err := s.PutMetrics(ctx, id, Head, results(t, bench(`{"name": "time", "value": [20, 21]}`))); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(ctx, id, Passed, "", Machine{}); err != nil {
			t.Fatal(err)
		}
		pts, err := s.Series(ctx, Filter{Repo: "o/r", PR: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != 2 || pts[0].Arm != Head || pts[0].Central != 20.5 || pts[1].Arm != Base || pts[1].Central != 15.5 {
			t.Errorf("PR points %+v", pts)
		}
		// Each arm printed its metric on its line 1: the head's at the job log's line 20, the base's at 12.
		for _, p := range pts {
			want := map[Arm]int{Head: 20, Base: 12}[p.Arm]
			if p.Job != "j7" || len(p.LogLines) != 1 || p.LogLines[0].First != want {
				t.Errorf("%s point of the PR: job %q, log lines %+v, want line %d", p.Arm, p.Job, p.LogLines, want)
			}
		}
		own, err := s.RunPoints(ctx, id)
		if err != nil || len(own) != 2 || own[0].Arm != Head || own[1].Arm != Base {
			t.Errorf("points of the PR run: %+v, %v", own, err)
		}
		onMain, err := s.Runs(ctx, Filter{Repo: "o/r", PR: -1})
		if err != nil {
			t.Fatal(err)
		}
		if len(onMain) != 5 {
			t.Errorf("%d branch runs, want 5", len(onMain))
		}
		run, err := s.Run(ctx, id)
		if err != nil || run.Job != "j7" || !slices.Equal(run.Log, spans) {
			t.Errorf("PR run read back: job %q, log spans %+v (%v), want %+v", run.Job, run.Log, err, spans)
		}
		record("pr", pts)
		record("pr run log", run.Log)
	})
	t.Run("metric keys", func(t *testing.T) {
		keys, err := s.Keys(ctx, Filter{Repo: "o/r", Branch: "main"})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 || keys[0].String() != "b/t/gc/minor" || keys[1].Name != "time" {
			t.Errorf("keys %v", keys)
		}
		record("keys", keys)
	})
	t.Run("re-run of a failed run", func(t *testing.T) {
		runs, _ := s.Runs(ctx, Filter{Repo: "o/r", State: Failed})
		if len(runs) != 1 {
			t.Fatalf("%d failed runs, want 1", len(runs))
		}
		if err := s.SetState(ctx, runs[0].ID, Queued); err != nil {
			t.Fatal(err)
		}
		r, err := s.Run(ctx, runs[0].ID)
		if err != nil || r.State != Queued || !r.Finished.IsZero() {
			t.Errorf("after re-run: %+v %v", r, err)
		}
		record("rerun", r.State)
	})
	t.Run("unknown runs", func(t *testing.T) {
		for name, err := range map[string]error{
			"run":    func() error { _, err := s.Run(ctx, 999); return err }(),
			"finish": s.Finish(ctx, 999, Passed, "", Machine{}),
			"state":  s.SetState(ctx, 999, Running),
		} {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s of run 999: %v, want ErrNotFound", name, err)
			}
		}
	})
	t.Run("repositories", func(t *testing.T) {
		repos, err := s.Repos(ctx)
		if err != nil || len(repos) != 1 || repos[0].Repo != "o/r" || repos[0].Runs != 6 {
			t.Errorf("Repos() = %+v, %v", repos, err)
		}
		record("repos", repos)
	})
	t.Run("tokens", func(t *testing.T) {
		tok, err := s.AddToken(ctx, "o/r", "ci")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			repo, token string
			ok          bool
		}{{"o/r", tok, true}, {"o/other", tok, false}, {"o/r", tok + "x", false}, {"o/r", "", false}} {
			ok, err := s.CheckToken(ctx, c.repo, c.token)
			if err != nil || ok != c.ok {
				t.Errorf("CheckToken(%s, %.8s…) = %v, %v; want %v", c.repo, c.token, ok, err, c.ok)
			}
			record("token", ok)
		}
	})
	t.Run("reopen keeps everything", func(t *testing.T) {
		s2 := reopen()
		defer s2.Close()
		runs, err := s2.Runs(ctx, Filter{Repo: "o/r"})
		if err != nil || len(runs) != 6 {
			t.Errorf("after reopening: %d runs, %v", len(runs), err)
		}
	})
	return transcript.String()
}

func TestRunLogLine(t *testing.T) {
	// An interleaved run's log: base lines 1-3 at 12-14, head lines 1-5 at 20-24, base
	// lines 4- at 30-.
	run := Run{Log: []LogSpan{{Arm: Base, Line: 1, LogLine: 12}, {Line: 1, LogLine: 20}, {Arm: Base, Line: 4, LogLine: 30}}}
	for _, c := range []struct {
		name string
		arm  Arm
		line int
		want int
	}{
		{"first line of the base", Base, 1, 12},
		{"last line of the base's first span", Base, 3, 14},
		{"the base's second span", Base, 5, 31},
		{"the head", Head, 3, 22},
		{"before any span", Head, 0, 0},
		{"an arm without spans", Arm("other"), 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := run.LogLine(c.arm, c.line); got != c.want {
				t.Errorf("LogLine(%q, %d) = %d, want %d", c.arm, c.line, got, c.want)
			}
		})
	}
	t.Run("no spans", func(t *testing.T) {
		if got := (Run{}).LogLine(Head, 3); got != 0 {
			t.Errorf("LogLine without spans = %d, want 0", got)
		}
	})
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	backends := []struct {
		name   string
		target func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "bench.db") }},
		{"postgres", func(t *testing.T) string { return databasetest.Postgres(t) }},
	}
	answers := map[string]string{}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			target := b.target(t)
			open := func() *Store {
				s, err := Open(ctx, target)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			s := open()
			defer s.Close()
			if s.Backend() != b.name {
				t.Fatalf("backend %s, want %s", s.Backend(), b.name)
			}
			answers[b.name] = suite(t, s, open)
			if strings.Count(answers[b.name], "\n") < 10 {
				t.Errorf("the suite recorded too few answers:\n%s", answers[b.name])
			}
		})
	}
	if len(answers) == 2 && answers["sqlite"] != answers["postgres"] {
		t.Errorf("SQLite and PostgreSQL answer differently:\nsqlite:\n%s\npostgres:\n%s", answers["sqlite"], answers["postgres"])
	}
}
