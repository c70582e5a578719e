// Package web is the console of the pipeline engine: server-rendered pages that work
// without JavaScript, live updates by server-sent events, a JSON twin of every page under
// /api/, roles and a local admin login, and Prometheus metrics.
package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// ErrInvalid marks an error caused by bad input to an Engine; the console answers it
// with 400 Bad Request.
var ErrInvalid = errors.New("invalid input")

// Options configures a Server.
type Options struct {
	Engine   Engine
	Auth     *Auth
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer   // served at /metrics; the default gatherer if nil
	Register prometheus.Registerer // where the console's own metrics go; the default registerer if nil
	Fleet    Fleet                 // the build fleet shown at /fleet; nil when none is attached
	// Links are pages of the services served beside the console, shown in its menu.
	Links []Link
}

// Link is a page the console's menu links to.
type Link struct {
	Text string
	URL  string
}

// Server is the web console.
type Server struct {
	eng      Engine
	fleet    Fleet
	links    []Link
	auth     *Auth
	log      *slog.Logger
	mux      *http.ServeMux
	pages    map[string]*template.Template
	gatherer prometheus.Gatherer
	logins   *loginThrottle
	// checkPassword checks a local login (Auth.Login; replaced in tests).
	checkPassword func(user, pw string) (Identity, bool)

	requests     *prometheus.CounterVec
	followers    prometheus.Gauge
	loginResults *prometheus.CounterVec
	conns        prometheus.Gauge
	connsClosed  *prometheus.CounterVec
}

// New makes a console serving o.Engine.
func New(o Options) (*Server, error) {
	if o.Engine == nil || o.Auth == nil {
		return nil, errors.New("web.New: Engine and Auth are required")
	}
	s := &Server{eng: o.Engine, fleet: o.Fleet, links: o.Links, auth: o.Auth, log: o.Logger, gatherer: o.Gatherer, logins: newLoginThrottle(),
		checkPassword: o.Auth.Login}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.gatherer == nil {
		s.gatherer = prometheus.DefaultGatherer
	}
	reg := o.Register
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_web_requests_total", Help: "Requests to the console by route and status code.",
	}, []string{"route", "code"})
	s.followers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kiln_web_event_streams", Help: "Open server-sent event streams (log followers and live pages).",
	})
	s.loginResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_web_logins_total", Help: "Local logins by result: ok, wrong (password checked), throttled (refused unchecked), busy (no password check free in time).",
	}, []string{"result"})
	s.conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kiln_web_connections", Help: "Connections open to the console (when served by Server.HTTPServer).",
	})
	s.connsClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_web_connections_closed_total", Help: "Connections closed at the limit: idle (for a new one) or refused (none idle).",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{s.requests, s.followers, s.loginResults, s.conns, s.connsClosed} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register console metrics: %w", err)
			}
		}
	}
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) parseTemplates() error {
	funcs := template.FuncMap{
		"fmtTime": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
	}
	layout, err := template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("parse layout: %w", err)
	}
	s.pages = map[string]*template.Template{}
	for _, p := range []string{"graph", "jobs", "job", "query", "logrules", "login", "error", "done", "fleet"} {
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("parse template %s: %w", p, err)
		}
		s.pages[p] = t
	}
	return nil
}

// ServeHTTP serves the console.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "same-origin")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	s.mux.ServeHTTP(w, r)
}

// handler is a route's work; it returns an error for a failure to show as a page.
type handler func(w http.ResponseWriter, r *http.Request, c *reqCtx) error

// reqCtx is what a handler knows of the request besides the request itself.
type reqCtx struct {
	id   Identity
	api  bool
	csrf string
}

// route registers h for pattern (and, with api, for its /api/ twin) for users with at
// least role min. POST routes check the CSRF token unless the request carries a bearer
// token.
func (s *Server) route(method, path string, min Role, api bool, h handler) {
	paths := []string{path}
	if api {
		p := "/api" + path
		if path == "/" {
			p = "/api/graph"
		}
		paths = append(paths, p)
	}
	for _, p := range paths {
		pattern := method + " " + p
		if p == "/" {
			pattern = method + " /{$}"
		}
		name := p
		s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			rec := &statusRecorder{ResponseWriter: w, code: 200}
			c := &reqCtx{api: strings.HasPrefix(r.URL.Path, "/api/")}
			var bearer bool
			c.id, bearer = s.auth.identify(r)
			if !bearer {
				c.csrf = s.auth.csrfToken(rec, r)
			}
			err := s.admit(r, c, min, bearer)
			if err == nil {
				err = h(rec, r, c)
			}
			if err != nil {
				s.fail(rec, r, c, err)
			}
			s.requests.WithLabelValues(name, fmt.Sprint(rec.code)).Inc()
		})
	}
}

// Mount serves h at pattern (an http.ServeMux pattern) inside the console, so that it
// gets the console's security headers, request metrics and access control: a user
// needs role min, and a POST needs the CSRF token or a bearer token. Endpoints that
// authenticate their callers themselves (a forge's signed webhooks) are mounted with
// min RoleNone and skip both checks.
func (s *Server) Mount(pattern string, min Role, h http.Handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		if min > RoleNone {
			c := &reqCtx{api: strings.HasPrefix(r.URL.Path, "/api/")}
			var bearer bool
			c.id, bearer = s.auth.identify(r)
			if err := s.admit(r, c, min, bearer); err != nil {
				s.fail(rec, r, c, err)
				s.requests.WithLabelValues(pattern, fmt.Sprint(rec.code)).Inc()
				return
			}
		}
		h.ServeHTTP(rec, r)
		s.requests.WithLabelValues(pattern, fmt.Sprint(rec.code)).Inc()
	})
}

func (s *Server) admit(r *http.Request, c *reqCtx, min Role, bearer bool) error {
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
		if !bearer && !s.auth.checkCSRF(r) {
			return httpErr(http.StatusForbidden, "missing or invalid CSRF token: reload the page and try again")
		}
	}
	if c.id.Role < min {
		if c.id.User == "" {
			return &statusError{http.StatusUnauthorized, fmt.Sprintf("log in as %s or above to do this", min), true}
		}
		return httpErr(http.StatusForbidden, "%s may not do this: it needs the %s role", c.id.User, min)
	}
	return nil
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// statusError is an error with the HTTP status to answer it with.
type statusError struct {
	code      int
	msg       string
	needLogin bool // send a browser to the login page
}

func (e *statusError) Error() string { return e.msg }

func httpErr(code int, format string, args ...any) error {
	return &statusError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, c *reqCtx, err error) {
	code := http.StatusInternalServerError
	msg := err.Error()
	var se *statusError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		code = se.code
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.As(err, &mbe):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, context.Canceled):
		return
	default:
		s.log.Error("console request failed", "path", r.URL.Path, "err", err)
	}
	if se != nil && se.needLogin && !c.api && r.Method == http.MethodGet {
		http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	if code >= 500 {
		msg = shownError(c, msg)
	}
	if c.api {
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	w.WriteHeader(code)
	s.render(w, c, "error", "Error", map[string]any{"Status": code, "StatusText": http.StatusText(code), "Message": msg})
}

// serverDirs matches the folders of an absolute path on the server.
var serverDirs = regexp.MustCompile(`(^|[\s"'(=:])/(?:[^\s"'()/]+/)+`)

// shownError is an error message about the server's own trouble as user c may see it:
// paths on the server are shown to admins only, others see their last element.
func shownError(c *reqCtx, msg string) string {
	if c.id.Role >= RoleAdmin {
		return msg
	}
	return serverDirs.ReplaceAllString(msg, "$1…/")
}

// pageData is what every template sees.
type pageData struct {
	Title, Page, CSRF, Flash string
	Ident                    Identity
	Builder, Admin           bool
	Fleet                    bool // a fleet is attached
	Links                    []Link
	Data                     any
}

func (s *Server) render(w http.ResponseWriter, c *reqCtx, page, title string, data any) error {
	return s.renderFlash(w, c, page, title, "", data)
}

func (s *Server) renderFlash(w http.ResponseWriter, c *reqCtx, page, title, flash string, data any) error {
	t := s.pages[page]
	var buf bytes.Buffer
	err := t.ExecuteTemplate(&buf, "layout", pageData{
		Title: title, Page: page, CSRF: c.csrf, Flash: flash, Ident: c.id,
		Builder: c.id.Role >= RoleBuilder, Admin: c.id.Role >= RoleAdmin, Fleet: s.fleet != nil, Links: s.links, Data: data,
	})
	if err != nil {
		return fmt.Errorf("render %s: %w", page, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err = w.Write(buf.Bytes())
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, err = w.Write(append(b, '\n'))
	return err
}

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))

	s.route("GET", "/", RoleViewer, true, s.graphPage)
	s.route("GET", "/graph.svg", RoleViewer, false, s.graphSVG)
	s.route("GET", "/events", RoleViewer, false, s.changeEvents)
	s.route("GET", "/jobs", RoleViewer, true, s.jobsPage)
	s.route("POST", "/confirm", RoleAdmin, true, s.setConfirm)
	s.route("GET", "/confirm", RoleViewer, true, s.getConfirm)
	s.route("GET", "/job/{id}", RoleViewer, true, s.jobPage)
	s.route("GET", "/job/{id}/log", RoleViewer, true, s.rawLog)
	s.route("GET", "/job/{id}/log/events", RoleViewer, true, s.logEvents)
	s.route("POST", "/job/{id}/rebuild", RoleBuilder, true, s.jobAction("rebuild"))
	s.route("POST", "/job/{id}/cancel", RoleBuilder, true, s.jobAction("cancel"))
	s.route("POST", "/job/{id}/start", RoleBuilder, true, s.jobAction("start"))
	s.route("GET", "/query", RoleViewer, true, s.queryPage)
	s.route("POST", "/query/rebuild", RoleBuilder, true, s.bulkRebuild)
	s.route("GET", "/log-rules", RoleViewer, true, s.logRulesPage)
	s.route("POST", "/log-rules", RoleAdmin, true, s.addLogRule)
	s.route("POST", "/log-rules/{id}/delete", RoleAdmin, true, s.deleteLogRule)
	s.route("GET", "/fleet", RoleViewer, true, s.fleetPage)
	s.route("POST", "/worker/{name}/pause", RoleAdmin, true, s.workerAction("pause"))
	s.route("POST", "/worker/{name}/unpause", RoleAdmin, true, s.workerAction("unpause"))
	s.route("GET", "/metrics", RoleViewer, false, s.metrics)
	s.route("GET", "/login", RoleNone, false, s.loginPage)
	s.route("POST", "/login", RoleNone, true, s.login)
	s.route("POST", "/logout", RoleNone, true, s.logout)
	s.route("GET", "/login/{provider}", RoleNone, false, s.providerLogin)
	s.route("GET", "/login/{provider}/callback", RoleNone, false, s.providerCallback)
	s.route("GET", "/whoami", RoleNone, true, s.whoami)
	s.route("GET", "/csrf", RoleNone, true, s.csrf)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c := &reqCtx{api: strings.HasPrefix(r.URL.Path, "/api/")}
		c.id, _ = s.auth.identify(r)
		s.fail(w, r, c, httpErr(http.StatusNotFound, "no page %s %s", r.Method, r.URL.Path))
	})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}
