package registrytest

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

func TestMain(m *testing.M) { Main(m) }

func TestRegistry(t *testing.T) {
	r := Shared(t)
	for _, tc := range []struct {
		name       string
		user, pass string
		want       int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong password", r.Username, "wrong", http.StatusUnauthorized},
		{"right credentials", r.Username, r.Password, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+r.Addr+"/v2/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET /v2/ answered %s, want %d", resp.Status, tc.want)
			}
		})
	}
	if Shared(t) != r {
		t.Error("Shared started a second registry")
	}
}

// TestStartOnATakenPort starts a registry whose first address is taken by the time
// it listens (by a process that holds the port without answering, or by another web
// server): it starts on the next address.
func TestStartOnATakenPort(t *testing.T) {
	require(t)
	cases := []struct {
		name string
		take func(t *testing.T, l net.Listener)
	}{
		{"held, not answering", func(t *testing.T, l net.Listener) {}},
		{"another web server", func(t *testing.T, l net.Listener) {
			srv := &http.Server{Handler: http.NotFoundHandler()}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { taken.Close() })
			c.take(t, taken)
			var picked []string
			pick := func() string {
				addr := taken.Addr().String()
				if len(picked) > 0 {
					addr = testenv.FreeAddr(t)
				}
				picked = append(picked, addr)
				return addr
			}
			r, err := startFree(pick, Options{})
			if err != nil {
				t.Fatalf("start after %v: %v", picked, err)
			}
			t.Cleanup(r.Stop)
			if len(picked) != 2 || r.Addr != picked[1] {
				t.Errorf("registry on %s after picking %v, want the second address", r.Addr, picked)
			}
		})
	}
}

// TestRefusedAddr checks that connections to the address are refused and that no
// server can take its port while the test runs.
func TestRefusedAddr(t *testing.T) {
	addr := RefusedAddr(t)
	cases := []struct {
		name string
		try  func() error
	}{
		{"connect", func() error {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}},
		{"listen", func() error {
			l, err := net.Listen("tcp", addr)
			if err == nil {
				l.Close()
			}
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.try(); err == nil {
				t.Errorf("%s on %s succeeded", c.name, addr)
			}
		})
	}
}
