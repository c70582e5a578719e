// Package pgtest starts a real PostgreSQL server for a test: Debian's postgresql
// binaries, a fresh cluster in a temporary folder, listening only on a unix socket in
// that folder, stopped when the test ends. As root the server runs as the postgres
// system user (PostgreSQL refuses to run as root). Tests get a new empty database each
// with NewDatabase.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// Server is a running PostgreSQL server.
type Server struct {
	// Dir holds the cluster (data/), the socket and the server's log (log).
	Dir  string
	User string

	mu sync.Mutex
	n  int
}

// binDir finds Debian's PostgreSQL binaries, the newest version installed.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no initdb in /usr/lib/postgresql/*/bin nor on PATH")
}

func version(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

// Start starts a server for t, skipping t (failing it under CI) when PostgreSQL is not
// installed or, as root, there is no postgres user to run it as.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		testenv.RequireCommand(t, "initdb") // skips or fails with the reason
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			if testenv.InCI() {
				t.Fatalf("needs the postgres system user to run PostgreSQL as root: %v", err)
			}
			t.Skipf("needs the postgres system user to run PostgreSQL as root: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Dir: dir, User: "kiln"}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "LANG=C.UTF-8", "TZ=UTC"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", s.User, "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := run("postgres", "-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "fsync=off",
		"-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=50")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("postgres log:\n%s", b)
		}
	})
	if err := s.waitReady(exited, time.Minute); err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("postgres did not start: %v\n%s", err, b)
	}
	return s
}

// URL is the connection URL of database db on s.
func (s *Server) URL(db string) string {
	q := url.Values{"host": {s.Dir}, "sslmode": {"disable"}}
	return fmt.Sprintf("postgres://%s@/%s?%s", s.User, url.PathEscape(db), q.Encode())
}

func (s *Server) waitReady(exited <-chan error, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last error
	for {
		db, err := sql.Open("pgx", s.URL("postgres"))
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
		}
		if err == nil {
			return nil
		}
		last = err
		select {
		case err := <-exited:
			return fmt.Errorf("postgres exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", limit, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewDatabase creates an empty database on s and returns its connection URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.n++
	name := fmt.Sprintf("test%d", s.n)
	s.mu.Unlock()
	db, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return s.URL(name)
}
