// Package demo is the pipeline `kiln serve` runs out of the box: it watches the branches
// of a local git repository (gitlocal.Heads) and, for each branch head, checks the commit
// out and runs a few cached jobs on it (count lines, run the repository's check script).
package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/current/gitlocal"
	"github.com/kiln-ci/kiln/git"
)

// Source is a commit checked out on disk.
type Source struct {
	Commit string `json:"commit"`
	Dir    string `json:"dir"`
}

// Options configures the demonstration pipeline.
type Options struct {
	Repo     string        // the git repository watched
	WorkDir  string        // where checkouts go
	Poll     time.Duration // how often the branch heads are read besides on change (default 10s)
	Runner   Runner        // runs the jobs' scripts (default HostRunner)
	CheckCmd string        // the check job's script (default: ./check.sh when the commit has one)
}

// Pipeline returns the demonstration pipeline over o.Repo.
func Pipeline(o Options) current.Term[current.Unit] {
	if o.Poll <= 0 {
		o.Poll = 10 * time.Second
	}
	if o.Runner == nil {
		o.Runner = HostRunner{}
	}
	heads := gitlocal.Heads(o.Repo, o.Poll)
	// Keyed and fed by the commit alone, so branches on one commit share the checkout.
	checkout := &current.Op[string, Source]{
		Name:  "demo-checkout",
		Key:   func(commit string) string { return commit },
		Label: func(commit string) string { return "checkout " + short(commit) },
		Run: func(ctx context.Context, j *current.Job, commit string) (Source, error) {
			dir := filepath.Join(o.WorkDir, "src", commit)
			j.Logf("checking out %s into %s", commit, dir)
			if _, err := os.Stat(filepath.Join(dir, ".kiln-complete")); err == nil {
				j.Logf("already checked out")
				return Source{Commit: commit, Dir: dir}, nil
			}
			os.RemoveAll(dir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return Source{}, current.Infra(current.FailDiskFull, err)
			}
			repo, err := git.Open(ctx, o.Repo)
			if err != nil {
				return Source{}, err
			}
			if err := repo.Checkout(ctx, commit, dir); err != nil {
				return Source{}, err
			}
			if err := os.WriteFile(filepath.Join(dir, ".kiln-complete"), nil, 0o644); err != nil {
				return Source{}, err
			}
			j.Logf("done")
			return Source{Commit: commit, Dir: dir}, nil
		},
	}
	count := &current.Op[Source, int]{
		Name:  "demo-count-lines",
		Key:   func(s Source) string { return s.Commit },
		Label: func(s Source) string { return "count lines " + short(s.Commit) },
		Run: func(ctx context.Context, j *current.Job, s Source) (int, error) {
			err := o.Runner.Run(ctx, j, Step{Name: "count lines", Dir: s.Dir,
				Script: `find . -type f ! -name .kiln-complete | sort | while read -r f; do printf '%8d %s\n' "$(wc -l < "$f")" "$f"; done; echo "total: $(find . -type f ! -name .kiln-complete -exec cat {} + | wc -l)"`})
			if err != nil {
				return 0, err
			}
			return countTotal(s.Dir)
		},
	}
	check := &current.Op[Source, string]{
		Name:    "demo-check",
		Key:     func(s Source) string { return s.Commit },
		Label:   func(s Source) string { return "check " + short(s.Commit) },
		Timeout: 30 * time.Minute,
		Run: func(ctx context.Context, j *current.Job, s Source) (string, error) {
			script := o.CheckCmd
			if script == "" {
				if _, err := os.Stat(filepath.Join(s.Dir, "check.sh")); err != nil {
					j.Logf("no check.sh in %s: nothing to check", short(s.Commit))
					return "skipped", nil
				}
				script = "sh ./check.sh"
			}
			if err := o.Runner.Run(ctx, j, Step{Name: "check", Dir: s.Dir, Script: script}); err != nil {
				return "", err
			}
			return "passed", nil
		},
	}
	return current.ListIter(heads.Term(), gitlocal.Ref.Key, func(h current.Term[gitlocal.Ref]) current.Term[current.Unit] {
		src := current.Do(checkout, current.Map(h, func(r gitlocal.Ref) string { return r.Commit }))
		return current.All(current.Do(count, src), current.Do(check, src))
	})
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// countTotal counts the lines of the files under dir.
func countTotal(dir string) (int, error) {
	total := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".kiln-complete" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		total += bytes.Count(b, []byte{'\n'})
		return nil
	})
	return total, err
}

// sampleCheck is the check script of the sample repository: a few seconds of coloured
// output, so the console has a live log to show.
const sampleCheck = `#!/bin/sh
# The check the demonstration pipeline runs on every commit.
printf '\033[1;34m==> checking %s\033[0m\n' "$(basename "$PWD")"
i=1
while [ $i -le 20 ]; do
  printf '\033[32mok\033[0m   step %d of 20\n' $i
  sleep 0.5
  i=$((i+1))
done
if grep -q TODO README.md; then
  printf '\033[31mFAIL\033[0m README.md still has a TODO\n'
  exit 1
fi
printf '\033[1;32mall checks passed\033[0m\n'
`

// CreateSample makes a small git repository at dir with two branches, for a console
// that has something to show out of the box. It does nothing if dir is a repository.
func CreateSample(ctx context.Context, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sample repository: %w", err)
	}
	files := map[string]string{
		"README.md":    "# sample\n\nThe repository kiln's demonstration pipeline watches.\nCommit to it and watch the console.\n",
		"check.sh":     sampleCheck,
		"src/hello.ml": "let () = print_endline \"hello\"\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			return fmt.Errorf("sample repository: %w", err)
		}
	}
	w, err := sampleTree(ctx, dir, true)
	if err != nil {
		return err
	}
	if _, err := w.CommitAll(ctx, "Initial commit"); err != nil {
		return err
	}
	if err := w.Switch(ctx, "feature", true); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(files["README.md"]+"\nTODO: say more\n"), 0o644); err != nil {
		return err
	}
	if _, err := w.CommitAll(ctx, "Say more (later)"); err != nil {
		return err
	}
	return w.Switch(ctx, "main", false)
}

// CommitSample adds a commit to branch main of a sample repository, so the demo has
// new work to do.
func CommitSample(ctx context.Context, dir string) error {
	p := filepath.Join(dir, "src", "log.txt")
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "%s\n", time.Now().UTC().Format(time.RFC3339))
	f.Close()
	w, err := sampleTree(ctx, dir, false)
	if err != nil {
		return err
	}
	_, err = w.CommitAll(ctx, "Tick "+strconv.FormatInt(time.Now().Unix(), 10))
	return err
}

// sampleTree is the sample repository in dir, made there when create is set.
func sampleTree(ctx context.Context, dir string, create bool) (*git.WorkTree, error) {
	w := &git.WorkTree{Dir: dir}
	if create {
		var err error
		if w, err = git.Init(ctx, dir, "main"); err != nil {
			return nil, err
		}
	}
	w.Name, w.Email = "kiln demo", "demo@kiln.invalid"
	return w, nil
}
