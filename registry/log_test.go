package registry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/registry/registrytest"
)

// TestLogLevels: a failure is a warning in the log, except "not found", the answer a
// caller gets when it checks whether something is there yet.
func TestLogLevels(t *testing.T) {
	reg := registrytest.Shared(t)
	creds, err := ReadCredentials(reg.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		creds Credentials
		kind  error
		warns bool
	}{
		{name: "not found", creds: creds, kind: ErrNotFound},
		{name: "unauthorized", creds: Credentials{Username: creds.Username, Password: "wrong"}, kind: ErrUnauthorized, warns: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			c, err := New(Options{Credentials: tc.creds, Insecure: true, Registerer: prometheus.NewRegistry(),
				Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Digest(context.Background(), reg.Repo("nothing/here")+":missing")
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Digest: %v, want %v", err, tc.kind)
			}
			if got := strings.Contains(log.String(), "registry operation failed"); got != tc.warns {
				t.Errorf("warned %v, want %v; log:\n%s", got, tc.warns, log.String())
			}
		})
	}
}
