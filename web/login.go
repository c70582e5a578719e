package web

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

func htmlString(s string) template.HTML { return template.HTML(s) }

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func jsonDecoder(r *http.Request) *json.Decoder {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	return dec
}

// safeNext returns next if it is a path on this site, or "/".
func safeNext(next string) string {
	// Browsers drop tabs and newlines from URLs and read a backslash as a slash, so
	// "/\t/evil.example" would lead away: only clean paths go.
	clean := !strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' })
	if clean && strings.HasPrefix(next, "/") && !strings.HasPrefix(next, "//") {
		return next
	}
	return "/"
}

type providerLink struct{ Name, Title string }

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r, "next"); err != nil {
		return err
	}
	return s.render(w, c, "login", "Log in", s.loginData(safeNext(r.URL.Query().Get("next"))))
}

func (s *Server) loginData(next string) map[string]any {
	var ps []providerLink
	for _, p := range s.auth.providers {
		ps = append(ps, providerLink{p.Name(), p.Title()})
	}
	return map[string]any{"Next": next, "Providers": ps}
}

// login checks the local admin password. The page sets the session cookie; the API
// twin returns a bearer token for `kiln ctl`.
func (s *Server) login(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var user, pw, next string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			User     string `json:"user"`
			Password string `json:"password"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		user, pw = body.User, body.Password
	} else {
		user, pw, next = r.PostFormValue("user"), r.PostFormValue("password"), r.PostFormValue("next")
	}
	addr := clientAddr(r)
	if ok, wait := s.logins.attempt(user, addr); !ok {
		s.loginResults.WithLabelValues("throttled").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		return httpErr(http.StatusTooManyRequests, "too many failed logins as %q from %s: try again in %s", user, addr, wait.Round(time.Second))
	}
	var id Identity
	var ok bool
	if !s.logins.check(r.Context(), func() { id, ok = s.checkPassword(user, pw) }) {
		s.loginResults.WithLabelValues("busy").Inc()
		w.Header().Set("Retry-After", "5")
		return httpErr(http.StatusServiceUnavailable, "too many logins are being checked: try again in a few seconds")
	}
	if !ok {
		s.loginResults.WithLabelValues("wrong").Inc()
		s.log.Warn("console login failed", "user", user, "remote", r.RemoteAddr)
		if c.api {
			return httpErr(http.StatusUnauthorized, "wrong user or password")
		}
		w.WriteHeader(http.StatusUnauthorized)
		return s.renderFlash(w, c, "login", "Log in", "Wrong user or password.", s.loginData(safeNext(next)))
	}
	s.logins.succeeded(user, addr)
	s.loginResults.WithLabelValues("ok").Inc()
	s.log.Info("console login", "user", id.User, "remote", r.RemoteAddr)
	if c.api {
		exp := time.Now().Add(sessionTTL)
		return writeJSON(w, http.StatusOK, map[string]any{"token": s.auth.Token(id, exp), "expires": exp, "identity": id})
	}
	s.auth.setSession(w, id)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.auth.Revoke(sessionToken(r)); err != nil {
		return err
	}
	s.auth.clearSession(w)
	if c.api {
		return writeJSON(w, http.StatusOK, map[string]string{"logged_out": c.id.User})
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

func (s *Server) provider(r *http.Request) (IdentityProvider, error) {
	name := r.PathValue("provider")
	p, ok := s.auth.providers[name]
	if !ok {
		return nil, httpErr(http.StatusNotFound, "no login provider %q", name)
	}
	return p, nil
}

func callbackURL(r *http.Request, name string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/login/" + url.PathEscape(name) + "/callback"
}

func (s *Server) providerLogin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	p, err := s.provider(r)
	if err != nil {
		return err
	}
	http.Redirect(w, r, p.LoginURL(s.auth.oauthState(p.Name()), callbackURL(r, p.Name())), http.StatusFound)
	return nil
}

func (s *Server) providerCallback(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	p, err := s.provider(r)
	if err != nil {
		return err
	}
	if !s.auth.checkOAuthState(p.Name(), r.URL.Query().Get("state")) {
		return httpErr(http.StatusBadRequest, "bad or expired login state: start the login again")
	}
	id, err := p.Callback(r.Context(), r)
	if err != nil {
		return httpErr(http.StatusUnauthorized, "login with %s failed: %v", p.Title(), err)
	}
	id.Provider = p.Name()
	s.log.Info("console login", "user", id.User, "provider", p.Name(), "role", id.Role)
	s.auth.setSession(w, id)
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.api {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}
	return writeJSON(w, http.StatusOK, c.id)
}

// csrf returns the CSRF token for the caller's cookie, for clients that post forms
// without reading a page first.
func (s *Server) csrf(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if !c.api {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}
	return writeJSON(w, http.StatusOK, map[string]string{"csrf": c.csrf})
}
