package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// allStates lists the states in the order the console shows them.
var allStates = []State{StateOk, StateFailed, StateBlocked, StateReady, StateRunning, StateWaiting, StateInterrupted}

// jobStates are the states a stored result can be in.
var jobStates = []State{StateOk, StateFailed, StateInterrupted, StateReady, StateRunning, StateWaiting}

// failureKinds are the kinds of failure a query may select.
var failureKinds = []string{"work", "timeout", "cancelled", "worker-lost", "disk-full", "network", "interrupted"}

// expandSet reads the expand query parameters of the graph page.
func expandSet(r *http.Request) (map[string]bool, []string, error) {
	q := r.URL.Query()
	set := map[string]bool{}
	for _, g := range q["expand"] {
		if g == "" || len(g) > 500 {
			return nil, nil, httpErr(http.StatusBadRequest, "bad query parameter expand=%q: want a group name", g)
		}
		set[g] = true
	}
	list := make([]string, 0, len(set))
	for g := range set {
		list = append(list, g)
	}
	slices.Sort(list)
	return set, list, nil
}

func (s *Server) graphPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r, "expand"); err != nil {
		return err
	}
	expand, list, err := expandSet(r)
	if err != nil {
		return err
	}
	g, err := s.eng.Graph(r.Context())
	if err != nil {
		return err
	}
	v := Layout(g, expand)
	if c.api {
		return writeJSON(w, http.StatusOK, map[string]any{"nodes": nonNil(g.Nodes), "groups": nonNil(g.Groups), "collapsible": nonNil(v.Groups)})
	}
	var svg bytes.Buffer
	if err := v.WriteSVG(&svg); err != nil {
		return err
	}
	q := url.Values{"expand": list}
	svgURL := "/graph.svg"
	if len(list) > 0 {
		svgURL += "?" + q.Encode()
	}
	return s.render(w, c, "graph", "Pipeline", map[string]any{
		"SVG": template.HTML(svg.String()), "SVGURL": svgURL, "Groups": v.Groups, "Expand": list,
		"NodeCount": len(g.Nodes), "States": allStates,
	})
}

func (s *Server) graphSVG(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r, "expand"); err != nil {
		return err
	}
	expand, _, err := expandSet(r)
	if err != nil {
		return err
	}
	g, err := s.eng.Graph(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	return Layout(g, expand).WriteSVG(w)
}

// onlyParams rejects query parameters other than the ones named.
func onlyParams(r *http.Request, allowed ...string) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return httpErr(http.StatusBadRequest, "malformed query string: %v", err)
	}
	for k := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return httpErr(http.StatusBadRequest, "unknown query parameter %q: this page takes none", k)
			}
			return httpErr(http.StatusBadRequest, "unknown query parameter %q (this page takes %s)", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	jobs, err := s.eng.ActiveJobs(r.Context())
	if err != nil {
		return err
	}
	conf, err := s.eng.Confirm(r.Context())
	if err != nil {
		return err
	}
	pools, err := s.eng.Pools(r.Context())
	if err != nil {
		return err
	}
	data := map[string]any{"Jobs": nonNil(jobs), "Confirm": conf, "Pools": nonNil(pools)}
	if c.api {
		return writeJSON(w, http.StatusOK, lowerKeys(data))
	}
	return s.render(w, c, "jobs", "Jobs", data)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) getConfirm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	conf, err := s.eng.Confirm(r.Context())
	if err != nil {
		return err
	}
	if c.api {
		return writeJSON(w, http.StatusOK, conf)
	}
	http.Redirect(w, r, "/jobs", http.StatusSeeOther)
	return nil
}

func (s *Server) setConfirm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	level := r.PostFormValue("level")
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			Level string `json:"level"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		level = body.Level
	}
	conf, err := s.eng.Confirm(r.Context())
	if err != nil {
		return err
	}
	if !slices.Contains(conf.Levels, level) {
		return httpErr(http.StatusBadRequest, "bad form field level=%q: want one of %s", level, strings.Join(conf.Levels, ", "))
	}
	if err := s.eng.SetConfirm(r.Context(), level); err != nil {
		return err
	}
	s.log.Info("confirmation level set", "level", level, "by", c.id.User)
	if c.api {
		conf, err := s.eng.Confirm(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, conf)
	}
	http.Redirect(w, r, "/jobs", http.StatusSeeOther)
	return nil
}

// logLine is one rendered line of a log.
type logLine struct {
	N    int           `json:"n"`
	HTML template.HTML `json:"html"`
	More bool          `json:"more,omitempty"` // a part of a long line: the next part goes on it
}

// maxShownLog is how much of a log the job page shows inline; the raw log has it all.
const maxShownLog = 2 << 20

// readLogLines reads the log of job id, keeping at most the last maxShownLog bytes, and
// renders its complete lines (and, when the job finished, the last partial line too).
// It returns the lines, the offset and line number to follow from, and whether the log
// is complete.
func (s *Server) readLogLines(r *http.Request, id string) (lines []logLine, next int64, nextLine int, done, truncated bool, err error) {
	var tail []byte
	var off int64
	skippedLines := 0
	for {
		ch, err := s.eng.ReadLog(r.Context(), id, off, 1<<20)
		if err != nil {
			return nil, 0, 0, false, false, err
		}
		tail = append(tail, ch.Data...)
		off = ch.Next
		if len(tail) > maxShownLog {
			cut := len(tail) - maxShownLog
			if i := bytes.IndexByte(tail[cut:], '\n'); i >= 0 {
				cut += i + 1
			}
			skippedLines += bytes.Count(tail[:cut], []byte{'\n'})
			tail = append([]byte(nil), tail[cut:]...)
			truncated = true
		}
		if ch.Done || len(ch.Data) == 0 {
			done = ch.Done
			break
		}
	}
	body := tail
	if !done {
		if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
			body = tail[:i+1]
		} else {
			body = nil
		}
		off -= int64(len(tail) - len(body))
	}
	var ar ANSIRenderer
	n := skippedLines
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		n++
		lines = append(lines, logLine{N: n, HTML: template.HTML(ar.Line(line))})
	}
	return lines, off, n + 1, done, truncated, nil
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	job, hist, err := s.eng.Job(r.Context(), id)
	if err != nil {
		return jobErr(id, err)
	}
	if c.api {
		return writeJSON(w, http.StatusOK, map[string]any{"job": job, "history": nonNil(hist)})
	}
	lines, next, nextLine, done, truncated, err := s.readLogLines(r, id)
	logProblem := ""
	if err != nil {
		// The job is still worth showing when its log is gone or damaged.
		s.log.Warn("job page: log unreadable", "job", id, "err", err)
		logProblem, done = shownError(c, err.Error()), true
	}
	return s.render(w, c, "job", job.Label, map[string]any{
		"Job": job, "History": hist, "Lines": lines, "Next": next, "NextLine": nextLine, "Done": done,
		"Truncated": truncated, "LogError": logProblem,
	})
}

func jobErr(id string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return httpErr(http.StatusNotFound, "no job %q", id)
	}
	return err
}

func (s *Server) jobAction(action string) handler {
	return func(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
		id := r.PathValue("id")
		if _, _, err := s.eng.Job(r.Context(), id); err != nil {
			return jobErr(id, err)
		}
		target := id
		var err error
		var res RebuildResult
		switch action {
		case "rebuild":
			res, err = s.eng.Rebuild(r.Context(), id)
			target = res.JobID
		case "cancel":
			err = s.eng.Cancel(r.Context(), id)
		case "start":
			err = s.eng.StartNow(r.Context(), id)
		}
		if err != nil {
			return fmt.Errorf("%s job %s: %w", action, id, err)
		}
		s.log.Info("job action", "action", action, "job", id, "new", target, "by", c.id.User)
		if c.api {
			return writeJSON(w, http.StatusOK, map[string]any{"job": target, "deferred": res.Deferred})
		}
		if res.Deferred {
			return s.render(w, c, "done", "Rebuild", map[string]any{
				"Heading": "No pipeline wants this result now: it will be rebuilt when one next does", "Jobs": []string{id},
			})
		}
		http.Redirect(w, r, "/job/"+url.PathEscape(target), http.StatusSeeOther)
		return nil
	}
}

// parseFilter reads the /query parameters.
func parseFilter(r *http.Request) (Filter, string, error) {
	if err := onlyParams(r, "op", "state", "kind", "key", "since", "until", "latest", "limit", "offset"); err != nil {
		return Filter{}, "", err
	}
	q := r.URL.Query()
	f := Filter{Op: q.Get("op"), State: State(q.Get("state")), Key: q.Get("key"), Kind: q.Get("kind"), Limit: 100}
	if f.State != "" && !slices.Contains(jobStates, f.State) {
		return f, "", httpErr(http.StatusBadRequest, "bad query parameter state=%q: want one of %v", f.State, jobStates)
	}
	if f.Kind != "" && !slices.Contains(failureKinds, f.Kind) {
		return f, "", httpErr(http.StatusBadRequest, "bad query parameter kind=%q: want one of %s", f.Kind, strings.Join(failureKinds, ", "))
	}
	switch l := q.Get("latest"); l {
	case "", "0", "false", "off":
	case "1", "true", "on":
		f.Latest = true
	default:
		return f, "", httpErr(http.StatusBadRequest, "bad query parameter latest=%q: want true or false", l)
	}
	since := q.Get("since")
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Before}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			*p.to = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, v); err == nil {
			*p.to = t
		} else {
			return f, "", httpErr(http.StatusBadRequest, "bad query parameter %s=%q: want a duration ago such as 24h or a time such as 2026-11-28T00:00:00Z", p.name, v)
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			return f, "", httpErr(http.StatusBadRequest, "bad query parameter limit=%q: want a number from 1 to 10000", l)
		}
		f.Limit = n
	}
	if o := q.Get("offset"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 {
			return f, "", httpErr(http.StatusBadRequest, "bad query parameter offset=%q: want a whole number, 0 or more", o)
		}
		f.Offset = n
	}
	return f, since, nil
}

func (s *Server) queryPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f, since, err := parseFilter(r)
	if err != nil {
		return err
	}
	res, err := s.eng.Query(r.Context(), f)
	if err != nil {
		return err
	}
	if c.api {
		return writeJSON(w, http.StatusOK, map[string]any{"filter": f, "results": nonNil(res)})
	}
	page := func(off int) string {
		v := r.URL.Query()
		v.Set("offset", strconv.Itoa(off))
		return "/query?" + v.Encode()
	}
	data := map[string]any{
		"Filter": f, "Since": since, "Until": r.URL.Query().Get("until"), "Results": res, "States": jobStates, "Kinds": failureKinds,
	}
	if len(res) == f.Limit {
		data["Next"] = page(f.Offset + f.Limit)
	}
	if f.Offset > 0 {
		data["Prev"] = page(max(0, f.Offset-f.Limit))
	}
	return s.render(w, c, "query", "Query", data)
}

func (s *Server) bulkRebuild(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	ids, err := postedIDs(r)
	if err != nil {
		return err
	}
	// Check every id first so that a bad one changes nothing.
	for _, id := range ids {
		if _, _, err := s.eng.Job(r.Context(), id); err != nil {
			return jobErr(id, err)
		}
	}
	var started, deferred []string
	for _, id := range ids {
		res, err := s.eng.Rebuild(r.Context(), id)
		if err != nil {
			return fmt.Errorf("rebuild %s (after %d others): %w", id, len(started)+len(deferred), err)
		}
		if res.Deferred {
			deferred = append(deferred, id)
		} else if res.JobID != "" && !slices.Contains(started, res.JobID) {
			started = append(started, res.JobID)
		}
	}
	s.log.Info("bulk rebuild", "started", len(started), "deferred", len(deferred), "by", c.id.User)
	if c.api {
		return writeJSON(w, http.StatusOK, map[string]any{"jobs": nonNil(started), "deferred": nonNil(deferred)})
	}
	return s.render(w, c, "done", "Rebuilt", map[string]any{
		"Heading": fmt.Sprintf("Rebuilding %d result(s) now; %d more when a pipeline next wants them", len(started), len(deferred)),
		"Jobs":    started, "Deferred": deferred,
	})
}

// postedIDs reads the job ids of a bulk action: form fields id=..., or a JSON body
// {"ids": [...]}.
func postedIDs(r *http.Request) ([]string, error) {
	var ids []string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			IDs []string `json:"ids"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return nil, err
		}
		ids = body.IDs
	} else {
		if err := r.ParseForm(); err != nil {
			return nil, httpErr(http.StatusBadRequest, "malformed form: %v", err)
		}
		ids = r.PostForm["id"]
	}
	if len(ids) == 0 {
		return nil, httpErr(http.StatusBadRequest, "no job selected: send one or more id fields")
	}
	if len(ids) > 10000 {
		return nil, httpErr(http.StatusBadRequest, "too many jobs (%d): at most 10000 at once", len(ids))
	}
	return ids, nil
}

func (s *Server) logRulesPage(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := onlyParams(r, "test"); err != nil {
		return err
	}
	rules, err := s.eng.LogRules(r.Context())
	if err != nil {
		return err
	}
	test := r.URL.Query().Get("test")
	data := map[string]any{"Rules": nonNil(rules), "Test": test}
	if test != "" {
		if _, err := regexp.Compile(test); err != nil {
			return httpErr(http.StatusBadRequest, "bad query parameter test: %v", err)
		}
		ms, err := s.eng.TestLogRule(r.Context(), test)
		if err != nil {
			return err
		}
		n := 0
		for _, m := range ms {
			if m.Matched {
				n++
			}
		}
		data["Matches"], data["Matched"] = nonNil(ms), n
	}
	if c.api {
		return writeJSON(w, http.StatusOK, lowerKeys(data))
	}
	return s.render(w, c, "logrules", "Log rules", data)
}

func lowerKeys(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

func (s *Server) addLogRule(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var rule LogRule
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			Pattern     string `json:"pattern"`
			Explanation string `json:"explanation"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		rule.Pattern, rule.Explanation = body.Pattern, body.Explanation
	} else {
		rule.Pattern, rule.Explanation = r.PostFormValue("pattern"), r.PostFormValue("explanation")
	}
	if rule.Pattern == "" || rule.Explanation == "" {
		return httpErr(http.StatusBadRequest, "a log rule needs both a pattern and an explanation")
	}
	if _, err := regexp.Compile(rule.Pattern); err != nil {
		return httpErr(http.StatusBadRequest, "bad field pattern: %v", err)
	}
	rule, err := s.eng.AddLogRule(r.Context(), rule.Pattern, rule.Explanation)
	if err != nil {
		return err
	}
	s.log.Info("log rule added", "id", rule.ID, "pattern", rule.Pattern, "by", c.id.User)
	if c.api {
		return writeJSON(w, http.StatusOK, rule)
	}
	http.Redirect(w, r, "/log-rules", http.StatusSeeOther)
	return nil
}

func (s *Server) deleteLogRule(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	id := r.PathValue("id")
	if err := s.eng.DeleteLogRule(r.Context(), id); err != nil {
		if errors.Is(err, ErrNotFound) {
			return httpErr(http.StatusNotFound, "no log rule %q", id)
		}
		return err
	}
	s.log.Info("log rule deleted", "id", id, "by", c.id.User)
	if c.api {
		return writeJSON(w, http.StatusOK, map[string]string{"deleted": id})
	}
	http.Redirect(w, r, "/log-rules", http.StatusSeeOther)
	return nil
}

func decodeJSON(r *http.Request, v any) error {
	dec := jsonDecoder(r)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return httpErr(http.StatusRequestEntityTooLarge, "JSON body larger than %d bytes", mbe.Limit)
		}
		return httpErr(http.StatusBadRequest, "malformed JSON body: %v", err)
	}
	return nil
}
