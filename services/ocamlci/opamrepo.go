package ocamlci

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/internal/matrix"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
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

// repoAt is an opam repository at a commit: where a package of a layer comes from.
type repoAt struct{ gitDir, commit string }

// extraPackage is a package of an extra opam repository.
type extraPackage struct {
	repoAt
	pkg *repository.Package
}

// extraPackages fetches the extra opam repositories a repository's configuration names
// and reads their packages at their default branch; from says where each comes from,
// by name.version.
func extraPackages(ctx context.Context, mirrors *git.Mirrors, repos []ExtraRepository, logf func(string, ...any)) (pkgs []*repository.Package, from map[string]extraPackage, err error) {
	from = map[string]extraPackage{}
	for _, r := range repos {
		m, err := mirrors.Fetch(ctx, r.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: opam repository %s: %w", ConfigFile, r.Name, err)
		}
		heads, err := m.Heads(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: opam repository %s: %w", ConfigFile, r.Name, err)
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
			return nil, nil, fmt.Errorf("%s: opam repository %s has no branch %s", ConfigFile, r.Name, strings.Join(branches, " or "))
		}
		idx, err := repository.LoadGit(ctx, m.Dir, head)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: opam repository %s at %s: %w", ConfigFile, r.Name, short(head), err)
		}
		logf("opam repository %s at %s: %d package versions", r.Name, short(head), idx.Len())
		for _, p := range idx.Packages() {
			if _, ok := from[p.Package.String()]; !ok { // the first repository listed wins
				from[p.Package.String()] = extraPackage{repoAt{m.Dir, head}, p}
				pkgs = append(pkgs, p)
			}
		}
	}
	return pkgs, from, nil
}

// archives is the service's source-archive cache.
func (s *Service) archives() (*opamenv.Archives, error) {
	archivesMu.Lock()
	defer archivesMu.Unlock()
	if s.Archives == nil {
		a, err := opamenv.NewArchives(filepath.Join(s.WorkDir, "opam-archives"), opamenv.ArchivesOptions{Logger: s.Logger})
		if err != nil {
			return nil, current.Infra(current.FailDiskFull, err)
		}
		s.Archives = a
	}
	return s.Archives, nil
}

var archivesMu sync.Mutex

// layerOf prepares, in the commit's checkout (the build context), the opam layer that
// installs the exact set on platform p: the opam files of the set from the opam
// repository at opamCommit (or the extra repository a package comes from), their
// sources from the archive cache, the local packages and pin-depends pinned.
func (s *Service) layerOf(ctx context.Context, dir, opamCommit string, a *Analysis, p matrix.Platform, set []string, extra map[string]extraPackage) (*opamenv.Layer, error) {
	if len(p.Compiler) == 0 {
		return nil, fmt.Errorf("platform %s names no compiler package to make an opam switch with", p.Name)
	}
	req := opamenv.Request{Compiler: p.Compiler[0], Install: set}
	for _, rel := range sortedKeys(a.OpamFiles) {
		if name := packageNameOf(rel); name != "" {
			req.Pins = append(req.Pins, opamenv.Pin{Package: name + ".dev", Target: path.Join(srcDir, path.Dir(rel)) + "/"})
		}
	}
	pinned := map[string]bool{}
	for _, pd := range a.PinDepends {
		pinned[pd.Package] = true
		req.Pins = append(req.Pins, opamenv.Pin{Package: pd.Package, Target: pd.URL})
	}
	idx, err := s.Opam.At(ctx, opamCommit)
	if err != nil {
		return nil, err
	}
	main := repoAt{s.Opam.GitDir, opamCommit}
	byRepo := map[repoAt][]*repository.Package{}
	for _, name := range set {
		pkg, ok := opam.ParsePackage(name)
		if !ok {
			return nil, fmt.Errorf("solution: %q is not name.version", name)
		}
		if pinned[name] {
			continue
		}
		if e, ok := extra[name]; ok {
			byRepo[e.repoAt] = append(byRepo[e.repoAt], e.pkg)
			continue
		}
		rp := idx.Get(pkg)
		if rp == nil {
			return nil, fmt.Errorf("solution: %s is not in opam-repository at %s", name, short(opamCommit))
		}
		byRepo[main] = append(byRepo[main], rp)
	}
	for at, rps := range byRepo {
		lps, err := opamenv.FromRepository(ctx, at.gitDir, at.commit, rps)
		if err != nil {
			return nil, err
		}
		req.Packages = append(req.Packages, lps...)
	}
	archives, err := s.archives()
	if err != nil {
		return nil, err
	}
	l, err := opamenv.Prepare(ctx, archives, dir, req)
	if err != nil {
		return nil, err
	}
	return &l, nil
}
