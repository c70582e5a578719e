package host

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// served is a `kiln serve` process.
type served struct {
	t    *testing.T
	base string
	out  *testenv.Buffer
}

func serve(t *testing.T, args ...string) *served {
	t.Helper()
	bin := testenv.KilnBinary(t)
	addr := testenv.FreeAddr(t)
	s := &served{t: t, base: "http://" + addr, out: &testenv.Buffer{}}
	cmd := exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), "KILN_ADMIN_PASSWORD=test-password")
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("kiln serve %s output:\n%s", strings.Join(args, " "), s.out)
		}
	})
	s.waitFor("the console to answer", func() bool {
		select {
		case <-done:
			t.Fatalf("kiln serve exited:\n%s", s.out)
		default:
		}
		code, _ := s.get("/api/jobs")
		return code == http.StatusOK
	})
	return s
}

func (s *served) get(path string) (int, []byte) {
	resp, err := http.Get(s.base + path)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (s *served) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// finished counts the successful results of an operation.
func (s *served) finished(op string) int {
	code, b := s.get("/api/query?state=ok&op=" + op + "&limit=100")
	if code != http.StatusOK {
		return 0
	}
	var q struct {
		Results []json.RawMessage `json:"results"`
	}
	json.Unmarshal(b, &q)
	return len(q.Results)
}

func TestServeRunsTwoServicesInOneProcess(t *testing.T) {
	testenv.RequireCommand(t, "git", "tar")
	state := t.TempDir()
	s := serve(t, "--service", "ocaml-ci,demo", "--state-dir", state, "--nats-listen", testenv.FreeAddr(t),
		"--no-arm64", "--no-base-images", "--local-workers", "0", "--demo-runner", "host", "--demo-poll", "200ms")

	// Both pipelines run in the one engine: the demo's jobs and ocaml-ci's analysis
	// of its sample project.
	s.waitFor("the demo's checkout", func() bool { return s.finished("demo-checkout") > 0 })
	s.waitFor("ocaml-ci's analysis", func() bool { return s.finished("ocamlci-analysis") > 0 })
	for _, path := range []string{"/", "/fleet", "/api/git/local/hello", "/git/local/hello", "/api/fleet/pools"} {
		if code, body := s.get(path); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "demo", "sample")); err != nil {
		t.Errorf("the demo's sample: %v", err)
	}
}

func TestServeProcessesShareOneFleet(t *testing.T) {
	testenv.RequireCommand(t, "git", "tar")
	nats := testenv.FreeAddr(t)
	first := serve(t, "--service", "ocaml-ci", "--state-dir", t.TempDir(), "--nats-listen", nats,
		"--no-arm64", "--no-base-images", "--local-workers", "1", "--local-worker-name", "first")
	second := serve(t, "--service", "ocaml-ci", "--state-dir", t.TempDir(), "--nats", "nats://"+nats,
		"--no-arm64", "--no-base-images", "--local-workers", "1", "--local-worker-name", "second")

	// Each server sees both workers: one scheduler, one fleet.
	for _, s := range []*served{first, second} {
		s.waitFor("both workers in the fleet", func() bool {
			code, b := s.get("/api/fleet/workers")
			if code != http.StatusOK {
				return false
			}
			var ws []struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(b, &ws); err != nil {
				t.Fatalf("workers: %v: %s", err, b)
			}
			names := fmt.Sprint(ws)
			return strings.Contains(names, "first-linux-x86_64-1") && strings.Contains(names, "second-linux-x86_64-1")
		})
	}
}
