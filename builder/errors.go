package builder

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/kiln-ci/kiln/builder/sandbox"
)

// Fault says whose fault a failed build is.
type Fault int

const (
	// BuildFault: the spec or the code it builds failed (a command exited non-zero, a
	// copy named a missing file, the memory limit was exceeded, a step ran past the
	// step timeout, the workdir cannot be made). Retrying will not help.
	BuildFault Fault = iota
	// InfraFault: the builder failed (full disk, sandbox or store trouble).
	// Another try, perhaps on another worker, may succeed.
	InfraFault
)

func (f Fault) String() string {
	if f == InfraFault {
		return "infrastructure"
	}
	return "build"
}

// Error is a failed build: which step, whose fault, and why.
type Error struct {
	Fault Fault
	// Step is the op that failed, as printed in the log ("" before any step).
	Step string
	Err  error
}

func (e *Error) Error() string {
	var what string
	if e.Fault == InfraFault {
		what = "infrastructure error: "
	}
	if e.Step != "" {
		return fmt.Sprintf("%s%s: %v", what, e.Step, e.Err)
	}
	return what + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrDiskFull is wrapped by errors of steps that failed because the store's disk is full.
var ErrDiskFull = errors.New("disk full")

// ErrMemoryLimit is wrapped by errors of steps killed for exceeding their memory limit.
var ErrMemoryLimit = errors.New("memory limit exceeded")

// ErrTimeout is wrapped by errors of steps that ran past the step timeout.
var ErrTimeout = sandbox.ErrTimeout

// IsInfrastructure reports whether err is the builder's fault rather than the build's,
// so that retrying (elsewhere) makes sense.
func IsInfrastructure(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Fault == InfraFault
	}
	return false
}

func buildErr(step string, err error) error {
	return &Error{Fault: BuildFault, Step: step, Err: err}
}

func infraErr(step string, err error) error {
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrDiskFull) {
		err = fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return &Error{Fault: InfraFault, Step: step, Err: err}
}

// classify wraps an error from running a step.
func classify(step string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var exit *sandbox.ExitError
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, ErrDiskFull):
		return infraErr(step, err)
	case errors.As(err, &exit) && exit.OOMKilled:
		return buildErr(step, fmt.Errorf("%w (exit status %d)", ErrMemoryLimit, exit.Code))
	case errors.As(err, &exit):
		return buildErr(step, err)
	case errors.Is(err, sandbox.ErrTimeout):
		// The spec's step ran too long: another worker would wait as long.
		return buildErr(step, err)
	case errors.Is(err, sandbox.ErrSetup):
		return infraErr(step, err)
	}
	return infraErr(step, err)
}
