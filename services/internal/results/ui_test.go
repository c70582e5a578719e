package results

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
)

func testUI(t *testing.T, idx *Index) *httptest.Server {
	t.Helper()
	u, err := NewUI(idx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUIPagesFollowTheURLScheme(t *testing.T) {
	eachBackend(t, testUIPagesFollowTheURLScheme)
}

func testUIPagesFollowTheURLScheme(t *testing.T, idx *Index) {
	srv := testUI(t, idx)
	ctx := context.Background()
	repo := forge.RepoID{Forge: "github", Owner: "ocaml", Name: "dune"}
	main := forge.Ref{Repo: repo, Name: "refs/heads/main", Commit: "aaaa1111aaaa1111"}
	pr := forge.Ref{Repo: repo, Name: "refs/pull/7/head", PR: 7, Title: "Fix <things>", Commit: "bbbb2222bbbb2222"}
	vs := []forge.Variant{{Name: "debian-12-4.13_amd64", State: forge.Passed}, {Name: "(lint-opam)", State: forge.Failed, Message: "opam lint found 1 error(s)"}}
	for _, ref := range []forge.Ref{main, pr} {
		if err := idx.SetHead(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if err := idx.SetCommit(ctx, repo, main.Commit, forge.Summarise(vs[:1]), vs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := idx.SetCommit(ctx, repo, pr.Commit, forge.Summarise(vs), vs); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	idx.SetVariant(ctx, VariantRecord{Repo: repo, Commit: pr.Commit, Name: "(lint-opam)", JobID: "42", State: forge.Failed, Message: "opam lint found 1 error(s)", Started: now.Add(-3 * time.Second), Finished: now})

	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/github", `href="/github/ocaml"`, 200},
		{"/github/ocaml", `href="/github/ocaml/dune"`, 200},
		{"/github/ocaml/dune", "PR #7 Fix &lt;things&gt;", 200},
		{"/github/ocaml/dune/commit/bbbb2222bbbb2222", `/job/42`, 200},
		{"/github/ocaml/dune/commit/bbbb2222bbbb2222/variant/(lint-opam)", "opam lint found 1 error(s)", 200},
		{"/github/ocaml/dune/history/branch/main", "aaaa1111aaaa", 200},
		{"/github/ocaml/dune/history/pull/7", "bbbb2222bbbb", 200},
		{"/github/ocaml/dune/history/pull/x", "not a positive integer", 400},
		{"/github/ocaml/nope", "not followed", 404},
		{"/github/ocaml/dune/commit/cccc", "has not been built", 404},
		{"/github/ocaml/dune/commit/bbbb2222bbbb2222/variant/nope", "no variant", 404},
		{"/svn/ocaml", "404", 404},
		{"/badge/ocaml/dune/main", "passed", 200},
		{"/badge/ocaml/dune/other", "unknown", 200},
	} {
		code, body := get(t, srv.URL+tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d, want %d containing %q:\n%s", tc.path, code, tc.code, tc.want, body)
		}
	}

	code, body := get(t, srv.URL+"/api/github/ocaml/dune/commit/bbbb2222bbbb2222")
	var cv CommitView
	if code != 200 || json.Unmarshal([]byte(body), &cv) != nil {
		t.Fatalf("API commit: %d %s", code, body)
	}
	if cv.Commit.State != forge.Failed || len(cv.Variants) != 2 || cv.Variants[0].JobID != "42" {
		t.Errorf("API commit = %+v", cv)
	}
	code, body = get(t, srv.URL+"/api/github/ocaml/nope")
	if code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("API unknown repo: %d %s", code, body)
	}
	code, body = get(t, srv.URL+"/api/github/ocaml/dune")
	if code != 200 || !strings.Contains(body, `"refs/pull/7/head"`) || !strings.Contains(body, `"refs": [`) {
		t.Errorf("API repo: %d %s", code, body)
	}
}

func TestIndexDropsVariantsNoLongerPlanned(t *testing.T) {
	eachBackend(t, testIndexDropsVariantsNoLongerPlanned)
}

func testIndexDropsVariantsNoLongerPlanned(t *testing.T, idx *Index) {
	ctx := context.Background()
	ref := forge.Ref{Repo: forge.RepoID{Forge: "git", Owner: "o", Name: "r"}, Name: "refs/heads/main", Commit: "c1"}
	running := []forge.Variant{{Name: AnalysisVariant, State: forge.Running}}
	idx.SetVariant(ctx, VariantRecord{Repo: ref.Repo, Commit: "c1", Name: "old", JobID: "3", State: forge.Passed})
	if err := idx.SetCommit(ctx, ref.Repo, ref.Commit, forge.Summarise(running), running); err != nil {
		t.Fatal(err)
	}
	if vs, _ := idx.Variants(ctx, ref.Repo, "c1"); len(vs) != 2 {
		t.Fatalf("while the analysis runs, earlier variants stay: %+v", vs)
	}
	planned := []forge.Variant{{Name: "debian", State: forge.Queued}}
	if err := idx.SetCommit(ctx, ref.Repo, ref.Commit, forge.Summarise(planned), planned); err != nil {
		t.Fatal(err)
	}
	vs, _ := idx.Variants(ctx, ref.Repo, "c1")
	if len(vs) != 1 || vs[0].Name != "debian" {
		t.Fatalf("after the plan, variants = %+v, want only debian", vs)
	}
}
