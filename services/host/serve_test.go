package host

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/cluster"
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
		return code != 0 // answered, whether or not visitors may look
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
	firstState := t.TempDir()
	first := serve(t, "--service", "ocaml-ci", "--state-dir", firstState, "--nats-listen", nats,
		"--no-arm64", "--no-base-images", "--local-workers", "1", "--local-worker-name", "first")
	// the second joins with the client token the first made
	second := serve(t, "--service", "ocaml-ci", "--state-dir", t.TempDir(), "--nats", "nats://"+nats,
		"--nats-token", "@"+cluster.TokenPath(filepath.Join(firstState, "fleet"), "client"),
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

func TestServeGuardsEveryRoute(t *testing.T) {
	testenv.RequireCommand(t, "git", "tar")
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "app.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, "--service", "ocaml-ci,demo", "--state-dir", filepath.Join(dir, "state"), "--nats-listen", testenv.FreeAddr(t),
		"--no-arm64", "--no-base-images", "--local-workers", "0", "--demo-runner", "host", "--anonymous", "none",
		"--github-app-id", "1", "--github-key", keyFile, "--github-webhook-secret", "s3cret", "--github-api", "http://127.0.0.1:1/")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cases := []struct {
		method, path string
		want         []int // any of these
	}{
		{"GET", "/", []int{http.StatusSeeOther}},
		{"GET", "/jobs", []int{http.StatusSeeOther}},
		{"GET", "/fleet", []int{http.StatusSeeOther}},
		{"GET", "/api/jobs", []int{http.StatusUnauthorized}},
		{"GET", "/git/", []int{http.StatusSeeOther}},
		{"GET", "/git/local/hello", []int{http.StatusSeeOther}},
		{"GET", "/github/ocaml/dune", []int{http.StatusSeeOther}},
		{"GET", "/gitea/", []int{http.StatusSeeOther}},
		{"GET", "/api/git/local/hello", []int{http.StatusUnauthorized}},
		{"GET", "/api/github/", []int{http.StatusUnauthorized}},
		{"GET", "/badge/local/hello/main", []int{http.StatusSeeOther}},
		{"GET", "/api/fleet/pools", []int{http.StatusUnauthorized}},
		{"GET", "/api/fleet/workers", []int{http.StatusUnauthorized}},
		// The webhook is public, and answers for itself: no CSRF token, a bad signature.
		{"POST", "/webhooks/github", []int{http.StatusUnauthorized}},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, s.base+c.path, strings.NewReader("{}"))
			req.Header.Set("X-GitHub-Event", "push")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !slices.Contains(c.want, resp.StatusCode) {
				t.Errorf("anonymous %s %s: %d %s, want one of %v", c.method, c.path, resp.StatusCode, body, c.want)
			}
			if resp.StatusCode == http.StatusSeeOther && !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
				t.Errorf("redirected to %q, want the login page", resp.Header.Get("Location"))
			}
			if c.path == "/webhooks/github" && !strings.Contains(string(body), "signature") {
				t.Errorf("webhook answer %q: want the webhook's own refusal", body)
			}
			for _, h := range []string{"X-Frame-Options", "X-Content-Type-Options", "Content-Security-Policy"} {
				if resp.Header.Get(h) == "" {
					t.Errorf("no %s header", h)
				}
			}
		})
	}
}
