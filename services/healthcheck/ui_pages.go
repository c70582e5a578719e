package healthcheck

import (
	"context"
	"errors"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/kiln-ci/kiln/services/internal/logarchive"
	"github.com/kiln-ci/kiln/web"
)

// maxLogPage is how much of a log the log page shows; ?raw=1 gives all of it.
const maxLogPage = 4 << 20

// latestPage is the matrix of the latest finished run, with the progress of the runs
// going on.
func (u *UI) latestPage(r *http.Request) (view, error) {
	current, err := u.store.Current(r.Context())
	if err != nil {
		return view{}, err
	}
	latest, err := u.store.Latest(r.Context())
	if err != nil {
		return view{}, err
	}
	if latest == nil {
		return view{"matrix.html", "health check", &matrixView{Current: current}}, nil
	}
	d, err := u.loadRun(r.Context(), latest)
	if err != nil {
		return view{}, err
	}
	mv, err := u.matrix(r, d)
	if err != nil {
		return view{}, err
	}
	mv.Current = current
	return view{"matrix.html", "health check", mv}, nil
}

// runPage is the matrix of one run; a candidate's shows its diff against its baseline
// first.
func (u *UI) runPage(r *http.Request) (view, error) {
	id, err := parseRunID(r.PathValue("id"))
	if err != nil {
		return view{}, err
	}
	d, err := u.load(r.Context(), id)
	if err != nil {
		return view{}, err
	}
	mv, err := u.matrix(r, d)
	if err != nil {
		return view{}, err
	}
	if !d.Run.Status.Finished() {
		mv.Current = []Run{d.Run}
	}
	if c := d.Run.Candidate; c != nil && c.Baseline > 0 {
		if mv.Against, err = u.diff(r.Context(), c.Baseline, id); err != nil && !errors.Is(err, ErrNoRun) {
			return view{}, err
		}
	}
	return view{"matrix.html", "run " + runName(id), mv}, nil
}

func (u *UI) runsPage(r *http.Request) (view, error) {
	runs, err := u.store.Runs(r.Context(), "", 0)
	if err != nil {
		return view{}, err
	}
	return view{"runs.html", "runs", runs}, nil
}

// diffPair is two runs a diff can be made of.
type diffPair struct{ Old, New Run }

// diffsPage lists the diffs between successive finished baseline runs and of each
// candidate against its baseline, the newest first.
func (u *UI) diffsPage(r *http.Request) (view, error) {
	runs, err := u.store.Runs(r.Context(), "", 0)
	if err != nil {
		return view{}, err
	}
	return view{"diffs.html", "diffs", diffPairs(runs)}, nil
}

// diffPairs are the diffs worth listing of runs given newest first.
func diffPairs(runs []Run) []diffPair {
	byID := map[int64]Run{}
	for _, r := range runs {
		byID[r.ID] = r
	}
	var pairs []diffPair
	var newer *Run
	for i := range runs {
		r := runs[i]
		switch {
		case r.Kind == Candidate && r.Candidate != nil:
			if b, ok := byID[r.Candidate.Baseline]; ok {
				pairs = append(pairs, diffPair{Old: b, New: r})
			}
		case r.Status == RunDone:
			if newer != nil {
				pairs = append(pairs, diffPair{Old: r, New: *newer})
			}
			newer = &runs[i]
		}
	}
	return pairs
}

// diffView is a diff with its runs, by kind of change.
type diffView struct {
	Old, New Run
	Diff     Diff
	Groups   []diffGroup
}

type diffGroup struct {
	Change  Change
	Title   string
	Changes []diffItem
}

// diffItem is a change with the addresses of its two logs.
type diffItem struct {
	PackageChange
	OldLog, NewLog string
}

func (d *runData) results() []Result {
	out := make([]Result, 0, len(d.Rows)*len(d.Switches))
	for _, row := range d.Rows {
		for _, c := range row.Cells {
			if c.State != "" {
				out = append(out, c)
			}
		}
	}
	return out
}

// diff compares two runs; only what a candidate limited to some packages built
// counts against its baseline.
func (u *UI) diff(ctx context.Context, oldID, newID int64) (*diffView, error) {
	od, err := u.load(ctx, oldID)
	if err != nil {
		return nil, err
	}
	nd, err := u.load(ctx, newID)
	if err != nil {
		return nil, err
	}
	scope := WholeRuns
	if c := nd.Run.Candidate; c != nil && c.Scope != "all" {
		scope = NewRunOnly
	}
	dv := &diffView{Old: od.Run, New: nd.Run, Diff: Compare(oldID, newID, od.results(), nd.results(), scope)}
	for _, c := range Changes {
		g := diffGroup{Change: c, Title: c.Title()}
		for _, pc := range dv.Diff.Of(c) {
			g.Changes = append(g.Changes, diffItem{PackageChange: pc,
				OldLog: u.logURL(oldID, pc.Switch, pc.Old, pc.Package), NewLog: u.logURL(newID, pc.Switch, pc.New, pc.Package)})
		}
		dv.Groups = append(dv.Groups, g)
	}
	return dv, nil
}

// parseRange reads OLD..NEW.
func parseRange(s string) (int64, int64, error) {
	a, b, ok := strings.Cut(s, "..")
	if !ok {
		return 0, 0, badRequest("diff %q: want OLD..NEW, two run numbers", s)
	}
	old, err := parseRunID(a)
	if err != nil {
		return 0, 0, err
	}
	new, err := parseRunID(b)
	return old, new, err
}

func (u *UI) diffPage(r *http.Request) (view, error) {
	old, new, err := parseRange(r.PathValue("range"))
	if err != nil {
		return view{}, err
	}
	dv, err := u.diff(r.Context(), old, new)
	if err != nil {
		return view{}, err
	}
	return view{"diff.html", "diff " + runName(old) + ".." + runName(new), dv}, nil
}

// logView is one result and its log.
type logView struct {
	Result   Result
	Run      Run
	Lines    []template.HTML
	Complete bool
	// Missing says why the log is not shown.
	Missing string
	Raw     string
}

// result finds one result of a run.
func (u *UI) result(ctx context.Context, run int64, sw, pkg string) (*Result, error) {
	rs, err := u.store.Results(ctx, run, ResultQuery{Switch: sw, Package: pkg})
	if err != nil {
		return nil, err
	}
	for _, res := range rs {
		if res.Package == pkg {
			return &res, nil
		}
	}
	return nil, notFound("run %d has no result for %s on switch %s", run, pkg, sw)
}

func (u *UI) logPage(r *http.Request) (view, error) {
	id, err := parseRunID(r.PathValue("run"))
	if err != nil {
		return view{}, err
	}
	sw, pkg := r.PathValue("switch"), r.PathValue("pkg")
	if st := r.PathValue("state"); st != "" && !slices.Contains(States, State(st)) {
		return view{}, badRequest("state %q: no such state (the states are %s)", st, joinStates(States))
	}
	run, err := u.store.Run(r.Context(), id)
	if err != nil {
		return view{}, err
	}
	res, err := u.result(r.Context(), id, sw, pkg)
	if err != nil {
		return view{}, err
	}
	lv := &logView{Result: *res, Run: *run, Raw: r.URL.Path + "?raw=1"}
	key := res.Log.Key
	if key == "" {
		key = LogKey(sw, pkg)
	}
	if u.logs == nil {
		lv.Missing = "this health check keeps no logs"
		return view{"log.html", pkg + " on " + sw, lv}, nil
	}
	data, complete, err := u.logs.Read(runName(id), key, maxLogPage)
	switch {
	case errors.Is(err, logarchive.ErrNotFound):
		lv.Missing = "no log is kept for this result"
		if res.State == NotAvailable {
			lv.Missing = "not built: the package has no solution on this switch"
		} else if res.State == Pending {
			lv.Missing = "not built yet"
		}
	case err != nil:
		lv.Missing = err.Error()
	default:
		lv.Complete = complete
		var ansi web.ANSIRenderer
		for _, line := range strings.SplitAfter(string(data), "\n") {
			if line != "" {
				lv.Lines = append(lv.Lines, template.HTML(ansi.Line([]byte(strings.TrimSuffix(line, "\n")))))
			}
		}
	}
	return view{"log.html", pkg + " on " + sw, lv}, nil
}

// rawLog serves a whole log as text, when the log page is asked for ?raw=1.
func (u *UI) rawLog(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Query().Get("raw") == "" || u.logs == nil {
		return false
	}
	id, err := parseRunID(r.PathValue("run"))
	if err != nil {
		return false
	}
	rc, err := u.logs.Open(runName(id), LogKey(r.PathValue("switch"), r.PathValue("pkg")))
	if err != nil {
		http.Error(w, err.Error(), u.errorCode(r, err))
		return true
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, err := io.Copy(w, rc); err != nil {
		u.log.Warn("health-check raw log", "path", r.URL.Path, "err", err)
	}
	return true
}

// maintainerView is a maintainer's packages in the latest run and what broke of them.
type maintainerView struct {
	Who     string
	Run     *Run
	Rows    template.HTML
	Shown   int
	Broken  []feedEntry
	Current []Run
}

// maintainerPage shows the packages whose maintainer field holds who (case-insensitive).
func (u *UI) maintainerPage(r *http.Request) (view, error) {
	who := r.PathValue("who")
	mv := &maintainerView{Who: who}
	latest, err := u.store.Latest(r.Context())
	if err != nil {
		return view{}, err
	}
	if latest != nil {
		d, err := u.loadRun(r.Context(), latest)
		if err != nil {
			return view{}, err
		}
		mv.Run = &d.Run
		var rows []*pkgRow
		for i := range d.Rows {
			if maintainedBy(d.Rows[i].Maintainers, who) {
				rows = append(rows, &d.Rows[i])
			}
		}
		cols := make([]int, len(d.Switches))
		for i := range cols {
			cols[i] = i
		}
		mv.Shown, mv.Rows = len(rows), u.matrixRows(d.Run.ID, rows, cols)
	}
	entries, err := u.brokenEntries(r.Context())
	if err != nil {
		return view{}, err
	}
	for _, e := range entries {
		if maintainedBy(e.Change.Maintainers, who) {
			mv.Broken = append(mv.Broken, e)
		}
	}
	return view{"maintainer.html", who, mv}, nil
}

func maintainedBy(maintainers []string, who string) bool {
	who = strings.ToLower(who)
	for _, m := range maintainers {
		if strings.Contains(strings.ToLower(m), who) {
			return true
		}
	}
	return false
}
