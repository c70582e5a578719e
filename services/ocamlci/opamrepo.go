package ocamlci

import (
	"context"
	"fmt"
	"strings"

	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamrepo"
)

// solveWith returns the solve function of the opam repository at commit: the newest
// versions (or the oldest, for lower bounds) of what the local packages need, with the
// packages of the repository's extra opam repositories (.kiln.yml) and pin-depends.
func solveWith(o *opamrepo.Repository, commit string, lowerBounds bool, extra, pinned []*repository.Package) func(ctx context.Context, a *Analysis, p matrix.Platform) ([]string, error) {
	return func(ctx context.Context, a *Analysis, p matrix.Platform) ([]string, error) {
		l := opamrepo.Local{LowerBounds: lowerBounds, Extra: extra, Pinned: pinned}
		for _, rel := range sortedKeys(a.OpamFiles) {
			l.Files = append(l.Files, opamrepo.LocalFile{Name: opam.PackageName(packageNameOf(rel)), Path: rel, Data: a.OpamFiles[rel]})
		}
		return o.Solve(ctx, commit, p, l)
	}
}

// extraPackages fetches the extra opam repositories a repository's configuration names
// and reads their packages at their default branch.
func extraPackages(ctx context.Context, mirrors *git.Mirrors, repos []ExtraRepository, logf func(string, ...any)) ([]*repository.Package, error) {
	var pkgs []*repository.Package
	for _, r := range repos {
		m, err := mirrors.Fetch(ctx, r.URL)
		if err != nil {
			return nil, fmt.Errorf("%s: opam repository %s: %w", ConfigFile, r.Name, err)
		}
		heads, err := m.Heads(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: opam repository %s: %w", ConfigFile, r.Name, err)
		}
		branches := []string{r.Branch}
		if r.Branch == "" {
			branches = []string{"main", "master"}
		}
		var head string
		for _, b := range branches {
			if head = heads["refs/heads/"+b]; head != "" {
				break
			}
		}
		if head == "" {
			return nil, fmt.Errorf("%s: opam repository %s has no branch %s", ConfigFile, r.Name, strings.Join(branches, " or "))
		}
		idx, err := repository.LoadGit(ctx, m.Dir, head)
		if err != nil {
			return nil, fmt.Errorf("%s: opam repository %s at %s: %w", ConfigFile, r.Name, short(head), err)
		}
		logf("opam repository %s at %s: %d package versions", r.Name, short(head), idx.Len())
		pkgs = append(pkgs, idx.Packages()...)
	}
	return pkgs, nil
}
