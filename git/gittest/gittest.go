// Package gittest makes real git repositories for tests: a work repository to commit to,
// and an HTTP server (git http-backend) that serves repositories, optionally behind a
// token, so tests can fetch as from a forge.
package gittest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Repo is a non-bare repository in a temporary directory.
type Repo struct {
	t   testing.TB
	Dir string
}

// NewRepo creates an empty repository whose first branch is main.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs the git command")
	}
	r := &Repo{t: t, Dir: t.TempDir()}
	r.Git("init", "--quiet", "--initial-branch=main")
	return r
}

// Git runs git in the repository with a fixed identity and returns its trimmed output,
// failing the test on error.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=Test", "-c", "user.email=test@example.com",
		"-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_DATE=2026-01-02T03:04:05Z",
		"GIT_COMMITTER_DATE=2026-01-02T03:04:05Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), r.Dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Commit writes files (path to content; a nil-valued path is deleted; content starting
// with "symlink:" makes a symbolic link to the rest), commits them all on the current
// branch and returns the new commit's hash.
func (r *Repo) Commit(msg string, files map[string]string) string {
	r.t.Helper()
	for p, content := range files {
		full := filepath.Join(r.Dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		_ = os.Remove(full)
		if target, ok := strings.CutPrefix(content, "symlink:"); ok {
			if err := os.Symlink(target, full); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if content == "\x00delete" {
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			r.t.Fatal(err)
		}
	}
	r.Git("add", "--all")
	r.Git("commit", "--quiet", "--allow-empty", "-m", msg)
	return r.Git("rev-parse", "HEAD")
}

// Delete is the content that makes Commit delete a path.
const Delete = "\x00delete"

// Server serves bare repositories over HTTP with git http-backend.
type Server struct {
	*httptest.Server
	// Root holds the served repositories, as Root/<name>.git.
	Root string
	// Token, when set, is required as the password of HTTP basic authentication.
	Token string

	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	// Requests counts the requests served.
	Requests atomic.Int64
	// Hang, when set, makes requests block until the client goes away.
	Hang atomic.Bool
}

// NewServer starts a server on loopback; it stops when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	backend := ""
	if out, err := exec.Command("git", "--exec-path").Output(); err == nil {
		backend = filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	}
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("needs git-http-backend: %v", err)
	}
	s := &Server{Root: t.TempDir()}
	cgiHandler := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + s.Root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.Requests.Add(1)
		s.mu.Lock()
		s.inFlight++
		s.maxInFlight = max(s.maxInFlight, s.inFlight)
		s.mu.Unlock()
		defer func() { s.mu.Lock(); s.inFlight--; s.mu.Unlock() }()
		if s.Token != "" && !s.authorised(req) {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		if s.Hang.Load() {
			<-req.Context().Done()
			return
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
		if _, err := os.Stat(filepath.Join(s.Root, name)); err != nil {
			http.NotFound(w, req)
			return
		}
		cgiHandler.ServeHTTP(w, req)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *Server) authorised(req *http.Request) bool {
	h := req.Header.Get("Authorization")
	enc, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return false
	}
	_, pw, _ := strings.Cut(string(raw), ":")
	return pw == s.Token
}

// Publish makes a bare copy of repo served as name (e.g. "org/proj.git" → URL
// s.URL+"/org/proj.git"), replacing an earlier one, and returns its URL.
func (s *Server) Publish(t testing.TB, repo *Repo, name string) string {
	t.Helper()
	dst := filepath.Join(s.Root, filepath.FromSlash(name))
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	repo.Git("clone", "--quiet", "--bare", "--mirror", repo.Dir, dst)
	return s.URL + "/" + name
}

// Push pushes every ref of repo to the copy served as name (created by Publish).
func (s *Server) Push(t testing.TB, repo *Repo, name string) {
	t.Helper()
	repo.Git("push", "--quiet", "--mirror", "--force", filepath.Join(s.Root, filepath.FromSlash(name)))
}

// MaxInFlight is the largest number of requests served at once so far.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// InFlight is the number of requests being served now.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// String describes the server for messages.
func (s *Server) String() string { return fmt.Sprintf("git server %s (root %s)", s.URL, s.Root) }
