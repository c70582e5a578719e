package host

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/internal/pgtest"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// TestMain runs the test binary as a lock holder when KILN_STANDBY_HOLDER names a
// database: it takes the lock, says "active" and waits to be killed.
func TestMain(m *testing.M) {
	if url := os.Getenv("KILN_STANDBY_HOLDER"); url != "" {
		os.Exit(holdLock(url))
	}
	os.Exit(m.Run())
}

func holdLock(url string) int {
	ctx := context.Background()
	s, err := OpenStandby(ctx, StandbyOptions{Database: url, Services: []string{"ocaml-ci", "demo"}, ID: "child"})
	if err == nil {
		err = s.Acquire(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("active")
	select {}
}

func TestStandbyKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []string
		same bool
	}{
		{"same services in another order", []string{"ocaml-ci", "demo"}, []string{"demo", "ocaml-ci"}, true},
		{"a repeated name", []string{"demo", "demo"}, []string{"demo"}, true},
		{"another service", []string{"ocaml-ci"}, []string{"opam-repo-ci"}, false},
		{"one more service", []string{"ocaml-ci"}, []string{"ocaml-ci", "demo"}, false},
		{"names not run together", []string{"ab", "c"}, []string{"a", "bc"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StandbyKey(tc.a) == StandbyKey(tc.b); got != tc.same {
				t.Fatalf("keys of %v and %v equal: %v, want %v", tc.a, tc.b, got, tc.same)
			}
		})
	}
}

// startHolder runs a lock holder process and waits until it holds the lock.
func startHolder(t *testing.T, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KILN_STANDBY_HOLDER="+url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "active\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("holder said %q (%v): %s", line, err, stderr.String())
	}
	return cmd
}

// waiting counts the processes waiting for an advisory lock.
func waiting(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStandbyTakesOverFromKilledHolder(t *testing.T) {
	testenv.Short(t, "runs PostgreSQL and a lock holder process")
	pg := pgtest.Start(t)
	for _, tc := range []struct {
		name     string
		services []string
		end      func(holder *exec.Cmd) // ends the holder's process
	}{
		{"holder killed (SIGKILL)", []string{"demo", "ocaml-ci"}, func(c *exec.Cmd) { _ = c.Process.Signal(syscall.SIGKILL) }},
		{"holder stopped (SIGTERM)", []string{"ocaml-ci", "demo"}, func(c *exec.Cmd) { _ = c.Process.Signal(syscall.SIGTERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := pg.NewDatabase(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			holder := startHolder(t, url)
			reg := prometheus.NewRegistry()
			s, err := OpenStandby(ctx, StandbyOptions{Database: url, Services: tc.services, ID: "standby", Register: reg})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			h, ok, err := s.Active(ctx)
			if err != nil || !ok || h.ID != "child" {
				t.Fatalf("active %+v (ok %v, err %v), want the child", h, ok, err)
			}
			acquired := make(chan error, 1)
			go func() { acquired <- s.Acquire(ctx) }()
			waitFor(t, "the standby to wait on the lock", func() bool { return waiting(t, url) == 1 })
			select {
			case err := <-acquired:
				t.Fatalf("took the lock the child holds (err %v)", err)
			default:
			}
			if got := testenv.Metrics(t, reg)["kiln_serve_active{}"]; got != 0 {
				t.Fatalf("kiln_serve_active = %v while standing by", got)
			}
			start := time.Now()
			tc.end(holder)
			if err := <-acquired; err != nil {
				t.Fatal(err)
			}
			t.Logf("takeover after %s", time.Since(start).Round(time.Microsecond))
			h, ok, err = s.Active(ctx)
			if err != nil || !ok || h.ID != "standby" {
				t.Fatalf("active %+v (ok %v, err %v), want the standby", h, ok, err)
			}
			if got := testenv.Metrics(t, reg)["kiln_serve_active{}"]; got != 1 {
				t.Fatalf("kiln_serve_active = %v once active", got)
			}
		})
	}
}

// An active process whose lock connection ends must learn it: the lock may pass on.
func TestStandbyLostWhenConnectionEnds(t *testing.T) {
	testenv.Short(t, "runs PostgreSQL")
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	s, err := OpenStandby(ctx, StandbyOptions{Database: url, Services: []string{"demo"}, ID: "a", CheckEvery: 100 * time.Millisecond, Register: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	h, ok, err := s.Active(ctx)
	if err != nil || !ok {
		t.Fatalf("no holder after Acquire (err %v)", err)
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SELECT pg_terminate_backend($1)", h.PID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Lost():
	case <-ctx.Done():
		t.Fatal("the lost connection was not noticed")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "lost the database lock of services demo") {
		t.Fatalf("error %v does not say the lock was lost", err)
	}
	m := testenv.Metrics(t, reg)
	if m["kiln_serve_active{}"] != 0 || m["kiln_serve_lock_lost_total{}"] != 1 {
		t.Fatalf("metrics after the loss: active %v, lost %v", m["kiln_serve_active{}"], m["kiln_serve_lock_lost_total{}"])
	}
}
