package git

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var fetchSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "kiln_git_fetch_duration_seconds",
	Help:    "Time taken by git fetches into local mirrors, by outcome.",
	Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
}, []string{"outcome"})

// Mirrors keeps one bare mirror repository per remote URL under a root directory, and
// serialises the fetches into each mirror.
type Mirrors struct {
	root  string
	creds CredentialSource
	log   *slog.Logger

	mu    sync.Mutex
	locks map[string]chan struct{}
}

// MirrorsOptions configure NewMirrors.
type MirrorsOptions struct {
	// Credentials, when set, is asked for the credentials of each http(s) remote.
	Credentials CredentialSource
	// Logger receives one debug line per git command (default slog.Default()).
	Logger *slog.Logger
}

// NewMirrors returns the mirrors kept under root (created on first use).
func NewMirrors(root string, opts MirrorsOptions) *Mirrors {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Mirrors{root: root, creds: opts.Credentials, log: log, locks: map[string]chan struct{}{}}
}

// Path is the directory of the mirror of remote.
func (m *Mirrors) Path(remote string) string {
	return filepath.Join(m.root, MirrorName(remote))
}

// lock takes the fetch lock of one mirror, waiting at most until ctx is done.
func (m *Mirrors) lock(ctx context.Context, path string) (unlock func(), err error) {
	m.mu.Lock()
	ch, ok := m.locks[path]
	if !ok {
		ch = make(chan struct{}, 1)
		m.locks[path] = ch
	}
	m.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for another fetch into %s: %w", path, ctx.Err())
	}
}

// Repo returns the mirror of remote, creating an empty one if it does not exist yet.
func (m *Mirrors) Repo(ctx context.Context, remote string) (*Repo, error) {
	path := m.Path(remote)
	r := &Repo{Dir: path, log: m.log}
	if _, err := os.Stat(filepath.Join(path, "HEAD")); err == nil {
		return r, nil
	}
	unlock, err := m.lock(ctx, path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(path, "HEAD")); err == nil {
		return r, nil
	}
	if err := os.MkdirAll(m.root, 0o755); err != nil {
		return nil, fmt.Errorf("mirror of %s: %w", Redact(remote), err)
	}
	tmp, err := os.MkdirTemp(m.root, ".init-")
	if err != nil {
		return nil, fmt.Errorf("mirror of %s: %w", Redact(remote), err)
	}
	defer os.RemoveAll(tmp)
	clean, _, _ := splitUserinfo(remote)
	for _, args := range [][]string{
		{"init", "--quiet", "--bare", tmp},
		{"--git-dir=" + tmp, "config", "kiln.remote", clean},
		{"--git-dir=" + tmp, "config", "gc.autoDetach", "false"},
	} {
		if _, err := (command{args: args, log: m.log}).run(ctx); err != nil {
			return nil, fmt.Errorf("mirror of %s: %w", Redact(remote), err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("mirror of %s: %w", Redact(remote), err)
	}
	return r, nil
}

// Remove deletes the mirror of remote (after any fetch into it ends).
func (m *Mirrors) Remove(ctx context.Context, remote string) error {
	path := m.Path(remote)
	unlock, err := m.lock(ctx, path)
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove mirror of %s: %w", Redact(remote), err)
	}
	return nil
}

// remoteCommand prepares a command that talks to remote: credentials from the URL or the
// source go into the environment, and the URL on the command line carries none.
func (m *Mirrors) remoteCommand(ctx context.Context, remote string) (clean string, env []string, err error) {
	return remoteAuth(ctx, remote, m.creds)
}

func remoteAuth(ctx context.Context, remote string, src CredentialSource) (clean string, env []string, err error) {
	clean, c, ok := splitUserinfo(remote)
	if !ok && src != nil {
		c, ok, err = src(ctx, clean)
		if err != nil {
			return "", nil, fmt.Errorf("credentials for %s: %w", Redact(clean), err)
		}
	}
	if ok {
		env, err = authEnv(clean, c)
		if err != nil {
			return "", nil, err
		}
	}
	return clean, env, nil
}

// Fetch updates the mirror of remote: every branch and tag (branches deleted upstream are
// removed), plus the extra refs named (e.g. "refs/pull/12/head"). It returns the mirror.
func (m *Mirrors) Fetch(ctx context.Context, remote string, extraRefs ...string) (*Repo, error) {
	specs := []string{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}
	for _, ref := range extraRefs {
		if err := checkRefName(ref); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", Redact(remote), err)
		}
		specs = append(specs, "+"+ref+":"+ref)
	}
	return m.fetch(ctx, remote, true, specs)
}

// FetchRefs fetches only the refs named from remote into its mirror, keeping the same names.
func (m *Mirrors) FetchRefs(ctx context.Context, remote string, refs ...string) (*Repo, error) {
	var specs []string
	for _, ref := range refs {
		if err := checkRefName(ref); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", Redact(remote), err)
		}
		specs = append(specs, "+"+ref+":"+ref)
	}
	return m.fetch(ctx, remote, false, specs)
}

// FetchCommit makes sure the mirror of remote holds commit: it returns at once when it
// does, fetches the refs named otherwise (a branch, "refs/pull/12/head", ...), and asks the
// remote for the commit itself as a last resort. The error matches ErrNoCommit when the
// commit is still missing.
func (m *Mirrors) FetchCommit(ctx context.Context, remote, commit string, refs ...string) (*Repo, error) {
	if !isHex(commit) {
		return nil, fmt.Errorf("fetch %s from %s: not a commit hash", commit, Redact(remote))
	}
	r, err := m.Repo(ctx, remote)
	if err != nil {
		return nil, err
	}
	if r.HasCommit(ctx, commit) {
		return r, nil
	}
	var refErr error
	if len(refs) > 0 {
		_, refErr = m.FetchRefs(ctx, remote, refs...)
		if errors.Is(refErr, ErrAuth) || errors.Is(refErr, ErrNotFound) || errors.Is(refErr, ErrNetwork) || ctx.Err() != nil {
			return nil, refErr
		}
		if refErr == nil && r.refAt(refs, commit) || r.HasCommit(ctx, commit) {
			return r, nil
		}
	}
	// A ref that moved on or vanished (a closed pull request): ask for the commit itself.
	if len(commit) == 40 || len(commit) == 64 {
		if _, err := m.fetch(ctx, remote, false, []string{commit}); err == nil && r.HasCommit(ctx, commit) {
			return r, nil
		} else if ctx.Err() != nil {
			return nil, err
		}
	}
	if refErr != nil {
		return nil, fmt.Errorf("fetch %s from %s: %w (%w)", commit, Redact(remote), ErrNoCommit, refErr)
	}
	return nil, fmt.Errorf("fetch %s from %s (refs %s): %w", commit, Redact(remote), strings.Join(refs, ", "), ErrNoCommit)
}

// refAt reports whether one of refs, as a fetch just wrote it (a loose ref file), names
// commit: then the commit is there, without asking git. A ref kept otherwise (packed, or
// another ref storage) reports false.
func (r *Repo) refAt(refs []string, commit string) bool {
	for _, ref := range refs {
		b, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(ref)))
		if err == nil && strings.TrimSpace(string(b)) == commit {
			return true
		}
	}
	return false
}

func (m *Mirrors) fetch(ctx context.Context, remote string, prune bool, specs []string) (*Repo, error) {
	r, err := m.Repo(ctx, remote)
	if err != nil {
		return nil, err
	}
	clean, env, err := m.remoteCommand(ctx, remote)
	if err != nil {
		return nil, err
	}
	unlock, err := m.lock(ctx, r.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	args := []string{"fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc"}
	if prune {
		args = append(args, "--prune")
	}
	args = append(args, "--end-of-options", clean)
	args = append(args, specs...)
	start := time.Now()
	_, err = command{gitDir: r.Dir, args: args, env: env, remote: clean, log: m.log}.run(ctx)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	fetchSeconds.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", Redact(clean), err)
	}
	m.log.Debug("git fetch", "remote", clean, "refs", specs, "took", time.Since(start))
	return r, nil
}

// checkRefName rejects ref names that git would misread (options, refspec syntax).
func checkRefName(ref string) error {
	if !strings.HasPrefix(ref, "refs/") || strings.ContainsAny(ref, " :~^?*[\\\x00\n") || strings.Contains(ref, "..") {
		return fmt.Errorf("bad ref name %q (want refs/...)", ref)
	}
	return nil
}

// LsRemote lists the refs of a repository, remote (a URL) or local (a directory), whose
// names start with one of prefixes (all when none is given): ref name to commit, with
// annotated tags mapped to the commit they tag. src may be nil.
func LsRemote(ctx context.Context, remote string, src CredentialSource, prefixes ...string) (map[string]string, error) {
	clean, env, err := remoteAuth(ctx, remote, src)
	if err != nil {
		return nil, err
	}
	out, err := command{args: []string{"ls-remote", "--end-of-options", clean}, env: env, remote: clean}.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", Redact(clean), err)
	}
	refs := map[string]string{}
	peeled := map[string]string{}
	for line := range strings.Lines(string(out)) {
		hash, ref, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		if len(prefixes) > 0 && !hasAnyPrefix(ref, prefixes) {
			continue
		}
		if base, ok := strings.CutSuffix(ref, "^{}"); ok {
			peeled[base] = hash
			continue
		}
		refs[ref] = hash
	}
	for ref, hash := range peeled {
		refs[ref] = hash
	}
	return refs, nil
}

// Heads lists the branches of a repository (a URL or a local directory): ref to commit.
func Heads(ctx context.Context, remote string, src CredentialSource) (map[string]string, error) {
	return LsRemote(ctx, remote, src, "refs/heads/")
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
