package current

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// FailureKind says whose fault a failure is: the work's, or the infrastructure's.
type FailureKind string

// The failure kinds. Every kind but FailWork is an infrastructure failure.
const (
	FailWork        FailureKind = "work"
	FailTimeout     FailureKind = "timeout"
	FailCancelled   FailureKind = "cancelled"
	FailWorkerLost  FailureKind = "worker-lost"
	FailDiskFull    FailureKind = "disk-full"
	FailNetwork     FailureKind = "network"
	FailInterrupted FailureKind = "interrupted"
)

// Infrastructure reports whether the failure is the infrastructure's rather than the work's.
func (k FailureKind) Infrastructure() bool { return k != "" && k != FailWork }

// retryable reports whether a failure of this kind is worth retrying.
func (k FailureKind) retryable() bool { return k.Infrastructure() && k != FailCancelled }

// InfraError is an infrastructure failure of the given kind.
type InfraError struct {
	Kind FailureKind
	Err  error
}

// Error is the failure's message; its kind is a separate fact (KindOf), recorded and
// shown beside the message.
func (e *InfraError) Error() string { return e.Err.Error() }
func (e *InfraError) Unwrap() error { return e.Err }

// Infra marks err as an infrastructure failure of the given kind, so the engine retries it.
func Infra(kind FailureKind, err error) error {
	if err == nil {
		return nil
	}
	return &InfraError{Kind: kind, Err: err}
}

// LinesError is a failure with the lines of the job's log that explain it (a compiler
// error and its context, say). The engine keeps the lines with the result, and
// Observed shows them, so a status can quote them without parsing the message.
type LinesError struct {
	Err   error
	Lines []string
}

func (e *LinesError) Error() string { return e.Err.Error() }
func (e *LinesError) Unwrap() error { return e.Err }

// WithLines attaches the log lines that explain err to it.
func WithLines(err error, lines []string) error {
	if err == nil {
		return nil
	}
	return &LinesError{Err: err, Lines: lines}
}

// LinesOf returns the lines attached to err by WithLines, if any.
func LinesOf(err error) []string {
	var le *LinesError
	if errors.As(err, &le) {
		return le.Lines
	}
	return nil
}

// KindOf classifies an error returned by an operation.
func KindOf(err error) FailureKind {
	if err == nil {
		return ""
	}
	var ie *InfraError
	if errors.As(err, &ie) {
		return ie.Kind
	}
	if diskFull(err) {
		return FailDiskFull
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return FailTimeout
	}
	if errors.Is(err, context.Canceled) {
		return FailCancelled
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return FailNetwork
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return FailNetwork
	}
	return FailWork
}

// diskFull reports whether err says a file system or SQLite database is full.
func diskFull(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return true
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// ErrNotFound is matched (errors.Is) by every error about an unknown job, rule or log.
var ErrNotFound = errors.New("not found")

// NotFoundError names what was not found.
type NotFoundError struct {
	What string // "job", "log rule", "log"
	ID   string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.What, e.ID) }

// Is makes errors.Is(err, ErrNotFound) hold.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

func notFound(what, id string) error { return &NotFoundError{What: what, ID: id} }

// ErrInvalid is matched (errors.Is) by every error about bad input: a malformed
// pattern, query, offset or level.
var ErrInvalid = errors.New("invalid input")

// InvalidError is bad input; its message names what was wrong.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrInvalid) hold.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// ErrNotActive is returned when an action needs a job that is ready, waiting or running.
var ErrNotActive = errors.New("job is not active")
