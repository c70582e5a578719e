// Package forges turns forges into engine inputs and outputs: the branch and
// pull-request heads of GitHub App installations, of a Gitea or Forgejo account, or of
// plain git repositories become monitors a pipeline reads, and a commit's status goes
// back to the forge it came from. A Set is the forges one kiln serve follows, shared by
// every service it runs: one webhook endpoint per forge, one set of credentials for
// the git mirrors.
package forges

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
)

// Source supplies the refs a forge wants built, as an engine input.
type Source interface {
	Refs() current.Term[[]forge.Ref]
}

// watch is the monitor of the refs l lists, read every interval (def when not set).
func watch(name string, every, def time.Duration, l forge.RefLister) *current.Monitor[[]forge.Ref] {
	if every <= 0 {
		every = def
	}
	return current.Poll(name, every, l.ListRefs)
}

// since is the oldest head commit date a forge's refs are kept with, for a cut-off
// (default 30 days).
func since(cutoff time.Duration) time.Time {
	if cutoff <= 0 {
		cutoff = 30 * 24 * time.Hour
	}
	return time.Now().Add(-cutoff)
}

// RerunFunc is called when someone asks a forge to run a commit's checks again.
type RerunFunc func(ctx context.Context, repo forge.RepoID, commit string) error

// RenameFunc is called when a repository followed is renamed or transferred, before its
// refs are given under the new name.
type RenameFunc func(ctx context.Context, from, to forge.RepoID) error

// Set is the forges followed by one server. The zero Set follows nothing.
type Set struct {
	mu         sync.Mutex
	sources    []Source
	publishers map[string]forge.Publisher
	creds      []git.CredentialSource
	routes     map[string]http.Handler
	reruns     []RerunFunc
	renames    []RenameFunc
}

// Add follows a forge under the name its refs carry in RepoID.Forge ("github",
// "gitea", "git"). A source that is also a forge.Publisher receives the statuses of
// that forge's commits; one that gives credentials lends them to the git mirrors.
func (s *Set) Add(name string, src Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sources = append(s.sources, src)
	if p, ok := src.(forge.Publisher); ok {
		if s.publishers == nil {
			s.publishers = map[string]forge.Publisher{}
		}
		s.publishers[name] = p
	}
	if c, ok := src.(interface{ Credentials() git.CredentialSource }); ok {
		s.creds = append(s.creds, c.Credentials())
	}
	if g, ok := src.(*GitHub); ok {
		g.Rerun = s.Rerun
		g.Renamed = s.Renamed
	}
}

// Handle serves a forge's webhook deliveries at pattern (for example
// "POST /webhooks/github").
func (s *Set) Handle(pattern string, h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes == nil {
		s.routes = map[string]http.Handler{}
	}
	s.routes[pattern] = h
}

// Routes are the webhook endpoints, by pattern.
func (s *Set) Routes() map[string]http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]http.Handler, len(s.routes))
	for k, v := range s.routes {
		out[k] = v
	}
	return out
}

// Sources are the forges followed, in the order added.
func (s *Set) Sources() []Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Source(nil), s.sources...)
}

// Empty reports whether no forge is followed.
func (s *Set) Empty() bool { return len(s.Sources()) == 0 }

// OnRerun adds f to the functions called when a forge asks for a commit's checks to
// run again; every service building the commit registers one.
func (s *Set) OnRerun(f RerunFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reruns = append(s.reruns, f)
}

// Rerun asks every registered service to run the commit's checks again.
func (s *Set) Rerun(ctx context.Context, repo forge.RepoID, commit string) error {
	return callEach(s, &s.reruns, func(f RerunFunc) error { return f(ctx, repo, commit) })
}

// callEach calls call on each function of *fs (as registered when it starts) and joins
// their errors.
func callEach[F any](s *Set, fs *[]F, call func(F) error) error {
	s.mu.Lock()
	list := slices.Clone(*fs)
	s.mu.Unlock()
	var errs []error
	for _, f := range list {
		errs = append(errs, call(f))
	}
	return errors.Join(errs...)
}

// OnRename adds f to the functions called when a repository followed is renamed or
// transferred; a service keeping a repository's history registers one to move it.
func (s *Set) OnRename(f RenameFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renames = append(s.renames, f)
}

// Renamed tells every registered service that a repository was renamed or transferred.
func (s *Set) Renamed(ctx context.Context, from, to forge.RepoID) error {
	return callEach(s, &s.renames, func(f RenameFunc) error { return f(ctx, from, to) })
}

// Publish shows a commit's status on the forge of its ref. A forge without a
// publisher (plain git) is not told, and that is not an error.
func (s *Set) Publish(ctx context.Context, ref forge.Ref, st forge.Status, variants []forge.Variant) error {
	s.mu.Lock()
	p := s.publishers[ref.Repo.Forge]
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Publish(ctx, ref, st, variants); err != nil {
		return fmt.Errorf("publish status to %s: %w", ref.Repo.Forge, err)
	}
	return nil
}

// Credentials asks each forge in turn for a remote's credentials, for the git mirrors.
func (s *Set) Credentials() git.CredentialSource {
	return func(ctx context.Context, remote string) (git.Credentials, bool, error) {
		s.mu.Lock()
		srcs := append([]git.CredentialSource(nil), s.creds...)
		s.mu.Unlock()
		for _, src := range srcs {
			c, ok, err := src(ctx, remote)
			if err != nil || ok {
				return c, ok, err
			}
		}
		return git.Credentials{}, false, nil
	}
}
