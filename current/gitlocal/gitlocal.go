// Package gitlocal monitors the branch heads of a git repository on disk, so a pipeline
// can follow a local repository before any forge is involved.
package gitlocal

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/kiln-ci/kiln/current"
)

// Ref is a branch head.
type Ref struct {
	Repo   string `json:"repo"`
	Name   string `json:"name"` // branch name, without refs/heads/
	Commit string `json:"commit"`
}

// Key identifies the branch (for ListMap).
func (r Ref) Key() string { return r.Name }

// Read lists the branch heads of repo (a working tree or a bare repository), sorted by name.
func Read(ctx context.Context, repo string) ([]Ref, error) {
	cmd := exec.CommandContext(ctx, "git", "-C", repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git for-each-ref in %s: %v: %s", repo, err, strings.TrimSpace(stderr.String()))
	}
	var refs []Ref
	sc := bufio.NewScanner(bytes.NewReader(out))
	for line := 1; sc.Scan(); line++ {
		hash, name, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "refs/heads/") {
			return nil, fmt.Errorf("git for-each-ref in %s: line %d: unexpected %q", repo, line, sc.Text())
		}
		refs = append(refs, Ref{Repo: repo, Name: strings.TrimPrefix(name, "refs/heads/"), Commit: hash})
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
	return refs, nil
}

// gitDir finds the folder holding refs/ and packed-refs.
func gitDir(ctx context.Context, repo string) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "--absolute-git-dir").Output()
	if err != nil {
		return "", fmt.Errorf("%s is not a git repository: %w", repo, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Heads monitors the branch heads of repo: it watches the repository's refs with
// fsnotify and also reads them every poll (default 1 minute), for file systems where
// notifications do not arrive.
func Heads(repo string, poll time.Duration) *current.Monitor[[]Ref] {
	if poll <= 0 {
		poll = time.Minute
	}
	return &current.Monitor[[]Ref]{
		Name: "git heads " + filepath.Base(repo),
		Read: func(ctx context.Context) ([]Ref, error) { return Read(ctx, repo) },
		Watch: func(ctx context.Context, refresh func()) error {
			return watch(ctx, repo, poll, refresh)
		},
	}
}

func watch(ctx context.Context, repo string, poll time.Duration, refresh func()) error {
	dir, err := gitDir(ctx, repo)
	if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", repo, err)
	}
	defer w.Close()
	add := func(p string) {
		filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				w.Add(path)
			}
			return nil
		})
	}
	w.Add(dir) // packed-refs, and ref lock files renamed into place
	add(filepath.Join(dir, "refs", "heads"))
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			refresh()
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					add(ev.Name)
				}
			}
			if strings.HasSuffix(ev.Name, ".lock") {
				continue
			}
			refresh()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			return fmt.Errorf("watch %s: %w", repo, err)
		}
	}
}
