package github

import (
	"context"
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
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
)

// fakeAPI stands in for GitHub's REST API: it checks authentication as GitHub does (an
// RS256 JWT for App endpoints, the installation token for the rest) and records every
// request.
type fakeAPI struct {
	t    *testing.T
	key  *rsa.PrivateKey
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []string         // "METHOD /path?query"
	body []map[string]any // JSON bodies of POST/PATCH, in order
	runs map[string]int64 // check runs created: commit → id
}

const (
	appID      = 123
	instToken  = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
	shaMain    = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	shaOld     = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	shaNew     = "cccccccccccccccccccccccccccccccccccccccc"
	shaPR      = "dddddddddddddddddddddddddddddddddddddddd"
	shaStalePR = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
)

var commitDates = map[string]string{
	shaMain: "2020-01-01T00:00:00Z", shaOld: "2021-01-01T00:00:00Z", shaNew: "2026-11-01T00:00:00Z",
	shaPR: "2026-11-20T00:00:00Z", shaStalePR: "2022-06-01T00:00:00Z",
}

func newFakeAPI(t *testing.T) *fakeAPI {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{t: t, key: key, runs: map[string]int64{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) keyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(f.key)})
}

func (f *fakeAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

// verifyJWT checks an App's JWT as GitHub does: RS256 under the App's key, issued by the App.
func (f *fakeAPI) verifyJWT(auth string) error {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return fmt.Errorf("want a Bearer JWT, got %q", auth)
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
	if err := rsa.VerifyPKCS1v15(&f.key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
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
	if fmt.Sprint(claims.Iss) != fmt.Sprint(appID) || claims.Exp < time.Now().Unix() {
		return fmt.Errorf("JWT claims %s", raw)
	}
	return nil
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	line := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		line += "?" + r.URL.RawQuery
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, line)
	f.mu.Unlock()
	if r.Method == http.MethodPost || r.Method == http.MethodPatch {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if len(b) > 0 {
			if err := json.Unmarshal(b, &m); err != nil {
				f.t.Errorf("%s: body is not JSON: %s", line, b)
			}
		}
		f.mu.Lock()
		f.body = append(f.body, m)
		f.mu.Unlock()
	}
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	auth := r.Header.Get("Authorization")
	if strings.HasPrefix(r.URL.Path, "/app/") {
		if err := f.verifyJWT(auth); err != nil {
			reply(401, map[string]string{"message": "A JSON web token could not be decoded: " + err.Error()})
			return
		}
	} else if auth != "token "+instToken && auth != "Bearer "+instToken {
		reply(401, map[string]string{"message": "Bad credentials"})
		return
	}
	if r.Header.Get("Accept") == "" {
		f.t.Errorf("%s: no Accept header", line)
	}
	repo := map[string]any{"name": "dune", "full_name": "octo-org/dune", "owner": map[string]any{"login": "octo-org"},
		"clone_url": "https://github.com/octo-org/dune.git", "private": true, "default_branch": "main"}
	p := r.URL.Path
	switch {
	case r.Method == "GET" && p == "/app/installations":
		reply(200, []any{
			map[string]any{"id": 42, "account": map[string]any{"login": "octo-org"}},
			map[string]any{"id": 43, "account": map[string]any{"login": "someone-else"}},
		})
	case r.Method == "POST" && p == "/app/installations/42/access_tokens":
		reply(201, map[string]any{"token": instToken, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	case r.Method == "GET" && p == "/installation/repositories":
		reply(200, map[string]any{"total_count": 1, "repositories": []any{repo}})
	case r.Method == "GET" && p == "/repos/octo-org/dune":
		reply(200, repo)
	case r.Method == "GET" && p == "/repos/octo-org/dune/branches":
		reply(200, []any{
			map[string]any{"name": "main", "commit": map[string]any{"sha": shaMain}},
			map[string]any{"name": "old", "commit": map[string]any{"sha": shaOld}},
			map[string]any{"name": "new", "commit": map[string]any{"sha": shaNew}},
		})
	case r.Method == "GET" && p == "/repos/octo-org/dune/pulls":
		reply(200, []any{
			map[string]any{"number": 7, "title": "Fix the build", "state": "open", "user": map[string]any{"login": "alice"},
				"head": map[string]any{"sha": shaPR, "ref": "fix"}, "base": map[string]any{"ref": "main", "sha": shaMain}},
			map[string]any{"number": 3, "title": "Forgotten", "state": "open", "user": map[string]any{"login": "bob"},
				"head": map[string]any{"sha": shaStalePR, "ref": "old-idea"}, "base": map[string]any{"ref": "main"}},
		})
	case r.Method == "GET" && strings.HasPrefix(p, "/repos/octo-org/dune/commits/") && strings.HasSuffix(p, "/check-runs"):
		sha := strings.TrimSuffix(strings.TrimPrefix(p, "/repos/octo-org/dune/commits/"), "/check-runs")
		f.mu.Lock()
		id, ok := f.runs[sha]
		f.mu.Unlock()
		runs := []any{}
		if ok {
			runs = append(runs, map[string]any{"id": id, "name": "kiln", "head_sha": sha})
		}
		reply(200, map[string]any{"total_count": len(runs), "check_runs": runs})
	case r.Method == "GET" && strings.HasPrefix(p, "/repos/octo-org/dune/commits/"):
		sha := strings.TrimPrefix(p, "/repos/octo-org/dune/commits/")
		date, ok := commitDates[sha]
		if !ok {
			reply(404, map[string]string{"message": "No commit found for SHA: " + sha})
			return
		}
		reply(200, map[string]any{"sha": sha, "commit": map[string]any{"committer": map[string]any{"name": "x", "date": date}}})
	case r.Method == "POST" && p == "/repos/octo-org/dune/check-runs":
		f.mu.Lock()
		id := int64(1000 + len(f.runs))
		f.runs[f.body[len(f.body)-1]["head_sha"].(string)] = id
		f.mu.Unlock()
		reply(201, map[string]any{"id": id, "name": "kiln"})
	case r.Method == "PATCH" && strings.HasPrefix(p, "/repos/octo-org/dune/check-runs/"):
		reply(200, map[string]any{"id": 1000, "name": "kiln"})
	case r.Method == "POST" && p == "/repos/octo-org/dune/check-suites/9/rerequest":
		reply(201, map[string]any{})
	default:
		reply(404, map[string]string{"message": "Not Found"})
	}
}

func newTestApp(t *testing.T, f *fakeAPI, allow AllowList) *App {
	app, err := NewApp(AppConfig{AppID: appID, PrivateKey: f.keyPEM(), API: f.srv.URL + "/", Allow: allow})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func TestInstallationsReposAndRefs(t *testing.T) {
	ctx := context.Background()
	f := newFakeAPI(t)
	app := newTestApp(t, f, NewAllowList("octo-org"))
	insts, err := app.Installations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Installation{{ID: 42, Account: "octo-org"}}; !reflect.DeepEqual(insts, want) {
		t.Fatalf("installations = %+v, want %+v (someone-else is not allowed)", insts, want)
	}
	c := app.Installation(42)
	repos, err := c.Repos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(repos) != 1 || repos[0].Repo != (Repo{"octo-org", "dune"}) || !repos[0].Private || repos[0].CloneURL != "https://github.com/octo-org/dune.git" {
		t.Fatalf("repos = %+v", repos)
	}
	cutoff := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	refs, err := c.Refs(ctx, Repo{"octo-org", "dune"}, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.Name+"="+r.Commit[:1])
	}
	// main is old but is the default branch; "old" and PR 3 are stale.
	if want := []string{"refs/heads/main=a", "refs/heads/new=c", "refs/pull/7/head=d"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("refs = %v, want %v", names, want)
	}
	if pr := refs[2]; pr.PR != 7 || pr.Title != "Fix the build" || pr.Base != "main" || pr.Author != "alice" || !pr.Date.Equal(time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("PR ref = %+v", pr)
	}
	tok, err := c.Token(ctx)
	if err != nil || tok != instToken {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	creds, ok, err := c.Credentials("https://github.com")(ctx, "https://github.com/octo-org/dune.git")
	if err != nil || !ok || creds.Token != instToken {
		t.Fatalf("credentials for github.com: %+v %v %v", creds, ok, err)
	}
	if _, ok, _ := c.Credentials("https://github.com")(ctx, "https://evil.example/octo-org/dune.git"); ok {
		t.Fatal("the token was offered to another host")
	}

	// Commit dates are asked once per commit; the token is asked once.
	before := len(f.requests())
	if _, err := c.Refs(ctx, Repo{"octo-org", "dune"}, cutoff); err != nil {
		t.Fatal(err)
	}
	again := f.requests()[before:]
	want := []string{
		"GET /repos/octo-org/dune",
		"GET /repos/octo-org/dune/branches?per_page=100",
		"GET /repos/octo-org/dune/pulls?per_page=100&state=open",
	}
	if !reflect.DeepEqual(again, want) {
		t.Fatalf("second Refs sent %q, want %q", again, want)
	}
	tokens := 0
	for _, r := range f.requests() {
		if r == "POST /app/installations/42/access_tokens" {
			tokens++
		}
	}
	if tokens != 1 {
		t.Errorf("installation token requested %d times, want once", tokens)
	}
}

func TestOneCheckRunPerCommit(t *testing.T) {
	ctx := context.Background()
	f := newFakeAPI(t)
	c := newTestApp(t, f, AllowList{}).Installation(42)
	repo := Repo{"octo-org", "dune"}
	variants := []forge.Variant{
		{Name: "debian-13-5.3_amd64", State: forge.Running},
		{Name: "(lint-fmt)", State: forge.Passed, Duration: 12 * time.Second},
	}
	st := forge.Summarise(variants)
	id, err := c.SetCheckRun(ctx, repo, shaPR, CheckRun{Name: "kiln", Status: st, DetailsURL: "https://ci.example/github/octo-org/dune/commit/" + shaPR})
	if err != nil {
		t.Fatal(err)
	}
	variants[0] = forge.Variant{Name: "debian-13-5.3_amd64", State: forge.Failed,
		FailingLines: []string{"File \"src/main.ml\", line 1:", "Error: Unbound value prnt_endline"}}
	st = forge.Summarise(variants)
	id2, err := c.SetCheckRun(ctx, repo, shaPR, CheckRun{Name: "kiln", Status: st})
	if err != nil {
		t.Fatal(err)
	}
	if id != id2 {
		t.Fatalf("second update created check run %d, first was %d", id2, id)
	}
	// A new client (a restart) finds the existing run instead of creating another.
	c2 := newTestApp(t, f, AllowList{}).Installation(42)
	if id3, err := c2.SetCheckRun(ctx, repo, shaPR, CheckRun{Name: "kiln", Status: st}); err != nil || id3 != id {
		t.Fatalf("after restart: id %d, %v; want %d", id3, err, id)
	}

	var checkReqs []string
	for _, r := range f.requests() {
		if strings.Contains(r, "check-run") {
			checkReqs = append(checkReqs, r)
		}
	}
	want := []string{
		"GET /repos/octo-org/dune/commits/" + shaPR + "/check-runs?check_name=kiln&filter=latest",
		"POST /repos/octo-org/dune/check-runs",
		"PATCH /repos/octo-org/dune/check-runs/1000",
		"GET /repos/octo-org/dune/commits/" + shaPR + "/check-runs?check_name=kiln&filter=latest",
		"PATCH /repos/octo-org/dune/check-runs/1000",
	}
	if !reflect.DeepEqual(checkReqs, want) {
		t.Fatalf("check run requests:\n%s\nwant:\n%s", strings.Join(checkReqs, "\n"), strings.Join(want, "\n"))
	}

	f.mu.Lock()
	bodies := f.body
	f.mu.Unlock()
	var create, update map[string]any
	for _, b := range bodies {
		if b == nil {
			continue
		}
		if _, ok := b["head_sha"]; ok && create == nil {
			create = b
		} else if _, ok := b["output"]; ok && update == nil && create != nil {
			update = b
		}
	}
	wantCreate := map[string]any{
		"name": "kiln", "head_sha": shaPR, "status": "in_progress",
		"details_url": "https://ci.example/github/octo-org/dune/commit/" + shaPR,
		"output":      map[string]any{"title": "1 running, 1 passed", "summary": forge.Summarise([]forge.Variant{{Name: "debian-13-5.3_amd64", State: forge.Running}, {Name: "(lint-fmt)", State: forge.Passed, Duration: 12 * time.Second}}).Summary},
	}
	if !reflect.DeepEqual(create, wantCreate) {
		t.Errorf("create body = %v\nwant %v", create, wantCreate)
	}
	if update["status"] != "completed" || update["conclusion"] != "failure" || update["name"] != "kiln" || update["completed_at"] == nil {
		t.Errorf("update body = %v", update)
	}
	out, _ := update["output"].(map[string]any)
	summary, _ := out["summary"].(string)
	if out["title"] != "1 failed, 1 passed" || !strings.Contains(summary, "Error: Unbound value prnt_endline") || !strings.Contains(summary, "| (lint-fmt) | passed | 12s |") {
		t.Errorf("update output = %v", out)
	}
	if _, err := c.SetCheckRun(ctx, repo, "main", CheckRun{Name: "kiln", Status: st}); err == nil {
		t.Error("a check run on a branch name (not a commit) was accepted")
	}
}

func TestRerunAndErrors(t *testing.T) {
	ctx := context.Background()
	f := newFakeAPI(t)
	c := newTestApp(t, f, AllowList{}).Installation(42)
	if err := c.RerunCheckSuite(ctx, Repo{"octo-org", "dune"}, 9); err != nil {
		t.Fatal(err)
	}
	if r := f.requests(); r[len(r)-1] != "POST /repos/octo-org/dune/check-suites/9/rerequest" {
		t.Fatalf("last request %q", r[len(r)-1])
	}
	_, err := c.Refs(ctx, Repo{"octo-org", "missing"}, time.Time{})
	if err == nil || !strings.Contains(err.Error(), "not found (404)") || !strings.Contains(err.Error(), "octo-org/missing") {
		t.Fatalf("refs of a missing repository: %v", err)
	}
	bad, err := NewTokenClient(f.srv.URL, "wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Repos(ctx); err == nil || !strings.Contains(err.Error(), "authentication failed (401)") {
		t.Fatalf("wrong token: %v", err)
	}
	good, _ := NewTokenClient(f.srv.URL, instToken, nil)
	if _, err := good.Repos(ctx); err != nil {
		t.Fatalf("personal token: %v", err)
	}
	if _, err := NewApp(AppConfig{AppID: 1, PrivateKey: []byte("not a key")}); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("bad key: %v", err)
	}
}
