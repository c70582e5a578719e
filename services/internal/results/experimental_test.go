package results

import (
	"context"
	"testing"

	"github.com/kiln-ci/kiln/forge"
)

// A commit's status says last whether a variant's failure fails the commit: a
// service learns it after the build (opam-repo-ci: the failure happens on master too).
func TestSetCommitUpdatesExperimental(t *testing.T) {
	eachBackend(t, testSetCommitUpdatesExperimental)
}

func testSetCommitUpdatesExperimental(t *testing.T, idx *Index) {
	ctx := context.Background()
	repo := forge.RepoID{Forge: "git", Owner: "o", Name: "r"}
	for _, tc := range []struct {
		name          string
		built, status bool
	}{
		{"not counted once built", false, true},
		{"counted again", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := idx.SetVariant(ctx, VariantRecord{Repo: repo, Commit: "c1", Name: "v", JobID: "j", State: forge.Failed, Experimental: tc.built}); err != nil {
				t.Fatal(err)
			}
			vs := []forge.Variant{{Name: "v", State: forge.Failed, Experimental: tc.status}}
			if err := idx.SetCommit(ctx, repo, "c1", forge.Summarise(vs), vs); err != nil {
				t.Fatal(err)
			}
			v, err := idx.Variant(ctx, repo, "c1", "v")
			if err != nil || v == nil {
				t.Fatalf("variant: %v %v", v, err)
			}
			if v.Experimental != tc.status || v.JobID != "j" {
				t.Errorf("experimental %v job %q, want %v and the job kept", v.Experimental, v.JobID, tc.status)
			}
		})
	}
}
