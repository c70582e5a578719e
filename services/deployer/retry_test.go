package deployer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/registry"
)

// retryDeployer is a deployer of validConfig's service with web1 at addr and quick
// retries (3 attempts, 1 ms backoff).
func retryDeployer(t *testing.T, addr string) (*Deployer, *prometheus.Registry) {
	t.Helper()
	dir := t.TempDir()
	cfg := strings.Replace(validConfig(t, dir), "deploy@127.0.0.1:2222", "deploy@"+addr, 1)
	cfg = "retry: {attempts: 3, backoff: 1ms}\n" + cfg
	file := filepath.Join(dir, "deployer.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	d, err := New(Options{ConfigFile: file, StateDir: filepath.Join(dir, "state"), Register: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, reg
}

// TestRetry: infrastructure failures are tried again up to the configured attempts,
// recorded and counted as such; a failure of the work itself is not retried.
func TestRetry(t *testing.T) {
	hostDown := &HostError{Host: "web1", Kind: ErrUnreachable, Msg: "Connection refused"}
	registryDown := fmt.Errorf("push ocaml/web: %w", &registry.Error{Op: "push", Registry: "r", Repository: "ocaml/web", Kind: registry.ErrUnreachable})
	for _, tc := range []struct {
		name      string
		errs      []error // what each attempt returns; nil after the list
		wantCalls int
		wantErr   string // "" for success
		wantInfra string
	}{
		{name: "host back after two failures", errs: []error{hostDown, hostDown}, wantCalls: 3, wantInfra: "host-unreachable"},
		{name: "registry down throughout", errs: []error{registryDown, registryDown, registryDown}, wantCalls: 3,
			wantErr: "infrastructure failure (registry-unreachable), 3 attempts", wantInfra: "registry-unreachable"},
		{name: "health check failure is not retried", errs: []error{&HealthError{Output: "503"}}, wantCalls: 1, wantErr: "health check failed: 503"},
		{name: "command failure is not retried", errs: []error{&HostError{Host: "web1", Msg: "docker: no such service"}}, wantCalls: 1,
			wantErr: "no such service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, reg := retryDeployer(t, testenv.FreeAddr(t))
			cfg := d.config()
			svc := &cfg.Services[0]
			rec := d.st.begin(Record{Service: svc.Name, Stage: "production", Kind: "deploy"})
			calls := 0
			var jobLog []string
			ctx := withJob(context.Background(), "job", writerFunc(func(p []byte) { jobLog = append(jobLog, string(p)) }))
			err := d.retry(ctx, cfg, svc, "production", rec, func() error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Errorf("%d attempts, want %d", calls, tc.wantCalls)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if len(jobLog) != tc.wantCalls-1 || len(jobLog) > 0 && !strings.Contains(jobLog[0], "attempt 1 of 3 failed ("+tc.wantInfra+")") {
				t.Errorf("the engine job's log: %q", jobLog)
			}
			r := d.st.history(svc.Name)[0]
			if r.Infrastructure != tc.wantInfra || tc.wantInfra != "" && r.Attempts != min(tc.wantCalls, 3) {
				t.Errorf("record: infrastructure %q after %d attempts, want %q after %d", r.Infrastructure, r.Attempts, tc.wantInfra, tc.wantCalls)
			}
			m := testenv.Metrics(t, reg)
			if got, want := m[`kiln_deployer_retries_total{kind=`+tc.wantInfra+`,service=web,stage=production}`], float64(tc.wantCalls-1); tc.wantInfra != "" && got != want {
				t.Errorf("retries counted %v, want %v (%v)", got, want, m)
			}
		})
	}
}

// TestDeployUnreachableHost deploys to a host whose SSH port is closed: the deploy is
// tried three times and recorded as failed for the infrastructure's sake.
func TestDeployUnreachableHost(t *testing.T) {
	testenv.RequireCommand(t, "ssh")
	d, _ := retryDeployer(t, testenv.FreeAddr(t))
	cfg := d.config()
	err := d.deploy(context.Background(), cfg, &cfg.Services[0], "production", "0123456789abcdef", "sha256:00", "deploy", "")
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("deploy error %v, want ErrUnreachable", err)
	}
	r := d.st.history("web")[0]
	if r.Outcome != OutcomeFailed || r.Infrastructure != "host-unreachable" || r.Attempts != 3 || !strings.Contains(r.Message, "3 attempts") {
		t.Errorf("record %+v: want failed, host-unreachable, 3 attempts", r)
	}
}

func TestDockerError(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      error
	}{
		{"registry refusing", `Error response from daemon: Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused`, ErrRegistryUnreachable},
		{"registry behind a failing proxy", "Error response from daemon: received unexpected HTTP status: 503 Service Unavailable", ErrRegistryUnreachable},
		{"engine down", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", ErrEngineUnreachable},
		{"missing image", "Error response from daemon: manifest for x:y not found: manifest unknown", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dockerError(tc.msg); got != tc.want {
				t.Errorf("dockerError = %v, want %v", got, tc.want)
			}
		})
	}
}

// writerFunc is an io.Writer calling a function with each write.
type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }
