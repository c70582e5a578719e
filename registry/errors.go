package registry

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// The kinds of failure a registry operation reports; test them with errors.Is.
var (
	// ErrUnreachable: the registry could not be reached (connection refused, no such
	// host, timeout).
	ErrUnreachable = errors.New("registry unreachable")
	// ErrUnauthorized: the registry refused the credentials (or none were given).
	ErrUnauthorized = errors.New("unauthorized (wrong or missing credentials)")
	// ErrDenied: the credentials were accepted but the operation is not allowed
	// (no write access, a read-only registry).
	ErrDenied = errors.New("denied")
	// ErrNotFound: the repository, tag, manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrDiskFull: the registry has no space left to store what was pushed.
	ErrDiskFull = errors.New("registry disk full")
	// ErrBadSignature: a signature is missing or does not match (Verify).
	ErrBadSignature = errors.New("signature check failed")
)

// Error is a failed registry operation: what was attempted, on which registry and
// repository, the kind of failure (one of the Err values, or nil when unclassified)
// and the underlying error.
type Error struct {
	Op         string // push, index, tag, digest, sign, verify, attach, …
	Registry   string // host[:port]
	Repository string
	Kind       error
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: registry %s, repository %s", e.Op, e.Registry, e.Repository)
	if e.Kind != nil {
		fmt.Fprintf(&b, ": %v", e.Kind)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap gives both the kind and the underlying error to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var out []error
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// classify tells the kind of a go-containerregistry or network error.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "no space left on device") || errors.Is(err, syscall.ENOSPC) {
		return ErrDiskFull
	}
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			if noSpace(d.Detail) {
				return ErrDiskFull
			}
			switch d.Code {
			case transport.UnauthorizedErrorCode:
				return ErrUnauthorized
			case transport.DeniedErrorCode:
				return ErrDenied
			case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
				return ErrNotFound
			}
		}
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return ErrUnauthorized
		case http.StatusForbidden, http.StatusMethodNotAllowed:
			// distribution answers 405 UNSUPPORTED to writes in read-only mode.
			return ErrDenied
		case http.StatusNotFound:
			return ErrNotFound
		}
		return nil
	}
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &de) || errors.Is(err, syscall.ECONNREFUSED) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return ErrUnreachable
	}
	return nil
}

// noSpace reports whether an error detail of distribution says ENOSPC: the message
// "no space left on device", or a storage driver error {"Enclosed": {"Err": 28}}.
func noSpace(detail any) bool {
	switch d := detail.(type) {
	case string:
		return strings.Contains(d, "no space left on device")
	case map[string]any:
		if n, ok := d["Err"].(float64); ok && syscall.Errno(n) == syscall.ENOSPC {
			return true
		}
		for _, v := range d {
			if noSpace(v) {
				return true
			}
		}
	}
	return false
}
