package opamrepoci

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/prdiff"
)

func TestTrees(t *testing.T) {
	ctx := context.Background()
	result := func(key string) func() (*prdiff.Result, error) {
		return func() (*prdiff.Result, error) { return &prdiff.Result{Merged: key}, nil }
	}
	t.Run("made once for concurrent callers", func(t *testing.T) {
		var c trees
		var made atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				c.get(ctx, "g a", func() (*prdiff.Result, error) { made.Add(1); return result("a")() })
			})
		}
		wg.Wait()
		if made.Load() != 1 {
			t.Errorf("made %d times, want once", made.Load())
		}
	})
	t.Run("a failure is made again", func(t *testing.T) {
		var c trees
		if _, err := c.get(ctx, "g a", func() (*prdiff.Result, error) { return nil, errors.New("no index") }); err == nil {
			t.Fatal("no error")
		}
		if res, err := c.get(ctx, "g a", result("a")); err != nil || res.Merged != "a" {
			t.Errorf("again: %v, %v", res, err)
		}
	})
	t.Run("the oldest are forgotten", func(t *testing.T) {
		var c trees
		for i := range treeCacheSize + 2 {
			c.get(ctx, fmt.Sprintf("g %d", i), result(fmt.Sprint(i)))
		}
		c.get(ctx, "g 2", result("2")) // used again: kept
		if len(c.entries) != treeCacheSize {
			t.Errorf("%d entries, want %d", len(c.entries), treeCacheSize)
		}
		for _, k := range []string{"g 0", "g 1"} {
			if _, ok := c.entries[k]; ok {
				t.Errorf("%s kept", k)
			}
		}
	})
	t.Run("latest of a repository", func(t *testing.T) {
		var c trees
		c.get(ctx, "g1 a", result("a"))
		c.get(ctx, "g2 b", result("b"))
		c.put("g1 c", &prdiff.Result{Merged: "c"})
		c.get(ctx, "g2 b", result("b"))
		for _, tc := range []struct{ prefix, want string }{{"g1 ", "c"}, {"g2 ", "b"}, {"g3 ", ""}} {
			got := c.latest(tc.prefix)
			if (got == nil) != (tc.want == "") || got != nil && got.Merged != tc.want {
				t.Errorf("latest(%q) = %+v, want %q", tc.prefix, got, tc.want)
			}
		}
	})
}

func TestBaseIndexSharesPackages(t *testing.T) {
	r := newGitRepo(t)
	first := r.commit(baseRepo)
	second := r.commit(map[string]string{"lib.2": `depends: ["ocaml"]`})
	s := &Service{}
	ctx := context.Background()
	a, err := s.baseIndex(ctx, r.gitDir(), first)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.baseIndex(ctx, r.gitDir(), second)
	if err != nil {
		t.Fatal(err)
	}
	app := opam.Package{Name: "app", Version: "1"}
	if b.Repo.Get(opam.Package{Name: "lib", Version: "2"}) == nil || a.Repo.Get(app) != b.Repo.Get(app) {
		t.Errorf("the second base's index does not share the first's unchanged packages")
	}
}
