// Package githubtest is a local stand-in for the parts of GitHub's REST API that kiln
// uses, for tests: App authentication (an RS256 JWT checked against the App's key, then
// installation tokens), installations and their repositories, branches, open pull
// requests, commits, and check runs. It records every request so tests can check exactly
// what was sent.
package githubtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request is one request the stand-in received.
type Request struct {
	Method string
	Path   string // with the query, if any: "/repos/o/r/pulls?per_page=100&state=open"
	Auth   string // the Authorization header
	Body   []byte
	Time   time.Time // when it arrived
	Status int       // the answer's status code
}

// String is "METHOD PATH".
func (r Request) String() string { return r.Method + " " + r.Path }

// JSON decodes the request's body.
func (r Request) JSON() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// PR is an open pull request.
type PR struct {
	Number  int
	Title   string
	HeadSHA string
	HeadRef string
	Base    string
	Author  string
	Labels  []string
}

// Repo is the state of one repository.
type Repo struct {
	Owner, Name string
	// ID is GitHub's number for it (default: the next free one, or the number of the
	// repository it replaces).
	ID            int64
	Private       bool
	Archived      bool
	DefaultBranch string            // default "main"
	Branches      map[string]string // branch name → head commit
	PRs           []PR
	CommitDates   map[string]time.Time // commit → committer date (default 2026-01-01)
	Installation  int64                // the installation that can access it
}

// CheckRun is a check run as the stand-in stores it.
type CheckRun struct {
	ID                         int64
	Repo                       string // owner/name
	HeadSHA                    string
	Name, Status, Conclusion   string
	Title, Summary, DetailsURL string
	ExternalID                 string
	Updates                    int // PATCHes received after creation
}

// API is the running stand-in.
type API struct {
	*httptest.Server
	AppID int64
	Key   *rsa.PrivateKey

	mu            sync.Mutex
	installations map[int64]string // id → account
	suspended     map[int64]bool   // suspended installations: listed, but no token
	broken        map[int64]bool   // installations whose token requests fail (500)
	tokens        map[string]int64 // installation token → id
	repos         map[string]*Repo
	runs          []*CheckRun
	requests      []Request
	rerequested   []string
	limits        map[int64]*limit // installation → its rate limit, when one is set
	nextID        int64
}

// limit is an installation's rate limit: remaining requests until reset; then 403.
type limit struct {
	remaining  int
	reset      time.Time
	retryAfter time.Duration // answer the next request 429 with this Retry-After
}

// New starts a stand-in for the App appID; it stops when the test ends.
func New(t testing.TB, appID int64) *API {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	a := &API{AppID: appID, Key: key, installations: map[int64]string{}, tokens: map[string]int64{}, repos: map[string]*Repo{}}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

// PrivateKeyPEM is the App's private key, as GitHub hands it out.
func (a *API) PrivateKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(a.Key)})
}

// APIURL is the root to configure clients with (ends in "/").
func (a *API) APIURL() string { return a.URL + "/" }

// TokenFor is the token the stand-in hands to installation id.
func TokenFor(id int64) string { return fmt.Sprintf("ghs_test%016d", id) }

// AddInstallation adds an installation of the App on account.
func (a *API) AddInstallation(id int64, account string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.installations[id] = account
	a.tokens[TokenFor(id)] = id
}

// SuspendInstallation suspends installation id, as its account's owner can: it stays
// listed (with suspended_at) and gets no token (403).
func (a *API) SuspendInstallation(id int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.suspended == nil {
		a.suspended = map[int64]bool{}
	}
	a.suspended[id] = true
}

// BreakInstallation makes the token requests of installation id fail with 500.
func (a *API) BreakInstallation(id int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.broken == nil {
		a.broken = map[int64]bool{}
	}
	a.broken[id] = true
}

// SetRepo adds or replaces a repository.
func (a *API) SetRepo(r Repo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.DefaultBranch == "" {
		r.DefaultBranch = "main"
	}
	if old, ok := a.repos[r.Owner+"/"+r.Name]; ok && r.ID == 0 {
		r.ID = old.ID
	}
	if r.ID == 0 {
		a.nextID++
		r.ID = 186853000 + a.nextID
	}
	a.repos[r.Owner+"/"+r.Name] = &r
}

// RepoID is GitHub's number for the repository "owner/name" (0 if there is none).
func (a *API) RepoID(full string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.repos[full]; ok {
		return r.ID
	}
	return 0
}

// RenameRepo renames or transfers the repository "owner/name" to newOwner/newName; it
// keeps its number and its installation. The old name is then unknown (404).
func (a *API) RenameRepo(full, newOwner, newName string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.repos[full]
	if !ok {
		return
	}
	delete(a.repos, full)
	r.Owner, r.Name = newOwner, newName
	a.repos[newOwner+"/"+newName] = r
}

// DeleteRepo deletes the repository "owner/name".
func (a *API) DeleteRepo(full string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.repos, full)
}

// ArchiveRepo archives the repository "owner/name".
func (a *API) ArchiveRepo(full string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.repos[full]; ok {
		r.Archived = true
	}
}

// LimitInstallation gives installation id a rate limit as GitHub does: each answer
// carries X-RateLimit-Remaining and X-RateLimit-Reset; once remaining requests are
// spent, every request is refused (403, X-RateLimit-Remaining: 0) until reset, when the
// limit is lifted.
func (a *API) LimitInstallation(id int64, remaining int, reset time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.limits == nil {
		a.limits = map[int64]*limit{}
	}
	a.limits[id] = &limit{remaining: remaining, reset: reset}
}

// LimitApp gives the App's own requests (listing installations) a rate limit, as
// LimitInstallation does for an installation.
func (a *API) LimitApp(remaining int, reset time.Time) {
	a.LimitInstallation(appLimit, remaining, reset)
}

// appLimit is the key of the App's own rate limit among the installations'.
const appLimit = 0

// ThrottleInstallation answers the next request of installation id with a secondary
// rate limit: 429 and Retry-After: retryAfter (whole seconds).
func (a *API) ThrottleInstallation(id int64, retryAfter time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.limits == nil {
		a.limits = map[int64]*limit{}
	}
	a.limits[id] = &limit{remaining: -1, retryAfter: retryAfter}
}

// limited answers a request of installation inst when its rate limit refuses it, and
// sets the rate-limit headers of the answer otherwise.
func (a *API) limited(w http.ResponseWriter, inst int64) bool {
	l := a.limits[inst]
	if l == nil {
		return false
	}
	if l.retryAfter > 0 {
		delete(a.limits, inst)
		w.Header().Set("Retry-After", strconv.Itoa(int(l.retryAfter.Seconds())))
		reply(w, http.StatusTooManyRequests, map[string]string{"message": "You have exceeded a secondary rate limit."})
		return true
	}
	if !time.Now().Before(l.reset) {
		delete(a.limits, inst)
		return false
	}
	w.Header().Set("X-RateLimit-Limit", "5000")
	w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(l.reset.Unix(), 10))
	if l.remaining <= 0 {
		w.Header().Set("X-RateLimit-Remaining", "0")
		reply(w, http.StatusForbidden, map[string]string{"message": "API rate limit exceeded for installation ID " + strconv.FormatInt(inst, 10) + "."})
		return true
	}
	l.remaining--
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(l.remaining))
	return false
}

// Requests returns the requests received so far.
func (a *API) Requests() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

// CheckRuns returns the check runs on commit of repo ("owner/name").
func (a *API) CheckRuns(repo, commit string) []CheckRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []CheckRun
	for _, r := range a.runs {
		if r.Repo == repo && r.HeadSHA == commit {
			out = append(out, *r)
		}
	}
	return out
}

// Rerequested lists the check suites re-run through the API ("owner/name#id").
func (a *API) Rerequested() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.rerequested)
}

func (a *API) verifyJWT(auth string) error {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return fmt.Errorf("want a Bearer JWT")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("JWT has %d parts", len(parts))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&a.Key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("JWT signature: %w", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss any   `json:"iss"`
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		return err
	}
	if fmt.Sprint(claims.Iss) != strconv.FormatInt(a.AppID, 10) || claims.Exp < time.Now().Unix() {
		return fmt.Errorf("JWT claims %s", raw)
	}
	return nil
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *API) repoJSON(r *Repo) map[string]any {
	return map[string]any{"id": r.ID, "name": r.Name, "full_name": r.Owner + "/" + r.Name, "owner": map[string]any{"login": r.Owner},
		"private": r.Private, "archived": r.Archived, "default_branch": r.DefaultBranch, "clone_url": "https://github.com/" + r.Owner + "/" + r.Name + ".git"}
}

func (a *API) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	path := req.URL.Path
	if req.URL.RawQuery != "" {
		path += "?" + req.URL.RawQuery
	}
	auth := req.Header.Get("Authorization")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests = append(a.requests, Request{Method: req.Method, Path: path, Auth: auth, Body: body, Time: time.Now()})
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	defer func() { a.requests[len(a.requests)-1].Status = sw.status }()

	p := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if p[0] == "app" {
		if err := a.verifyJWT(auth); err != nil {
			reply(w, 401, map[string]string{"message": "A JSON web token could not be decoded: " + err.Error()})
			return
		}
		switch {
		case req.Method == "GET" && len(p) == 2 && p[1] == "installations" && a.limited(w, appLimit):
		case req.Method == "GET" && len(p) == 2 && p[1] == "installations":
			var out []any
			for _, id := range sortedKeys(a.installations) {
				inst := map[string]any{"id": id, "app_id": a.AppID, "account": map[string]any{"login": a.installations[id]}}
				if a.suspended[id] {
					inst["suspended_at"] = time.Now().UTC().Format(time.RFC3339)
				}
				out = append(out, inst)
			}
			reply(w, 200, out)
		case req.Method == "POST" && len(p) == 4 && p[1] == "installations" && p[3] == "access_tokens":
			id, _ := strconv.ParseInt(p[2], 10, 64)
			if _, ok := a.installations[id]; !ok {
				reply(w, 404, map[string]string{"message": "Not Found"})
				return
			}
			if a.suspended[id] {
				reply(w, 403, map[string]string{"message": "This installation has been suspended"})
				return
			}
			if a.broken[id] {
				reply(w, 500, map[string]string{"message": "Server Error"})
				return
			}
			reply(w, 201, map[string]any{"token": TokenFor(id), "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		default:
			reply(w, 404, map[string]string{"message": "Not Found"})
		}
		return
	}
	tok, _ := strings.CutPrefix(auth, "token ")
	if t2, ok := strings.CutPrefix(auth, "Bearer "); ok {
		tok = t2
	}
	inst, ok := a.tokens[tok]
	if !ok {
		reply(w, 401, map[string]string{"message": "Bad credentials"})
		return
	}
	if a.limited(w, inst) {
		return
	}
	if req.Method == "GET" && req.URL.Path == "/installation/repositories" {
		var out []any
		for _, k := range sortedKeys(a.repos) {
			if r := a.repos[k]; r.Installation == inst {
				out = append(out, a.repoJSON(r))
			}
		}
		reply(w, 200, map[string]any{"total_count": len(out), "repositories": out})
		return
	}
	if len(p) < 3 || p[0] != "repos" {
		reply(w, 404, map[string]string{"message": "Not Found"})
		return
	}
	full := p[1] + "/" + p[2]
	r, ok := a.repos[full]
	if !ok || r.Installation != inst {
		reply(w, 404, map[string]string{"message": "Not Found"})
		return
	}
	rest := p[3:]
	switch {
	case req.Method == "GET" && len(rest) == 0:
		reply(w, 200, a.repoJSON(r))
	case req.Method == "GET" && len(rest) == 1 && rest[0] == "branches":
		var out []any
		for _, b := range sortedKeys(r.Branches) {
			out = append(out, map[string]any{"name": b, "commit": map[string]any{"sha": r.Branches[b]}})
		}
		reply(w, 200, out)
	case req.Method == "GET" && len(rest) == 1 && rest[0] == "pulls":
		var out []any
		for _, pr := range r.PRs {
			labels := []map[string]any{}
			for _, l := range pr.Labels {
				labels = append(labels, map[string]any{"name": l})
			}
			out = append(out, map[string]any{"number": pr.Number, "title": pr.Title, "state": "open", "user": map[string]any{"login": pr.Author},
				"head": map[string]any{"sha": pr.HeadSHA, "ref": pr.HeadRef}, "base": map[string]any{"ref": pr.Base}, "labels": labels})
		}
		reply(w, 200, out)
	case req.Method == "GET" && len(rest) == 2 && rest[0] == "commits":
		d, ok := r.CommitDates[rest[1]]
		if !ok {
			d = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		reply(w, 200, map[string]any{"sha": rest[1], "commit": map[string]any{"committer": map[string]any{"date": d.Format(time.RFC3339)}}})
	case req.Method == "GET" && len(rest) == 3 && rest[0] == "commits" && rest[2] == "check-runs":
		name := req.URL.Query().Get("check_name")
		var out []any
		for _, c := range a.runs {
			if c.Repo == full && c.HeadSHA == rest[1] && (name == "" || c.Name == name) {
				out = append(out, map[string]any{"id": c.ID, "name": c.Name, "head_sha": c.HeadSHA, "status": c.Status})
			}
		}
		reply(w, 200, map[string]any{"total_count": len(out), "check_runs": out})
	case req.Method == "POST" && len(rest) == 1 && rest[0] == "check-runs":
		var in checkRunBody
		if err := json.Unmarshal(body, &in); err != nil || in.Name == "" || in.HeadSHA == "" {
			reply(w, 422, map[string]string{"message": "Invalid request: name and head_sha are required"})
			return
		}
		c := &CheckRun{ID: int64(1000 + len(a.runs)), Repo: full, HeadSHA: in.HeadSHA}
		in.apply(c)
		a.runs = append(a.runs, c)
		reply(w, 201, map[string]any{"id": c.ID, "name": c.Name, "head_sha": c.HeadSHA})
	case req.Method == "PATCH" && len(rest) == 2 && rest[0] == "check-runs":
		id, _ := strconv.ParseInt(rest[1], 10, 64)
		for _, c := range a.runs {
			if c.ID == id && c.Repo == full {
				var in checkRunBody
				if err := json.Unmarshal(body, &in); err != nil {
					reply(w, 422, map[string]string{"message": "Invalid request"})
					return
				}
				in.apply(c)
				c.Updates++
				reply(w, 200, map[string]any{"id": c.ID, "name": c.Name, "head_sha": c.HeadSHA})
				return
			}
		}
		reply(w, 404, map[string]string{"message": "Not Found"})
	case req.Method == "POST" && len(rest) == 3 && rest[0] == "check-suites" && rest[2] == "rerequest":
		a.rerequested = append(a.rerequested, full+"#"+rest[1])
		reply(w, 201, map[string]any{})
	default:
		reply(w, 404, map[string]string{"message": "Not Found"})
	}
}

// statusWriter records the status code of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

type checkRunBody struct {
	Name       string `json:"name"`
	HeadSHA    string `json:"head_sha"`
	Status     string `json:"status"`
	Conclusion string `json:"conclusion"`
	DetailsURL string `json:"details_url"`
	ExternalID string `json:"external_id"`
	Output     *struct {
		Title   string `json:"title"`
		Summary string `json:"summary"`
	} `json:"output"`
}

func (b checkRunBody) apply(c *CheckRun) {
	if b.Name != "" {
		c.Name = b.Name
	}
	if b.Status != "" {
		c.Status = b.Status
	}
	c.Conclusion = b.Conclusion
	if b.DetailsURL != "" {
		c.DetailsURL = b.DetailsURL
	}
	if b.ExternalID != "" {
		c.ExternalID = b.ExternalID
	}
	if b.Output != nil {
		c.Title, c.Summary = b.Output.Title, b.Output.Summary
	}
}

func sortedKeys[K int64 | string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
