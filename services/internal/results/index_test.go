package results

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

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
		t.Run(tc.name, func(t *testing.T) {
			idx, err := OpenIndex(filepath.Join(t.TempDir(), "index.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer idx.Close()
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
