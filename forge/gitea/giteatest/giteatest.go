// Package giteatest runs a real Gitea server for tests: built from its Go module source
// (cached under the test cache, see .ci/gitea-build), started on a free loopback port
// with SQLite, an admin user and an API token, and stopped when the test ends.
package giteatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// Version is the Gitea release the tests run.
const Version = "v1.26.0"

// Server is a running Gitea.
type Server struct {
	// URL is the server's root, ending in "/" (http://127.0.0.1:PORT/).
	URL string
	// Admin and Password log in as the admin user; Token is an API token of Admin with
	// every scope.
	Admin, Password, Token string
	// Dir holds the server's configuration, database, repositories and log.
	Dir string

	ini string
	bin string
	cmd *exec.Cmd
	log *bytes.Buffer
}

var buildOnce sync.Mutex

// Binary returns the Gitea binary and its source tree (its static assets), building and
// caching them on first use with .ci/gitea-build. In -short mode a missing build skips t.
func Binary(t testing.TB) (bin, src string) {
	t.Helper()
	dir := testenv.CacheDir(t, "gitea-"+Version)
	bin, src = filepath.Join(dir, "gitea"), filepath.Join(dir, "src")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		testenv.Short(t, "building Gitea "+Version+" takes minutes (run .ci/gitea-build first)")
	}
	testenv.RequireCommand(t, "go", "flock")
	buildOnce.Lock()
	defer buildOnce.Unlock()
	// The script is the one place that knows what a complete build is; it returns at
	// once when the cache holds one.
	script := filepath.Join(testenv.Root(), ".ci", "gitea-build")
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "KILN_TEST_CACHE="+filepath.Dir(dir), "GITEA_VERSION="+Version)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building Gitea %s: %v\n%s", Version, err, out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("built Gitea %s in %s", Version, d.Round(time.Second))
	}
	return bin, src
}

// Start starts a Gitea server for the duration of t.
func Start(t testing.TB) *Server {
	t.Helper()
	testenv.RequireCommand(t, "git")
	bin, src := Binary(t)
	s := &Server{Admin: "kiln-admin", Password: randomHex(12), Dir: t.TempDir(), bin: bin, log: &bytes.Buffer{}}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s.URL = fmt.Sprintf("http://127.0.0.1:%d/", port)
	s.ini = filepath.Join(s.Dir, "custom", "conf", "app.ini")
	if err := os.MkdirAll(filepath.Dir(s.ini), 0o755); err != nil {
		t.Fatal(err)
	}
	runUser := "root"
	if u, err := user.Current(); err == nil {
		runUser = u.Username
	}
	ini := fmt.Sprintf(`APP_NAME = kiln test
RUN_MODE = prod
RUN_USER = %[1]s
WORK_PATH = %[2]s
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[3]d
ROOT_URL = %[4]s
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = %[5]s
APP_DATA_PATH = %[2]s/data

[database]
DB_TYPE = sqlite3
PATH = %[2]s/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = %[2]s/repositories

[security]
INSTALL_LOCK = true
SECRET_KEY = %[6]s
INTERNAL_TOKEN = %[7]s
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true
DEFAULT_KEEP_EMAIL_PRIVATE = true

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

[mailer]
ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = %[2]s/log
`, runUser, s.Dir, port, s.URL, src, randomHex(32), "kiln"+randomHex(40))
	if err := os.WriteFile(s.ini, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}

	s.cmd = exec.Command(bin, "web", "--config", s.ini, "--work-path", s.Dir)
	s.cmd.Dir = s.Dir
	s.cmd.Env = s.env()
	s.cmd.Stdout, s.cmd.Stderr = &syncWriter{w: s.log}, &syncWriter{w: s.log}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start gitea: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("gitea log:\n%s", s.Log())
		}
	})
	if err := s.waitReady(exited, 3*time.Minute); err != nil {
		t.Fatalf("gitea did not start: %v\n%s", err, s.Log())
	}
	t.Logf("gitea %s up at %s in %s", Version, s.URL, time.Since(start).Round(time.Millisecond))

	out, err := s.admin("admin", "user", "create", "--username", s.Admin, "--password", s.Password,
		"--email", s.Admin+"@example.com", "--admin", "--must-change-password=false")
	if err != nil {
		t.Fatalf("create gitea admin: %v\n%s", err, out)
	}
	s.Token, err = s.CreateToken(s.Admin, s.Password, "kiln-test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) env() []string {
	env := []string{"HOME=" + s.Dir, "GITEA_WORK_DIR=" + s.Dir, "USER=" + os.Getenv("USER")}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	return env
}

// admin runs a gitea subcommand against this server's configuration.
func (s *Server) admin(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(args, "--config", s.ini, "--work-path", s.Dir)...)
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	return cmd.CombinedOutput()
}

// CreateUser creates a (non-admin) user and returns an API token for it.
func (s *Server) CreateUser(t testing.TB, name string) (password, token string) {
	t.Helper()
	password = randomHex(12)
	if out, err := s.admin("admin", "user", "create", "--username", name, "--password", password,
		"--email", name+"@example.com", "--must-change-password=false"); err != nil {
		t.Fatalf("create gitea user %s: %v\n%s", name, err, out)
	}
	token, err := s.CreateToken(name, password, "kiln-test")
	if err != nil {
		t.Fatal(err)
	}
	return password, token
}

// CreateToken makes an API token with every scope for user.
func (s *Server) CreateToken(user, password, name string) (string, error) {
	body, _ := json.Marshal(map[string]any{"name": name, "scopes": []string{"all"}})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"api/v1/users/"+user+"/tokens", bytes.NewReader(body))
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("create token for %s: %w", user, err)
	}
	defer resp.Body.Close()
	var tok struct {
		SHA1    string `json:"sha1"`
		Message string `json:"message"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	if resp.StatusCode != http.StatusCreated || tok.SHA1 == "" {
		return "", fmt.Errorf("create token for %s: %s %s", user, resp.Status, tok.Message)
	}
	return tok.SHA1, nil
}

func (s *Server) waitReady(exited <-chan error, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("gitea exited: %v", err)
		default:
		}
		resp, err := http.Get(s.URL + "api/v1/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no answer from %sapi/v1/version within %s", s.URL, limit)
}

// Log returns what the server printed so far.
func (s *Server) Log() string {
	return s.log.String()
}

// CreateRepo creates an empty repository of the admin user (default branch main) and
// returns its clone URL.
func (s *Server) CreateRepo(t testing.TB, name string, private bool) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "private": private, "default_branch": "main"})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"api/v1/user/repos", bytes.NewReader(body))
	req.Header.Set("Authorization", "token "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create gitea repository %s: %s", name, resp.Status)
	}
	return s.RepoURL(s.Admin, name)
}

// PushURL is the clone URL of owner/name with the admin's token in it, for git push in
// tests.
func (s *Server) PushURL(owner, name string) string {
	return strings.Replace(s.RepoURL(owner, name), "http://", "http://"+s.Admin+":"+s.Token+"@", 1)
}

// RepoURL is the HTTP clone URL of owner/name.
func (s *Server) RepoURL(owner, name string) string {
	return s.URL + owner + "/" + name + ".git"
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
