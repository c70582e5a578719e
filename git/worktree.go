package git

import (
	"context"
	"fmt"
	"os"
)

// WorkTree is a repository with its files checked out, for programs that make commits
// of their own (a sample project to build, a test's repository).
type WorkTree struct {
	Dir string
	// Name and Email sign the commits (default "kiln" and "kiln@localhost").
	Name, Email string
}

// Init makes a repository in dir on branch, or opens the one there.
func Init(ctx context.Context, dir, branch string) (*WorkTree, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	w := &WorkTree{Dir: dir}
	if _, err := w.git("init", "-q", "-b", branch).run(ctx); err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	return w, nil
}

func (w *WorkTree) git(args ...string) command {
	name, email := w.Name, w.Email
	if name == "" {
		name = "kiln"
	}
	if email == "" {
		email = "kiln@localhost"
	}
	return command{dir: w.Dir, args: append([]string{"-c", "user.name=" + name, "-c", "user.email=" + email,
		"-c", "commit.gpgsign=false"}, args...)}
}

// CommitAll commits every change of the work tree (new, changed and deleted files) on
// the current branch and returns the new commit.
func (w *WorkTree) CommitAll(ctx context.Context, message string) (string, error) {
	if _, err := w.git("add", "-A").run(ctx); err != nil {
		return "", fmt.Errorf("commit in %s: %w", w.Dir, err)
	}
	if _, err := w.git("commit", "-q", "--allow-empty", "-m", message).run(ctx); err != nil {
		return "", fmt.Errorf("commit in %s: %w", w.Dir, err)
	}
	out, err := w.git("rev-parse", "HEAD").run(ctx)
	if err != nil {
		return "", fmt.Errorf("commit in %s: %w", w.Dir, err)
	}
	return string(trimNewline(out)), nil
}

// Switch makes branch the current branch, creating it at the current commit when
// create is set.
func (w *WorkTree) Switch(ctx context.Context, branch string, create bool) error {
	args := []string{"checkout", "-q", branch}
	if create {
		args = []string{"checkout", "-q", "-b", branch}
	}
	if _, err := w.git(args...).run(ctx); err != nil {
		return fmt.Errorf("switch to %s in %s: %w", branch, w.Dir, err)
	}
	return nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
