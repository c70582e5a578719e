package results

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/web"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/results.js
var resultsJS []byte

// Forges are the forge names the UI serves, as the first element of its paths.
var Forges = []string{"github", "gitea", "git"}

// UI is the public web interface of a service, with the OCaml CI services' URL scheme:
// /FORGE/ORG, /FORGE/ORG/REPO, …/commit/HASH, …/commit/HASH/variant/VARIANT,
// …/history/branch/NAME, …/history/pull/N, /badge/ORG/REPO/BRANCH; and the same under
// /api/ as JSON, all under Options.Prefix. A commit page starts with the summary of
// its errors and offers builders Rebuild failed, Rebuild all and Cancel (the console's
// job actions); each job's own page is the console's.
type UI struct {
	Index  *Index
	Engine *current.Engine
	Logger *slog.Logger
	opts   Options
	tmpl   *template.Template
	mux    *http.ServeMux
}

// Options vary a UI.
type Options struct {
	// Prefix is the path the UI's pages are under ("/opam-repo-ci"), so that two
	// services' UIs share one server; "" serves them at the root.
	Prefix string
	// Tree shows a commit's variants as a tree: a variant's name is its path in the
	// tree, its parts joined with commas ("pkg.1.0,compilers,4.14,revdeps,dep.2.0").
	Tree bool
}

// Routes lists the path prefixes the UI serves, for mounting beside the console.
func (u *UI) Routes() []string {
	var out []string
	for _, f := range Forges {
		out = append(out, u.opts.Prefix+"/"+f+"/", u.opts.Prefix+"/api/"+f+"/")
	}
	return append(out, u.opts.Prefix+"/badge/", u.opts.Prefix+"/results.js")
}

// NewUI makes the UI over an index and the engine that ran its jobs; opts, when
// given, vary it.
func NewUI(idx *Index, e *current.Engine, log *slog.Logger, opts ...Options) (*UI, error) {
	if log == nil {
		log = slog.Default()
	}
	u := &UI{Index: idx, Engine: e, Logger: log}
	if len(opts) > 0 {
		u.opts = opts[0]
		u.opts.Prefix = strings.TrimRight(u.opts.Prefix, "/")
		if u.opts.Prefix != "" && !strings.HasPrefix(u.opts.Prefix, "/") {
			return nil, fmt.Errorf("results UI: prefix %q does not start with /", u.opts.Prefix)
		}
	}
	t, err := template.New("").Funcs(template.FuncMap{
		"root":  func() string { return u.opts.Prefix },
		"short": short,
		"since": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return time.Since(t).Round(time.Second).String() + " ago"
		},
		"dur": func(a, b time.Time) string {
			if a.IsZero() || b.IsZero() {
				return ""
			}
			return b.Sub(a).Round(time.Second).String()
		},
		"fmtdur": func(d time.Duration) string {
			if d <= 0 {
				return ""
			}
			return d.Round(time.Second).String()
		},
		"time": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"pathesc": variantPath,
		"inc":     func(i int) int { return i + 1 },
		"join":    func(ids []string) string { return strings.Join(ids, " ") },
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	u.tmpl = t
	mux := http.NewServeMux()
	for _, api := range []bool{false, true} {
		for _, f := range Forges {
			p := u.opts.Prefix + "/" + f
			if api {
				p = u.opts.Prefix + "/api/" + f
			}
			mux.Handle("GET "+p+"/{$}", u.page(api, u.forgePage))
			mux.Handle("GET "+p, u.page(api, u.forgePage))
			mux.Handle("GET "+p+"/{owner}", u.page(api, u.ownerPage))
			mux.Handle("GET "+p+"/{owner}/{repo}", u.page(api, u.repoPage))
			mux.Handle("GET "+p+"/{owner}/{repo}/commit/{hash}", u.page(api, u.commitPage))
			mux.Handle("GET "+p+"/{owner}/{repo}/commit/{hash}/variant/{variant}", u.page(api, u.variantPage))
			mux.Handle("GET "+p+"/{owner}/{repo}/history/branch/{branch...}", u.page(api, u.branchHistory))
			mux.Handle("GET "+p+"/{owner}/{repo}/history/pull/{n}", u.page(api, u.pullHistory))
		}
	}
	mux.HandleFunc("GET "+u.opts.Prefix+"/badge/{owner}/{repo}/{branch...}", u.badge)
	mux.HandleFunc("GET "+u.opts.Prefix+"/results.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Write(resultsJS)
	})
	u.mux = mux
	return u, nil
}

func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) { u.mux.ServeHTTP(w, r) }

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// view is what a page handler returns: the template, its title and data.
type view struct {
	Template string
	Title    string
	Data     any
}

func (u *UI) page(api bool, h func(r *http.Request) (view, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := h(r)
		if err != nil {
			code := http.StatusInternalServerError
			var he *httpError
			if errors.As(err, &he) {
				code = he.code
			} else {
				u.Logger.Error("results page", "path", r.URL.Path, "err", err)
			}
			if api {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(code)
				json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(code)
			u.tmpl.ExecuteTemplate(w, "error.html", map[string]any{"Title": http.StatusText(code), "Message": err.Error()})
			return
		}
		if api {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(v.Data)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := u.tmpl.ExecuteTemplate(w, v.Template, map[string]any{"Title": v.Title, "D": v.Data}); err != nil {
			u.Logger.Error("render", "template", v.Template, "err", err)
		}
	})
}

// repoOf reads the repository a path names; the forge is the path's first element
// after the prefix and an optional /api.
func (u *UI) repoOf(r *http.Request) (forge.RepoID, error) {
	p := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, u.opts.Prefix), "/api")
	f, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return forge.RepoID{Forge: f, Owner: r.PathValue("owner"), Name: r.PathValue("repo")}, nil
}

func (u *UI) forgePage(r *http.Request) (view, error) {
	id, err := u.repoOf(r)
	if err != nil {
		return view{}, err
	}
	owners, err := u.Index.Owners(r.Context(), id.Forge)
	if err != nil {
		return view{}, err
	}
	return view{"forge.html", id.Forge, struct {
		Forge  string   `json:"forge"`
		Owners []string `json:"owners"`
	}{id.Forge, owners}}, nil
}

// RepoSummary is a repository in an owner's list, with its default branch's state.
type RepoSummary struct {
	Name  string      `json:"name"`
	State forge.State `json:"state"`
	Ref   string      `json:"ref,omitempty"`
}

func (u *UI) ownerPage(r *http.Request) (view, error) {
	id, err := u.repoOf(r)
	if err != nil {
		return view{}, err
	}
	names, err := u.Index.Repos(r.Context(), id.Forge, id.Owner)
	if err != nil {
		return view{}, err
	}
	if len(names) == 0 {
		return view{}, notFound("no repositories of %s/%s are followed", id.Forge, id.Owner)
	}
	var repos []RepoSummary
	for _, n := range names {
		refs, err := u.Index.Refs(r.Context(), forge.RepoID{Forge: id.Forge, Owner: id.Owner, Name: n}, "")
		if err != nil {
			return view{}, err
		}
		s := RepoSummary{Name: n, State: forge.Queued}
		for _, ref := range refs {
			if b := strings.TrimPrefix(ref.Name, "refs/heads/"); b == "main" || b == "master" || s.Ref == "" {
				s.State, s.Ref = ref.State, ref.Name
			}
		}
		repos = append(repos, s)
	}
	return view{"owner.html", id.Forge + "/" + id.Owner, struct {
		Forge string        `json:"forge"`
		Owner string        `json:"owner"`
		Repos []RepoSummary `json:"repos"`
	}{id.Forge, id.Owner, repos}}, nil
}

// RefView is a ref as the repository page lists it.
type RefView struct {
	RefRecord
	Label string `json:"label"`
	Link  string `json:"history"`
}

func (u *UI) refView(id forge.RepoID, rr RefRecord) RefView {
	v := RefView{RefRecord: rr}
	if rr.PR > 0 || strings.HasPrefix(rr.Name, "refs/pull/") {
		n := rr.PR
		if n == 0 {
			fmt.Sscanf(strings.TrimPrefix(rr.Name, "refs/pull/"), "%d", &n)
		}
		v.Label = fmt.Sprintf("PR #%d %s", n, rr.Title)
		v.Link = fmt.Sprintf("%s/%s/%s/%s/history/pull/%d", u.opts.Prefix, id.Forge, id.Owner, id.Name, n)
	} else {
		b := strings.TrimPrefix(rr.Name, "refs/heads/")
		v.Label = b
		v.Link = fmt.Sprintf("%s/%s/%s/%s/history/branch/%s", u.opts.Prefix, id.Forge, id.Owner, id.Name, b)
	}
	return v
}

func (u *UI) repoPage(r *http.Request) (view, error) {
	id, err := u.repoOf(r)
	if err != nil {
		return view{}, err
	}
	refs, err := u.Index.Refs(r.Context(), id, "")
	if err != nil {
		return view{}, err
	}
	if len(refs) == 0 {
		return view{}, notFound("repository %s is not followed", id)
	}
	stats, err := u.Index.RepoStats(r.Context(), id)
	if err != nil {
		return view{}, err
	}
	var views []RefView
	for _, rr := range refs {
		views = append(views, u.refView(id, rr))
	}
	return view{"repo.html", id.Owner + "/" + id.Name, struct {
		Repo  forge.RepoID `json:"repo"`
		Refs  []RefView    `json:"refs"`
		Stats Stats        `json:"stats"`
	}{id, views, stats}}, nil
}

// CommitView is a commit's status and its variants.
type CommitView struct {
	Repo     forge.RepoID    `json:"-"`
	Commit   CommitRecord    `json:"commit"`
	Variants []VariantRecord `json:"variants"`
	// Errors are the variants that failed or erred, for the summary of errors.
	Errors []VariantRecord `json:"errors,omitempty"`
	// Tree is the variants as a tree (Options.Tree).
	Tree []*VariantNode `json:"tree,omitempty"`
	// Jobs, Failed and Active are the engine jobs of the variants, of the failed ones
	// and of those queued or running: what Rebuild all, Rebuild failed and Cancel act on.
	Jobs   []string `json:"-"`
	Failed []string `json:"-"`
	Active []string `json:"-"`
}

func (u *UI) commitPage(r *http.Request) (view, error) {
	id, err := u.repoOf(r)
	if err != nil {
		return view{}, err
	}
	hash := r.PathValue("hash")
	c, err := u.Index.Commit(r.Context(), id, hash)
	if err != nil {
		return view{}, err
	}
	if c == nil {
		return view{}, notFound("commit %s of %s has not been built", hash, id)
	}
	vs, err := u.Index.Variants(r.Context(), id, hash)
	if err != nil {
		return view{}, err
	}
	cv := CommitView{Repo: id, Commit: *c, Variants: vs}
	for _, v := range vs {
		if v.State == forge.Failed || v.State == forge.Error {
			cv.Errors = append(cv.Errors, v)
		}
		if v.JobID == "" {
			continue
		}
		cv.Jobs = append(cv.Jobs, v.JobID)
		switch v.State {
		case forge.Failed, forge.Error, forge.Cancelled:
			cv.Failed = append(cv.Failed, v.JobID)
		case forge.Queued, forge.Running:
			cv.Active = append(cv.Active, v.JobID)
		}
	}
	if u.opts.Tree {
		cv.Tree = variantTree(vs, fmt.Sprintf("%s/%s/%s/%s/commit/%s/variant/", u.opts.Prefix, id.Forge, id.Owner, id.Name, hash))
	}
	return view{"commit.html", id.Name + " " + short(hash), cv}, nil
}

// VariantView is one variant's job and its log.
type VariantView struct {
	Repo    forge.RepoID    `json:"-"`
	Variant VariantRecord   `json:"variant"`
	Log     string          `json:"log"`
	LogHTML []template.HTML `json:"-"`
	// LogComplete is false while the job runs or when the log was cut.
	LogComplete bool `json:"log_complete"`
	// Active is true while the variant is queued or running.
	Active bool `json:"active"`
}

// maxLogBytes is how much of a log the variant page shows; the console's job page has
// all of it.
const maxLogBytes = 4 << 20

func (u *UI) variantPage(r *http.Request) (view, error) {
	id, err := u.repoOf(r)
	if err != nil {
		return view{}, err
	}
	hash, name := r.PathValue("hash"), r.PathValue("variant")
	v, err := u.Index.Variant(r.Context(), id, hash, name)
	if err != nil {
		return view{}, err
	}
	if v == nil {
		return view{}, notFound("commit %s of %s has no variant %q", short(hash), id, name)
	}
	vv := VariantView{Repo: id, Variant: *v, Active: v.State == forge.Queued || v.State == forge.Running}
	if v.JobID != "" && u.Engine != nil {
		var b strings.Builder
		var off int64
		for b.Len() < maxLogBytes {
			chunk, err := u.Engine.ReadLog(v.JobID, off, maxLogBytes-b.Len())
			if err != nil {
				if errors.Is(err, current.ErrNotFound) {
					break
				}
				return view{}, err
			}
			b.Write(chunk.Data)
			vv.LogComplete = chunk.Done
			if len(chunk.Data) == 0 || chunk.Done {
				break
			}
			off = chunk.Next
		}
		vv.Log = b.String()
		var ansi web.ANSIRenderer
		for _, line := range strings.SplitAfter(vv.Log, "\n") {
			if line != "" {
				vv.LogHTML = append(vv.LogHTML, template.HTML(ansi.Line([]byte(strings.TrimSuffix(line, "\n")))))
			}
		}
	}
	return view{"variant.html", name + " " + short(hash), vv}, nil
}

func (u *UI) history(r *http.Request, ref string) (view, error) {
	id, err := u.repoOf(r)
	if err != nil {
		return view{}, err
	}
	hist, err := u.Index.Refs(r.Context(), id, ref)
	if err != nil {
		return view{}, err
	}
	if len(hist) == 0 {
		return view{}, notFound("%s has no history for %s", id, ref)
	}
	return view{"history.html", id.Name + " " + ref, struct {
		Repo    forge.RepoID `json:"repo"`
		Ref     string       `json:"ref"`
		History []RefRecord  `json:"history"`
	}{id, ref, hist}}, nil
}

func (u *UI) branchHistory(r *http.Request) (view, error) {
	return u.history(r, "refs/heads/"+r.PathValue("branch"))
}

func (u *UI) pullHistory(r *http.Request) (view, error) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n <= 0 {
		return view{}, &httpError{http.StatusBadRequest, fmt.Sprintf("pull request number %q is not a positive integer", r.PathValue("n"))}
	}
	return u.history(r, fmt.Sprintf("refs/pull/%d/head", n))
}

// badge serves an SVG badge of a branch's latest state, at the OCaml service's path
// /badge/ORG/REPO/BRANCH (the forge is the first that follows ORG/REPO).
func (u *UI) badge(w http.ResponseWriter, r *http.Request) {
	owner, repo, branch := r.PathValue("owner"), r.PathValue("repo"), r.PathValue("branch")
	state := "unknown"
	for _, f := range Forges {
		hist, err := u.Index.Refs(r.Context(), forge.RepoID{Forge: f, Owner: owner, Name: repo}, "refs/heads/"+branch)
		if err == nil && len(hist) > 0 {
			state = string(hist[0].State)
			break
		}
	}
	colour := map[string]string{"passed": "#4c1", "failed": "#e05d44", "error": "#fe7d37", "running": "#dfb317", "queued": "#9f9f9f"}[state]
	if colour == "" {
		colour = "#9f9f9f"
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-cache")
	wl, wr := 40, 8+7*len(state)
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="20" role="img" aria-label="ci: %s">`+
		`<rect width="%d" height="20" fill="#555"/><rect x="%d" width="%d" height="20" fill="%s"/>`+
		`<g fill="#fff" font-family="Verdana,sans-serif" font-size="11"><text x="8" y="14">ci</text><text x="%d" y="14">%s</text></g></svg>`,
		wl+wr, state, wl, wl, wr, colour, wl+4, state)
}
