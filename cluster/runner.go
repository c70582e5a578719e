package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Task is one run of a job handed to a Runner.
type Task struct {
	ID        string
	Attempt   int
	Pool      string
	Spec      string            // builder spec text
	Context   string            // directory holding the job's source tree (may be empty)
	Secrets   map[string][]byte // resolved secret references
	CacheHint string
}

// Runner executes builds on a worker. Run writes the build's log to log and returns the
// snapshot id of a successful build. An error wrapped with Infrastructure is the
// machine's fault (retried elsewhere); any other error is a failed build. Run must stop
// promptly, killing what it started, when ctx ends.
type Runner interface {
	Run(ctx context.Context, t Task, log io.Writer) (snapshot string, err error)
}

// OutputRunner is a Runner whose runs also return a typed result, as JSON, kept in
// the job's Result.Output whether the run succeeded or failed. A worker calls RunOutput
// instead of Run.
type OutputRunner interface {
	Runner
	RunOutput(ctx context.Context, t Task, log io.Writer) (snapshot string, output json.RawMessage, err error)
}

// HealthChecker is a Runner that can tell whether it can build at all; a worker whose
// check fails pauses itself until it passes again.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Pruner is a Runner with a store it can trim.
type Pruner interface {
	Prune(ctx context.Context) error
}

// InfrastructureError marks a failure that is not the build's fault.
type InfrastructureError struct{ Err error }

func (e *InfrastructureError) Error() string { return e.Err.Error() }
func (e *InfrastructureError) Unwrap() error { return e.Err }

// Infrastructure marks err as the infrastructure's fault.
func Infrastructure(err error) error {
	if err == nil {
		return nil
	}
	return &InfrastructureError{Err: err}
}

// IsInfrastructure reports whether err is marked as the infrastructure's fault.
func IsInfrastructure(err error) bool {
	var ie *InfrastructureError
	return errors.As(err, &ie)
}

// ShellRunner runs the spec text as a /bin/sh script in a copy of the source tree, in
// its own process group that is killed on cancel. It serves pools whose builds are plain
// commands, and tests of the fleet.
type ShellRunner struct {
	WorkDir string // where per-run directories go
	Shell   string // default /bin/sh
}

// Run implements Runner.
func (r *ShellRunner) Run(ctx context.Context, t Task, log io.Writer) (string, error) {
	dir, err := os.MkdirTemp(r.WorkDir, "run-"+t.ID+"-")
	if err != nil {
		return "", Infrastructure(fmt.Errorf("work dir: %w", err))
	}
	defer os.RemoveAll(dir)
	if t.Context != "" {
		if err := os.CopyFS(dir, os.DirFS(t.Context)); err != nil {
			return "", Infrastructure(fmt.Errorf("copy source: %w", err))
		}
	}
	shell := r.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	cmd := exec.Command(shell, "-ec", t.Spec)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir, "KILN_JOB=" + t.ID}
	for name, v := range t.Secrets {
		cmd.Env = append(cmd.Env, "SECRET_"+name+"="+string(v))
	}
	if err := cmd.Start(); err != nil {
		return "", Infrastructure(fmt.Errorf("start %s: %w", shell, err))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(2 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return "", ctx.Err()
	}
	if err != nil {
		return "", fmt.Errorf("script: %w", err)
	}
	return "", nil
}

// Health implements HealthChecker: the shell must run.
func (r *ShellRunner) Health(ctx context.Context) error {
	shell := r.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	if out, err := exec.CommandContext(ctx, shell, "-c", "exit 0").CombinedOutput(); err != nil {
		return fmt.Errorf("%s does not run: %v %s", shell, err, out)
	}
	if r.WorkDir != "" {
		if _, err := os.Stat(r.WorkDir); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
	}
	return nil
}
