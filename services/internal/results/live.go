package results

import (
	"context"
	"slices"

	"github.com/kiln-ci/kiln/forge"
)

// Live is the set of commits a service's refs (branches, pull requests) point at, by
// forge: a commit of those forges that is not in it is superseded (see
// Index.Superseded). The zero Live holds nothing; its JSON is stable for a set.
type Live struct {
	Forges  []string `json:"forges"`
	Commits []string `json:"commits"` // "forge/owner/name commit", sorted
}

// LiveOf is the set of the commits given, each with its repository.
func LiveOf(repos []forge.RepoID, commits []string) Live {
	var l Live
	for i, r := range repos {
		if !slices.Contains(l.Forges, r.Forge) {
			l.Forges = append(l.Forges, r.Forge)
		}
		l.Commits = append(l.Commits, r.String()+" "+commits[i])
	}
	slices.Sort(l.Forges)
	slices.Sort(l.Commits)
	l.Commits = slices.Compact(l.Commits)
	return l
}

// Has reports whether the commit of repo is live.
func (l Live) Has(repo forge.RepoID, commit string) bool {
	_, ok := slices.BinarySearch(l.Commits, repo.String()+" "+commit)
	return ok
}

// Superseded lists the unfinished commits (see Unfinished) of live's forges that are not
// live: no ref points at them any more, so nothing will finish them.
func (x *Index) Superseded(ctx context.Context, live Live) ([]CommitRecord, error) {
	unfinished, err := x.Unfinished(ctx, live.Forges)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(unfinished, func(c CommitRecord) bool { return live.Has(c.Repo, c.Commit) }), nil
}
