package web

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/current"
)

func TestPagesAndTheirJSONTwins(t *testing.T) {
	c := newConsole(t, "alpha", "bad-beta", "slow-gamma")
	okID := c.jobOf("alpha", current.JobOK)
	badID := c.jobOf("bad-beta", current.JobFailed)
	slowID := c.jobOf("slow-gamma", current.JobRunning)
	cl := c.client()

	code, body := cl.get("/")
	if code != 200 || !strings.Contains(body, "<svg") || !strings.Contains(body, `class="node s-failed"`) ||
		!strings.Contains(body, `href="/job/`+okID+`"`) {
		t.Fatalf("graph page: %d\n%s", code, body)
	}
	if code, body := cl.get("/graph.svg"); code != 200 || !strings.HasPrefix(body, "<svg") || !strings.Contains(body, "s-running") {
		t.Fatalf("graph.svg: %d %s", code, body)
	}
	var g struct {
		Nodes []Node `json:"nodes"`
	}
	cl.getJSON("/api/graph", &g)
	states := map[State]int{}
	for _, n := range g.Nodes {
		states[n.State]++
	}
	if states[StateOk] == 0 || states[StateFailed] == 0 || states[StateRunning] == 0 {
		t.Fatalf("graph JSON states %v", states)
	}

	code, body = cl.get("/jobs")
	if code != 200 || !strings.Contains(body, `href="/job/`+slowID+`"`) || !strings.Contains(body, "running") {
		t.Fatalf("jobs page: %d\n%s", code, body)
	}
	var jobs struct {
		Jobs []Job `json:"jobs"`
	}
	cl.getJSON("/api/jobs", &jobs)
	if len(jobs.Jobs) != 1 || jobs.Jobs[0].ID != slowID || jobs.Jobs[0].State != StateRunning {
		t.Fatalf("jobs JSON %+v", jobs.Jobs)
	}
	var pools struct {
		Pools []Pool `json:"pools"`
	}
	cl.getJSON("/api/jobs", &pools)
	if len(pools.Pools) != 1 || pools.Pools[0].Name != "default" || pools.Pools[0].InUse != 1 {
		t.Fatalf("pools JSON %+v", pools.Pools)
	}
	if !strings.Contains(body, `<td>default</td><td>1 / 4</td>`) {
		t.Fatalf("jobs page lacks the pool:\n%s", body)
	}

	code, body = cl.get("/job/" + badID)
	for _, want := range []string{
		`<span class="line" id="L2"><a href="#L2">2</a><span class="ab">building</span> bad-beta</span>`,
		`<span class="fc2">step one &lt;ok&gt;</span>`,
		"error: missing semicolon in bad-beta",
		"build of bad-beta failed",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("job page lacks %q", want)
		}
	}
	if code != 200 || t.Failed() {
		t.Fatalf("job page: %d\n%s", code, body)
	}
	if strings.Contains(body, `id="rebuild"`) {
		t.Errorf("a viewer sees the Rebuild button")
	}
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("the page of a finished job refreshes itself")
	}
	if _, body := cl.get("/job/" + slowID); !strings.Contains(body, `<noscript><meta http-equiv="refresh" content="5"></noscript>`) {
		t.Errorf("the page of a running job does not refresh itself without JavaScript")
	}
	var jd struct {
		Job     Job   `json:"job"`
		History []Job `json:"history"`
	}
	cl.getJSON("/api/job/"+badID, &jd)
	if jd.Job.ID != badID || jd.Job.State != StateFailed || len(jd.History) != 1 {
		t.Fatalf("job JSON %+v", jd)
	}
	if code, body := cl.get("/job/" + badID + "/log"); code != 200 || !strings.Contains(body, "\x1b[1mbuilding\x1b[0m bad-beta\n") {
		t.Fatalf("raw log: %d %q", code, body)
	}

	code, body = cl.get("/query?state=failed")
	if code != 200 || !strings.Contains(body, `value="`+badID+`"`) || strings.Contains(body, `value="`+okID+`"`) {
		t.Fatalf("query page: %d\n%s", code, body)
	}
	var q struct {
		Results []Job `json:"results"`
	}
	cl.getJSON("/api/query?op=build&limit=10", &q)
	if len(q.Results) != 3 {
		t.Fatalf("query JSON: %d results, want 3", len(q.Results))
	}
	var none struct {
		Results []Job `json:"results"`
	}
	cl.getJSON("/api/query?until=1h", &none)
	if len(none.Results) != 0 {
		t.Fatalf("results ready more than an hour ago: %+v", none.Results)
	}
	var q2 struct {
		Results []Job `json:"results"`
	}
	cl.getJSON("/api/query?op=build&limit=2&offset=1", &q2)
	if len(q2.Results) != 2 || q2.Results[0].ID != q.Results[1].ID || q2.Results[1].ID != q.Results[2].ID {
		t.Fatalf("second page %+v of %+v", q2.Results, q.Results)
	}
	_, body = cl.get("/query?op=build&limit=2")
	if !strings.Contains(body, `href="/query?limit=2&amp;offset=2&amp;op=build" rel="next"`) || strings.Contains(body, `rel="prev"`) {
		t.Fatalf("first page lacks its links:\n%s", body)
	}

	code, body = cl.get("/log-rules?test=" + url.QueryEscape(`missing (semicolon)`))
	if code != 200 || !strings.Contains(body, "1 of the 1 most recent failed jobs match") {
		t.Fatalf("log rules test: %d\n%s", code, body)
	}
	var lr struct {
		Rules   []LogRule   `json:"rules"`
		Matches []RuleMatch `json:"matches"`
	}
	cl.getJSON("/api/log-rules?test=semicolon", &lr)
	if len(lr.Matches) != 1 || !lr.Matches[0].Matched || lr.Matches[0].Line != 4 {
		t.Fatalf("log rules JSON %+v", lr)
	}

	code, body = cl.get("/metrics")
	if code != 200 || !strings.Contains(body, "kiln_engine_jobs_running 1") || !strings.Contains(body, `kiln_web_requests_total{code="200",route="/"}`) {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	close(c.lines)
	c.jobOf("slow-gamma", current.JobOK)
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	c := newConsole(t, "alpha", "bad-beta")
	okID := c.jobOf("alpha", current.JobOK)
	c.jobOf("bad-beta", current.JobFailed)
	admin := c.client()
	admin.login()
	tok := admin.csrf("/jobs")

	for _, tc := range []struct {
		path string
		code int
		says string
	}{
		{"/query?limit=abc", 400, "limit"},
		{"/query?limit=0", 400, "limit"},
		{"/query?offset=-3", 400, "offset"},
		{"/api/query?state=bogus", 400, "state"},
		{"/query?since=yesterday", 400, "since"},
		{"/query?until=2026-13-01", 400, "until"},
		{"/query?latest=maybe", 400, "latest"},
		{"/query?kind=gremlins", 400, "kind"},
		{"/query?colour=red", 400, "colour"},
		{"/query?%zz", 400, "malformed"},
		{"/?expand=", 400, "expand"},
		{"/jobs?x=1", 400, "x"},
		{"/job/999999", 404, "999999"},
		{"/api/job/not-a-job", 404, "not-a-job"},
		{"/job/" + okID + "/log?offset=-1", 400, "offset"},
		{"/api/job/" + okID + "/log?offset=999999", 400, "beyond"},
		{"/api/job/" + okID + "/log/events?offset=x", 400, "offset"},
		{"/log-rules?test=" + url.QueryEscape("(unclosed"), 400, "test"},
		{"/no/such/page", 404, "no page"},
	} {
		code, body := admin.get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.says) {
			t.Errorf("GET %s: %d, want %d saying %q:\n%.400s", tc.path, code, tc.code, tc.says, body)
		}
	}

	history := func() int {
		d, err := c.eng.Job(okID)
		if err != nil {
			t.Fatal(err)
		}
		return len(d.History)
	}
	before := history()
	posts := []struct {
		who  *client
		path string
		form url.Values
		code int
	}{
		{admin, "/job/" + okID + "/rebuild", url.Values{}, 403},                           // no token
		{admin, "/job/" + okID + "/rebuild", url.Values{"csrf": {"forged"}}, 403},         // forged token
		{c.client(), "/job/" + okID + "/rebuild", url.Values{"csrf": {tok}}, 403},         // token of another cookie
		{admin, "/job/424242/rebuild", url.Values{"csrf": {tok}}, 404},                    // unknown job
		{admin, "/query/rebuild", url.Values{"csrf": {tok}, "id": {okID, "424242"}}, 404}, // one unknown id
		{admin, "/query/rebuild", url.Values{"csrf": {tok}}, 400},                         // nothing selected
		{admin, "/job/" + okID + "/cancel", url.Values{"csrf": {tok}}, 409},               // not active
		{admin, "/log-rules", url.Values{"csrf": {tok}, "pattern": {"(x"}, "explanation": {"y"}}, 400},
		{admin, "/log-rules", url.Values{"csrf": {tok}, "pattern": {"x"}}, 400},
		{admin, "/log-rules/77/delete", url.Values{"csrf": {tok}}, 404},
		{admin, "/confirm", url.Values{"csrf": {tok}, "level": {"reckless"}}, 400},
	}
	for _, p := range posts {
		code, body, _ := p.who.do("POST", p.path, p.form, nil)
		if code != p.code {
			t.Errorf("POST %s %v: %d, want %d:\n%.400s", p.path, p.form, code, p.code, body)
		}
	}
	// A viewer with a valid token may not act.
	viewer := c.client()
	vt := viewer.csrf("/login")
	if code, _, _ := viewer.do("POST", "/job/"+okID+"/rebuild", url.Values{"csrf": {vt}}, nil); code != 401 {
		t.Errorf("anonymous rebuild: %d, want 401", code)
	}
	if code, _, _ := admin.do("POST", "/api/job/"+okID+"/rebuild", nil, map[string]string{"Authorization": "Bearer forged.token"}); code != 401 {
		t.Errorf("POST with a bad bearer token: %d, want 401", code)
	}
	if got := history(); got != before {
		t.Errorf("refused requests changed the history of %s: %d builds, had %d", okID, got, before)
	}
	if rules, _ := c.eng.LogRules(); len(rules) != 0 {
		t.Errorf("refused requests added log rules: %+v", rules)
	}
	if l := c.eng.ConfirmLevel(); l != current.LevelDangerous {
		t.Errorf("refused request changed the confirm level to %s", l)
	}
	c.mu.Lock()
	runs := c.runs["alpha"]
	c.mu.Unlock()
	if runs != 1 {
		t.Errorf("alpha ran %d times", runs)
	}
}

func TestLoginAndActions(t *testing.T) {
	c := newConsole(t, "alpha", "bad-beta", "slow-gamma")
	okID := c.jobOf("alpha", current.JobOK)
	badID := c.jobOf("bad-beta", current.JobFailed)
	slowID := c.jobOf("slow-gamma", current.JobRunning)
	cl := c.client()
	tok := cl.csrf("/login")
	if code, body, _ := cl.do("POST", "/login", url.Values{"csrf": {tok}, "user": {"admin"}, "password": {"wrong"}}, nil); code != 401 || !strings.Contains(body, "Wrong user or password") {
		t.Fatalf("wrong password: %d %s", code, body)
	}
	cl.login()
	_, body := cl.get("/job/" + okID)
	if !strings.Contains(body, `id="rebuild"`) {
		t.Fatalf("admin sees no Rebuild button:\n%s", body)
	}
	tok = cl.csrf("/job/" + okID)
	code, _, hdr := cl.do("POST", "/job/"+okID+"/rebuild", url.Values{"csrf": {tok}}, nil)
	newID := strings.TrimPrefix(hdr.Get("Location"), "/job/")
	if code != http.StatusSeeOther || newID == "" || newID == okID {
		t.Fatalf("rebuild: %d, Location %q", code, hdr.Get("Location"))
	}
	c.waitFor("the rebuild to finish", func() bool {
		j, err := c.eng.Job(newID)
		return err == nil && j.State == current.JobOK && j.Build == 2
	})

	// The API: a bearer token from /api/login needs no CSRF token.
	api := c.client()
	var login struct {
		Token string `json:"token"`
	}
	ctok := api.csrf("/login")
	code, body, _ = api.do("POST", "/api/login", nil, nil)
	if code != 403 {
		t.Fatalf("API login without CSRF token: %d", code)
	}
	req := `{"user":"admin","password":"` + testPassword + `"}`
	code, body = postJSON(t, api, "/api/login", req, map[string]string{"X-CSRF-Token": ctok})
	if code != 200 || json.Unmarshal([]byte(body), &login) != nil || login.Token == "" {
		t.Fatalf("API login: %d %s", code, body)
	}
	bearer := map[string]string{"Authorization": "Bearer " + login.Token}
	code, body = postJSON(t, c.client(), "/api/job/"+slowID+"/cancel", "{}", bearer)
	if code != 200 {
		t.Fatalf("API cancel: %d %s", code, body)
	}
	c.waitFor("the cancelled job to finish", func() bool {
		j, err := c.eng.Job(slowID)
		return err == nil && j.State == current.JobFailed && j.FailureKind == current.FailCancelled
	})
	code, body = postJSON(t, c.client(), "/api/query/rebuild", `{"ids":["`+badID+`"]}`, bearer)
	if code != 200 || !strings.Contains(body, `"jobs"`) {
		t.Fatalf("API bulk rebuild: %d %s", code, body)
	}
	c.waitFor("the failed job to be rebuilt", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.runs["bad-beta"] == 2
	})
	code, body = postJSON(t, c.client(), "/api/log-rules", `{"pattern":"missing semicolon","explanation":"Add the semicolon."}`, bearer)
	if code != 200 {
		t.Fatalf("add log rule: %d %s", code, body)
	}
	code, body = postJSON(t, c.client(), "/api/confirm", `{"level":"average"}`, bearer)
	if code != 200 || c.eng.ConfirmLevel() != current.LevelAverage {
		t.Fatalf("set confirm level: %d %s", code, body)
	}
	// Log out: the session cookie no longer works.
	tok = cl.csrf("/jobs")
	cl.do("POST", "/logout", url.Values{"csrf": {tok}}, nil)
	if _, body := cl.get("/job/" + okID); strings.Contains(body, `id="rebuild"`) {
		t.Fatalf("still logged in after logging out")
	}
}

func postJSON(t *testing.T, cl *client, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", cl.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return resp.StatusCode, b.String()
}

func TestLogFollowByServerSentEvents(t *testing.T) {
	c := newConsole(t, "slow-one")
	id := c.jobOf("slow-one", current.JobRunning)
	cl := c.client()
	// The page shows the lines so far and where to follow from.
	c.waitFor("two lines", func() bool {
		_, body := cl.get("/job/" + id)
		return strings.Contains(body, `id="L3"`)
	})
	_, body := cl.get("/job/" + id)
	m := regexpFind(`data-events="(/job/[^"]+)"`, body)
	if m == "" {
		t.Fatalf("no event source on the page of a running job:\n%s", body)
	}
	resp, err := cl.hc.Get(c.srv.URL + strings.ReplaceAll(m, "&amp;", "&"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan [2]string)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev string
		for sc.Scan() {
			if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				ev = e
			} else if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- [2]string{ev, d}
			}
		}
	}()
	c.lines <- "\x1b[31mthird\x1b[0m line"
	ev := <-events
	if ev[0] != "line" || ev[1] != `{"n":4,"html":"\u003cspan class=\"fc1\"\u003ethird\u003c/span\u003e line"}` {
		t.Fatalf("first event %q", ev)
	}
	c.lines <- "fourth"
	if ev := <-events; !strings.Contains(ev[1], `"n":5`) || !strings.Contains(ev[1], "fourth") {
		t.Fatalf("second event %q", ev)
	}
	close(c.lines)
	done := false
	for ev := range events {
		if ev[0] == "done" {
			if !strings.Contains(ev[1], `"state":"ok"`) {
				t.Fatalf("done event %q", ev)
			}
			done = true
			break
		}
		t.Logf("event %q", ev)
	}
	if !done {
		t.Fatal("stream ended without a done event")
	}

	// A client reconnecting with Last-Event-ID resumes after the last line it saw.
	stream := func(hdr string) (int, []string) {
		req, _ := http.NewRequest("GET", c.srv.URL+"/job/"+id+"/log/events", nil)
		if hdr != "" {
			req.Header.Set("Last-Event-ID", hdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var lines []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "id: ") || strings.HasPrefix(sc.Text(), "data: {\"n\"") {
				lines = append(lines, sc.Text())
			}
		}
		return resp.StatusCode, lines
	}
	_, all := stream("")
	if len(all) < 10 || !strings.HasPrefix(all[6], "id: ") {
		t.Fatalf("whole stream: %q", all)
	}
	lastSeen := strings.TrimPrefix(all[6], "id: ") // after line 4
	_, rest := stream(lastSeen)
	if len(rest) != len(all)-8 || !strings.Contains(rest[1], `"n":5`) || !strings.Contains(rest[1], "fourth") {
		t.Fatalf("resumed from %s: %q", lastSeen, rest)
	}
	if code, _ := stream("garbage"); code != 400 {
		t.Fatalf("bad Last-Event-ID: %d, want 400", code)
	}
}

func regexpFind(re, s string) string {
	m := mustRegexp(re).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestConfirmationAndStartNow(t *testing.T) {
	c := newConsole(t)
	if err := c.eng.SetConfirmLevel(current.LevelAverage); err != nil {
		t.Fatal(err)
	}
	c.items.Set([]string{"risky-one"})
	var id string
	c.waitFor("the deploy to wait for confirmation", func() bool {
		for _, j := range c.eng.Jobs() {
			if j.Op == "deploy" && j.State == current.JobWaiting {
				id = j.ID
				return true
			}
		}
		return false
	})
	cl := c.client()
	cl.login()
	_, body := cl.get("/jobs")
	if !strings.Contains(body, "waiting-for-confirmation") || !strings.Contains(body, `href="/job/`+id+`"`) {
		t.Fatalf("jobs page does not show the held job:\n%s", body)
	}
	var jobs struct {
		Jobs []Job `json:"jobs"`
	}
	cl.getJSON("/api/jobs", &jobs)
	if len(jobs.Jobs) != 1 || jobs.Jobs[0].Why == "" {
		t.Fatalf("held job without a reason: %+v", jobs.Jobs)
	}
	_, body = cl.get("/job/" + id)
	if !strings.Contains(body, `id="start"`) {
		t.Fatalf("no Start now button on a held job:\n%s", body)
	}
	tok := cl.csrf("/job/" + id)
	if code, body, _ := cl.do("POST", "/job/"+id+"/start", url.Values{"csrf": {tok}}, nil); code != http.StatusSeeOther {
		t.Fatalf("start now: %d %s", code, body)
	}
	c.waitFor("the started job to finish", func() bool {
		j, err := c.eng.Job(id)
		return err == nil && j.State == current.JobOK
	})
}

func TestCorruptOrDeletedLog(t *testing.T) {
	c := newConsole(t, "alpha")
	id, d := c.damagedLog(t, "alpha")
	cl := c.client()
	code, body := cl.get("/job/" + id)
	if code != 200 || !strings.Contains(body, `id="log-error"`) || !strings.Contains(body, "corrupt") {
		t.Fatalf("job page with a truncated log: %d\n%s", code, body)
	}
	for _, p := range []string{"/job/" + id + "/log", "/api/job/" + id + "/log", "/api/job/" + id + "/log/events"} {
		code, body := cl.get(p)
		if code < 400 || !strings.Contains(body, "corrupt") {
			t.Errorf("GET %s with a truncated log: %d %q", p, code, body)
		}
	}
	if err := os.Remove(d.LogPath); err != nil {
		t.Fatal(err)
	}
	if code, body := cl.get("/api/job/" + id + "/log"); code < 400 || !strings.Contains(body, "missing") {
		t.Errorf("log file removed: %d %q", code, body)
	}
	after, err := c.eng.Job(id)
	if err != nil || after.State != current.JobOK || len(after.History) != 1 {
		t.Errorf("reading a damaged log changed the job: %+v %v", after, err)
	}
}

func TestChangeEvents(t *testing.T) {
	c := newConsole(t, "alpha")
	c.jobOf("alpha", current.JobOK)
	cl := c.client()
	resp, err := cl.hc.Get(c.srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	got := make(chan string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: ") {
				got <- sc.Text()
			}
		}
		close(got)
	}()
	c.items.Set([]string{"alpha", "beta"})
	if ev := <-got; ev != "event: changed" {
		t.Fatalf("first event %q", ev)
	}
	if code, body := cl.get("/confirm"); code != http.StatusSeeOther {
		t.Fatalf("GET /confirm: %d %s", code, body)
	}
	var conf ConfirmState
	cl.getJSON("/api/confirm", &conf)
	if conf.Level != "dangerous" || len(conf.Levels) != 5 {
		t.Fatalf("confirm JSON %+v", conf)
	}
	if code, body := cl.get("/static/style.css"); code != 200 || !strings.Contains(body, ".s-failed") {
		t.Fatalf("style sheet: %d", code)
	}
}
