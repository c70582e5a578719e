package results

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/forge"
)

func TestVariantTree(t *testing.T) {
	vs := []VariantRecord{
		{Name: "a.1,compilers,4.14,build", State: forge.Passed},
		{Name: "a.1,compilers,4.14,revdeps,b.1", State: forge.Failed},
		{Name: "a.1,compilers,4.14,revdeps,c.1", State: forge.Running},
		{Name: "a.1,architectures,arm64,build", State: forge.Queued},
	}
	tree := variantTree(vs, "/v/")
	for _, tc := range []struct {
		name  string
		path  []string
		state forge.State
		open  bool
		url   string
	}{
		{"a failing leaf makes its package failed; packages start unfolded", []string{"a.1"}, forge.Failed, true, ""},
		{"a group holding a failure starts folded", []string{"a.1", "compilers", "4.14", "revdeps"}, forge.Failed, false, ""},
		{"a group of queued jobs", []string{"a.1", "architectures"}, forge.Queued, false, ""},
		{"a leaf links with its commas kept", []string{"a.1", "compilers", "4.14", "revdeps", "b.1"}, forge.Failed, false, "/v/a.1,compilers,4.14,revdeps,b.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := tree
			var n *VariantNode
			for _, l := range tc.path {
				n = nil
				for _, c := range nodes {
					if c.Label == l {
						n = c
					}
				}
				if n == nil {
					t.Fatalf("no node %q on the path %v", l, tc.path)
				}
				nodes = n.Children
			}
			if n.State != tc.state || n.Open != tc.open || n.URL != tc.url {
				t.Errorf("node %v: state %s open %v url %q, want %s %v %q", tc.path, n.State, n.Open, n.URL, tc.state, tc.open, tc.url)
			}
		})
	}
	if len(tree) != 1 || len(tree[0].Children) != 2 {
		t.Fatalf("tree has %d roots, want 1 package with 2 groups: %+v", len(tree), tree)
	}
}

func TestPrefixedTreeUI(t *testing.T) {
	eachBackend(t, testPrefixedTreeUI)
}

func testPrefixedTreeUI(t *testing.T, idx *Index) {
	u, err := NewUI(idx, nil, nil, Options{Prefix: "/opam-repo-ci/", Tree: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	repo := forge.RepoID{Forge: "gitea", Owner: "o", Name: "opam-repository"}
	commit := "cccc3333cccc3333"
	vs := []forge.Variant{
		{Name: "a.1,compilers,4.14,build", State: forge.Passed},
		{Name: "a.1,compilers,4.14,revdeps,b.1", State: forge.Failed, Message: "new in this PR\n# Error: b is broken"},
	}
	if err := idx.SetHead(ctx, forge.Ref{Repo: repo, Name: "refs/pull/1/head", PR: 1, Commit: commit}); err != nil {
		t.Fatal(err)
	}
	if err := idx.SetCommit(ctx, repo, commit, forge.Summarise(vs), vs); err != nil {
		t.Fatal(err)
	}
	base := srv.URL + "/opam-repo-ci/gitea/o/opam-repository"
	for _, tc := range []struct {
		name, path string
		code       int
		want       []string // in this order
	}{
		{"commit page: errors first, then the tree", "/commit/" + commit, 200,
			[]string{"Summary of errors", "new in this PR", "# Error: b is broken", `class="tree"`, `<details class="node" open><summary>a.1`, `<details class="node"><summary>compilers`, `href="/opam-repo-ci/gitea/o/opam-repository/commit/` + commit + `/variant/a.1,compilers,4.14,revdeps,b.1"`, `src="/opam-repo-ci/results.js"`}},
		{"variant page by its tree path", "/commit/" + commit + "/variant/a.1,compilers,4.14,revdeps,b.1", 200, []string{"# Error: b is broken"}},
		{"repository page links under the prefix", "", 200, []string{`href="/opam-repo-ci/gitea/o/opam-repository/history/pull/1"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base+tc.path)
			if code != tc.code {
				t.Fatalf("GET %s: %d, want %d\n%s", tc.path, code, tc.code, body)
			}
			at := 0
			for _, w := range tc.want {
				i := strings.Index(body[at:], w)
				if i < 0 {
					t.Fatalf("GET %s: no %q after byte %d\n%s", tc.path, w, at, body)
				}
				at += i + len(w)
			}
		})
	}
	t.Run("nothing at the root", func(t *testing.T) {
		if code, _ := get(t, srv.URL+"/gitea/o/opam-repository/commit/"+commit); code != 404 {
			t.Errorf("unprefixed commit page answered %d, want 404", code)
		}
	})
	t.Run("JSON twin with the tree", func(t *testing.T) {
		code, body := get(t, srv.URL+"/opam-repo-ci/api/gitea/o/opam-repository/commit/"+commit)
		var cv struct {
			Errors []VariantRecord `json:"errors"`
			Tree   []*VariantNode  `json:"tree"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &cv) != nil {
			t.Fatalf("API: %d %s", code, body)
		}
		if len(cv.Errors) != 1 || len(cv.Tree) != 1 || cv.Tree[0].State != forge.Failed {
			t.Errorf("API commit: errors %+v tree %+v", cv.Errors, cv.Tree)
		}
	})
	t.Run("routes are under the prefix", func(t *testing.T) {
		for _, r := range u.Routes() {
			if !strings.HasPrefix(r, "/opam-repo-ci/") {
				t.Errorf("route %q is not under the prefix", r)
			}
		}
	})
}
