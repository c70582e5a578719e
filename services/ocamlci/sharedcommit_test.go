package ocamlci

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

// Refs that point at one commit (a branch, another branch, the pull request made from
// it) share its pipeline: each key is built once, nothing is cancelled as superseded,
// and the fleet gets each build once.
func TestRefsSharingACommitShareItsJobs(t *testing.T) {
	testenv.RequireCommand(t, "git")
	state := t.TempDir()
	remote := filepath.Join(state, "remote")
	heads := benchRemote(t, remote, "proj", []string{"main"}, false)
	c := heads["main"]
	benchGit(t, remote, "branch", "also-main", c)
	benchGit(t, remote, "update-ref", "refs/pull/3/head", c)
	id := forge.RepoID{Forge: "git", Owner: "o", Name: "proj"}
	refs := []forge.Ref{
		{Repo: id, Name: "refs/heads/main", Commit: c, Remote: remote},
		{Repo: id, Name: "refs/heads/also-main", Commit: c, Remote: remote},
		{Repo: id, Name: "refs/pull/3/head", PR: 3, Title: "Same commit", Commit: c, Remote: remote},
	}
	opts := serverOptions{platforms: matrix.Default()[:1], buildSlots: 64, slots: 4}
	srv := startBenchServer(t, state, refs, opts)
	srv.run(state, opts)
	srv.settle(1, 2*time.Second, 3*time.Minute)

	// The pull request's title changes: only its head is recorded again.
	refs[2].Title = "Same commit, better title"
	srv.src.set(refs)
	srv.settle(1, 2*time.Second, time.Minute)

	all, err := srv.engine.Query(current.Query{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	type opKey struct{ op, key string }
	builds := map[opKey]int{}
	for _, j := range all {
		k := opKey{j.Op, j.Key}
		builds[k] = max(builds[k], j.Build)
		if j.FailureKind == current.FailCancelled && j.Op != "ocamlci-status" {
			t.Errorf("%s %s was cancelled: %s", j.Op, j.Label, j.Message)
		}
	}
	perOp := map[string]int{}
	for k, n := range builds {
		perOp[k.op]++
		if n > 1 && k.op != "ocamlci-head" && k.op != "ocamlci-status" {
			t.Errorf("%s %q: built %d times", k.op, k.key, n)
		}
	}
	for op, want := range map[string]int{"ocamlci-fetch": 1, "ocamlci-analysis": 1, "ocamlci-status": 1, "ocamlci-head": 3} {
		if perOp[op] != want {
			t.Errorf("%s: %d keys, want %d (all: %v)", op, perOp[op], want, perOp)
		}
	}
	if n := builds[opKey{"ocamlci-head", refs[2].Key()}]; n != 2 {
		t.Errorf("the pull request's head was recorded %d times, want 2 (once more for its new title)", n)
	}
	// One pipeline for the commit: one of each operation in the graph (but the heads).
	nodes := map[string]int{}
	for _, n := range srv.engine.Graph().Nodes {
		if n.Kind == "op" {
			nodes[n.Label]++
		}
	}
	for _, op := range []string{"ocamlci-fetch", "ocamlci-analysis", "ocamlci-status"} {
		if nodes[op] != 1 {
			t.Errorf("the graph has %d %s nodes, want 1 (all: %v)", nodes[op], op, nodes)
		}
	}
	subs, cancels := srv.rec.since(0)
	seen := map[string]bool{}
	for _, s := range subs {
		if seen[s.id] {
			t.Errorf("fleet job %s submitted twice", s.id)
		}
		seen[s.id] = true
	}
	if cancels != 0 {
		t.Errorf("%d fleet jobs cancelled", cancels)
	}
	if hist, _ := srv.svc.Index.Refs(context.Background(), id, ""); len(hist) != 3 {
		t.Errorf("the index lists %d refs, want 3: %+v", len(hist), hist)
	}
}
