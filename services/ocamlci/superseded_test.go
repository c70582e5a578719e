package ocamlci

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/results"
)

// recordingForge is a plain git source whose statuses are kept, as a forge would.
type recordingForge struct {
	*forges.Git
	mu       sync.Mutex
	statuses map[string]forge.Status // by commit, the last published
}

func (r *recordingForge) Publish(ctx context.Context, ref forge.Ref, st forge.Status, _ []forge.Variant) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.statuses == nil {
		r.statuses = map[string]forge.Status{}
	}
	r.statuses[ref.Commit] = st
	return nil
}

func (r *recordingForge) last(commit string) (forge.Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.statuses[commit]
	return st, ok
}

func TestSupersededCommitEndsCancelled(t *testing.T) {
	testenv.Short(t, "builds a dune project in a sandbox")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	slow := commitTree(t, repoDir, "main", sampleProject("Hello", true), "a slow test")
	var rec *recordingForge
	h := startCI(t, repoDir, matrix.Default()[:1], func(s *Service) {
		rec = &recordingForge{Git: s.Forges.Sources()[0].(*forges.Git)}
		s.Forges = forgeSet("git", rec)
	})
	waitVariantRunning(t, h, slow, "debian-12-4.13_amd64")

	fixed := commitTree(t, repoDir, "main", sampleProject("Hello", false), "no slow test")
	h.src.Refresh()
	if c := h.waitCommit(fixed, 10*time.Minute); c.State != forge.Passed {
		t.Fatalf("new head: %s (%s)\n%s", c.State, c.Title, c.Summary)
	}

	c := h.waitCommit(slow, time.Minute)
	t.Logf("superseded commit: %s (%s)", c.State, c.Title)
	if c.State != forge.Cancelled {
		t.Errorf("superseded commit: %s (%s), want cancelled", c.State, c.Title)
	}
	ctx := context.Background()
	vs, err := h.svc.Index.Variants(ctx, h.repo, slow)
	if err != nil {
		t.Fatal(err)
	}
	amd := "debian-12-4.13_amd64"
	for _, v := range vs {
		t.Logf("variant %s: %s %s", v.Name, v.State, v.Message)
		switch {
		case v.State == forge.Error || v.State == forge.Running || v.State == forge.Queued:
			t.Errorf("variant %s of the superseded commit: %s (%s)", v.Name, v.State, v.Message)
		case v.Name == amd && v.State != forge.Cancelled:
			t.Errorf("the build running when the commit was superseded: %s (%s), want cancelled", v.State, v.Message)
		case v.Name == amd && !strings.HasPrefix(v.Message, "cancelled"):
			t.Errorf("the cancelled build's message %q does not say so", v.Message)
		}
	}
	stats, err := h.svc.Index.RepoStats(ctx, h.repo)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Errors != 0 {
		t.Errorf("statistics count %d infrastructure errors, want none: %+v", stats.Errors, stats)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, ok := rec.last(slow)
		if ok && st.State == forge.Cancelled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forge's last status of the superseded commit: %+v (published: %v), want cancelled", st, ok)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestEndCommitsNoRefPointsAt(t *testing.T) {
	ctx := context.Background()
	repo := forge.RepoID{Forge: "git", Owner: "local", Name: "hello"}
	cases := []struct {
		name     string
		variants []results.VariantRecord // recorded before the commit is superseded
		live     bool
		want     forge.State // the commit's state after
	}{
		{"superseded before its analysis listed anything", nil, false, forge.Cancelled},
		{"superseded while building", []results.VariantRecord{
			{Name: "(lint-opam)", State: forge.Passed},
			{Name: "debian-12-4.13_amd64", State: forge.Running, JobID: "7", Started: time.Now()},
		}, false, forge.Cancelled},
		{"superseded after a failure", []results.VariantRecord{
			{Name: "(lint-opam)", State: forge.Failed},
			{Name: "debian-12-4.13_amd64", State: forge.Queued},
		}, false, forge.Failed},
		{"still a ref's head", []results.VariantRecord{{Name: "debian-12-4.13_amd64", State: forge.Running}}, true, forge.Running},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			idx, err := results.OpenIndex(filepath.Join(t.TempDir(), "index.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer idx.Close()
			commit := strings.Repeat("a", 40)
			if err := idx.SetCommitInfo(ctx, repo, commit, results.CommitInfo{Message: "m", Author: "dev"}); err != nil {
				t.Fatal(err)
			}
			var vs []forge.Variant
			for _, v := range c.variants {
				vs = append(vs, forge.Variant{Name: v.Name, State: v.State})
			}
			if len(vs) > 0 {
				if err := idx.SetCommit(ctx, repo, commit, forge.Summarise(vs), vs); err != nil {
					t.Fatal(err)
				}
			}
			for _, v := range c.variants {
				v.Repo, v.Commit = repo, commit
				if err := idx.SetVariant(ctx, v); err != nil {
					t.Fatal(err)
				}
			}
			rec := &recordingForge{Git: &forges.Git{}}
			s := &Service{Index: idx, Forges: forgeSet("git", rec)}
			live := results.LiveOf([]forge.RepoID{repo}, []string{strings.Repeat("b", 40)}) // another commit of the repository
			if c.live {
				live = results.LiveOf([]forge.RepoID{repo, repo}, []string{commit, strings.Repeat("b", 40)})
			}
			if err := s.endCommitsNotIn(ctx, t.Logf, live); err != nil {
				t.Fatal(err)
			}
			got, err := idx.Commit(ctx, repo, commit)
			if err != nil || got == nil {
				t.Fatalf("commit: %v %v", got, err)
			}
			if got.State != c.want {
				t.Errorf("commit %s (%s), want %s", got.State, got.Title, c.want)
			}
			if st, published := rec.last(commit); c.live == published || (published && st.State != c.want) {
				t.Errorf("published %v: %+v", published, st)
			}
			after, _ := idx.Variants(ctx, repo, commit)
			for _, v := range after {
				if !c.live && (v.State == forge.Queued || v.State == forge.Running) {
					t.Errorf("variant %s is still %s", v.Name, v.State)
				}
			}
		})
	}
}
