package results

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
)

// A repository renamed keeps its history under the new name: heads, statuses and
// variants, with what the new name recorded already.
func TestRenameRepoKeepsHistory(t *testing.T) {
	ctx := context.Background()
	old := forge.RepoID{Forge: "github", Owner: "alpha", Name: "a"}
	for _, tc := range []struct {
		name string
		to   forge.RepoID
		// before is what the new name recorded before the rename was told.
		before []string
	}{
		{"renamed", forge.RepoID{Forge: "github", Owner: "alpha", Name: "a2"}, nil},
		{"transferred", forge.RepoID{Forge: "github", Owner: "gamma", Name: "a"}, nil},
		{"the new name read first", forge.RepoID{Forge: "github", Owner: "alpha", Name: "a2"}, []string{"c2", "c3"}},
	} {
		for _, b := range backends {
			t.Run(string(b)+"/"+tc.name, func(t *testing.T) {
				idx := newIndex(t, b)
				record := func(repo forge.RepoID, commit string) {
					t.Helper()
					vs := []forge.Variant{{Name: "build", State: forge.Passed}}
					if err := idx.SetHead(ctx, forge.Ref{Repo: repo, Name: "refs/heads/main", Commit: commit}); err != nil {
						t.Fatal(err)
					}
					if err := idx.SetCommit(ctx, repo, commit, forge.Summarise(vs), vs); err != nil {
						t.Fatal(err)
					}
				}
				for _, c := range []string{"c1", "c2"} {
					record(old, c)
				}
				for _, c := range tc.before {
					record(tc.to, c)
				}
				if err := idx.RenameRepo(ctx, old, tc.to); err != nil {
					t.Fatal(err)
				}
				hist, err := idx.Refs(ctx, tc.to, "refs/heads/main")
				if err != nil {
					t.Fatal(err)
				}
				var commits []string
				for _, h := range hist {
					commits = append(commits, h.Commit)
				}
				slices.Sort(commits)
				want := slices.Compact(slices.Sorted(slices.Values(append([]string{"c1", "c2"}, tc.before...))))
				if !slices.Equal(commits, want) {
					t.Fatalf("history under %s: %v, want %v", tc.to, commits, want)
				}
				if c, err := idx.Commit(ctx, tc.to, "c1"); err != nil || c == nil || c.State != forge.Passed {
					t.Fatalf("status of c1 under the new name: %+v %v", c, err)
				}
				if vs, err := idx.Variants(ctx, tc.to, "c1"); err != nil || len(vs) != 1 {
					t.Fatalf("variants of c1 under the new name: %+v %v", vs, err)
				}
				if left, err := idx.Refs(ctx, old, ""); err != nil || len(left) != 0 {
					t.Fatalf("the old name still lists %+v (%v)", left, err)
				}
			})
		}
	}
}

// The queries that aggregate (statistics, a commit's span, what is unfinished) give
// the same answers on every backend.
func TestIndexAggregates(t *testing.T) {
	ctx := context.Background()
	repo := forge.RepoID{Forge: "gitea", Owner: "o", Name: "r"}
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	// c1: finished, c2: one variant still running.
	variants := []VariantRecord{
		{Commit: "c1", Name: "a", State: forge.Passed, Started: at, Finished: at.Add(2 * time.Minute)},
		{Commit: "c1", Name: "b", State: forge.Failed, Experimental: true, Started: at.Add(time.Minute), Finished: at.Add(5 * time.Minute)},
		{Commit: "c1", Name: "c", State: forge.Cancelled, Started: at, Finished: at.Add(time.Hour)},
		{Commit: "c2", Name: "a", State: forge.Error, Started: at, Finished: at.Add(4 * time.Minute)},
		{Commit: "c2", Name: "b", State: forge.Running, Started: at.Add(3 * time.Minute)},
	}
	eachBackend(t, func(t *testing.T, idx *Index) {
		for _, c := range []string{"c1", "c2"} {
			var vs []forge.Variant
			for _, v := range variants {
				if v.Commit == c {
					vs = append(vs, forge.Variant{Name: v.Name, State: v.State, Experimental: v.Experimental})
				}
			}
			if err := idx.SetCommit(ctx, repo, c, forge.Summarise(vs), vs); err != nil {
				t.Fatal(err)
			}
		}
		for _, v := range variants {
			v.Repo, v.JobID = repo, "job-"+v.Commit+v.Name
			if err := idx.SetVariant(ctx, v); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []string{"c1", "c2"} {
			if err := idx.SetCommitInfo(ctx, repo, c, CommitInfo{Message: "fix " + c + "\n\nbody", Author: "A <a@x>", Authored: at}); err != nil {
				t.Fatal(err)
			}
		}
		t.Run("statistics", func(t *testing.T) {
			s, err := idx.RepoStats(ctx, repo)
			if err != nil {
				t.Fatal(err)
			}
			// the mean leaves out the cancelled and the unfinished: 2, 4 and 4 minutes
			want := Stats{Variants: 5, Passed: 1, Failed: 1, Errors: 1, Cancelled: 1, MeanDuration: (2 + 4 + 4) * time.Minute / 3}
			if s != want {
				t.Errorf("stats %+v, want %+v", s, want)
			}
		})
		t.Run("a finished commit spans its variants", func(t *testing.T) {
			c, err := idx.Commit(ctx, repo, "c1")
			if err != nil || c == nil {
				t.Fatalf("commit c1: %+v %v", c, err)
			}
			if !c.Started.Equal(at) || !c.Finished.Equal(at.Add(time.Hour)) || c.Subject() != "fix c1" || !c.Authored.Equal(at) {
				t.Errorf("c1 = %+v", c)
			}
		})
		t.Run("a running commit has no end", func(t *testing.T) {
			c, err := idx.Commit(ctx, repo, "c2")
			if err != nil || c == nil || !c.Finished.IsZero() || !c.Started.Equal(at) {
				t.Errorf("c2 = %+v, %v", c, err)
			}
		})
		t.Run("unfinished", func(t *testing.T) {
			un, err := idx.Unfinished(ctx, []string{"gitea", "github"})
			if err != nil || len(un) != 1 || un[0].Commit != "c2" || un[0].Repo != repo {
				t.Errorf("unfinished %+v, %v; want c2", un, err)
			}
		})
		t.Run("cancel the unfinished", func(t *testing.T) {
			vs, err := idx.CancelUnfinished(ctx, repo, "c2", "superseded")
			if err != nil || len(vs) != 2 {
				t.Fatalf("variants %+v, %v", vs, err)
			}
			if b := vs[1]; b.State != forge.Cancelled || b.Message != "superseded" || b.Finished.IsZero() || b.JobID != "job-c2b" {
				t.Errorf("b after cancel %+v", b)
			}
			if a := vs[0]; a.State != forge.Error || a.Message != "" {
				t.Errorf("a finished variant was changed: %+v", a)
			}
		})
	})
}

// An index file made before the index had migrations (the first schema, without the
// columns added since) opens with its records and gains the new columns.
func TestOpenAdoptsAFileMadeBeforeMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ocamlci.db")
	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE ref_heads (forge TEXT, owner TEXT, repo TEXT, ref TEXT, pr INTEGER, title TEXT, commit_id TEXT, seen INTEGER,
			PRIMARY KEY (forge, owner, repo, ref, commit_id))`,
		`CREATE TABLE commits (forge TEXT, owner TEXT, repo TEXT, commit_id TEXT, state TEXT, title TEXT, summary TEXT, updated INTEGER,
			PRIMARY KEY (forge, owner, repo, commit_id))`,
		`CREATE TABLE variants (forge TEXT, owner TEXT, repo TEXT, commit_id TEXT, name TEXT, job_id TEXT, state TEXT, message TEXT,
			experimental INTEGER, started INTEGER, finished INTEGER, PRIMARY KEY (forge, owner, repo, commit_id, name))`,
		`INSERT INTO ref_heads VALUES ('git', 'o', 'r', 'refs/heads/main', 0, '', 'c1', 1000)`,
		`INSERT INTO commits VALUES ('git', 'o', 'r', 'c1', 'passed', 'ok', '', 1000)`,
		`INSERT INTO variants VALUES ('git', 'o', 'r', 'c1', 'build', '7', 'passed', '', 1, 500, 900)`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	repo := forge.RepoID{Forge: "git", Owner: "o", Name: "r"}
	for _, round := range []string{"first open", "second open"} {
		t.Run(round, func(t *testing.T) {
			idx, err := OpenIndex(path)
			if err != nil {
				t.Fatal(err)
			}
			defer idx.Close()
			refs, err := idx.Refs(ctx, repo, "")
			if err != nil || len(refs) != 1 || refs[0].Commit != "c1" || !refs[0].Seen.Equal(time.UnixMilli(1000)) {
				t.Fatalf("refs %+v, %v", refs, err)
			}
			v, err := idx.Variant(ctx, repo, "c1", "build")
			if err != nil || v == nil || !v.Experimental || v.JobID != "7" {
				t.Fatalf("variant %+v, %v", v, err)
			}
			if err := idx.SetCommitInfo(ctx, repo, "c1", CommitInfo{Message: "m"}); err != nil {
				t.Fatal(err)
			}
			vs := []forge.Variant{{Name: "build", State: forge.Failed, Experimental: true, FailingLines: []string{"l1"}}}
			if err := idx.SetCommit(ctx, repo, "c1", forge.Summarise(vs), vs); err != nil {
				t.Fatal(err)
			}
			c, err := idx.Commit(ctx, repo, "c1")
			if err != nil || c == nil || c.Message != "m" {
				t.Errorf("commit message in a file made before: %+v, %v", c, err)
			}
			if v, err := idx.Variant(ctx, repo, "c1", "build"); err != nil || len(v.Lines) != 1 {
				t.Errorf("failing lines in a file made before: %+v, %v", v, err)
			}
		})
	}
}
