package registry

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, ErrUnreachable},
		{"no such host", fmt.Errorf("ping: %w", &net.DNSError{Err: "no such host", Name: "nowhere.invalid"}), ErrUnreachable},
		{"401", &transport.Error{StatusCode: http.StatusUnauthorized}, ErrUnauthorized},
		{"UNAUTHORIZED code", &transport.Error{StatusCode: http.StatusBadRequest, Errors: []transport.Diagnostic{{Code: transport.UnauthorizedErrorCode}}}, ErrUnauthorized},
		{"DENIED", &transport.Error{StatusCode: http.StatusForbidden, Errors: []transport.Diagnostic{{Code: transport.DeniedErrorCode}}}, ErrDenied},
		{"read-only 405", &transport.Error{StatusCode: http.StatusMethodNotAllowed}, ErrDenied},
		{"MANIFEST_UNKNOWN", &transport.Error{StatusCode: http.StatusNotFound, Errors: []transport.Diagnostic{{Code: transport.ManifestUnknownErrorCode}}}, ErrNotFound},
		{"ENOSPC of the storage driver", &transport.Error{StatusCode: 500, Errors: []transport.Diagnostic{{Code: transport.UnknownErrorCode,
			Detail: map[string]any{"DriverName": "filesystem", "Enclosed": map[string]any{"Err": float64(28), "Op": "write"}}}}}, ErrDiskFull},
		{"ENOSPC message", &transport.Error{StatusCode: 500, Errors: []transport.Diagnostic{{Code: transport.UnknownErrorCode,
			Detail: "write /var/lib/registry/x: no space left on device"}}}, ErrDiskFull},
		{"other 500", &transport.Error{StatusCode: 500, Errors: []transport.Diagnostic{{Code: transport.UnknownErrorCode, Detail: map[string]any{"Err": float64(5)}}}}, nil},
		{"plain error", errors.New("something else"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
