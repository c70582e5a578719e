package healthcheck

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/opam"
	"github.com/kiln-ci/kiln/services/internal/logarchive"
)

//go:embed templates/*.html
var uiTemplates embed.FS

//go:embed static/healthcheck.css static/healthcheck.js
var uiStatic embed.FS

// UIOptions vary the health check's pages.
type UIOptions struct {
	// Prefix is the path the pages are under ("/health-check"); under it the paths are
	// the reference's (/, /run, /run/ID, /diff, /diff/OLD..NEW, /log/…,
	// /api/v1/latest/packages). "" serves them at the server's root, taking / from the
	// console.
	Prefix string
	// FeedRuns is how many successive runs' diffs the Atom feeds cover (10 when zero).
	FeedRuns int
	Logger   *slog.Logger
}

// UI serves the health check's pages and JSON API over its store and log archive.
type UI struct {
	store *Store
	logs  *logarchive.Archive
	opts  UIOptions
	log   *slog.Logger
	tmpl  *template.Template
	mux   *http.ServeMux
	cache runCache
	api   apiCache
	feeds feedCache
	// searches holds a token per log search going on, at most maxSearches.
	searches chan struct{}
}

// maxSearches is how many log searches run at once; more wait their turn.
const maxSearches = 2

// NewUI makes the pages over a store and the archive of its runs' logs (run names
// are the runs' IDs in decimal, keys LogKey's); logs may be nil.
func NewUI(store *Store, logs *logarchive.Archive, opts UIOptions) (*UI, error) {
	opts.Prefix = strings.TrimRight(opts.Prefix, "/")
	if opts.Prefix != "" && !strings.HasPrefix(opts.Prefix, "/") {
		return nil, fmt.Errorf("health-check pages: prefix %q does not start with /", opts.Prefix)
	}
	if opts.FeedRuns <= 0 {
		opts.FeedRuns = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	u := &UI{store: store, logs: logs, opts: opts, log: opts.Logger, searches: make(chan struct{}, maxSearches)}
	t, err := template.New("").Funcs(template.FuncMap{
		"root":  func() string { return opts.Prefix },
		"short": shortCommit,
		"time": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"commitURL":  commitURL,
		"compareURL": compareURL,
		"pct": func(p Progress) int {
			if p.Total == 0 {
				return 0
			}
			return p.Done * 100 / p.Total
		},
		"states": func() []State { return States },
		"logURL": u.logURL,
	}).ParseFS(uiTemplates, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("health-check pages: %w", err)
	}
	u.tmpl = t
	p := opts.Prefix
	mux := http.NewServeMux()
	mux.Handle("GET "+p+"/{$}", u.page(u.latestPage))
	mux.Handle("GET "+p+"/run", u.page(u.runsPage))
	mux.Handle("GET "+p+"/run/{id}", u.page(u.runPage))
	mux.Handle("GET "+p+"/diff", u.page(u.diffsPage))
	mux.Handle("GET "+p+"/diff/{range}", u.page(u.diffPage))
	logPage := u.page(u.logPage)
	logRoute := func(w http.ResponseWriter, r *http.Request) {
		if !u.rawLog(w, r) {
			logPage.ServeHTTP(w, r)
		}
	}
	mux.HandleFunc("GET "+p+"/log/{run}/{switch}/{state}/{pkg}", logRoute)
	mux.HandleFunc("GET "+p+"/log/{run}/{switch}/{pkg}", logRoute)
	mux.Handle("GET "+p+"/maintainer/{who}", u.page(u.maintainerPage))
	mux.HandleFunc("GET "+p+"/maintainer/{who}/feed.atom", u.maintainerFeed)
	mux.HandleFunc("GET "+p+"/feed.atom", u.feed)
	u.apiRoutes(mux, p+"/api/v1")
	mux.Handle("GET "+p+"/static/", http.StripPrefix(p, http.FileServerFS(uiStatic)))
	u.mux = mux
	return u, nil
}

// Routes lists the patterns to mount the UI at beside the console.
func (u *UI) Routes() []string {
	if u.opts.Prefix == "" {
		return []string{"/{$}", "/run", "/run/", "/diff", "/diff/", "/log/", "/maintainer/", "/feed.atom", "/api/v1/", "/static/healthcheck.css", "/static/healthcheck.js"}
	}
	return []string{u.opts.Prefix, u.opts.Prefix + "/"}
}

// ServeHTTP serves the pages, the API and the static files.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u.opts.Prefix != "" && r.URL.Path == u.opts.Prefix {
		http.Redirect(w, r, u.opts.Prefix+"/", http.StatusMovedPermanently)
		return
	}
	u.mux.ServeHTTP(w, r)
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// errorCode is the HTTP status of err, logging what is not the request's fault.
func (u *UI) errorCode(r *http.Request, err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.code
	case errors.Is(err, ErrNoRun), errors.Is(err, logarchive.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable // the client went away
	}
	u.log.Error("health-check page", "path", r.URL.Path, "err", err)
	return http.StatusInternalServerError
}

// view is what a page handler returns: its template, title and data.
type view struct {
	Template string
	Title    string
	Data     any
}

func (u *UI) page(h func(r *http.Request) (view, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := h(r)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err != nil {
			code := u.errorCode(r, err)
			w.WriteHeader(code)
			u.render(w, "error.html", http.StatusText(code), err.Error())
			return
		}
		u.render(w, v.Template, v.Title, v.Data)
	})
}

func (u *UI) render(w http.ResponseWriter, name, title string, data any) {
	if err := u.tmpl.ExecuteTemplate(w, name, map[string]any{"Title": title, "D": data}); err != nil {
		u.log.Error("health-check page: render", "template", name, "err", err)
	}
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// webRepo is the web address of an opam repository given by URL, or "" when it has
// none (a local path).
func webRepo(repo string) string {
	repo = strings.TrimSuffix(repo, ".git")
	if strings.HasPrefix(repo, "https://") || strings.HasPrefix(repo, "http://") {
		return repo
	}
	if strings.HasPrefix(repo, "github.com/") {
		return "https://" + repo
	}
	return ""
}

func commitURL(repo, commit string) string {
	if w := webRepo(repo); w != "" && commit != "" {
		return w + "/commit/" + commit
	}
	return ""
}

func compareURL(repo, old, new string) string {
	if w := webRepo(repo); w != "" && old != "" && new != "" && old != new {
		return w + "/compare/" + old + "..." + new
	}
	return ""
}

// runName is a run's name in the log archive.
func runName(id int64) string { return strconv.FormatInt(id, 10) }

func (u *UI) logURL(run int64, sw string, st State, pkg string) string {
	return u.opts.Prefix + "/log/" + runName(run) + "/" + sw + "/" + string(st) + "/" + pkg
}

func parseRunID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("run %q is not a run number", s)
	}
	return id, nil
}

// runData is a run with its results as the matrix rows them.
type runData struct {
	Run      Run
	Switches []string
	Rows     []pkgRow
}

// pkgRow is one package version of a run: its result on each switch, in the order of
// runData.Switches (State "" where it has none).
type pkgRow struct {
	Package, Name, Version string
	Revdeps                int
	Maintainers            []string
	Latest                 bool
	Cells                  []Result
}

func (d *runData) switchIndex(name string) int {
	for i, s := range d.Switches {
		if s == name {
			return i
		}
	}
	return -1
}

// runCache keeps the rows of the last finished runs read, which do not change.
type runCache struct {
	mu    sync.Mutex
	runs  map[int64]*runData
	order []int64
}

const runCacheSize = 4

func (c *runCache) get(id int64) *runData {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[id]
}

func (c *runCache) put(d *runData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs == nil {
		c.runs = map[int64]*runData{}
	}
	if _, ok := c.runs[d.Run.ID]; ok {
		return
	}
	c.runs[d.Run.ID] = d
	c.order = append(c.order, d.Run.ID)
	if len(c.order) > runCacheSize {
		delete(c.runs, c.order[0])
		c.order = c.order[1:]
	}
}

// load reads a run and its results.
func (u *UI) load(ctx context.Context, id int64) (*runData, error) {
	if d := u.cache.get(id); d != nil {
		return d, nil
	}
	run, err := u.store.Run(ctx, id)
	if err != nil {
		return nil, err
	}
	return u.loadRun(ctx, run)
}

func (u *UI) loadRun(ctx context.Context, run *Run) (*runData, error) {
	if d := u.cache.get(run.ID); d != nil {
		return d, nil
	}
	results, err := u.store.Results(ctx, run.ID, ResultQuery{})
	if err != nil {
		return nil, err
	}
	d := rowsOf(*run, results)
	if run.Status.Finished() {
		u.cache.put(d)
	}
	return d, nil
}

// rowsOf groups results by package, in the order of names then opam versions, and
// marks the latest version of each name.
func rowsOf(run Run, results []Result) *runData {
	d := &runData{Run: run}
	for _, s := range run.Switches {
		d.Switches = append(d.Switches, s.Name)
	}
	byPkg := map[string]int{}
	for _, r := range results {
		si := d.switchIndex(r.Switch)
		if si < 0 {
			d.Switches = append(d.Switches, r.Switch)
			si = len(d.Switches) - 1
			for i := range d.Rows {
				d.Rows[i].Cells = append(d.Rows[i].Cells, Result{})
			}
		}
		i, ok := byPkg[r.Package]
		if !ok {
			p, _ := opam.ParsePackage(r.Package)
			name, version := string(p.Name), string(p.Version)
			if name == "" {
				name = r.Package
			}
			d.Rows = append(d.Rows, pkgRow{Package: r.Package, Name: name, Version: version, Cells: make([]Result, len(d.Switches))})
			i = len(d.Rows) - 1
			byPkg[r.Package] = i
		}
		row := &d.Rows[i]
		row.Cells[si] = r
		row.Revdeps = max(row.Revdeps, r.Revdeps)
		if len(row.Maintainers) == 0 {
			row.Maintainers = r.Maintainers
		}
	}
	sort.Slice(d.Rows, func(i, j int) bool {
		a, b := &d.Rows[i], &d.Rows[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return opam.CompareVersions(a.Version, b.Version) < 0
	})
	for i := range d.Rows {
		d.Rows[i].Latest = i == len(d.Rows)-1 || d.Rows[i+1].Name != d.Rows[i].Name
	}
	return d
}
