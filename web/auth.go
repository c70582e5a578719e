package web

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Role is what a user of the console may do.
type Role int

// Roles, each allowing what the one before allows.
const (
	RoleNone    Role = iota // may not see anything
	RoleViewer              // may look
	RoleBuilder             // may also rebuild, cancel and start jobs
	RoleAdmin               // may also manage log rules and the confirmation level
)

var roleNames = [...]string{"none", "viewer", "builder", "admin"}

// String names the role.
func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return "role(" + strconv.Itoa(int(r)) + ")"
	}
	return roleNames[r]
}

// ParseRole reads a role name: none, viewer, builder or admin.
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames {
		if s == n {
			return Role(i), nil
		}
	}
	return RoleNone, fmt.Errorf("unknown role %q (want none, viewer, builder or admin)", s)
}

// Identity is who a request comes from.
type Identity struct {
	User     string `json:"user"`
	Role     Role   `json:"-"`
	Provider string `json:"provider"` // "local", or the IdentityProvider's name
}

// MarshalJSON writes the role by name.
func (id Identity) MarshalJSON() ([]byte, error) {
	type plain Identity
	return json.Marshal(struct {
		plain
		Role string `json:"role"`
	}{plain(id), id.Role.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (id *Identity) UnmarshalJSON(b []byte) error {
	var v struct {
		User, Provider, Role string
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	role, err := ParseRole(v.Role)
	if err != nil {
		return err
	}
	*id = Identity{User: v.User, Role: role, Provider: v.Provider}
	return nil
}

// IdentityProvider is a way to log in besides the local admin password, such as a forge's
// OAuth flow. The console sends the browser to LoginURL and hands the redirect back to
// Callback, which says who logged in and with which role.
type IdentityProvider interface {
	Name() string  // short name used in URLs: /login/<name>
	Title() string // shown on the login page
	LoginURL(state, callbackURL string) string
	Callback(ctx context.Context, r *http.Request) (Identity, error)
}

// AdminUser is the name of the local administrator.
const AdminUser = "admin"

const (
	sessionCookie = "kiln_session"
	csrfCookie    = "kiln_csrf"
	sessionTTL    = 7 * 24 * time.Hour
	pbkdf2Iter    = 200_000
)

// Auth holds the console's secrets: the key signing sessions and CSRF tokens, and the
// local admin's password hash, both kept in a folder of the state dir.
type Auth struct {
	dir       string
	key       []byte
	adminHash string
	anonymous Role
	providers map[string]IdentityProvider
	secure    bool

	mu      sync.RWMutex
	revoked map[string]int64 // session id -> when its token expires (Unix seconds)
}

// AuthOptions configures OpenAuth.
type AuthOptions struct {
	Dir           string // folder for session.key and admin.password
	AdminPassword string // if set, replaces the stored admin password
	Anonymous     Role   // role of requests without a session
	SecureCookies bool   // mark cookies Secure (console served over HTTPS)
	Providers     []IdentityProvider
}

// OpenAuth loads or creates the console's secrets. When no admin password exists yet and
// none is given, it makes one and returns it in generated, to be shown once.
func OpenAuth(o AuthOptions) (a *Auth, generated string, err error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("console state: %w", err)
	}
	a = &Auth{dir: o.Dir, anonymous: o.Anonymous, secure: o.SecureCookies, providers: map[string]IdentityProvider{}, revoked: map[string]int64{}}
	for _, p := range o.Providers {
		a.providers[p.Name()] = p
	}
	keyPath := filepath.Join(o.Dir, "session.key")
	a.key, err = os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) || err == nil && len(a.key) < 32 {
		a.key = randomBytes(32)
		err = writeSecret(keyPath, a.key)
	}
	if err != nil {
		return nil, "", fmt.Errorf("session key %s: %w", keyPath, err)
	}
	if err := a.loadRevoked(); err != nil {
		return nil, "", err
	}
	passPath := filepath.Join(o.Dir, "admin.password")
	pw := o.AdminPassword
	b, err := os.ReadFile(passPath)
	switch {
	case err == nil:
		a.adminHash = strings.TrimSpace(string(b))
		if _, _, _, err := parseHash(a.adminHash); err != nil {
			return nil, "", fmt.Errorf("%s: %w", passPath, err)
		}
		if pw == "" || CheckPassword(a.adminHash, pw) {
			return a, "", nil
		}
		// A new password: the sessions made under the old one end with a new key.
		a.key = randomBytes(32)
		if err := writeSecret(keyPath, a.key); err != nil {
			return nil, "", fmt.Errorf("session key %s: %w", keyPath, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("admin password %s: %w", passPath, err)
	case pw == "":
		pw = base64.RawURLEncoding.EncodeToString(randomBytes(15))
		generated = pw
	}
	a.adminHash = HashPassword(pw)
	if err := writeSecret(passPath, []byte(a.adminHash+"\n")); err != nil {
		return nil, "", fmt.Errorf("admin password %s: %w", passPath, err)
	}
	return a, generated, nil
}

// revokedFile lists the sessions ended by logging out, one "id expires" a line.
const revokedFile = "revoked-sessions"

// loadRevoked reads the sessions ended before their time and writes back those whose
// tokens have not expired yet.
func (a *Auth) loadRevoked() error {
	path := filepath.Join(a.dir, revokedFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("revoked sessions %s: %w", path, err)
	}
	now := time.Now().Unix()
	var keep strings.Builder
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		id, exp, ok := strings.Cut(line, " ")
		e, err := strconv.ParseInt(exp, 10, 64)
		if !ok || err != nil || id == "" {
			return fmt.Errorf("revoked sessions %s line %d: %q is not \"id expires\"", path, i+1, line)
		}
		if e >= now {
			a.revoked[id] = e
			fmt.Fprintf(&keep, "%s %d\n", id, e)
		}
	}
	if err := writeSecret(path, []byte(keep.String())); err != nil {
		return fmt.Errorf("revoked sessions %s: %w", path, err)
	}
	return nil
}

// Revoke ends the session of tok before it expires, also after a restart. A token that
// does not parse is ignored.
func (a *Auth) Revoke(tok string) error {
	c, err := a.parseClaims(tok)
	if err != nil {
		return nil
	}
	path := filepath.Join(a.dir, revokedFile)
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %d\n", c.ID, c.Expires)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("revoke session: %s: %w", path, err)
	}
	a.revoked[c.ID] = c.Expires
	if len(a.revoked) > 1000 {
		now := time.Now().Unix()
		for id, exp := range a.revoked {
			if exp < now {
				delete(a.revoked, id)
			}
		}
	}
	return nil
}

func writeSecret(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// HashPassword returns a salted PBKDF2-SHA256 hash of pw in the form
// pbkdf2-sha256$iterations$salt$hash.
func HashPassword(pw string) string {
	salt := randomBytes(16)
	h, _ := pbkdf2.Key(sha256.New, pw, salt, pbkdf2Iter, 32)
	enc := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("pbkdf2-sha256$%d$%s$%s", pbkdf2Iter, enc(salt), enc(h))
}

func parseHash(s string) (iter int, salt, hash []byte, err error) {
	parts := strings.Split(s, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return 0, nil, nil, errors.New("not a pbkdf2-sha256 password hash")
	}
	iter, err = strconv.Atoi(parts[1])
	if err != nil || iter < 1 {
		return 0, nil, nil, errors.New("bad iteration count in password hash")
	}
	dec := base64.RawStdEncoding.DecodeString
	if salt, err = dec(parts[2]); err != nil {
		return 0, nil, nil, fmt.Errorf("bad salt in password hash: %w", err)
	}
	if hash, err = dec(parts[3]); err != nil || len(hash) == 0 {
		return 0, nil, nil, errors.New("bad hash in password hash")
	}
	return iter, salt, hash, nil
}

// CheckPassword reports whether pw matches a hash made by HashPassword.
func CheckPassword(hash, pw string) bool {
	iter, salt, want, err := parseHash(hash)
	if err != nil {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, pw, salt, iter, len(want))
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

// Login checks a local user's password and returns the identity.
func (a *Auth) Login(user, pw string) (Identity, bool) {
	ok := CheckPassword(a.adminHash, pw)
	if user != AdminUser || !ok {
		return Identity{}, false
	}
	return Identity{User: AdminUser, Role: RoleAdmin, Provider: "local"}, true
}

type sessionClaims struct {
	ID       string `json:"i"` // random, to revoke the session by
	User     string `json:"u"`
	Role     string `json:"r"`
	Provider string `json:"p"`
	Expires  int64  `json:"e"`
}

func (a *Auth) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, a.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// Token returns a signed session token for id, valid until expires. It serves as the
// session cookie and as a bearer token for the API.
func (a *Auth) Token(id Identity, expires time.Time) string {
	sid := base64.RawURLEncoding.EncodeToString(randomBytes(16))
	b, _ := json.Marshal(sessionClaims{sid, id.User, id.Role.String(), id.Provider, expires.Unix()})
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(a.mac("session", p))
}

// ParseToken checks a token made by Token, not expired nor revoked, and returns its
// identity.
func (a *Auth) ParseToken(tok string) (Identity, error) {
	c, err := a.parseClaims(tok)
	if err != nil {
		return Identity{}, err
	}
	if time.Now().Unix() > c.Expires {
		return Identity{}, errors.New("token expired")
	}
	a.mu.RLock()
	_, revoked := a.revoked[c.ID]
	a.mu.RUnlock()
	if revoked {
		return Identity{}, errors.New("session ended by logging out")
	}
	role, err := ParseRole(c.Role)
	if err != nil {
		return Identity{}, err
	}
	return Identity{User: c.User, Role: role, Provider: c.Provider}, nil
}

// parseClaims checks a token's signature and reads its claims.
func (a *Auth) parseClaims(tok string) (sessionClaims, error) {
	var c sessionClaims
	p, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return c, errors.New("malformed token")
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(s, a.mac("session", p)) {
		return c, errors.New("bad token signature")
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return c, errors.New("malformed token")
	}
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		return c, errors.New("malformed token")
	}
	return c, nil
}

// sessionToken returns the session token r carries: a bearer token or the cookie.
func sessionToken(r *http.Request) string {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(tok)
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		return c.Value
	}
	return ""
}

// identify returns who made r and whether the identity came from a bearer token.
func (a *Auth) identify(r *http.Request) (id Identity, bearer bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if ok {
			if id, err := a.ParseToken(strings.TrimSpace(tok)); err == nil {
				return id, true
			}
		}
		return Identity{Role: RoleNone}, true
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if id, err := a.ParseToken(c.Value); err == nil {
			return id, false
		}
	}
	return Identity{Role: a.anonymous}, false
}

func (a *Auth) setSession(w http.ResponseWriter, id Identity) {
	exp := time.Now().Add(sessionTTL)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: a.Token(id, exp), Path: "/", Expires: exp,
		HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteLaxMode})
}

func (a *Auth) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteLaxMode})
}

// csrfToken returns the CSRF token for r, setting the cookie it is bound to when r has none.
func (a *Auth) csrfToken(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(csrfCookie)
	v := ""
	if err == nil && len(c.Value) >= 16 {
		v = c.Value
	} else {
		v = base64.RawURLEncoding.EncodeToString(randomBytes(18))
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true,
			Secure: a.secure, SameSite: http.SameSiteStrictMode})
		// Later reads in this request see the new cookie.
		r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	}
	return base64.RawURLEncoding.EncodeToString(a.mac("csrf", v))
}

// checkCSRF reports whether a POST carries the CSRF token bound to its cookie.
func (a *Auth) checkCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return false
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	got, err := base64.RawURLEncoding.DecodeString(tok)
	return err == nil && hmac.Equal(got, a.mac("csrf", c.Value))
}

// oauthState returns a signed state for an IdentityProvider's round trip.
func (a *Auth) oauthState(provider string) string {
	n := base64.RawURLEncoding.EncodeToString(randomBytes(12))
	exp := strconv.FormatInt(time.Now().Add(10*time.Minute).Unix(), 10)
	return n + "." + exp + "." + base64.RawURLEncoding.EncodeToString(a.mac("oauth", provider, n, exp))
}

func (a *Auth) checkOAuthState(provider, s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() > exp {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	return err == nil && hmac.Equal(sig, a.mac("oauth", provider, parts[0], parts[1]))
}
