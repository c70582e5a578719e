package deployer

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/registry/registrytest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	registrytest.StopShared()
	dockertest.Stop()
	os.Exit(code)
}

// sshServer is Debian's sshd on loopback, letting in one key as root.
type sshServer struct {
	Addr       string // 127.0.0.1:PORT
	KeyFile    string // the client's private key
	KnownHosts string // a known_hosts file with the server's key
	hostKey    string
	dir        string
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startSSH starts sshd on a free loopback port until the test ends.
func startSSH(t testing.TB) *sshServer {
	t.Helper()
	testenv.RequireRoot(t)
	sshd := testenv.RequireCommand(t, "/usr/sbin/sshd")
	testenv.RequireCommand(t, "ssh", "ssh-keygen")
	dir := t.TempDir()
	s := &sshServer{Addr: testenv.FreeAddr(t), KeyFile: filepath.Join(dir, "id"), KnownHosts: filepath.Join(dir, "known_hosts"),
		hostKey: filepath.Join(dir, "host_key"), dir: dir}
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", s.KeyFile)
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", s.hostKey)
	pub, _ := os.ReadFile(s.KeyFile + ".pub")
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	s.writeKnownHosts(t)
	host, port, _ := net.SplitHostPort(s.Addr)
	conf := fmt.Sprintf(`Port %s
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv none
`, port, host, s.hostKey, dir, dir)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600)
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation folder
	cmd := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	logf, _ := os.Create(filepath.Join(dir, "sshd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	waitPort(t, s.Addr)
	return s
}

func (s *sshServer) writeKnownHosts(t testing.TB) {
	t.Helper()
	pub, err := os.ReadFile(s.hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	f := strings.Fields(string(pub))
	os.WriteFile(s.KnownHosts, []byte(fmt.Sprintf("[%s]:%s %s %s\n", host, port, f[0], f[1])), 0o600)
}

// waitPort waits for a server to listen on addr; the minute only bounds a hang (a
// loaded machine starts servers slowly).
func waitPort(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy is Debian's nginx in front of one upstream, in a folder of its own.
type proxy struct {
	URL          string
	UpstreamFile string
	Reload       []string
}

// startNginx starts nginx proxying a free loopback port to the upstream "web" read
// from its upstream file, at first a port where nothing listens.
func startNginx(t testing.TB) *proxy {
	t.Helper()
	bin := testenv.RequireCommand(t, "nginx")
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "logs"), 0o755)
	addr := testenv.FreeAddr(t)
	p := &proxy{URL: "http://" + addr, UpstreamFile: filepath.Join(dir, "upstream.conf")}
	os.WriteFile(p.UpstreamFile, []byte("upstream web { server 127.0.0.1:1; }\n"), 0o644)
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log;
worker_processes 1;
events { worker_connections 256; }
http {
  access_log off;
  include %[2]s;
  server {
    listen %[3]s;
    location / { proxy_pass http://web; proxy_next_upstream off; }
  }
}
`, dir, p.UpstreamFile, addr)
	cf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(cf, []byte(conf), 0o644)
	p.Reload = []string{bin, "-p", dir, "-c", cf, "-s", "reload"}
	cmd := exec.Command(bin, "-p", dir, "-c", cf, "-g", "daemon off;")
	out, _ := os.Create(filepath.Join(dir, "logs", "out.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); out.Close() })
	waitPort(t, addr)
	return p
}

// webRepo is a git repository of the small web service: a static server binary, a
// version file and a Dockerfile from scratch.
type webRepo struct {
	Dir string
}

func newWebRepo(t testing.TB) *webRepo {
	t.Helper()
	testenv.RequireCommand(t, "git", "go")
	dir := t.TempDir()
	r := &webRepo{Dir: dir}
	out := filepath.Join(dir, "server")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/web")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the web service: %v: %s", err, b)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY server /server\nCOPY version /version\nEXPOSE 8080\nENTRYPOINT [\"/server\"]\n"), 0o644)
	r.git(t, "init", "-q", "-b", "main")
	r.commit(t, "v1")
	return r
}

func (r *webRepo) git(t testing.TB, args ...string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "git", append([]string{"-C", r.Dir, "-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...))
}

// commit writes version and commits it on the current branch; it returns the commit.
func (r *webRepo) commit(t testing.TB, version string) string {
	t.Helper()
	os.WriteFile(filepath.Join(r.Dir, "version"), []byte(version+"\n"), 0o644)
	r.git(t, "add", "-A")
	r.git(t, "commit", "-q", "-m", version)
	return r.git(t, "rev-parse", "HEAD")
}

// removeInstances removes the containers a test's targets made.
func removeInstances(dockerHost string, names ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range names {
		cmd := exec.CommandContext(ctx, "docker", "rm", "-f", n+"-a", n+"-b")
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerHost)
		cmd.Run()
	}
}
