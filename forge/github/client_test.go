package github

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/github/githubtest"
	"github.com/kiln-ci/kiln/forge/webhook"
)

const (
	appID      = 123
	shaMain    = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	shaOld     = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	shaNew     = "cccccccccccccccccccccccccccccccccccccccc"
	shaPR      = "dddddddddddddddddddddddddddddddddddddddd"
	shaStalePR = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
)

func day(s string) time.Time {
	d, _ := time.Parse(time.DateOnly, s)
	return d
}

func newStandIn(t *testing.T) *githubtest.API {
	api := githubtest.New(t, appID)
	api.AddInstallation(42, "octo-org")
	api.AddInstallation(43, "someone-else")
	api.SetRepo(githubtest.Repo{Owner: "octo-org", Name: "dune", Private: true, Installation: 42,
		Branches: map[string]string{"main": shaMain, "old": shaOld, "new": shaNew},
		PRs: []githubtest.PR{
			{Number: 7, Title: "Fix the build", HeadSHA: shaPR, HeadRef: "fix", Base: "main", Author: "alice", Labels: []string{"benchmark", "ci"}},
			{Number: 3, Title: "Forgotten", HeadSHA: shaStalePR, HeadRef: "old-idea", Base: "main", Author: "bob"},
		},
		CommitDates: map[string]time.Time{shaMain: day("2020-01-01"), shaOld: day("2021-01-01"), shaNew: day("2026-11-01"),
			shaPR: day("2026-11-20"), shaStalePR: day("2022-06-01")},
	})
	return api
}

func newTestApp(t *testing.T, api *githubtest.API, allow webhook.AllowList) *App {
	app, err := NewApp(AppConfig{AppID: appID, PrivateKey: api.PrivateKeyPEM(), API: api.APIURL(), Allow: allow})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func paths(reqs []githubtest.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.String())
	}
	return out
}

func TestInstallationsReposAndRefs(t *testing.T) {
	ctx := context.Background()
	api := newStandIn(t)
	app := newTestApp(t, api, webhook.NewAllowList("octo-org"))
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
	cutoff := day("2026-01-01")
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
	if pr := refs[2]; pr.PR != 7 || pr.Title != "Fix the build" || pr.Base != "main" || pr.Author != "alice" || !pr.Date.Equal(day("2026-11-20")) ||
		!reflect.DeepEqual(pr.Labels, []string{"benchmark", "ci"}) {
		t.Errorf("PR ref = %+v", pr)
	}
	tok, err := c.Token(ctx)
	if err != nil || tok != githubtest.TokenFor(42) {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	creds, ok, err := c.Credentials("https://github.com")(ctx, "https://github.com/octo-org/dune.git")
	if err != nil || !ok || creds.Token != tok {
		t.Fatalf("credentials for github.com: %+v %v %v", creds, ok, err)
	}
	if _, ok, _ := c.Credentials("https://github.com")(ctx, "https://evil.example/octo-org/dune.git"); ok {
		t.Fatal("the token was offered to another host")
	}

	// Commit dates are asked once per commit; the token once per installation.
	before := len(api.Requests())
	if _, err := c.Refs(ctx, Repo{"octo-org", "dune"}, cutoff); err != nil {
		t.Fatal(err)
	}
	again := api.Requests()[before:]
	want := []string{
		"GET /repos/octo-org/dune",
		"GET /repos/octo-org/dune/branches?per_page=100",
		"GET /repos/octo-org/dune/pulls?per_page=100&state=open",
	}
	if got := paths(again); !reflect.DeepEqual(got, want) {
		t.Fatalf("second Refs sent %q, want %q", got, want)
	}
	tokens := 0
	for _, r := range api.Requests() {
		switch {
		case r.String() == "POST /app/installations/42/access_tokens":
			tokens++
		case strings.HasPrefix(r.Path, "/app/"):
			if !strings.HasPrefix(r.Auth, "Bearer ") {
				t.Errorf("%s sent with %q, want the App's JWT", r, r.Auth)
			}
		default:
			if r.Auth != "token "+tok && r.Auth != "Bearer "+tok {
				t.Errorf("%s sent with %q, want the installation token", r, r.Auth)
			}
		}
	}
	if tokens != 1 {
		t.Errorf("installation token requested %d times, want once", tokens)
	}
}

func TestOneCheckRunPerCommit(t *testing.T) {
	ctx := context.Background()
	api := newStandIn(t)
	c := newTestApp(t, api, webhook.AllowList{}).Installation(42)
	repo := Repo{"octo-org", "dune"}
	variants := []forge.Variant{
		{Name: "debian-13-5.3_amd64", State: forge.Running},
		{Name: "(lint-fmt)", State: forge.Passed, Duration: 12 * time.Second},
	}
	running := forge.Summarise(variants)
	details := "https://ci.example/github/octo-org/dune/commit/" + shaPR
	id, err := c.SetCheckRun(ctx, repo, shaPR, CheckRun{Name: "kiln", Status: running, DetailsURL: details})
	if err != nil {
		t.Fatal(err)
	}
	variants[0] = forge.Variant{Name: "debian-13-5.3_amd64", State: forge.Failed,
		FailingLines: []string{"File \"src/main.ml\", line 1:", "Error: Unbound value prnt_endline"}}
	failed := forge.Summarise(variants)
	if id2, err := c.SetCheckRun(ctx, repo, shaPR, CheckRun{Name: "kiln", Status: failed}); err != nil || id2 != id {
		t.Fatalf("second update: run %d, %v; first was %d", id2, err, id)
	}
	// A new client (a restart) finds the existing run instead of creating another.
	c2 := newTestApp(t, api, webhook.AllowList{}).Installation(42)
	if id3, err := c2.SetCheckRun(ctx, repo, shaPR, CheckRun{Name: "kiln", Status: failed}); err != nil || id3 != id {
		t.Fatalf("after restart: id %d, %v; want %d", id3, err, id)
	}

	var checkReqs []githubtest.Request
	for _, r := range api.Requests() {
		if strings.Contains(r.Path, "check-run") {
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
	if got := paths(checkReqs); !reflect.DeepEqual(got, want) {
		t.Fatalf("check run requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantCreate := map[string]any{
		"name": "kiln", "head_sha": shaPR, "status": "in_progress", "details_url": details,
		"output": map[string]any{"title": "1 running, 1 passed", "summary": running.Summary},
	}
	if got := checkReqs[1].JSON(); !reflect.DeepEqual(got, wantCreate) {
		t.Errorf("create body = %v\nwant %v", got, wantCreate)
	}
	update := checkReqs[2].JSON()
	completed, _ := time.Parse(time.RFC3339, update["completed_at"].(string))
	delete(update, "completed_at")
	wantUpdate := map[string]any{
		"name": "kiln", "status": "completed", "conclusion": "failure",
		"output": map[string]any{"title": "1 failed, 1 passed", "summary": failed.Summary},
	}
	if !reflect.DeepEqual(update, wantUpdate) || time.Since(completed) > time.Hour {
		t.Errorf("update body = %v (completed_at %v)\nwant %v", update, completed, wantUpdate)
	}
	runs := api.CheckRuns("octo-org/dune", shaPR)
	if len(runs) != 1 || runs[0].Conclusion != "failure" || runs[0].Updates != 2 ||
		!strings.Contains(runs[0].Summary, "Error: Unbound value prnt_endline") || !strings.Contains(runs[0].Summary, "| (lint-fmt) | passed | 12s |") {
		t.Errorf("check runs on the commit = %+v", runs)
	}
	infra := forge.Status{State: forge.Error, Title: "1 error"}
	if _, err := c.SetCheckRun(ctx, repo, shaNew, CheckRun{Name: "kiln", Status: infra, DetailsURL: details}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetCheckRun(ctx, repo, shaOld, CheckRun{Name: "kiln", Status: infra}); err != nil {
		t.Fatal(err)
	}
	if r := api.CheckRuns("octo-org/dune", shaNew); len(r) != 1 || r[0].Conclusion != "action_required" {
		t.Errorf("infrastructure error with a details URL: %+v", r)
	}
	if r := api.CheckRuns("octo-org/dune", shaOld); len(r) != 1 || r[0].Conclusion != "failure" {
		t.Errorf("infrastructure error without a details URL: %+v", r)
	}
	if _, err := c.SetCheckRun(ctx, repo, "main", CheckRun{Name: "kiln", Status: failed}); err == nil {
		t.Error("a check run on a branch name (not a commit) was accepted")
	}
}

func TestRerunAndErrors(t *testing.T) {
	ctx := context.Background()
	api := newStandIn(t)
	c := newTestApp(t, api, webhook.AllowList{}).Installation(42)
	if err := c.RerunCheckSuite(ctx, Repo{"octo-org", "dune"}, 9); err != nil {
		t.Fatal(err)
	}
	if got := api.Rerequested(); !reflect.DeepEqual(got, []string{"octo-org/dune#9"}) {
		t.Fatalf("re-run suites = %v", got)
	}
	_, err := c.Refs(ctx, Repo{"octo-org", "missing"}, time.Time{})
	if err == nil || !strings.Contains(err.Error(), "not found (404)") || !strings.Contains(err.Error(), "octo-org/missing") {
		t.Fatalf("refs of a missing repository: %v", err)
	}
	bad, err := NewTokenClient(api.APIURL(), "wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Repos(ctx); err == nil || !strings.Contains(err.Error(), "authentication failed (401)") {
		t.Fatalf("wrong token: %v", err)
	}
	good, _ := NewTokenClient(api.APIURL(), githubtest.TokenFor(42), nil)
	if _, err := good.Repos(ctx); err != nil {
		t.Fatalf("personal token: %v", err)
	}
	if _, err := NewApp(AppConfig{AppID: 1, PrivateKey: []byte("not a key")}); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("bad key: %v", err)
	}
	// An App whose key GitHub does not know cannot list installations.
	other := githubtest.New(t, appID)
	app, _ := NewApp(AppConfig{AppID: appID, PrivateKey: other.PrivateKeyPEM(), API: api.APIURL()})
	if _, err := app.Installations(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong App key: %v", err)
	}
}

// Once GitHub says the rate limit is spent, the client sends nothing until it resets,
// and then goes on.
func TestRateLimitedClientWaitsForReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit func(api *githubtest.API, reset time.Time)
		// sent is how many requests reach GitHub before the client stops.
		sent int
	}{
		{"limit spent before the first request", func(api *githubtest.API, reset time.Time) { api.LimitInstallation(42, 0, reset) }, 1},
		{"last request of the limit", func(api *githubtest.API, reset time.Time) { api.LimitInstallation(42, 1, reset) }, 1},
		{"secondary limit with Retry-After", func(api *githubtest.API, _ time.Time) { api.ThrottleInstallation(42, time.Second) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			api := newStandIn(t)
			c := newTestApp(t, api, webhook.AllowList{}).Installation(42)
			if _, err := c.Token(ctx); err != nil {
				t.Fatal(err)
			}
			repoCalls := func() int { return len(reposRequests(api.Requests())) }
			reset := time.Now().Truncate(time.Second).Add(2 * time.Second)
			tc.limit(api, reset)
			var rl *RateLimitError
			var err error
			for i := 0; i < 3 && !errors.As(err, &rl); i++ {
				_, err = c.Repos(ctx)
			}
			if !errors.As(err, &rl) {
				t.Fatalf("a spent limit gave %v, want a RateLimitError", err)
			}
			if got := repoCalls(); got != tc.sent {
				t.Fatalf("%d requests reached GitHub before the limit stopped the client, want %d", got, tc.sent)
			}
			if until := c.RateLimitedUntil(); !until.Equal(rl.Until) || !until.After(time.Now()) {
				t.Fatalf("RateLimitedUntil = %v, the error says %v", until, rl.Until)
			}
			for range 3 {
				if _, err := c.Refs(ctx, Repo{"octo-org", "dune"}, time.Time{}); !errors.As(err, &rl) {
					t.Fatalf("while limited: %v, want a RateLimitError", err)
				}
			}
			if got := repoCalls(); got != tc.sent {
				t.Fatalf("%d requests reached GitHub while the limit was spent, want none after the first %d", got, tc.sent)
			}
			time.Sleep(time.Until(rl.Until))
			if _, err := c.Repos(ctx); err != nil {
				t.Fatalf("after the reset: %v", err)
			}
			if got := repoCalls(); got != tc.sent+1 {
				t.Fatalf("%d requests after the reset, want %d", got, tc.sent+1)
			}
		})
	}
}

// reposRequests are the requests of an installation's token (not the App's).
func reposRequests(reqs []githubtest.Request) []githubtest.Request {
	var out []githubtest.Request
	for _, r := range reqs {
		if !strings.HasPrefix(r.Path, "/app/") {
			out = append(out, r)
		}
	}
	return out
}
