package forge

import (
	"context"
	"strings"
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
	PR    int    `json:"pr,omitempty"`
	Title string `json:"title,omitempty"`
	// Labels are the pull request's labels, where the forge gives them.
	Labels []string `json:"labels,omitempty"`
	Commit string   `json:"commit"`
	// Remote is the URL (or local path) the commit is fetched from.
	Remote string `json:"remote"`
}

// Key identifies the ref across its commits.
func (r Ref) Key() string { return r.Repo.String() + " " + r.Name }

// Branch is the branch name of a branch ref ("" for a pull request).
func (r Ref) Branch() string {
	if r.PR != 0 {
		return ""
	}
	return strings.TrimPrefix(r.Name, "refs/heads/")
}

// RefLister lists the branch and pull-request heads a forge wants built.
type RefLister interface {
	ListRefs(ctx context.Context) ([]Ref, error)
}

// Publisher shows a commit's status on its forge.
type Publisher interface {
	Publish(ctx context.Context, ref Ref, st Status, variants []Variant) error
}
