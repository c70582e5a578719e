package results

import (
	"context"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/forge"
)

func TestSuperseded(t *testing.T) {
	ctx := context.Background()
	a, b := forge.RepoID{Forge: "git", Owner: "o", Name: "a"}, forge.RepoID{Forge: "github", Owner: "o", Name: "b"}
	c1, c2, c3 := strings.Repeat("1", 40), strings.Repeat("2", 40), strings.Repeat("3", 40)
	cases := []struct {
		name string
		live Live
		want []string
	}{
		{"every commit live", LiveOf([]forge.RepoID{a, a, a}, []string{c1, c2, c3}), nil},
		{"a branch moved on", LiveOf([]forge.RepoID{a}, []string{c3}), []string{"git/o/a " + c1, "git/o/a " + c2}},
		{"the same commit in another repository is not this one", LiveOf([]forge.RepoID{b, a}, []string{c1, c2}), []string{"git/o/a " + c1}},
		{"another forge's source says nothing of this one's", LiveOf([]forge.RepoID{b}, []string{c1}), nil},
	}
	for _, c := range cases {
		for _, b := range backends {
			t.Run(string(b)+"/"+c.name, func(t *testing.T) {
				idx := newIndex(t, b)
				// c1 runs, c2 failed with a variant still queued, c3 passed.
				for commit, vs := range map[string][]forge.Variant{
					c1: {{Name: "v", State: forge.Running}},
					c2: {{Name: "v", State: forge.Failed}, {Name: "w", State: forge.Queued}},
					c3: {{Name: "v", State: forge.Passed}},
				} {
					if err := idx.SetCommit(ctx, a, commit, forge.Summarise(vs), vs); err != nil {
						t.Fatal(err)
					}
				}
				got, err := idx.Superseded(ctx, c.live)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, r := range got {
					names = append(names, r.Repo.String()+" "+r.Commit)
				}
				if strings.Join(names, "\n") != strings.Join(c.want, "\n") {
					t.Errorf("superseded:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(c.want, "\n"))
				}
			})
		}
	}
}
