package ocamlci

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
)

// RepoID names a repository on a forge: "github/ocaml/dune", "git/local/sample".
type RepoID struct {
	Forge string `json:"forge"` // github, gitea, git
	Owner string `json:"owner"`
	Name  string `json:"name"`
}

func (r RepoID) String() string { return r.Forge + "/" + r.Owner + "/" + r.Name }

// Ref is a branch or pull-request head to build.
type Ref struct {
	Repo RepoID `json:"repo"`
	// Name is the git ref: refs/heads/main, refs/pull/4/head.
	Name string `json:"name"`
	// PR is the pull-request number, 0 for a branch.
	PR     int    `json:"pr,omitempty"`
	Title  string `json:"title,omitempty"`
	Commit string `json:"commit"`
	// Remote is the URL (or local path) the commit is fetched from.
	Remote string `json:"remote"`
}

// Key identifies the ref across its commits.
func (r Ref) Key() string { return r.Repo.String() + " " + r.Name }

// Branch is the branch name of a branch ref ("" for a pull request).
func (r Ref) Branch() string { return strings.TrimPrefix(r.Name, "refs/heads/") }

// Source supplies the refs a forge wants built.
type Source interface {
	Refs() current.Term[[]Ref]
}

// GitRepo is a repository followed by polling: a plain git remote or a local path.
type GitRepo struct {
	Owner, Name string
	Remote      string
	// Credentials for a private remote; nil for none.
	Credentials git.CredentialSource
}

// GitSource follows the branches of plain git repositories by polling them, for
// self-hosters without a forge.
type GitSource struct {
	Repos []GitRepo
	Every time.Duration // default 30s
	mon   *current.Monitor[[]Ref]
}

// Refs is the monitor of every branch head of every repository.
func (g *GitSource) Refs() current.Term[[]Ref] {
	if g.mon == nil {
		every := g.Every
		if every <= 0 {
			every = 30 * time.Second
		}
		g.mon = current.Poll("git heads", every, g.read)
	}
	return g.mon.Term()
}

// Refresh asks for the heads to be read again now (after a push hook, say).
func (g *GitSource) Refresh() {
	if g.mon != nil {
		g.mon.Refresh()
	}
}

func (g *GitSource) read(ctx context.Context) ([]Ref, error) {
	var refs []Ref
	for _, r := range g.Repos {
		heads, err := git.Heads(ctx, r.Remote, r.Credentials)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", r.Owner, r.Name, err)
		}
		for name, commit := range heads {
			if !strings.HasPrefix(name, "refs/") {
				name = "refs/heads/" + name
			}
			refs = append(refs, Ref{Repo: RepoID{Forge: "git", Owner: r.Owner, Name: r.Name}, Name: name, Commit: commit, Remote: r.Remote})
		}
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Key() < refs[j].Key() })
	return refs, nil
}
