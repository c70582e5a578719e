package healthcheck

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/database"
	"github.com/kiln-ci/kiln/internal/database/databasetest"
)

func TestMain(m *testing.M) { databasetest.Main(m) }

// openTestStore opens a store in a fresh database of backend b, its tables prefixed
// as in a database the services share.
func openTestStore(t *testing.T, b database.Backend) *Store {
	t.Helper()
	s, err := OpenStoreAt(context.Background(), databasetest.Target(t, b), "healthcheck_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eachBackend runs f as a subtest per backend with a fresh store.
func eachBackend(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Helper()
	for _, b := range []database.Backend{database.SQLite, database.Postgres} {
		t.Run(string(b), func(t *testing.T) { f(t, openTestStore(t, b)) })
	}
}

func TestStoreRuns(t *testing.T) {
	eachBackend(t, testStoreRuns)
}

func testStoreRuns(t *testing.T, s *Store) {
	ctx := context.Background()
	start := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return start.Add(time.Hour) }
	switches := []Switch{{Name: "5.2", Compiler: "ocaml-base-compiler.5.2.0", BuildWith: BuildWithOpam}, {Name: "4.14", Compiler: "ocaml-base-compiler.4.14.2"}}
	first := &Run{Repository: "https://x/opam-repository", Commit: "c1", Started: start, Switches: switches}
	if _, err := s.CreateRun(ctx, first); err != nil {
		t.Fatal(err)
	}
	var planned []Result
	for _, p := range []string{"a.1", "b.2", "c.1.0", "d.1"} {
		for _, sw := range switches {
			planned = append(planned, Result{Run: first.ID, Package: p, Switch: sw.Name, State: Pending, Maintainers: []string{"m@x"}, Revdeps: 2})
		}
	}
	planned[6].State, planned[6].Kind = NotAvailable, KindSolver
	if err := s.PutResults(ctx, planned); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRunStatus(ctx, first.ID, RunRunning, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.PutResults(ctx, []Result{
		{Run: first.ID, Package: "a.1", Switch: "5.2", State: Good, Duration: 3 * time.Second, Log: LogRef{Key: LogKey("5.2", "a.1"), JobID: "j1"}},
		{Run: first.ID, Package: "b.2", Switch: "5.2", State: Bad, Kind: KindBuild, Lines: []string{"l1", "l2"}},
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("progress while running", func(t *testing.T) {
		r, err := s.Run(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Progress.Total != 8 || r.Progress.Done != 3 {
			t.Errorf("progress %+v, want 3/8", r.Progress)
		}
		// two builds in an hour: five more take two and a half hours from now
		if want := start.Add(time.Hour + 150*time.Minute); !r.Progress.ETA.Equal(want) {
			t.Errorf("ETA %v, want %v", r.Progress.ETA, want)
		}
		if r.Counts[Good] != 1 || r.Counts[Bad] != 1 || r.Counts[NotAvailable] != 1 || r.BySwitch["4.14"][Pending] != 4 {
			t.Errorf("counts %v by switch %v", r.Counts, r.BySwitch)
		}
		if !slices.Equal([]string{r.Switches[0].Name, r.Switches[1].Name}, []string{"5.2", "4.14"}) {
			t.Errorf("switches %+v", r.Switches)
		}
	})
	t.Run("no latest while running", func(t *testing.T) {
		r, err := s.Latest(ctx)
		if err != nil || r != nil {
			t.Errorf("Latest = %v, %v; want none", r, err)
		}
		cur, err := s.Current(ctx)
		if err != nil || len(cur) != 1 || cur[0].ID != first.ID {
			t.Errorf("Current = %v, %v", cur, err)
		}
	})
	t.Run("results by query", func(t *testing.T) {
		for _, c := range []struct {
			name string
			q    ResultQuery
			want []string
		}{
			{"switch", ResultQuery{Switch: "5.2"}, []string{"a.1", "b.2", "c.1.0", "d.1"}},
			{"name", ResultQuery{Package: "c"}, []string{"c.1.0", "c.1.0"}},
			{"a name is not a pattern", ResultQuery{Package: "_"}, nil},
			{"a name is compared by its bytes", ResultQuery{Package: "C"}, nil},
			{"package", ResultQuery{Package: "b.2", Switch: "4.14"}, []string{"b.2"}},
			{"states", ResultQuery{States: []State{Good, Bad}}, []string{"a.1", "b.2"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				rs, err := s.Results(ctx, first.ID, c.q)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, r := range rs {
					got = append(got, r.Package)
				}
				if !slices.Equal(got, c.want) {
					t.Errorf("got %v, want %v", got, c.want)
				}
			})
		}
		rs, _ := s.Results(ctx, first.ID, ResultQuery{Package: "b.2", Switch: "5.2"})
		if len(rs) != 1 || !slices.Equal(rs[0].Lines, []string{"l1", "l2"}) || rs[0].Kind != KindBuild {
			t.Errorf("b.2 = %+v", rs)
		}
	})
	t.Run("latest and previous", func(t *testing.T) {
		if err := s.SetRunStatus(ctx, first.ID, RunDone, ""); err != nil {
			t.Fatal(err)
		}
		second := &Run{Repository: first.Repository, Commit: "c2", Switches: switches}
		if _, err := s.CreateRun(ctx, second); err != nil {
			t.Fatal(err)
		}
		if err := s.SetRunStatus(ctx, second.ID, RunDone, ""); err != nil {
			t.Fatal(err)
		}
		l, err := s.Latest(ctx)
		if err != nil || l == nil || l.ID != second.ID || l.Finished.IsZero() {
			t.Fatalf("Latest = %+v, %v", l, err)
		}
		p, err := s.Previous(ctx, second.ID)
		if err != nil || p == nil || p.ID != first.ID {
			t.Errorf("Previous = %+v, %v", p, err)
		}
		if _, err := s.Run(ctx, 99); !errors.Is(err, ErrNoRun) {
			t.Errorf("Run(99) = %v, want ErrNoRun", err)
		}
	})
	t.Run("prune", func(t *testing.T) {
		cand := &Run{Kind: Candidate, Repository: first.Repository, Commit: "c3", Switches: switches,
			Candidate: &CandidateInfo{Name: "branch", Baseline: first.ID, Scope: "revdeps"}}
		if _, err := s.CreateRun(ctx, cand); err != nil {
			t.Fatal(err)
		}
		if err := s.SetRunStatus(ctx, cand.ID, RunDone, ""); err != nil {
			t.Fatal(err)
		}
		ids, err := s.Prune(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, []int64{first.ID, cand.ID}) {
			t.Errorf("pruned %v, want %v", ids, []int64{first.ID, cand.ID})
		}
		if rs, _ := s.Results(ctx, first.ID, ResultQuery{}); len(rs) != 0 {
			t.Errorf("%d results of a pruned run left", len(rs))
		}
		if _, err := s.Prune(ctx, 0); err == nil {
			t.Error("Prune(0) removed everything without an error")
		}
	})
}

// A store file made before the store had migrations opens with its runs, and new runs
// follow the old ones.
func TestOpenStoreAdoptsAFileMadeBeforeMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "healthcheck.db")
	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, status TEXT NOT NULL,
			message TEXT NOT NULL DEFAULT '', repository TEXT NOT NULL, commit_id TEXT NOT NULL, started INTEGER NOT NULL,
			finished INTEGER NOT NULL DEFAULT 0, switches TEXT NOT NULL, all_versions INTEGER NOT NULL DEFAULT 0,
			candidate TEXT NOT NULL DEFAULT '')`,
		`CREATE TABLE results (run INTEGER NOT NULL, package TEXT NOT NULL, switch TEXT NOT NULL,
			state TEXT NOT NULL, kind TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', lines TEXT NOT NULL DEFAULT '',
			maintainers TEXT NOT NULL DEFAULT '', revdeps INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
			started INTEGER NOT NULL DEFAULT 0, duration INTEGER NOT NULL DEFAULT 0, log_key TEXT NOT NULL DEFAULT '',
			job_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (run, switch, package))`,
		`INSERT INTO runs (kind, status, repository, commit_id, started, finished, switches, all_versions)
			VALUES ('baseline', 'done', 'r', 'c1', 1000, 2000, '[{"name":"5.2"}]', 1)`,
		`INSERT INTO results (run, package, switch, state) VALUES (1, 'a.1', '5.2', 'good')`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	for _, round := range []string{"first open", "second open"} {
		t.Run(round, func(t *testing.T) {
			s, err := OpenStore(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r, err := s.Latest(ctx)
			if err != nil || r == nil || r.ID != 1 || !r.AllVersions || r.Counts[Good] != 1 {
				t.Fatalf("latest run of the old file: %+v, %v", r, err)
			}
			n := &Run{Repository: "r", Commit: "c2", Switches: r.Switches}
			if _, err := s.CreateRun(ctx, n); err != nil || n.ID <= 1 {
				t.Errorf("a new run has id %d (%v), want one after the old file's", n.ID, err)
			}
		})
	}
}
