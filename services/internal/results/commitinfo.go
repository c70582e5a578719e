package results

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/current"
)

// ReadCommitInfo reads a commit's message, author and date from the git directory
// that holds it.
func ReadCommitInfo(ctx context.Context, gitDir, commit string) (CommitInfo, error) {
	out, err := current.Command(ctx, "git", "--git-dir", gitDir, "show", "-s", "--format=%an%x00%aI%x00%B", commit, "--").Output()
	if err != nil {
		return CommitInfo{}, fmt.Errorf("read commit %s in %s: %w", commit, gitDir, err)
	}
	f := strings.SplitN(string(out), "\x00", 3)
	if len(f) != 3 {
		return CommitInfo{}, fmt.Errorf("read commit %s in %s: unexpected output %q", commit, gitDir, out)
	}
	t, err := time.Parse(time.RFC3339, f[1])
	if err != nil {
		return CommitInfo{}, fmt.Errorf("read commit %s in %s: author date %q: %w", commit, gitDir, f[1], err)
	}
	return CommitInfo{Author: f[0], Authored: t, Message: strings.TrimSpace(f[2])}, nil
}
