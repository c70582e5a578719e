package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAdminPasswordMadeOnceAndStoredHashed(t *testing.T) {
	dir := t.TempDir()
	a, pw, err := OpenAuth(AuthOptions{Dir: dir})
	if err != nil || len(pw) < 16 {
		t.Fatalf("first open: %q %v", pw, err)
	}
	stored, _ := os.ReadFile(filepath.Join(dir, "admin.password"))
	if strings.Contains(string(stored), pw) || !strings.HasPrefix(string(stored), "pbkdf2-sha256$") {
		t.Fatalf("stored password is not a hash: %q", stored)
	}
	if _, ok := a.Login(AdminUser, pw); !ok {
		t.Fatal("the generated password does not log in")
	}
	a2, pw2, err := OpenAuth(AuthOptions{Dir: dir})
	if err != nil || pw2 != "" {
		t.Fatalf("second open made a new password %q (%v)", pw2, err)
	}
	if _, ok := a2.Login(AdminUser, pw); !ok {
		t.Fatal("the password does not survive a restart")
	}
	if _, ok := a2.Login(AdminUser, pw+"x"); ok {
		t.Fatal("a wrong password logs in")
	}
	if _, ok := a2.Login("root", pw); ok {
		t.Fatal("another user logs in with the admin password")
	}
	// A session made before the restart stays valid: the key is kept too.
	tok := a.Token(Identity{User: "admin", Role: RoleAdmin}, time.Now().Add(time.Hour))
	if id, err := a2.ParseToken(tok); err != nil || id.Role != RoleAdmin {
		t.Fatalf("token after restart: %+v %v", id, err)
	}
	a3, _, err := OpenAuth(AuthOptions{Dir: dir, AdminPassword: "new one"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a3.Login(AdminUser, "new one"); !ok {
		t.Fatal("--admin-password does not replace the password")
	}
	os.WriteFile(filepath.Join(dir, "admin.password"), []byte("plaintext\n"), 0o600)
	if _, _, err := OpenAuth(AuthOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), "admin.password") {
		t.Fatalf("a corrupt password file: %v", err)
	}
}

func TestTokens(t *testing.T) {
	a, _, err := OpenAuth(AuthOptions{Dir: t.TempDir(), AdminPassword: "x"})
	if err != nil {
		t.Fatal(err)
	}
	tok := a.Token(Identity{User: "alice", Role: RoleBuilder, Provider: "forge"}, time.Now().Add(time.Hour))
	id, err := a.ParseToken(tok)
	if err != nil || id.User != "alice" || id.Role != RoleBuilder || id.Provider != "forge" {
		t.Fatalf("round trip: %+v %v", id, err)
	}
	for _, bad := range []string{"", ".", "abc", tok + "x", "x" + tok, strings.Replace(tok, ".", ".A", 1),
		a.Token(Identity{User: "old", Role: RoleAdmin}, time.Now().Add(-time.Second))} {
		if _, err := a.ParseToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
	other, _, _ := OpenAuth(AuthOptions{Dir: t.TempDir(), AdminPassword: "x"})
	if _, err := other.ParseToken(tok); err == nil {
		t.Error("a token of another server is accepted")
	}
}

func FuzzParseToken(f *testing.F) {
	a, _, err := OpenAuth(AuthOptions{Dir: f.TempDir(), AdminPassword: "x"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(a.Token(Identity{User: "u", Role: RoleViewer}, time.Now().Add(time.Hour)))
	f.Add("e30.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := a.ParseToken(tok)
		if err == nil && id.User != "u" {
			t.Fatalf("forged token accepted: %+v", id)
		}
	})
}

// forge is an IdentityProvider standing in for a forge's OAuth flow: its "authorize"
// page redirects straight back with a code naming the user.
type forge struct{}

func (forge) Name() string  { return "forge" }
func (forge) Title() string { return "Forge" }
func (forge) LoginURL(state, callback string) string {
	return callback + "?" + url.Values{"state": {state}, "code": {"alice"}}.Encode()
}
func (forge) Callback(ctx context.Context, r *http.Request) (Identity, error) {
	if r.URL.Query().Get("code") == "mallory" {
		return Identity{}, errors.New("not a member of the organisation")
	}
	return Identity{User: r.URL.Query().Get("code"), Role: RoleBuilder}, nil
}

func TestIdentityProviderHook(t *testing.T) {
	c := newConsole(t, "alpha")
	okID := c.jobOf("alpha", "ok")
	// Replace the console's auth by one with the provider.
	a, _, err := OpenAuth(AuthOptions{Dir: t.TempDir(), AdminPassword: "x", Anonymous: RoleViewer, Providers: []IdentityProvider{forge{}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Engine: CurrentEngine{c.eng}, Auth: a, Register: nopRegisterer{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	cl := c.client()
	cl.base = srv.URL
	if _, body := cl.get("/login"); !strings.Contains(body, `href="/login/forge"`) {
		t.Fatalf("login page does not offer the provider:\n%s", body)
	}
	code, _, hdr := cl.do("GET", "/login/forge", nil, nil)
	if code != http.StatusFound {
		t.Fatalf("provider login: %d", code)
	}
	cb, _ := url.Parse(hdr.Get("Location"))
	code, body, _ := cl.do("GET", cb.RequestURI(), nil, nil)
	if code != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", code, body)
	}
	var who Identity
	cl.getJSON("/api/whoami", &who)
	if who.User != "alice" || who.Role != RoleBuilder || who.Provider != "forge" {
		t.Fatalf("after provider login: %+v", who)
	}
	if _, body := cl.get("/job/" + okID); !strings.Contains(body, `id="rebuild"`) {
		t.Fatalf("a builder from the provider sees no Rebuild button")
	}
	// A forged or replayed-elsewhere state is refused; so is a refused user.
	fresh := c.client()
	fresh.base = srv.URL
	if code, _, _ := fresh.do("GET", "/login/forge/callback?state=forged&code=alice", nil, nil); code != 400 {
		t.Fatalf("forged state: %d, want 400", code)
	}
	q := cb.Query()
	q.Set("code", "mallory")
	if code, _, _ := fresh.do("GET", "/login/forge/callback?"+q.Encode(), nil, nil); code != 401 {
		t.Fatalf("refused user: %d, want 401", code)
	}
	if code, _, _ := fresh.do("GET", "/login/nosuch", nil, nil); code != 404 {
		t.Fatalf("unknown provider: %d, want 404", code)
	}
}

func TestPrivateConsoleAsksToLogIn(t *testing.T) {
	c := newConsole(t, "alpha")
	a, _, err := OpenAuth(AuthOptions{Dir: t.TempDir(), AdminPassword: testPassword, Anonymous: RoleNone})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Engine: CurrentEngine{c.eng}, Auth: a, Register: nopRegisterer{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	cl := c.client()
	cl.base = srv.URL
	code, _, hdr := cl.do("GET", "/jobs", nil, nil)
	if code != http.StatusSeeOther || hdr.Get("Location") != "/login?next=%2Fjobs" {
		t.Fatalf("anonymous GET /jobs: %d to %q", code, hdr.Get("Location"))
	}
	if code, body := cl.get("/api/jobs"); code != 401 || !strings.Contains(body, `"error"`) {
		t.Fatalf("anonymous GET /api/jobs: %d %s", code, body)
	}
	if code, _ := cl.get("/metrics"); code != http.StatusSeeOther {
		t.Fatalf("anonymous GET /metrics: %d", code)
	}
	cl.login()
	if code, _ := cl.get("/jobs"); code != 200 {
		t.Fatalf("GET /jobs after login: %d", code)
	}
}

func TestFailedLoginsAreThrottled(t *testing.T) {
	c := newConsole(t)
	cl := c.client()
	tok := cl.csrf("/login")
	wrong := url.Values{"csrf": {tok}, "user": {"admin"}, "password": {"guess"}}
	for i := range 10 {
		if code, _, _ := cl.do("POST", "/login", wrong, nil); code != 401 {
			t.Fatalf("failed login %d: %d, want 401", i, code)
		}
	}
	code, body, hdr := cl.do("POST", "/login", url.Values{"csrf": {tok}, "user": {"admin"}, "password": {testPassword}}, nil)
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(body, "too many failed logins") {
		t.Fatalf("login after 10 failures: %d %q", code, hdr.Get("Retry-After"))
	}
}

// Logging out ends a session on the server, and a new admin password ends every older
// session.
func TestSessionsEnd(t *testing.T) {
	c := newConsole(t)
	whoami := func(hdr map[string]string) string {
		t.Helper()
		var id Identity
		code, body, _ := c.client().do("GET", "/api/whoami", nil, hdr)
		if err := json.Unmarshal([]byte(body), &id); code != 200 || err != nil {
			t.Fatalf("whoami: %d %s", code, body)
		}
		return id.User
	}
	cases := []struct {
		name string
		// login logs in and returns the headers that carry the session, and logs out.
		login func(t *testing.T) (hdr map[string]string, logout func())
	}{
		{"a cookie", func(t *testing.T) (map[string]string, func()) {
			cl := c.client()
			cl.login()
			u, _ := url.Parse(c.srv.URL)
			var hdr map[string]string
			for _, ck := range cl.hc.Jar.Cookies(u) {
				if ck.Name == sessionCookie {
					hdr = map[string]string{"Cookie": ck.String()}
				}
			}
			return hdr, func() {
				tok := cl.csrf("/")
				if code, body, _ := cl.do("POST", "/logout", url.Values{"csrf": {tok}}, nil); code != http.StatusSeeOther {
					t.Fatalf("logout: %d %s", code, body)
				}
			}
		}},
		{"a bearer token", func(t *testing.T) (map[string]string, func()) {
			hdr := c.adminToken(t)
			return hdr, func() {
				if code, body := postJSON(t, c.client(), "/api/logout", "{}", hdr); code != 200 {
					t.Fatalf("logout: %d %s", code, body)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run("logging out ends "+tc.name, func(t *testing.T) {
			hdr, logout := tc.login(t)
			if u := whoami(hdr); u != AdminUser {
				t.Fatalf("logged in as %q", u)
			}
			logout()
			if u := whoami(hdr); u != "" {
				t.Fatalf("the session still works after logging out (user %q)", u)
			}
		})
	}

	dir := t.TempDir()
	a, _, err := OpenAuth(AuthOptions{Dir: dir, AdminPassword: "first"})
	if err != nil {
		t.Fatal(err)
	}
	token := func() string { return a.Token(Identity{User: AdminUser, Role: RoleAdmin}, time.Now().Add(time.Hour)) }
	loggedOut, kept := token(), token()
	if err := a.Revoke(loggedOut); err != nil {
		t.Fatal(err)
	}
	restarts := []struct {
		name     string
		password string
		tok      string
		valid    bool
	}{
		{"a session logged out stays ended after a restart", "", loggedOut, false},
		{"other sessions survive a restart", "", kept, true},
		{"the same password given again keeps sessions", "first", kept, true},
		{"a new password ends older sessions", "second", kept, false},
	}
	for _, tc := range restarts {
		t.Run(tc.name, func(t *testing.T) {
			a2, _, err := OpenAuth(AuthOptions{Dir: dir, AdminPassword: tc.password})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a2.ParseToken(tc.tok); (err == nil) != tc.valid {
				t.Fatalf("token valid: %v, want %v", err == nil, tc.valid)
			}
		})
	}
}
