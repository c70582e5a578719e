// Package registrytest gives tests an OCI registry: Debian's docker-registry
// (distribution 2.8) on loopback, plain HTTP, with htpasswd (bcrypt) authentication,
// its storage in a temporary folder. Shared starts one per test process; Start starts
// one for a single test, optionally read-only or on a small disk.
//
// go-containerregistry talks to it with name.Insecure (registry.Options.Insecure). A
// Docker engine accepts plain HTTP for registries on 127.0.0.0/8 without any
// --insecure-registry setting; it needs the credentials, as `docker login ADDR`
// stores them or as DockerConfig writes them.
package registrytest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// Registry is a running docker-registry.
type Registry struct {
	// Addr is host:port on loopback.
	Addr string
	// Username and Password are the credentials it accepts.
	Username, Password string
	// CredentialsFile holds "Username:Password", the form registry.ReadCredentials reads.
	CredentialsFile string
	// Dir holds its configuration, htpasswd file, storage (Dir/data) and log (Dir/log).
	Dir string

	cmd  *exec.Cmd
	done chan error
	tmp  bool // Dir is a tmpfs mount to remove at Stop
}

// Options configure a registry started with Start.
type Options struct {
	// ReadOnly refuses every write (distribution's maintenance read-only mode).
	ReadOnly bool
	// DiskBytes, when set, puts the storage on a tmpfs of that size (needs root), so
	// pushes past it fail with a full disk.
	DiskBytes int64
}

// Repo returns the reference of repository name in this registry (ADDR/name).
func (r *Registry) Repo(name string) string { return r.Addr + "/" + name }

var shared struct {
	once sync.Once
	r    *Registry
	err  error
}

// Shared returns the registry of this test process, starting it on first use. Tests
// sharing it use repository names of their own. Main stops it.
func Shared(t testing.TB) *Registry {
	t.Helper()
	require(t)
	shared.once.Do(func() { shared.r, shared.err = startFree(func() string { return testenv.FreeAddr(t) }, Options{}) })
	if shared.err != nil {
		t.Fatalf("start docker-registry: %v", shared.err)
	}
	return shared.r
}

// Start starts a registry for this test alone; it stops when the test ends.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	require(t)
	if o.DiskBytes > 0 {
		testenv.RequireRoot(t)
	}
	r, err := startFree(func() string { return testenv.FreeAddr(t) }, o)
	if err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// Main runs the tests, then stops the shared registry if one was started and calls
// the other stop functions given (dockertest.Stop, …). Call it from TestMain.
func Main(m *testing.M, stops ...func()) {
	code := m.Run()
	StopShared()
	for _, stop := range stops {
		stop()
	}
	os.Exit(code)
}

// StopShared stops the shared registry if one was started, for a TestMain that
// also stops other servers.
func StopShared() {
	if shared.r != nil {
		shared.r.Stop()
	}
}

func require(t testing.TB) {
	t.Helper()
	testenv.RequireCommand(t, "docker-registry", "htpasswd")
}

// errPortTaken is a start that failed because another process had the port.
var errPortTaken = errors.New("port taken")

// startAttempts bounds the starts on ports another process took meanwhile.
const startAttempts = 5

// startFree starts a registry on an address pick gives, which was free when picked;
// another process may take the port before the registry listens (tests of other
// packages run at the same time), and then it starts again on another.
func startFree(pick func() string, o Options) (*Registry, error) {
	var errs []error
	for range startAttempts {
		r, err := start(pick(), o)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func start(addr string, o Options) (*Registry, error) {
	dir, err := os.MkdirTemp("", "kiln-registry-")
	if err != nil {
		return nil, err
	}
	r := &Registry{Addr: addr, Dir: dir, Username: "kiln", Password: randomHex(12), done: make(chan error, 1)}
	fail := func(err error) (*Registry, error) {
		r.Stop()
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return fail(err)
	}
	if o.DiskBytes > 0 {
		if err := syscall.Mount("tmpfs", data, "tmpfs", 0, fmt.Sprintf("size=%d", o.DiskBytes)); err != nil {
			return fail(fmt.Errorf("tmpfs of %d bytes for the registry storage: %w", o.DiskBytes, err))
		}
		r.tmp = true
	}
	out, err := exec.Command("htpasswd", "-Bbn", r.Username, r.Password).Output()
	if err != nil {
		return fail(fmt.Errorf("htpasswd -B: %w", err))
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
		return fail(err)
	}
	r.CredentialsFile = filepath.Join(dir, "credentials")
	if err := os.WriteFile(r.CredentialsFile, []byte(r.Username+":"+r.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: %t
http:
  addr: %s
  secret: %s
auth:
  htpasswd:
    realm: kiln-test
    path: %s
`, data, o.ReadOnly, r.Addr, randomHex(16), filepath.Join(dir, "htpasswd"))
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return fail(err)
	}
	defer logf.Close()
	r.cmd = exec.Command("docker-registry", "serve", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	// The registry dies with the test process even when Main or Stop is not reached.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return fail(fmt.Errorf("docker-registry: %w", err))
	}
	go func() { r.done <- r.cmd.Wait() }()
	if err := r.wait(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		if strings.Contains(string(log), "address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return fail(fmt.Errorf("%w\n%s", err, log))
	}
	return r, nil
}

// startTimeout bounds a registry's start: generous, as it only stops a hang.
const startTimeout = 2 * time.Minute

// wait polls /v2/ with the registry's credentials until it accepts them: another
// server that took the port refuses them or is not a registry.
func (r *Registry) wait() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// Each poll is bounded, so that a port held by a process that does not answer
	// does not hide the registry's exit.
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Addr+"/v2/", nil)
		req.SetBasicAuth(r.Username, r.Password)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			return fmt.Errorf("%w: another server on %s answers /v2/ with %s", errPortTaken, r.Addr, resp.Status)
		}
		select {
		case err := <-r.done:
			r.done <- err
			return fmt.Errorf("docker-registry exited while starting: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("docker-registry on %s did not answer within %s", r.Addr, startTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the registry and removes its folder.
func (r *Registry) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		<-r.done
		r.cmd = nil
	}
	if r.tmp {
		syscall.Unmount(filepath.Join(r.Dir, "data"), syscall.MNT_DETACH)
		r.tmp = false
	}
	os.RemoveAll(r.Dir)
}

// DockerConfig writes a Docker client configuration folder holding the registry's
// credentials (what `docker login` would store) and returns it, for the
// DOCKER_CONFIG of docker commands that pull from or push to this registry.
func (r *Registry) DockerConfig(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))
	b, err := json.Marshal(map[string]any{"auths": map[string]any{r.Addr: map[string]string{"auth": auth}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Log returns what the registry has logged so far.
func (r *Registry) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "log"))
	return strings.TrimSpace(string(b))
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// RefusedAddr returns a loopback address where connections are refused for as long
// as the test runs: its port is bound by a socket that does not listen, so that no
// other process can listen there meanwhile (a port that was merely free a moment ago
// may be taken by a server of another test).
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind a port on loopback: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	in, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("getsockname: %T, not an IPv4 address", sa)
	}
	return fmt.Sprintf("127.0.0.1:%d", in.Port)
}
