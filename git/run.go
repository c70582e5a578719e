// Package git drives the git command: local bare mirrors of remote repositories, fetches
// of refs and single commits, listing refs, checking a commit out into a plain directory,
// and reading files at a commit without a checkout. Credentials for private repositories
// travel in the environment of the git process, never in URLs or on its command line.
package git

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Binary is the git command run by this package.
var Binary = "git"

// command is one git invocation.
type command struct {
	dir    string    // working directory ("" for the current one)
	gitDir string    // --git-dir, when set
	args   []string  // arguments after "git"
	env    []string  // extra environment (credentials, index file)
	stdin  io.Reader // standard input
	stdout io.Writer // when set, stdout streams there instead of being returned
	remote string    // the remote URL this command talks to, for error messages
	log    *slog.Logger
}

// run runs c, killing git and every process it started when ctx is done. It returns
// what git printed on stdout (unless c.stdout is set).
func (c command) run(ctx context.Context) ([]byte, error) {
	args := c.args
	if c.gitDir != "" {
		args = append([]string{"--git-dir=" + c.gitDir}, args...)
	}
	cmd := exec.Command(Binary, args...)
	cmd.Dir = c.dir
	cmd.Env = append(baseEnv(), c.env...)
	cmd.Stdin = c.stdin
	var stdout, stderr bytes.Buffer
	if c.stdout != nil {
		cmd.Stdout = c.stdout
	} else {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 64 << 10}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("git %s: %w", c.describe(), err)
	}
	done := make(chan struct{})
	killed := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// The whole process group: git forks helpers (remote-https, index-pack).
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			close(killed)
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	if c.log != nil {
		c.log.Debug("git", "cmd", c.describe(), "took", time.Since(start), "err", err)
	}
	select {
	case <-killed:
		return nil, fmt.Errorf("git %s: %w", c.describe(), ctx.Err())
	default:
	}
	if err != nil {
		return nil, classify(c.describe(), c.remote, stderr.String(), err)
	}
	return stdout.Bytes(), nil
}

// describe is the command line for messages, with URLs stripped of credentials.
func (c command) describe() string {
	parts := make([]string, 0, len(c.args))
	for _, a := range c.args {
		parts = append(parts, Redact(a))
	}
	return strings.Join(parts, " ")
}

// baseEnv is the environment of every git process: the caller's, without prompts, and
// without anything that would make git read a repository other than the one named.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
			"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_ASKPASS", "SSH_ASKPASS",
			"GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "GIT_TERMINAL_PROMPT":
			continue
		}
		if strings.HasPrefix(k, "GIT_CONFIG_KEY_") || strings.HasPrefix(k, "GIT_CONFIG_VALUE_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"GCM_INTERACTIVE=never",
		"LC_ALL=C",
	)
	if os.Getenv("GIT_SSH_COMMAND") == "" && os.Getenv("GIT_SSH") == "" {
		env = append(env, "GIT_SSH_COMMAND=ssh -o BatchMode=yes")
	}
	return env
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

// Errors that callers can test for with errors.Is.
var (
	// ErrAuth: the remote refused the credentials, or needs some and none were given.
	ErrAuth = errors.New("authentication failed")
	// ErrNotFound: the repository does not exist (or is hidden from these credentials).
	ErrNotFound = errors.New("repository not found")
	// ErrNetwork: the remote could not be reached.
	ErrNetwork = errors.New("network error")
	// ErrNoCommit: the commit asked for is not in the repository.
	ErrNoCommit = errors.New("commit not found")
)

// Error is a failed git command.
type Error struct {
	Command string // the git command line, credentials removed
	Remote  string // the remote URL involved, credentials removed ("" for local work)
	Kind    error  // ErrAuth, ErrNotFound, ErrNetwork, or nil
	Stderr  string // the last lines git printed
	Err     error  // the exit error
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Kind == ErrAuth:
		fmt.Fprintf(&b, "authentication failed for %s", e.Remote)
	case e.Kind == ErrNotFound:
		fmt.Fprintf(&b, "repository not found: %s", e.Remote)
	case e.Kind == ErrNetwork:
		fmt.Fprintf(&b, "network error reaching %s", e.Remote)
	default:
		fmt.Fprintf(&b, "git %s: %v", e.Command, e.Err)
	}
	if e.Stderr != "" {
		fmt.Fprintf(&b, ": %s", e.Stderr)
	}
	return b.String()
}

func (e *Error) Unwrap() []error {
	if e.Kind != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Err}
}

// classify turns a failed git run into an *Error, recognising the common ways access fails.
func classify(cmdline, remote, stderr string, err error) error {
	low := strings.ToLower(stderr)
	var kind error
	if remote != "" {
		switch {
		case containsAny(low, "authentication failed", "could not read username",
			"could not read password", "terminal prompts disabled", "permission denied (publickey",
			"the requested url returned error: 401", "the requested url returned error: 403",
			"invalid username or password", "access denied", "http basic: access denied"):
			kind = ErrAuth
		case containsAny(low, "repository not found", "does not appear to be a git repository",
			"the requested url returned error: 404", "not found", "no such file or directory",
			"does not exist"):
			kind = ErrNotFound
		case containsAny(low, "could not resolve host", "connection refused", "failed to connect",
			"connection timed out", "operation timed out", "network is unreachable",
			"no route to host", "connection reset", "unable to access", "early eof",
			"the remote end hung up unexpectedly", "unable to look up", "couldn't connect"):
			kind = ErrNetwork
		}
	}
	return &Error{Command: cmdline, Remote: Redact(remote), Kind: kind, Stderr: lastLines(Redact(stderr), 3), Err: err}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}
