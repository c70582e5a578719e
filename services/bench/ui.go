package bench

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the service's pages are.
const Prefix = "/bench"

// UI is the service's pages: repositories, a branch's charts, a PR's comparison, a
// run; each with a JSON twin (?format=json) and every choice (range, metrics,
// environment) in the URL.
type UI struct {
	Store   *store.Store
	Logger  *slog.Logger
	Options detect.Options
	// Target is the branch PRs are compared with (default main).
	Target string
	tmpl   *template.Template
}

// NewUI returns the pages over st.
func NewUI(st *store.Store, log *slog.Logger, o detect.Options) (*UI, error) {
	t, err := template.New("").Funcs(template.FuncMap{
		"pct":     func(x float64) string { return fmt.Sprintf("%+.1f %%", 100*x) },
		"num":     func(x float64) string { return strconv.FormatFloat(x, 'g', 5, 64) },
		"short":   short,
		"logURL":  logURL,
		"logLine": func(job string, line int) string { return fmt.Sprintf("/job/%s#L%d", url.PathEscape(job), line) },
		"json": func(v any) (template.JS, error) {
			b, err := json.Marshal(v)
			return template.JS(b), err
		},
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &UI{Store: st, Logger: log, Options: o, Target: "main", tmpl: t}, nil
}

// Routes are the patterns the UI serves.
func (u *UI) Routes() []string { return []string{Prefix + "/"} }

// ServeHTTP serves /bench/, /bench/static/…, /bench/r/FORGE/OWNER/NAME[/pr/N|/run/ID].
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	switch {
	case rest == "/" || rest == "":
		u.repos(w, r)
	case strings.HasPrefix(rest, "/static/"):
		sub, _ := fs.Sub(staticFS, "static")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		http.StripPrefix(Prefix+"/static/", http.FileServerFS(sub)).ServeHTTP(w, r)
	case strings.HasPrefix(rest, "/r/"):
		parts := strings.Split(strings.TrimPrefix(rest, "/r/"), "/")
		if len(parts) < 3 {
			http.NotFound(w, r)
			return
		}
		repo := strings.Join(parts[:3], "/")
		switch {
		case len(parts) == 3:
			u.branch(w, r, repo)
		case len(parts) == 5 && parts[3] == "pr":
			n, err := strconv.ParseInt(parts[4], 10, 64)
			if err != nil || n <= 0 {
				http.NotFound(w, r)
				return
			}
			u.pr(w, r, repo, n)
		case len(parts) == 5 && parts[3] == "run":
			id, err := strconv.ParseInt(parts[4], 10, 64)
			if err != nil {
				http.NotFound(w, r)
				return
			}
			u.run(w, r, repo, id)
		default:
			http.NotFound(w, r)
		}
	default:
		http.NotFound(w, r)
	}
}

func wantsJSON(r *http.Request) bool {
	return r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json")
}

func (u *UI) render(w http.ResponseWriter, r *http.Request, name string, data any) {
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		if err := e.Encode(data); err != nil {
			u.Logger.Warn("bench page json", "page", name, "err", err)
		}
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := u.tmpl.ExecuteTemplate(w, name, data); err != nil {
		u.Logger.Warn("bench page", "page", name, "err", err)
	}
}

func (u *UI) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	u.Logger.Warn("bench page", "path", r.URL.Path, "err", err)
	http.Error(w, err.Error(), code)
}

// RepoSummary is a repository on the front page.
type RepoSummary struct {
	Repo string `json:"repo"`
	Runs int    `json:"runs"`
}

func (u *UI) repos(w http.ResponseWriter, r *http.Request) {
	repos, err := u.Store.Repos(r.Context())
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	out := []RepoSummary{}
	for _, rp := range repos {
		out = append(out, RepoSummary{Repo: rp.Repo, Runs: rp.Runs})
	}
	u.render(w, r, "repos.html", struct {
		Title string
		Repos []RepoSummary
	}{"Benchmarks", out})
}

// View is what a page shows, all of it from the URL.
type View struct {
	Branch  string   `json:"branch,omitempty"`
	Env     string   `json:"env,omitempty"`
	From    int64    `json:"from,omitempty"` // unix seconds of commit time
	To      int64    `json:"to,omitempty"`
	Metrics []string `json:"metrics,omitempty"` // metric keys or groups; empty: all
}

func parseTime(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.Unix(), nil
		}
	}
	return 0, fmt.Errorf("%q is neither unix seconds, a date nor RFC 3339", s)
}

func viewOf(q url.Values, branch string) (View, error) {
	v := View{Branch: q.Get("branch"), Env: q.Get("env")}
	if v.Branch == "" {
		v.Branch = branch
	}
	var err error
	if v.From, err = parseTime(q.Get("from")); err != nil {
		return v, fmt.Errorf("from: %w", err)
	}
	if v.To, err = parseTime(q.Get("to")); err != nil {
		return v, fmt.Errorf("to: %w", err)
	}
	for _, m := range strings.Split(q.Get("metrics"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			v.Metrics = append(v.Metrics, m)
		}
	}
	return v, nil
}

func (v View) filter(repo string) store.Filter {
	f := store.Filter{Repo: repo, Branch: v.Branch, Env: v.Env, PR: -1}
	if v.From > 0 {
		f.From = time.Unix(v.From, 0)
	}
	if v.To > 0 {
		f.To = time.Unix(v.To, 0)
	}
	return f
}

func (v View) wants(p store.Point) bool {
	if len(v.Metrics) == 0 {
		return true
	}
	for _, m := range v.Metrics {
		if m == p.Key.String() || m == p.Name || m == benchfmt.Metric(benchfmt.Metric{Name: p.Name}).Group() {
			return true
		}
	}
	return false
}

// Chart is one graph: a metric, or the metrics of a group ("a/b", "a/c"), over
// commits in time order, in the shape uPlot draws.
type Chart struct {
	Title string `json:"title"`
	Units string `json:"units,omitempty"`
	// X is each commit's time (unix seconds); Commits and Runs are the commit and run
	// of each x, for tooltips and clicks.
	X       []int64       `json:"x"`
	Commits []string      `json:"commits"`
	Runs    []int64       `json:"runs"`
	PR      []bool        `json:"pr,omitempty"` // the x values that are the PR's
	Series  []ChartSeries `json:"series"`
}

// ChartSeries is one metric of a chart: its central values and the min/max band, and
// for each the console's address of the job log line that printed it ("" if unknown).
type ChartSeries struct {
	Label  string     `json:"label"`
	Trend  string     `json:"trend,omitempty"`
	Values []*float64 `json:"values"`
	Lo     []*float64 `json:"lo"`
	Hi     []*float64 `json:"hi"`
	Log    []string   `json:"log"`
}

// logURL is the console's address of the first job log line that printed p, "" when
// not known.
func logURL(p store.Point) string {
	if p.Job == "" || len(p.LogLines) == 0 {
		return ""
	}
	return fmt.Sprintf("/job/%s#L%d", url.PathEscape(p.Job), p.LogLines[0].First)
}

// charts groups points into charts, one per metric group, x in the order given.
func charts(pts []store.Point, isPR func(store.Point) bool) []Chart {
	type xkey struct {
		run int64
	}
	var order []store.Point // the first point of each run
	seen := map[int64]int{}
	for _, p := range pts {
		if _, ok := seen[p.RunID]; !ok {
			seen[p.RunID] = len(order)
			order = append(order, p)
		}
	}
	byGroup := map[string]*Chart{}
	var groups []string
	series := map[string]int{}
	for _, p := range pts {
		if p.Arm != store.Head {
			continue
		}
		g := p.Key.Benchmark + " " + p.Key.Test + " " + benchfmt.Metric{Name: p.Name}.Group()
		c := byGroup[g]
		if c == nil {
			c = &Chart{Title: strings.TrimSpace(g), Units: p.Units}
			for _, o := range order {
				c.X = append(c.X, o.CommitTime.Unix())
				c.Commits = append(c.Commits, o.Commit)
				c.Runs = append(c.Runs, o.RunID)
				if isPR != nil {
					c.PR = append(c.PR, isPR(o))
				}
			}
			byGroup[g] = c
			groups = append(groups, g)
		}
		sk := g + "\x00" + p.Key.String()
		si, ok := series[sk]
		if !ok {
			si = len(c.Series)
			series[sk] = si
			n := len(order)
			c.Series = append(c.Series, ChartSeries{Label: p.Name, Trend: string(p.Trend),
				Values: make([]*float64, n), Lo: make([]*float64, n), Hi: make([]*float64, n), Log: make([]string, n)})
		}
		i := seen[p.RunID]
		c.Series[si].Log[i] = logURL(p)
		central, lo, hi := p.Central, p.Lo, p.Hi
		c.Series[si].Values[i], c.Series[si].Lo[i], c.Series[si].Hi[i] = &central, &lo, &hi
	}
	sort.Strings(groups)
	out := make([]Chart, 0, len(groups))
	for _, g := range groups {
		out = append(out, *byGroup[g])
	}
	return out
}

// BranchPage is a branch's charts.
type BranchPage struct {
	Title  string      `json:"-"`
	Repo   string      `json:"repo"`
	View   View        `json:"view"`
	Charts []Chart     `json:"charts"`
	Runs   []store.Run `json:"runs"`
}

func (u *UI) branch(w http.ResponseWriter, r *http.Request, repo string) {
	v, err := viewOf(r.URL.Query(), u.Target)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	pts, err := u.Store.Series(r.Context(), v.filter(repo))
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	var kept []store.Point
	for _, p := range pts {
		if v.wants(p) {
			kept = append(kept, p)
		}
	}
	runs, err := u.Store.Runs(r.Context(), store.Filter{Repo: repo, Branch: v.Branch, Env: v.Env, PR: -1, Limit: 20})
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	u.render(w, r, "branch.html", BranchPage{Title: repo + " · " + v.Branch, Repo: repo, View: v, Charts: charts(kept, nil), Runs: runs})
}

// PRPage is a PR's comparison with its base and its points after the target's.
type PRPage struct {
	Title      string      `json:"-"`
	Repo       string      `json:"repo"`
	PR         int64       `json:"pr"`
	View       View        `json:"view"`
	Comparison *Comparison `json:"comparison,omitempty"`
	Charts     []Chart     `json:"charts"`
	Runs       []store.Run `json:"runs"`
}

func (u *UI) pr(w http.ResponseWriter, r *http.Request, repo string, n int64) {
	v, err := viewOf(r.URL.Query(), u.Target)
	if err != nil {
		u.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ctx := r.Context()
	runs, err := u.Store.Runs(ctx, store.Filter{Repo: repo, PR: n, Env: v.Env, Limit: 50})
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	page := PRPage{Title: fmt.Sprintf("%s #%d", repo, n), Repo: repo, PR: n, View: v, Runs: runs}
	for i := len(runs) - 1; i >= 0; i-- {
		if runs[i].State == store.Passed {
			c, err := Compare(ctx, u.Store, runs[i], u.Target, u.Options)
			if err != nil {
				u.fail(w, r, http.StatusInternalServerError, err)
				return
			}
			page.Comparison = &c
			break
		}
	}
	base, err := u.Store.Series(ctx, v.filter(repo))
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	prf := v.filter(repo)
	prf.Branch, prf.PR, prf.From, prf.To = "", n, time.Time{}, time.Time{}
	prPts, err := u.Store.Series(ctx, prf)
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	// The PR's points come after the target's, one step apart.
	var last time.Time
	for _, p := range base {
		if p.CommitTime.After(last) {
			last = p.CommitTime
		}
	}
	step := time.Hour
	prRun := map[int64]bool{}
	all := base
	k := 0
	for _, p := range prPts {
		if !prRun[p.RunID] {
			prRun[p.RunID] = true
			k++
		}
		p.CommitTime = last.Add(time.Duration(k) * step)
		all = append(all, p)
	}
	var kept []store.Point
	for _, p := range all {
		if v.wants(p) {
			kept = append(kept, p)
		}
	}
	page.Charts = charts(kept, func(p store.Point) bool { return prRun[p.RunID] })
	u.render(w, r, "pr.html", page)
}

// RunPage is one run with its metrics and the output lines that printed them.
type RunPage struct {
	Title  string        `json:"-"`
	Run    store.Run     `json:"run"`
	Points []store.Point `json:"points"`
}

func (u *UI) run(w http.ResponseWriter, r *http.Request, repo string, id int64) {
	run, err := u.Store.Run(r.Context(), id)
	if err != nil || run.Repo != repo {
		http.NotFound(w, r)
		return
	}
	pts, err := u.Store.RunPoints(r.Context(), id)
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	u.render(w, r, "run.html", RunPage{Title: fmt.Sprintf("%s run %d", repo, id), Run: run, Points: pts})
}
