package healthcheck

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// APIPackage is a package version in /api/v1/latest/packages, the reference's shape
// (ocaml.org reads it).
type APIPackage struct {
	Name     string      `json:"name"` // name.version
	Statuses []APIStatus `json:"statuses"`
}

// APIStatus is a package's state on one switch.
type APIStatus struct {
	Compiler string `json:"compiler"` // the switch's name
	Status   State  `json:"status"`
}

// APIRun is a run in /api/v1/runs, with the addresses of its packages and of the
// run before it.
type APIRun struct {
	Run
	Packages string `json:"packages"`
	Previous string `json:"previous,omitempty"`
	Diff     string `json:"diff,omitempty"`
}

// apiBody is a package list with its entity tag and the run before its run.
type apiBody struct {
	etag string
	body []byte
	prev int64
}

// apiCache keeps the package lists of the last finished runs, which do not change.
type apiCache struct {
	mu     sync.Mutex
	bodies map[int64]apiBody
	order  []int64
}

func (c *apiCache) get(id int64) (apiBody, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.bodies[id]
	return b, ok
}

func (c *apiCache) put(id int64, b apiBody) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bodies == nil {
		c.bodies = map[int64]apiBody{}
	}
	if _, ok := c.bodies[id]; !ok {
		c.order = append(c.order, id)
	}
	c.bodies[id] = b
	if len(c.order) > runCacheSize {
		delete(c.bodies, c.order[0])
		c.order = c.order[1:]
	}
}

func (u *UI) apiRoutes(mux *http.ServeMux, p string) {
	mux.HandleFunc("GET "+p+"/latest/packages", u.apiLatestPackages)
	mux.HandleFunc("GET "+p+"/runs", u.apiRuns)
	mux.HandleFunc("GET "+p+"/runs/{id}", u.apiRun)
	mux.HandleFunc("GET "+p+"/runs/{id}/packages", u.apiRunPackages)
	mux.HandleFunc("GET "+p+"/diff/{range}", u.apiDiff)
}

func (u *UI) apiError(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(u.errorCode(r, err))
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func (u *UI) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		u.log.Warn("health-check api", "path", r.URL.Path, "err", err)
	}
}

// apiRunOf is a run with its addresses; prev is the run before it (0 for none).
func (u *UI) apiRunOf(r Run, prev int64) APIRun {
	p := u.opts.Prefix + "/api/v1/runs/"
	ar := APIRun{Run: r, Packages: p + runName(r.ID) + "/packages"}
	if prev > 0 {
		ar.Previous = p + runName(prev)
		ar.Diff = u.opts.Prefix + "/api/v1/diff/" + runName(prev) + ".." + runName(r.ID)
	}
	return ar
}

// previous is the run r is compared with: a candidate's baseline, or the finished
// baseline run before it; older are the runs older than r, newest first, when known.
func (u *UI) previous(ctx context.Context, r Run, older []Run) (int64, error) {
	if r.Candidate != nil {
		return r.Candidate.Baseline, nil
	}
	if older != nil {
		for _, o := range older {
			if o.Kind == Baseline && o.Status == RunDone && o.ID < r.ID {
				return o.ID, nil
			}
		}
		return 0, nil
	}
	pr, err := u.store.Previous(ctx, r.ID)
	if err != nil || pr == nil {
		return 0, err
	}
	return pr.ID, nil
}

func (u *UI) apiRuns(w http.ResponseWriter, r *http.Request) {
	runs, err := u.store.Runs(r.Context(), "", 0)
	if err != nil {
		u.apiError(w, r, err)
		return
	}
	out := make([]APIRun, 0, len(runs))
	for i, run := range runs {
		prev, _ := u.previous(r.Context(), run, runs[i+1:])
		out = append(out, u.apiRunOf(run, prev))
	}
	u.writeJSON(w, r, out)
}

// pathRun is the run the path's {id} names, or false when it has answered with an
// error.
func (u *UI) pathRun(w http.ResponseWriter, r *http.Request) (*Run, bool) {
	id, err := parseRunID(r.PathValue("id"))
	if err == nil {
		var run *Run
		if run, err = u.store.Run(r.Context(), id); err == nil {
			return run, true
		}
	}
	u.apiError(w, r, err)
	return nil, false
}

func (u *UI) apiRun(w http.ResponseWriter, r *http.Request) {
	run, ok := u.pathRun(w, r)
	if !ok {
		return
	}
	prev, err := u.previous(r.Context(), *run, nil)
	if err != nil {
		u.apiError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	u.writeJSON(w, r, u.apiRunOf(*run, prev))
}

// apiLatestPackages is the package list of the latest finished baseline run.
func (u *UI) apiLatestPackages(w http.ResponseWriter, r *http.Request) {
	run, err := u.store.Latest(r.Context())
	if err != nil {
		u.apiError(w, r, err)
		return
	}
	if run == nil {
		u.apiError(w, r, notFound("no run has finished yet"))
		return
	}
	u.servePackages(w, r, run)
}

func (u *UI) apiRunPackages(w http.ResponseWriter, r *http.Request) {
	if run, ok := u.pathRun(w, r); ok {
		u.servePackages(w, r, run)
	}
}

// finishedTag is the entity tag of a finished run's package list, which does not
// change any more.
func finishedTag(run *Run) string {
	return fmt.Sprintf(`"run-%d-%d"`, run.ID, run.Finished.UnixMilli())
}

// servePackages serves a run's package list in the reference's shape, with the run,
// its repository commit and the run before it in headers, and answers a request
// whose If-None-Match names the list as it is with 304 Not Modified. A finished run's
// list is kept, so asking again reads nothing but the run.
func (u *UI) servePackages(w http.ResponseWriter, r *http.Request, run *Run) {
	finished := run.Status.Finished()
	b, ok := u.api.get(run.ID)
	if !ok || !finished {
		var err error
		if b, err = u.packagesBody(r.Context(), run); err != nil {
			u.apiError(w, r, err)
			return
		}
		if finished {
			u.api.put(run.ID, b)
		}
	}
	h := w.Header()
	h.Set("X-Health-Check-Run", runName(run.ID))
	h.Set("X-Opam-Repository-Commit", run.Commit)
	links := []string{fmt.Sprintf(`<%s/api/v1/runs/%d>; rel="describedby"`, u.opts.Prefix, run.ID)}
	if b.prev > 0 {
		links = append(links, fmt.Sprintf(`<%s/api/v1/runs/%d/packages>; rel="prev"`, u.opts.Prefix, b.prev))
	}
	h.Set("Link", strings.Join(links, ", "))
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", b.etag)
	if etagMatches(r.Header.Get("If-None-Match"), b.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	w.Write(b.body)
}

func (u *UI) packagesBody(ctx context.Context, run *Run) (apiBody, error) {
	d, err := u.loadRun(ctx, run)
	if err != nil {
		return apiBody{}, err
	}
	pkgs := make([]APIPackage, 0, len(d.Rows))
	for _, row := range d.Rows {
		p := APIPackage{Name: row.Package, Statuses: make([]APIStatus, 0, len(row.Cells))}
		for _, c := range row.Cells {
			if c.State != "" {
				p.Statuses = append(p.Statuses, APIStatus{Compiler: c.Switch, Status: c.State})
			}
		}
		pkgs = append(pkgs, p)
	}
	body, err := json.Marshal(pkgs)
	if err != nil {
		return apiBody{}, err
	}
	prev, err := u.previous(ctx, *run, nil)
	if err != nil {
		return apiBody{}, err
	}
	etag := finishedTag(run)
	if !run.Status.Finished() {
		sum := sha256.Sum256(body)
		etag = `"` + hex.EncodeToString(sum[:12]) + `"`
	}
	return apiBody{etag: etag, body: body, prev: prev}, nil
}

// etagMatches says whether an If-None-Match header names tag (weakly compared).
func etagMatches(header, tag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == tag {
			return true
		}
	}
	return false
}

func (u *UI) apiDiff(w http.ResponseWriter, r *http.Request) {
	old, new, err := parseRange(r.PathValue("range"))
	if err != nil {
		u.apiError(w, r, err)
		return
	}
	dv, err := u.diff(r.Context(), old, new)
	if err != nil {
		u.apiError(w, r, err)
		return
	}
	u.writeJSON(w, r, dv.Diff)
}
