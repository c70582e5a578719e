// Package sandbox runs one build step's command in an isolated container with runc: fresh
// namespaces, only the step's root filesystem visible, optional host network, named cache
// and secret mounts, resource limits and a timeout.
package sandbox

import (
	"errors"
	"fmt"
	"time"
)

// Config is one command to run in a sandbox.
type Config struct {
	// Rootfs is the (writable) root filesystem directory.
	Rootfs string
	// Args is the command and its arguments.
	Args []string
	// Env holds KEY=VALUE entries.
	Env []string
	// Cwd is the absolute working directory inside the sandbox.
	Cwd      string
	UID, GID uint32
	// HostNetwork shares the host's network (and its /etc/resolv.conf and /etc/hosts);
	// otherwise the sandbox has only a loopback interface.
	HostNetwork bool
	// Mounts are host directories bound into the sandbox (cache directories).
	Mounts []Mount
	// Secrets are files made for this run only, on a tmpfs, mounted read-only.
	Secrets []Secret
	// Tmpfs are directories (absolute, inside the sandbox) that are empty in-memory
	// file systems for this run only.
	Tmpfs  []string
	Limits Limits
	// Timeout ends the command after this long (0: no limit but the context's).
	Timeout time.Duration
}

// Mount binds the host directory Source at Target (absolute, inside the sandbox).
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// Secret is a value shown as the read-only file Target.
type Secret struct {
	Target string
	Value  []byte
}

// Limits are the resources a command may use; zero or less means unlimited.
type Limits struct {
	// Memory is the memory limit in bytes (the command is killed past it).
	Memory int64
	// CPUs is the CPU time share, in CPUs (1.5 = one and a half cores).
	CPUs float64
	// CPUSet pins the command to these CPUs ("1", "2,3", "0-3"), a benchmark slot's.
	CPUSet string
	// Pids is the largest number of processes and threads.
	Pids int64
	// Disk is how many bytes the command may add to its root filesystem; past it the
	// command is killed and fails with an *ExitError wrapping ErrDiskBudget.
	Disk int64
}

// Result is how a command ended.
type Result struct {
	ExitCode int
	// OOMKilled is set when the kernel killed a process of the sandbox because the memory
	// limit was reached.
	OOMKilled bool
	Duration  time.Duration
}

// ExitError is a command that ran and failed.
type ExitError struct {
	Code int
	// OOMKilled: the memory limit was exceeded.
	OOMKilled bool
	// DiskUsed is set when the command was killed for writing past its disk budget: the
	// bytes it had written.
	DiskUsed int64
}

func (e *ExitError) Error() string {
	switch {
	case e.OOMKilled:
		return fmt.Sprintf("memory limit exceeded (command killed, exit status %d)", e.Code)
	case e.DiskUsed > 0:
		return fmt.Sprintf("%v: %d MiB written (command killed)", ErrDiskBudget, e.DiskUsed>>20)
	}
	return fmt.Sprintf("command failed with exit status %d", e.Code)
}

// Unwrap gives ErrDiskBudget for a command killed past its disk budget.
func (e *ExitError) Unwrap() error {
	if e.DiskUsed > 0 {
		return ErrDiskBudget
	}
	return nil
}

// ErrDiskBudget is wrapped by the error of a command that wrote more than Limits.Disk.
var ErrDiskBudget = errors.New("disk budget exceeded")

// ErrTimeout is returned (wrapped) when a command runs past its timeout.
var ErrTimeout = errors.New("timeout")

// ErrSetup is returned (wrapped) when the sandbox itself could not start or be cleaned
// up: an infrastructure fault, not the command's.
var ErrSetup = errors.New("sandbox setup")
