package web

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clientFrom is a client of the console whose connections come from the loopback
// address ip, with the CSRF cookie and token the login API needs.
func (c *console) clientFrom(t *testing.T, ip string) (*http.Client, string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 200}}
	resp, err := hc.Get(c.srv.URL + "/api/csrf")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ CSRF string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return hc, v.CSRF
}

// tryLogin posts a login to the API and returns the answer's status.
func tryLogin(hc *http.Client, base, csrf, user, pw string) (int, error) {
	body := fmt.Sprintf(`{"user":%q,"password":%q}`, user, pw)
	req, _ := http.NewRequest("POST", base+"/api/login", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// atOnce runs the logins at once and counts their answers by status.
func atOnce(t *testing.T, logins []func() (int, error)) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for _, login := range logins {
		wg.Go(func() {
			code, err := login()
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}

// countChecks wraps the console's password check to count the checks made and the most
// made at once.
func countChecks(s *Server, hold time.Duration) (checks, peak *atomic.Int64) {
	checks, peak = new(atomic.Int64), new(atomic.Int64)
	var running atomic.Int64
	inner := s.checkPassword
	s.checkPassword = func(user, pw string) (Identity, bool) {
		checks.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(hold)
		return inner(user, pw)
	}
	return checks, peak
}

// Concurrent guesses are counted before their password is checked, by user and client.
func TestLoginThrottleCountsBeforeChecking(t *testing.T) {
	c := newConsole(t)
	checks, _ := countChecks(c.s, 0)
	cases := []struct {
		name       string
		ip, user   string
		password   string
		n          int
		want       map[int]int
		wantChecks int64
	}{
		{"150 concurrent wrong guesses from one client", "127.0.0.2", "admin", "guess", 150, map[int]int{401: 10, 429: 140}, 10},
		{"the right password from that client waits too", "127.0.0.2", "admin", testPassword, 1, map[int]int{429: 1}, 0},
		{"the admin logs in from another client", "127.0.0.3", "admin", testPassword, 1, map[int]int{200: 1}, 1},
		{"another user name from the first client is counted apart", "127.0.0.2", "root", "guess", 1, map[int]int{401: 1}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hc, csrf := c.clientFrom(t, tc.ip)
			before := checks.Load()
			logins := make([]func() (int, error), tc.n)
			for i := range logins {
				logins[i] = func() (int, error) { return tryLogin(hc, c.srv.URL, csrf, tc.user, tc.password) }
			}
			got := atOnce(t, logins)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("answers %v, want %v", got, tc.want)
			}
			if n := checks.Load() - before; n != tc.wantChecks {
				t.Errorf("%d passwords checked, want %d", n, tc.wantChecks)
			}
		})
	}
}

// Guesses from many clients are checked a few at a time.
func TestPasswordChecksAreBounded(t *testing.T) {
	c := newConsole(t)
	checks, peak := countChecks(c.s, 20*time.Millisecond)
	const clients = 40
	logins := make([]func() (int, error), clients)
	for i := range logins {
		hc, csrf := c.clientFrom(t, fmt.Sprintf("127.0.1.%d", i+1))
		logins[i] = func() (int, error) { return tryLogin(hc, c.srv.URL, csrf, "admin", "guess") }
	}
	codes := atOnce(t, logins)
	if codes[401] != clients || checks.Load() != clients {
		t.Errorf("answers %v and %d checks, want %d wrong passwords checked", codes, checks.Load(), clients)
	}
	if p := peak.Load(); p > maxPasswordChecks {
		t.Errorf("%d passwords checked at once, want at most %d", p, maxPasswordChecks)
	}
}
