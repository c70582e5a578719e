package opamrepoci

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/opam/prdiff"
	"github.com/kiln-ci/kiln/opam/repository"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// treeCacheSize bounds the indexes of base commits, and the analyses of merged
// trees, the service keeps for the layers of the builds.
const treeCacheSize = 8

// trees keeps the indexes of base commits and the analyses of pull requests the
// builds' layers are solved in, the most recently used ones, each made once.
type trees struct {
	mu      sync.Mutex
	entries map[string]*treeEntry
	order   []string // least recently used first
}

type treeEntry struct {
	done chan struct{}
	res  *prdiff.Result
	err  error
}

// get returns the entry of key, made by build the first time it is asked.
func (c *trees) get(ctx context.Context, key string, build func() (*prdiff.Result, error)) (*prdiff.Result, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*treeEntry{}
	}
	e, ok := c.entries[key]
	if !ok {
		e = &treeEntry{done: make(chan struct{})}
		c.entries[key] = e
	}
	c.touch(key)
	c.mu.Unlock()
	if !ok {
		e.res, e.err = build()
		close(e.done)
		if e.err != nil {
			c.mu.Lock()
			if c.entries[key] == e {
				delete(c.entries, key)
			}
			c.mu.Unlock()
		}
	}
	select {
	case <-e.done:
		return e.res, e.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// latest returns the most recently used entry made, of those whose keys start with
// prefix, or nil.
func (c *trees) latest(prefix string) *prdiff.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.order) - 1; i >= 0; i-- {
		if !strings.HasPrefix(c.order[i], prefix) {
			continue
		}
		e := c.entries[c.order[i]]
		select {
		case <-e.done:
			if e.err == nil {
				return e.res
			}
		default:
		}
	}
	return nil
}

// put records an analysis made elsewhere.
func (c *trees) put(key string, res *prdiff.Result) {
	e := &treeEntry{done: make(chan struct{}), res: res}
	close(e.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*treeEntry{}
	}
	c.entries[key] = e
	c.touch(key)
}

// touch makes key the most recently used and forgets the oldest beyond the bound;
// c.mu is held.
func (c *trees) touch(key string) {
	for i, k := range c.order {
		if k == key {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
	c.order = append(c.order, key)
	for len(c.order) > treeCacheSize {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
}

// baseIndex is the index of a base commit, as an analysis of the base alone: the
// latest base's index of the repository updated to it (sharing what did not
// change), or loaded.
func (s *Service) baseIndex(ctx context.Context, gitDir, base string) (*prdiff.Result, error) {
	return s.bases.get(ctx, gitDir+" "+base, func() (*prdiff.Result, error) {
		ctx := context.WithoutCancel(ctx)
		var r *repository.Repo
		var err error
		if prev := s.bases.latest(gitDir + " "); prev != nil {
			r, _, err = prev.Repo.Update(ctx, gitDir, base)
		}
		if r == nil {
			r, err = repository.LoadGit(ctx, gitDir, base)
		}
		if err != nil {
			return nil, fmt.Errorf("index of the base %s: %w", short(base), err)
		}
		return &prdiff.Result{Base: r.Commit, Head: r.Commit, Merged: r.Commit, Repo: r}, nil
	})
}

// analysis analyses a pull request, with its base's index from the cache.
func (s *Service) analysis(ctx context.Context, gitDir string, p PR) (*prdiff.Result, error) {
	return s.merged.get(ctx, gitDir+" "+p.Base+" "+p.Head, func() (*prdiff.Result, error) {
		ctx := context.WithoutCancel(ctx) // kept for the other builds of the pull request
		base, err := s.baseIndex(ctx, gitDir, p.Base)
		if err != nil {
			return nil, err
		}
		return Analyse(ctx, gitDir, p.Base, p.Head, base.Repo)
	})
}

// openArchives returns the service's source-archive cache, Archives or one of its
// own in WorkDir.
func (s *Service) openArchives() (*opamenv.Archives, error) {
	if s.Archives != nil {
		return s.Archives, nil
	}
	a, err := opamenv.NewArchives(filepath.Join(s.WorkDir, "opam-archives"), opamenv.ArchivesOptions{Logger: s.Logger})
	if err != nil {
		return nil, current.Infra(current.FailDiskFull, err)
	}
	return a, nil
}

// jobLayer prepares the opam layer of a build: a repository of exactly the package
// versions the solver picks for the job's steps in the tree it builds (the merged
// tree, or the base for a build on the base branch), with their sources from the
// archive cache, alone in a build context of its own (WorkDir/layers/DIGEST), which
// builds of the same set share. It returns the layer and that folder, or nil when
// the platform names no compiler packages (the build is then opam init over the
// merged tree).
func (s *Service) jobLayer(ctx context.Context, in JobInput) (*opamenv.Layer, string, error) {
	plat, ok := s.Config.Platform(in.Job.Platform)
	if !ok || len(plat.Compiler) == 0 || in.GitDir == "" {
		return nil, "", nil
	}
	select {
	case s.layerSlots <- struct{}{}:
		defer func() { <-s.layerSlots }()
	case <-ctx.Done():
		return nil, "", context.Cause(ctx)
	}
	var res *prdiff.Result
	var err error
	if in.OnBase {
		res, err = s.baseIndex(ctx, in.GitDir, in.PR.Base)
	} else {
		res, err = s.analysis(ctx, in.GitDir, in.PR)
	}
	if err != nil {
		return nil, "", err
	}
	req, err := s.planner.LayerRequest(ctx, in.GitDir, res, in.Job)
	if err != nil {
		return nil, "", err
	}
	archives, err := s.archives()
	if err != nil {
		return nil, "", err
	}
	root := filepath.Join(s.WorkDir, "layers")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, "", current.Infra(current.FailDiskFull, err)
	}
	stage, err := os.MkdirTemp(root, ".stage-")
	if err != nil {
		return nil, "", current.Infra(current.FailDiskFull, err)
	}
	defer os.RemoveAll(stage)
	l, err := opamenv.Prepare(ctx, archives, stage, req)
	if err != nil {
		return nil, "", fmt.Errorf("opam layer of %s: %w", in.Job.ID(), err)
	}
	dir := filepath.Join(root, l.Digest)
	if err := s.layers.acquire(stage, dir); err != nil {
		return nil, "", current.Infra(current.FailDiskFull, fmt.Errorf("opam layer of %s: %w", in.Job.ID(), err))
	}
	return &l, dir, nil
}

// layerUses counts the builds using each layer folder, which goes when the last one
// ends: a build uploads its context, so only the builds in flight need theirs.
type layerUses struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire makes the folder stage (a prepared layer) the folder dir, unless a build
// in flight has it already, and counts one more use of it.
func (u *layerUses) acquire(stage, dir string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[string]int{}
	}
	if u.n[dir] == 0 {
		os.RemoveAll(dir) // left by a build that did not release it
		if err := os.Rename(stage, dir); err != nil {
			return err
		}
	}
	u.n[dir]++
	return nil
}

// release counts one use of dir less, and removes it after the last.
func (u *layerUses) release(dir string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n[dir]--; u.n[dir] <= 0 {
		delete(u.n, dir)
		os.RemoveAll(dir)
	}
}

// layerSlotsOf is how many layers are prepared at once: solving is CPU-bound.
func layerSlotsOf() chan struct{} { return make(chan struct{}, max(1, runtime.GOMAXPROCS(0))) }
