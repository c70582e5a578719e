package healthcheck

import (
	"errors"
	"fmt"
	"html"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-ci/kiln/services/internal/logarchive"
)

// matrixQuery is the matrix's filters, with the reference's query parameters.
type matrixQuery struct {
	All           []string // every switch of the run, for the form
	Compilers     []string // comp=: the columns shown
	Available     []string // available=: shown only if available on one of these
	ShowOnly      []State  // show-only=: shown only with one of these states
	FailuresOnly  bool     // show-failures-only: of the show-only states, bad and partial
	DiffOnly      bool     // show-diff-only: states differ between the columns
	LatestOnly    bool     // show-latest-only (on when the query is empty)
	SortByRevdeps bool     // sort-by-revdeps
	Maintainers   string   // maintainers=: a regexp, case-insensitive
	LogSearch     string   // logsearch=: a regexp over the logs
	LogSearchComp string   // logsearch_comp=: the switch whose logs are searched ("" all)
	maintainers   *regexp.Regexp
	logsearch     *regexp.Regexp
}

// Shows says whether switch sw is a column.
func (q matrixQuery) Shows(sw string) bool { return slices.Contains(q.Compilers, sw) }

// AvailableOn says whether available= holds sw.
func (q matrixQuery) AvailableOn(sw string) bool { return slices.Contains(q.Available, sw) }

// ShowsState says whether show-only= holds s.
func (q matrixQuery) ShowsState(s State) bool { return slices.Contains(q.ShowOnly, s) }

// parseMatrixQuery reads the filters; a switch the run does not have, a state that
// does not exist or a regexp that does not compile is an error naming it.
func parseMatrixQuery(v url.Values, switches []string) (matrixQuery, error) {
	q := matrixQuery{All: switches}
	empty := len(v) == 0
	flag := func(name string, def bool) (bool, error) {
		s := v.Get(name)
		if s == "" {
			return empty && def, nil
		}
		b, err := strconv.ParseBool(s)
		if err != nil && s == "on" {
			b, err = true, nil
		}
		if err != nil {
			return false, badRequest("%s=%q: want true or false", name, s)
		}
		return b, nil
	}
	var err error
	for _, f := range []struct {
		name string
		def  bool
		to   *bool
	}{
		{"show-failures-only", false, &q.FailuresOnly},
		{"show-diff-only", false, &q.DiffOnly},
		{"show-latest-only", true, &q.LatestOnly},
		{"sort-by-revdeps", false, &q.SortByRevdeps},
	} {
		if *f.to, err = flag(f.name, f.def); err != nil {
			return q, err
		}
	}
	known := func(param string, names []string) ([]string, error) {
		for _, n := range names {
			if !slices.Contains(switches, n) {
				return nil, badRequest("%s=%q: the run has no such switch (it has %s)", param, n, strings.Join(switches, ", "))
			}
		}
		return names, nil
	}
	if q.Compilers, err = known("comp", v["comp"]); err != nil {
		return q, err
	}
	if len(q.Compilers) == 0 {
		q.Compilers = switches
	}
	if q.Available, err = known("available", v["available"]); err != nil {
		return q, err
	}
	if len(q.Available) == 0 {
		q.Available = q.Compilers
	}
	for _, s := range v["show-only"] {
		if !slices.Contains(States, State(s)) {
			return q, badRequest("show-only=%q: no such state (the states are %s)", s, joinStates(States))
		}
		q.ShowOnly = append(q.ShowOnly, State(s))
	}
	if len(q.ShowOnly) == 0 {
		q.ShowOnly = States
	}
	if q.FailuresOnly {
		q.ShowOnly = slices.DeleteFunc(slices.Clone(q.ShowOnly), func(s State) bool { return !s.Failed() })
	}
	if q.Maintainers = v.Get("maintainers"); q.Maintainers != "" {
		if q.maintainers, err = regexp.Compile("(?i)" + q.Maintainers); err != nil {
			return q, badRequest("maintainers=%q: %v", q.Maintainers, err)
		}
	}
	if q.LogSearch = v.Get("logsearch"); q.LogSearch != "" {
		if q.logsearch, err = regexp.Compile("(?m)" + q.LogSearch); err != nil {
			return q, badRequest("logsearch=%q: %v", q.LogSearch, err)
		}
	}
	if q.LogSearchComp = v.Get("logsearch_comp"); q.LogSearchComp != "" {
		if _, err := known("logsearch_comp", []string{q.LogSearchComp}); err != nil {
			return q, err
		}
	}
	return q, nil
}

func joinStates(ss []State) string {
	var out []string
	for _, s := range ss {
		out = append(out, string(s))
	}
	return strings.Join(out, ", ")
}

// shows says whether the matrix shows row under q; cols are the indices of the shown
// switches and avail of the available= ones.
func (q *matrixQuery) shows(row *pkgRow, cols, avail []int, found map[string]bool) bool {
	available := false
	for _, i := range avail {
		if row.Cells[i].State != NotAvailable { // no result counts as available, as in the reference
			available = true
			break
		}
	}
	if !available {
		return false
	}
	any := false
	for _, i := range cols {
		if s := row.Cells[i].State; s != "" && slices.Contains(q.ShowOnly, s) {
			any = true
			break
		}
	}
	if !any {
		return false
	}
	if q.DiffOnly && len(cols) > 0 {
		differ := false
		for _, i := range cols[1:] {
			if row.Cells[i].State != row.Cells[cols[0]].State {
				differ = true
				break
			}
		}
		if !differ {
			return false
		}
	}
	if q.LatestOnly && !row.Latest {
		return false
	}
	if q.maintainers != nil && !slices.ContainsFunc(row.Maintainers, q.maintainers.MatchString) {
		return false
	}
	return found == nil || found[row.Package]
}

// matrixView is a run's matrix as filtered.
type matrixView struct {
	Run       Run
	Query     matrixQuery
	Rows      template.HTML
	Shown     int
	Failing   int // packages failing on a shown switch
	DepFailed int // packages only whose dependencies failed
	// Searched is what a log search matched and could not read.
	Searched *logarchive.SearchResult
	// Current are the runs going on, with their progress.
	Current []Run
	// Against is a candidate run's diff against its baseline.
	Against *diffView
	Self    string // the page's path, for the form
}

func indices(d *runData, names []string) []int {
	var out []int
	for _, n := range names {
		out = append(out, d.switchIndex(n))
	}
	return out
}

// matrix filters a run's rows as the request's query says.
func (u *UI) matrix(r *http.Request, d *runData) (*matrixView, error) {
	q, err := parseMatrixQuery(r.URL.Query(), d.Switches)
	if err != nil {
		return nil, err
	}
	mv := &matrixView{Run: d.Run, Query: q, Self: r.URL.Path}
	var found map[string]bool
	if q.logsearch != nil {
		if u.logs == nil {
			return nil, badRequest("logsearch: this health check keeps no logs")
		}
		prefix := ""
		if q.LogSearchComp != "" {
			prefix = q.LogSearchComp + "/"
		}
		select {
		case u.searches <- struct{}{}:
			defer func() { <-u.searches }()
		case <-r.Context().Done():
			return nil, fmt.Errorf("logsearch: waiting for the searches going on: %w", r.Context().Err())
		}
		res, err := u.logs.Search(r.Context(), runName(d.Run.ID), prefix, q.logsearch)
		if err != nil && !errors.Is(err, logarchive.ErrNotFound) {
			return nil, err
		}
		if res == nil {
			res = &logarchive.SearchResult{}
		}
		mv.Searched = res
		found = map[string]bool{}
		for _, m := range res.Matches {
			_, pkg, _ := strings.Cut(m.Key, "/")
			found[pkg] = true
		}
	}
	cols, avail := indices(d, q.Compilers), indices(d, q.Available)
	rows := make([]*pkgRow, 0, len(d.Rows))
	for i := range d.Rows {
		if row := &d.Rows[i]; q.shows(row, cols, avail, found) {
			rows = append(rows, row)
		}
	}
	if q.SortByRevdeps {
		sort.SliceStable(rows, func(i, j int) bool { return rows[i].Revdeps > rows[j].Revdeps })
	}
	for _, row := range rows {
		bad, partial := false, false
		for _, i := range cols {
			bad = bad || row.Cells[i].State == Bad
			partial = partial || row.Cells[i].State == Partial
		}
		if bad {
			mv.Failing++
		} else if partial {
			mv.DepFailed++
		}
	}
	mv.Shown = len(rows)
	mv.Rows = u.matrixRows(d.Run.ID, rows, cols)
	return mv, nil
}

// cellMark is the mark of a state in the matrix, the reference's.
func cellMark(s State) string {
	switch s {
	case Good:
		return "☑"
	case Pending:
		return "…"
	case "":
		return "☐"
	}
	return "☒"
}

// matrixRows writes the rows of the matrix (thousands of them) directly, escaped.
func (u *UI) matrixRows(run int64, rows []*pkgRow, cols []int) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * (60 + 110*len(cols)))
	logs := html.EscapeString(u.opts.Prefix) + "/log/" + runName(run) + "/"
	switches := map[string]string{}
	for _, row := range rows {
		pkg := html.EscapeString(row.Package)
		pkgPath := html.EscapeString(url.PathEscape(row.Package))
		b.WriteString(`<tr><td class="pkg">`)
		b.WriteString(pkg)
		b.WriteString(`</td>`)
		for _, i := range cols {
			c := &row.Cells[i]
			if c.State == "" {
				b.WriteString(`<td class="c cell-none">☐</td>`)
				continue
			}
			sw, ok := switches[c.Switch]
			if !ok {
				sw = html.EscapeString(url.PathEscape(c.Switch))
				switches[c.Switch] = sw
			}
			b.WriteString(`<td class="c cell-`)
			b.WriteString(string(c.State))
			if c.Kind != KindNone {
				b.WriteString(`" title="`)
				b.WriteString(html.EscapeString(string(c.Kind)))
			}
			b.WriteString(`"><a href="`)
			b.WriteString(logs)
			b.WriteString(sw)
			b.WriteByte('/')
			b.WriteString(string(c.State))
			b.WriteByte('/')
			b.WriteString(pkgPath)
			b.WriteString(`">`)
			b.WriteString(cellMark(c.State))
			b.WriteString(`</a></td>`)
		}
		b.WriteString(`<td class="rd">`)
		b.WriteString(strconv.Itoa(row.Revdeps))
		b.WriteString("</td></tr>\n")
	}
	return template.HTML(b.String())
}
