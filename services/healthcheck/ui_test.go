package healthcheck

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/services/internal/logarchive"
)

// uiFixture is a store and log archive filled by the test, and the pages over them.
type uiFixture struct {
	store *Store
	logs  *logarchive.Archive
	ui    *UI
	srv   *httptest.Server
	now   time.Time
}

const fixturePrefix = "/health-check"

func newUIFixture(t testing.TB) *uiFixture {
	t.Helper()
	dir := t.TempDir()
	st, err := OpenStore(filepath.Join(dir, "hc.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &uiFixture{store: st, now: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	st.now = func() time.Time { return f.now }
	if f.logs, err = logarchive.Open(filepath.Join(dir, "logs"), logarchive.Options{Now: st.now}); err != nil {
		t.Fatal(err)
	}
	if f.ui, err = NewUI(st, f.logs, UIOptions{Prefix: fixturePrefix}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range f.ui.Routes() {
		mux.Handle(r, f.ui)
	}
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

var fixtureSwitches = []Switch{{Name: "4.14", Compiler: "ocaml-base-compiler.4.14.2"}, {Name: "5.3", Compiler: "ocaml-base-compiler.5.3.0"}}

var fixtureMaintainers = map[string][]string{
	"a": {"alice@example.org"}, "b": {"Bob <bob@example.org>"}, "c": {"carol@example.org"},
	"d": {"dave@example.org"}, "e": {"dave@example.org", "erin@example.org"},
}

var fixtureRevdeps = map[string]int{"a": 10, "b": 3, "c": 1, "d": 0, "e": 7}

// addRun records a run with results given as "pkg switch state" and logs by key.
func (f *uiFixture) addRun(t testing.TB, run Run, status RunStatus, results []string, logs map[string]string) int64 {
	t.Helper()
	ctx := context.Background()
	run.Repository, run.Switches, run.Status = "https://github.com/ocaml/opam-repository", fixtureSwitches, RunRunning
	if run.Commit == "" {
		run.Commit = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	}
	id, err := f.store.CreateRun(ctx, &run)
	if err != nil {
		t.Fatal(err)
	}
	var rs []Result
	for _, line := range results {
		var r Result
		parts := strings.Fields(line)
		r.Run, r.Package, r.Switch, r.State = id, parts[0], parts[1], State(parts[2])
		if len(parts) > 3 {
			r.Kind = Kind(parts[3])
		}
		name := r.Name()
		r.Maintainers, r.Revdeps = fixtureMaintainers[name], fixtureRevdeps[name]
		r.Log.Key = LogKey(r.Switch, r.Package)
		rs = append(rs, r)
	}
	if err := f.store.PutResults(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for k, v := range logs {
		if err := f.logs.Put(ctx, runName(id), k, strings.NewReader(v)); err != nil {
			t.Fatal(err)
		}
	}
	f.now = f.now.Add(time.Hour)
	if status != RunRunning {
		if err := f.store.SetRunStatus(ctx, id, status, ""); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// fill makes runs 1 and 2 (finished baselines), 3 (running) and 4 (a candidate
// against run 2).
func (f *uiFixture) fill(t testing.TB) {
	f.addRun(t, Run{Commit: "1111111111111111111111111111111111111111"}, RunDone, []string{
		"a.1.0 4.14 good", "a.1.0 5.3 good", "a.2.0 4.14 good", "a.2.0 5.3 good",
		"b.1.0 4.14 good", "b.1.0 5.3 bad build",
		"c.1.0 4.14 good", "c.1.0 5.3 good",
		"d.0.1 4.14 good", "d.0.1 5.3 not-available solver",
		"e.1 4.14 internal-failure timeout", "e.1 5.3 good",
	}, map[string]string{"5.3/b.1.0": "Error: b failed\n", "4.14/c.1.0": "all good\n"})
	f.addRun(t, Run{Commit: "2222222222222222222222222222222222222222"}, RunDone, []string{
		"a.1.0 4.14 good", "a.1.0 5.3 good", "a.2.0 4.14 good", "a.2.0 5.3 partial dependency",
		"b.1.0 4.14 good", "b.1.0 5.3 good",
		"c.1.0 4.14 bad build", "c.1.0 5.3 good",
		"d.0.1 4.14 good", "d.0.1 5.3 good",
		"e.1 4.14 internal-failure timeout", "e.1 5.3 good",
	}, map[string]string{
		"4.14/c.1.0":  "#=== ERROR while compiling c.1.0 ===#\nFile \"src/c.ml\", line 3:\nError: Unbound module Str\n",
		"5.3/c.1.0":   "Done.\n",
		"5.3/a.2.0":   "\x1b[31m[ERROR]\x1b[0m The compilation of b failed\n",
		"4.14/e.1":    "Error: Unbound module Str (but a timeout)\n",
		"4.14/a.1.0":  "fine\n",
		"5.3/corrupt": "",
	})
	f.addRun(t, Run{Commit: "3333333333333333333333333333333333333333"}, RunRunning, []string{
		"a.2.0 4.14 good", "a.2.0 5.3 good", "b.1.0 4.14 pending", "b.1.0 5.3 pending",
		"c.1.0 4.14 pending", "c.1.0 5.3 pending",
	}, nil)
	f.addRun(t, Run{Kind: Candidate, Commit: "4444444444444444444444444444444444444444",
		Candidate: &CandidateInfo{Name: "pr/42", Baseline: 2, Ref: "refs/pull/42/head", Commit: "4444444444444444444444444444444444444444", Scope: "revdeps", Changed: []string{"c.1.0"}}},
		RunDone, []string{"c.1.0 4.14 good", "c.1.0 5.3 good", "a.2.0 5.3 bad build", "d.0.1 5.3 bad test"}, nil)
}

func (f *uiFixture) get(t testing.TB, path string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

var pkgCell = regexp.MustCompile(`<td class="pkg">([^<]+)</td>`)

// shownPackages are the rows of a matrix page, in order.
func shownPackages(page string) []string {
	var out []string
	for _, m := range pkgCell.FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestMatrixPage(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	for _, tc := range []struct {
		name, query string
		code        int
		want        []string // the rows, in order
		has         []string // text the page holds
	}{
		{name: "latest run, latest versions", want: []string{"a.2.0", "b.1.0", "c.1.0", "d.0.1", "e.1"},
			has: []string{"2222222222", "Packages failing with current filters:</b> <span id=\"failing\">1</span>", `id="depfailed">1<`}},
		{name: "all versions", query: "show-latest-only=false", want: []string{"a.1.0", "a.2.0", "b.1.0", "c.1.0", "d.0.1", "e.1"}},
		{name: "failures only", query: "show-failures-only=true", want: []string{"a.2.0", "c.1.0"}},
		{name: "show only internal failures", query: "show-only=internal-failure&show-latest-only=true", want: []string{"e.1"}},
		{name: "show only two states", query: "show-only=bad&show-only=partial", want: []string{"a.2.0", "c.1.0"}},
		{name: "failures among the states shown", query: "show-only=good&show-only=partial&show-failures-only=true", want: []string{"a.2.0"}},
		{name: "one compiler", query: "comp=5.3&show-failures-only=true", want: []string{"a.2.0"},
			has: []string{`<th class="c">5.3</th>`}},
		{name: "diff only", query: "show-diff-only=true&show-latest-only=true", want: []string{"a.2.0", "c.1.0", "e.1"}},
		{name: "sort by revdeps", query: "sort-by-revdeps=true&show-latest-only=true", want: []string{"a.2.0", "e.1", "b.1.0", "c.1.0", "d.0.1"}},
		{name: "maintainers regexp", query: "maintainers=^(carol|BOB)", want: []string{"b.1.0", "c.1.0"}},
		{name: "log search on a switch", query: "logsearch=Unbound+module&logsearch_comp=4.14", want: []string{"c.1.0", "e.1"},
			has: []string{"The log search matched 2 logs"}},
		{name: "log search on another switch", query: "logsearch=Unbound+module&logsearch_comp=5.3"},
		{name: "log search everywhere", query: "logsearch=ERROR", want: []string{"a.2.0", "c.1.0"}},
		{name: "available on", query: "available=4.14&show-latest-only=true", want: []string{"a.2.0", "b.1.0", "c.1.0", "d.0.1", "e.1"}},
		{name: "unknown switch", query: "comp=4.02", code: 400, has: []string{"comp=&#34;4.02&#34;: the run has no such switch (it has 4.14, 5.3)"}},
		{name: "unknown state", query: "show-only=great", code: 400, has: []string{"no such state"}},
		{name: "bad regexp", query: "maintainers=(", code: 400, has: []string{"maintainers="}},
		{name: "bad flag", query: "show-diff-only=maybe", code: 400, has: []string{"want true or false"}},
		{name: "progress of the running run", want: []string{"a.2.0", "b.1.0", "c.1.0", "d.0.1", "e.1"}, has: []string{`data-run="3"`, `<span class="done">2</span> / <span class="total">6</span>`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fixturePrefix + "/"
			if tc.query != "" {
				path += "?" + tc.query
			}
			resp, page := f.get(t, path)
			code := tc.code
			if code == 0 {
				code = 200
			}
			if resp.StatusCode != code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, code, page)
			}
			if code == 200 && !slices.Equal(shownPackages(page), tc.want) {
				t.Errorf("rows %q, want %q", shownPackages(page), tc.want)
			}
			for _, h := range tc.has {
				if !strings.Contains(page, h) {
					t.Errorf("page lacks %q", h)
				}
			}
		})
	}
}

func TestPages(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	for _, tc := range []struct {
		name, path string
		code       int
		has        []string
	}{
		{name: "runs", path: "/run", has: []string{`href="/health-check/run/4"`, "pr/42", `href="/health-check/diff/2..4"`, "running"}},
		{name: "a run", path: "/run/1?show-latest-only=false", has: []string{`<td class="pkg">a.1.0</td>`, `href="/health-check/log/1/5.3/bad/b.1.0"`}},
		{name: "a running run", path: "/run/3", has: []string{`<td class="c cell-pending">`, `data-run="3"`}},
		{name: "a candidate against its baseline", path: "/run/4", has: []string{"Candidate pr/42", "Now fixed (1)", "Now broken (1)", "Other changes (1)", "<b>a.2.0</b> on <b>5.3</b>", "<b>d.0.1</b> on <b>5.3</b>"}},
		{name: "no such run", path: "/run/99", code: 404, has: []string{"no such run"}},
		{name: "not a run", path: "/run/x", code: 400, has: []string{"is not a run number"}},
		{name: "diffs", path: "/diff", has: []string{`href="/health-check/diff/1..2"`, `href="/health-check/diff/2..4"`}},
		{name: "a diff", path: "/diff/1..2", has: []string{"Now broken (2)", "Now fixed (1)", "Now installable (1)",
			`<b>c.1.0</b> on <b>4.14</b>: <a href="/health-check/log/1/4.14/good/c.1.0">`, "/compare/1111111111111111111111111111111111111111...2222222222222222222222222222222222222222"}},
		{name: "a candidate's diff leaves out what it did not build", path: "/diff/2..4", has: []string{"No longer available (0)", "only the packages it built are compared"}},
		{name: "a bad range", path: "/diff/1-2", code: 400, has: []string{"want OLD..NEW"}},
		{name: "a log", path: "/log/2/4.14/bad/c.1.0", has: []string{"Error: Unbound module Str", "c.1.0 on 4.14", "(build)", "carol@example.org"}},
		{name: "a log without its state", path: "/log/2/4.14/c.1.0", has: []string{"Error: Unbound module Str"}},
		{name: "a coloured log", path: "/log/2/5.3/partial/a.2.0", has: []string{`<span class="fc1">[ERROR]</span>`}},
		{name: "no log kept", path: "/log/1/4.14/good/a.1.0", has: []string{"no log is kept for this result"}},
		{name: "not available", path: "/log/1/5.3/not-available/d.0.1", has: []string{"no solution on this switch"}},
		{name: "no such result", path: "/log/2/4.14/bad/zz.1", code: 404, has: []string{"run 2 has no result for zz.1 on switch 4.14"}},
		{name: "bad state", path: "/log/2/4.14/awful/c.1.0", code: 400, has: []string{"state &#34;awful&#34;"}},
		{name: "raw log", path: "/log/2/4.14/bad/c.1.0?raw=1", has: []string{"#=== ERROR while compiling c.1.0 ===#\n"}},
		{name: "maintainer", path: "/maintainer/carol@example.org", has: []string{`<td class="pkg">c.1.0</td>`, "Broke recently", "is now <span class=\"st cell-bad\">bad</span> (build), was good in run 1"}},
		{name: "stylesheet", path: "/static/healthcheck.css", has: []string{".cell-good"}},
		{name: "prefix alone", path: "", has: []string{"About this run"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, page := f.get(t, fixturePrefix+tc.path)
			code := tc.code
			if code == 0 {
				code = 200
			}
			if resp.StatusCode != code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, code, page)
			}
			for _, h := range tc.has {
				if !strings.Contains(page, h) {
					t.Errorf("page lacks %q:\n%s", h, page)
				}
			}
		})
	}
}

func TestCorruptLogPage(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	p := filepath.Join(f.logs.Dir(), "2", "4.14", "c.1.0.zst")
	if err := os.WriteFile(p, []byte("not zstd"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, has string }{
		{"the corrupt log", "/log/2/4.14/bad/c.1.0", "corrupt log"},
		{"another log of the run", "/log/2/4.14/internal-failure/e.1", "Unbound module Str (but a timeout)"},
		{"a search across it", "/?logsearch=Unbound&logsearch_comp=4.14", "1 could not be read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, page := f.get(t, fixturePrefix+tc.path)
			if resp.StatusCode != 200 || !strings.Contains(page, tc.has) {
				t.Errorf("status %d, want 200 and %q in:\n%s", resp.StatusCode, tc.has, page)
			}
		})
	}
}

func TestNoRunYet(t *testing.T) {
	f := newUIFixture(t)
	for _, tc := range []struct {
		name, path string
		code       int
		has        string
	}{
		{"matrix", "/", 200, "No run has finished yet"},
		{"runs", "/run", 200, "No run yet"},
		{"diffs", "/diff", 200, "it takes two finished runs"},
		{"api", "/api/v1/latest/packages", 404, "no run has finished yet"},
		{"feed", "/feed.atom", 200, "<feed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, page := f.get(t, fixturePrefix+tc.path)
			if resp.StatusCode != tc.code || !strings.Contains(page, tc.has) {
				t.Errorf("status %d, want %d and %q in:\n%s", resp.StatusCode, tc.code, tc.has, page)
			}
		})
	}
}

func TestRoutesAtRoot(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "hc.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		prefix string
		want   []string
		err    bool
	}{
		{prefix: "/health-check/", want: []string{"/health-check", "/health-check/"}},
		{prefix: "", want: []string{"/{$}", "/run", "/api/v1/"}},
		{prefix: "health-check", err: true},
	} {
		t.Run("prefix "+tc.prefix, func(t *testing.T) {
			u, err := NewUI(st, nil, UIOptions{Prefix: tc.prefix})
			if tc.err {
				if err == nil {
					t.Fatal("a prefix without a leading slash was accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !slices.Contains(u.Routes(), w) {
					t.Errorf("routes %q lack %q", u.Routes(), w)
				}
			}
		})
	}
}

func FuzzParseMatrixQuery(f *testing.F) {
	for _, q := range []string{"", "comp=4.14&show-only=bad", "show-failures-only=true&show-only=good", "maintainers=(", "logsearch=a%2Bb&logsearch_comp=5.3", "show-diff-only=x"} {
		f.Add(q)
	}
	switches := []string{"4.14", "5.3"}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseMatrixQuery(v, switches)
		if err != nil {
			if !strings.Contains(err.Error(), "=") {
				t.Errorf("error %q does not name the parameter", err)
			}
			return
		}
		for _, c := range append(slices.Clone(q.Compilers), q.Available...) {
			if !slices.Contains(switches, c) {
				t.Errorf("query %q accepted switch %q", raw, c)
			}
		}
		for _, s := range q.ShowOnly {
			if !slices.Contains(States, s) || q.FailuresOnly && !s.Failed() {
				t.Errorf("query %q shows state %q", raw, s)
			}
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"1..2", "1..", "..2", "a..b", "1...2", "-1..2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		old, new, err := parseRange(s)
		if err != nil {
			return
		}
		o2, n2, err := parseRange(runName(old) + ".." + runName(new))
		if old <= 0 || new <= 0 || err != nil || o2 != old || n2 != new {
			t.Errorf("range %q read as %d..%d, which does not read back", s, old, new)
		}
	})
}

func TestLogSearchesWaitTheirTurn(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	for range maxSearches {
		f.ui.searches <- struct{}{}
	}
	path := f.srv.URL + fixturePrefix + "/?logsearch=Unbound"
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", path, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a search ran while %d were going on: status %d", maxSearches, resp.StatusCode)
	}
	<-f.ui.searches
	resp, page := f.get(t, fixturePrefix+"/?logsearch=Unbound")
	if resp.StatusCode != 200 || !strings.Contains(page, "The log search matched 2 logs") {
		t.Errorf("with a search slot free: status %d", resp.StatusCode)
	}
}

func TestRawLogIsPlainText(t *testing.T) {
	f := newUIFixture(t)
	f.fill(t)
	resp, body := f.get(t, fixturePrefix+"/log/2/5.3/partial/a.2.0?raw=1")
	for _, h := range []struct{ name, want string }{
		{"Content-Type", "text/plain; charset=utf-8"},
		{"X-Content-Type-Options", "nosniff"},
	} {
		if got := resp.Header.Get(h.name); got != h.want {
			t.Errorf("%s = %q, want %q", h.name, got, h.want)
		}
	}
	if body != "\x1b[31m[ERROR]\x1b[0m The compilation of b failed\n" {
		t.Errorf("raw log %q", body)
	}
}

func TestMatrixShowsRow(t *testing.T) {
	row := &pkgRow{Package: "a.1", Latest: true, Cells: []Result{{State: Good}, {State: NotAvailable}}}
	for _, tc := range []struct {
		name        string
		q           matrixQuery
		cols, avail []int
		want        bool
	}{
		{name: "everything", q: matrixQuery{ShowOnly: States}, cols: []int{0, 1}, avail: []int{0, 1}, want: true},
		{name: "available only where it is not", q: matrixQuery{ShowOnly: States}, cols: []int{0, 1}, avail: []int{1}},
		{name: "states differ", q: matrixQuery{ShowOnly: States, DiffOnly: true}, cols: []int{0, 1}, avail: []int{0}, want: true},
		{name: "one column cannot differ", q: matrixQuery{ShowOnly: States, DiffOnly: true}, cols: []int{0}, avail: []int{0}},
		{name: "no column", q: matrixQuery{ShowOnly: States, DiffOnly: true}, avail: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.q.shows(row, tc.cols, tc.avail, nil); got != tc.want {
				t.Errorf("shows = %v, want %v", got, tc.want)
			}
		})
	}
}
