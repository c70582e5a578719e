package forges

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
)

// GitRepo is a repository followed by polling: a plain git remote or a local path.
type GitRepo struct {
	Owner, Name string
	Remote      string
	// Credentials for a private remote; nil for none.
	Credentials git.CredentialSource
}

// Git follows the branches of plain git repositories by polling them, for
// self-hosters without a forge. Its refs are those of the forge "git".
type Git struct {
	Repos []GitRepo
	Every time.Duration // default 30s
	mon   *current.Monitor[[]forge.Ref]
}

// Refs is the monitor of every branch head of every repository.
func (g *Git) Refs() current.Term[[]forge.Ref] {
	if g.mon == nil {
		g.mon = watch("git heads", g.Every, 30*time.Second, g)
	}
	return g.mon.Term()
}

// Refresh asks for the heads to be read again now (after a push hook, say).
func (g *Git) Refresh() {
	if g.mon != nil {
		g.mon.Refresh()
	}
}

// ListRefs reads every branch head of every repository.
func (g *Git) ListRefs(ctx context.Context) ([]forge.Ref, error) {
	var refs []forge.Ref
	for _, r := range g.Repos {
		heads, err := git.Heads(ctx, r.Remote, r.Credentials)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", r.Owner, r.Name, err)
		}
		for name, commit := range heads {
			if !strings.HasPrefix(name, "refs/") {
				name = "refs/heads/" + name
			}
			refs = append(refs, forge.Ref{Repo: forge.RepoID{Forge: "git", Owner: r.Owner, Name: r.Name}, Name: name, Commit: commit, Remote: r.Remote})
		}
	}
	sortRefs(refs)
	return refs, nil
}

func sortRefs(refs []forge.Ref) {
	sort.Slice(refs, func(i, j int) bool { return refs[i].Key() < refs[j].Key() })
}
