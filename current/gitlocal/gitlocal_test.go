package gitlocal

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(cmd.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return string(out)
}

func TestHeadsFollowsBranches(t *testing.T) {
	testenv.RequireCommand(t, "git")
	repo := t.TempDir()
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "commit", "-q", "--allow-empty", "-m", "one")

	refs, err := Read(context.Background(), repo)
	if err != nil || len(refs) != 1 || refs[0].Name != "main" || len(refs[0].Commit) != 40 {
		t.Fatalf("Read: %v %v", refs, err)
	}

	e, err := current.Open(current.Config{StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	m := Heads(repo, time.Hour) // polling too slow to matter: changes must come from fsnotify
	var last atomic.Int64
	names := current.Map(m.Term(), func(rs []Ref) int { last.Store(int64(len(rs))); return len(rs) }).Named("count")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, names) }()
	defer func() { cancel(); <-done }()

	waitCount := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if last.Load() == int64(want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("never saw %d branches", want)
	}
	waitCount(1)
	git(t, repo, "branch", "feature")
	waitCount(2)
	git(t, repo, "branch", "-D", "feature")
	waitCount(1)
}

func TestReadBadRepo(t *testing.T) {
	testenv.RequireCommand(t, "git")
	_, err := Read(context.Background(), t.TempDir())
	if err == nil {
		t.Fatal("no error for a folder that is not a repository")
	}
}
