package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/internal/pgtest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/services/host"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A serve process standing by answers on the console's address, naming the active
// process, and gets the address back for its console once it takes over.
func TestStandbyUntilActive(t *testing.T) {
	testenv.Short(t, "runs PostgreSQL")
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	services := []string{"ocaml-ci"}
	other, err := host.OpenStandby(ctx, host.StandbyOptions{Database: url, Services: services, ID: "http://active.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		sb  *host.Standby
		ln  net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		sb, l, err := standbyUntilActive(ctx, ln, url, services, "http://standby.example.org", slog.Default(), prometheus.NewRegistry())
		done <- result{sb, l, err}
	}()
	base := "http://" + ln.Addr().String()
	for _, tc := range []struct {
		path, want string
	}{
		{"/healthz", "standby; active: http://active.example.org"},
		{"/", "<b>http://active.example.org</b>"},
		{"/metrics", "kiln_serve_active 0"},
	} {
		t.Run("standby "+tc.path, func(t *testing.T) {
			code, body := get(t, base+tc.path)
			if tc.path != "/metrics" && code != http.StatusServiceUnavailable {
				t.Errorf("status %d, want 503", code)
			}
			if !strings.Contains(body, tc.want) {
				t.Errorf("body lacks %q:\n%s", tc.want, body)
			}
		})
	}
	select {
	case r := <-done:
		t.Fatalf("active while the other holds the lock (err %v)", r.err)
	default:
	}
	other.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.sb.Close()
	defer r.ln.Close()
	if r.ln.Addr().String() != ln.Addr().String() {
		t.Fatalf("console listens on %s, want %s", r.ln.Addr(), ln.Addr())
	}
	h, ok, err := r.sb.Active(ctx)
	if err != nil || !ok || h.ID != "http://standby.example.org" {
		t.Fatalf("active %+v (ok %v, err %v), want this process", h, ok, err)
	}
	go func() { _ = http.Serve(r.ln, activeHealthz(r.sb)) }()
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "active\n" {
		t.Fatalf("active /healthz: %d %q", code, body)
	}
}
