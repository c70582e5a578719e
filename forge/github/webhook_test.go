package github

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/forge/github/githubtest"
	"github.com/kiln-ci/kiln/forge/webhook"
)

var secret = []byte("It's a Secret to Everybody")

// TestSignatureOfGitHubsExample checks against the example in GitHub's documentation
// on validating webhook deliveries.
func TestSignatureOfGitHubsExample(t *testing.T) {
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := Sign(secret, []byte("Hello, World!")); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	if err := VerifySignature(secret, []byte("Hello, World!"), want); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha1=757107ea", "sha256=zz", "sha256=" + strings.Repeat("0", 64), want[:len(want)-2]} {
		if err := VerifySignature(secret, []byte("Hello, World!"), bad); !errors.Is(err, ErrSignature) {
			t.Errorf("signature %q: err = %v, want ErrSignature", bad, err)
		}
	}
	if err := VerifySignature(nil, []byte("x"), Sign(nil, []byte("x"))); err == nil {
		t.Error("an empty secret verified a delivery")
	}
}

type delivery struct {
	event, file string
	sig         func(body []byte) string
}

func post(t *testing.T, h http.Handler, event string, body []byte, sig string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func payloadFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWebhookEvents(t *testing.T) {
	var got []Event
	h := &Webhook{Secret: secret, Handle: func(_ context.Context, ev Event) error { got = append(got, ev); return nil }}

	body := payloadFile(t, "push.json")
	if w := post(t, h, "push", body, Sign(secret, body)); w.Code != http.StatusNoContent {
		t.Fatalf("push: %d %s", w.Code, w.Body)
	}
	push := got[0].(*PushEvent)
	if push.Repo != (Repo{"Codertocat", "Hello-World"}) || push.Ref != "refs/heads/main" ||
		push.After != "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c" || push.CloneURL != "https://github.com/Codertocat/Hello-World.git" ||
		push.Meta().Installation != 2311213 || push.Meta().Account != "Codertocat" || push.Deleted {
		t.Errorf("push event = %+v %+v", push, push.Meta())
	}

	body = payloadFile(t, "pull_request.json")
	if w := post(t, h, "pull_request", body, Sign(secret, body)); w.Code != http.StatusNoContent {
		t.Fatalf("pull_request: %d %s", w.Code, w.Body)
	}
	pr := got[1].(*PullRequestEvent)
	if pr.Number != 2 || pr.HeadSHA != "ec26c3e57ca3a959ca5aad62de7213c562f8c821" || pr.BaseRef != "master" ||
		pr.HeadRef != "changes" || pr.Ref() != "refs/pull/2/head" || pr.Meta().Action != "synchronize" ||
		pr.Author != "Codertocat" || pr.UpdatedAt.IsZero() || pr.State != "open" {
		t.Errorf("pull_request event = %+v", pr)
	}

	body = payloadFile(t, "check_run_rerequested.json")
	if w := post(t, h, "check_run", body, Sign(secret, body)); w.Code != http.StatusNoContent {
		t.Fatalf("check_run: %d %s", w.Code, w.Body)
	}
	run := got[2].(*RerunEvent)
	if run.CheckRunID != 128620228 || run.CheckSuiteID != 118578147 || run.CheckName != "kiln" ||
		run.HeadSHA != "ec26c3e57ca3a959ca5aad62de7213c562f8c821" || run.HeadBranch != "changes" {
		t.Errorf("check_run event = %+v", run)
	}

	body = payloadFile(t, "check_suite_rerequested.json")
	if w := post(t, h, "check_suite", body, Sign(secret, body)); w.Code != http.StatusNoContent {
		t.Fatalf("check_suite: %d %s", w.Code, w.Body)
	}
	suite := got[3].(*RerunEvent)
	if suite.CheckRunID != 0 || suite.CheckSuiteID != 118578147 || suite.HeadSHA != "ec26c3e57ca3a959ca5aad62de7213c562f8c821" {
		t.Errorf("check_suite event = %+v", suite)
	}

	body = payloadFile(t, "installation_created.json")
	if w := post(t, h, "installation", body, Sign(secret, body)); w.Code != http.StatusNoContent {
		t.Fatalf("installation: %d %s", w.Code, w.Body)
	}
	inst := got[4].(*InstallationEvent)
	if inst.Meta().Account != "octo-org" || inst.Meta().Installation != 2311213 || len(inst.Added) != 2 ||
		inst.Added[1] != (Repo{"octo-org", "dune"}) || len(inst.Removed) != 0 || inst.Selection != "selected" {
		t.Errorf("installation event = %+v", inst)
	}

	body = payloadFile(t, "installation_repositories_added.json")
	if w := post(t, h, "installation_repositories", body, Sign(secret, body)); w.Code != http.StatusNoContent {
		t.Fatalf("installation_repositories: %d %s", w.Code, w.Body)
	}
	ir := got[5].(*InstallationEvent)
	if len(ir.Added) != 1 || ir.Added[0] != (Repo{"octo-org", "Space"}) || len(ir.Removed) != 1 || ir.Removed[0].Name != "Hello-World" {
		t.Errorf("installation_repositories event = %+v", ir)
	}

	// Unhandled events and actions are acknowledged and not passed on.
	n := len(got)
	body = []byte(`{"action":"labeled","number":2,"pull_request":{},"repository":{"full_name":"a/b"}}`)
	if w := post(t, h, "pull_request", body, Sign(secret, body)); w.Code != http.StatusAccepted {
		t.Errorf("labeled pull_request: %d, want 202", w.Code)
	}
	body = []byte(`{"action":"created"}`)
	if w := post(t, h, "star", body, Sign(secret, body)); w.Code != http.StatusAccepted {
		t.Errorf("star: %d, want 202", w.Code)
	}
	if len(got) != n {
		t.Errorf("unhandled events reached the handler: %v", got[n:])
	}
}

func TestForgedWebhooksChangeNothing(t *testing.T) {
	called := 0
	h := &Webhook{Secret: secret, Handle: func(context.Context, Event) error { called++; return nil }}
	body := payloadFile(t, "push.json")
	tampered := bytes.Replace(body, []byte("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"), []byte("1111111111111111111111111111111111111111"), 1)
	for name, tc := range map[string]struct {
		body []byte
		sig  string
	}{
		"no signature":     {body, ""},
		"wrong secret":     {body, Sign([]byte("guess"), body)},
		"tampered payload": {tampered, Sign(secret, body)},
		"sha1 only":        {body, "sha1=" + strings.Repeat("a", 40)},
	} {
		w := post(t, h, "push", tc.body, tc.sig)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, w.Code)
		}
	}
	if called != 0 {
		t.Fatalf("forged deliveries reached the handler %d times", called)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed || called != 0 {
		t.Errorf("GET: %d", w.Code)
	}
}

func TestWebhookAllowList(t *testing.T) {
	var got []Event
	h := &Webhook{Secret: secret, Allow: webhook.NewAllowList("octo-org"), Handle: func(_ context.Context, ev Event) error { got = append(got, ev); return nil }}
	body := payloadFile(t, "push.json") // Codertocat's repository
	if w := post(t, h, "push", body, Sign(secret, body)); w.Code != http.StatusAccepted || len(got) != 0 {
		t.Fatalf("push from an account not allowed: %d, handled %d", w.Code, len(got))
	}
	body = payloadFile(t, "installation_created.json")
	if w := post(t, h, "installation", body, Sign(secret, body)); w.Code != http.StatusNoContent || len(got) != 1 {
		t.Fatalf("installation on an allowed account (case differs): %d, handled %d", w.Code, len(got))
	}
	ping := []byte(`{"zen":"Design for failure.","hook_id":1,"hook":{"type":"App","events":["push"]}}`)
	if w := post(t, h, "ping", ping, Sign(secret, ping)); w.Code != http.StatusNoContent || len(got) != 1 {
		t.Fatalf("ping: %d, handled %d", w.Code, len(got))
	}
	if !webhook.NewAllowList().Allows("anyone") || webhook.NewAllowList("a").Allows("b") || !webhook.NewAllowList("Octo-Org").Allows("octo-org") {
		t.Error("AllowList")
	}
}

func TestWebhookBadPayloads(t *testing.T) {
	h := &Webhook{Secret: secret, Handle: func(context.Context, Event) error { return errors.New("handler must not run") }}
	for name, tc := range map[string]struct{ event, body, want string }{
		"not json":       {"push", `{"ref":`, "push payload"},
		"push no after":  {"push", `{"ref":"refs/heads/x","repository":{"full_name":"a/b"}}`, "field after"},
		"pr no sha":      {"pull_request", `{"action":"opened","number":1,"repository":{"full_name":"a/b"},"pull_request":{"head":{}}}`, "pull_request.head.sha"},
		"bad repo":       {"push", `{"ref":"refs/heads/x","after":"` + strings.Repeat("a", 40) + `","repository":{"full_name":"nobody"}}`, "repository.full_name"},
		"install no acc": {"installation", `{"action":"created","installation":{"id":3}}`, "installation.account.login"},
	} {
		w := post(t, h, tc.event, []byte(tc.body), Sign(secret, []byte(tc.body)))
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %q, want 400 naming %q", name, w.Code, w.Body, tc.want)
		}
	}
}

func TestWebhookHandlerErrorIs500(t *testing.T) {
	h := &Webhook{Secret: secret, Handle: func(context.Context, Event) error { return errors.New("store down") }}
	body := payloadFile(t, "push.json")
	if w := post(t, h, "push", body, Sign(secret, body)); w.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", w.Code)
	}
}

func FuzzParseEvent(f *testing.F) {
	for _, name := range []string{"push", "pull_request", "check_run_rerequested", "check_suite_rerequested", "installation_created", "installation_repositories_added"} {
		b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			f.Fatal(err)
		}
		kind := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_rerequested"), "_created"), "_added")
		f.Add(kind, b)
	}
	f.Fuzz(func(t *testing.T, kind string, body []byte) {
		ev, err := ParseEvent(kind, "d", body)
		if err == nil && ev == nil {
			t.Fatal("no event and no error")
		}
	})
}

func TestGeneratedPayloadsParse(t *testing.T) {
	var got []Event
	srv := httptest.NewServer(&Webhook{Secret: secret, Handle: func(_ context.Context, ev Event) error { got = append(got, ev); return nil }})
	defer srv.Close()
	sha := strings.Repeat("1", 40)
	if code := githubtest.Deliver(t, srv.URL, secret, "push", githubtest.PushPayload(5, "o", "r", "refs/heads/main", strings.Repeat("0", 40), sha)); code != http.StatusNoContent {
		t.Fatalf("push: %d", code)
	}
	if code := githubtest.Deliver(t, srv.URL, secret, "pull_request", githubtest.PullRequestPayload(5, "o", "r", "opened", 4, "fix", sha, "main")); code != http.StatusNoContent {
		t.Fatalf("pull_request: %d", code)
	}
	if code := githubtest.Deliver(t, srv.URL, secret, "check_suite", githubtest.CheckSuiteRerequestedPayload(5, "o", "r", 77, "main", sha)); code != http.StatusNoContent {
		t.Fatalf("check_suite: %d", code)
	}
	if code := githubtest.Deliver(t, srv.URL, []byte("forged"), "push", githubtest.PushPayload(5, "o", "r", "refs/heads/main", sha, sha)); code != http.StatusUnauthorized {
		t.Fatalf("forged push: %d", code)
	}
	if len(got) != 3 || got[0].(*PushEvent).After != sha || got[1].(*PullRequestEvent).Number != 4 || got[2].(*RerunEvent).CheckSuiteID != 77 || got[0].Meta().Installation != 5 {
		t.Fatalf("events = %+v", got)
	}
}

// The events that change what is followed without a push: a repository renamed,
// transferred, archived or deleted, and a check suite GitHub requests.
func TestRepositoryAndCheckSuiteEvents(t *testing.T) {
	sha := strings.Repeat("2", 40)
	for _, tc := range []struct {
		name, event string
		payload     []byte
		want        func(Event) bool
		unhandled   bool
	}{
		{"renamed", "repository", githubtest.RepositoryPayload(5, 99, "o", "new", "renamed", "old"), func(ev Event) bool {
			e, ok := ev.(*RepositoryEvent)
			return ok && e.Repo == Repo{"o", "new"} && e.From == Repo{"o", "old"} && e.ID == 99 && !e.Gone()
		}, false},
		{"transferred", "repository", githubtest.RepositoryPayload(5, 99, "o2", "r", "transferred", "o"), func(ev Event) bool {
			e, ok := ev.(*RepositoryEvent)
			return ok && e.Repo == Repo{"o2", "r"} && e.From == Repo{"o", "r"} && e.ID == 99 && !e.Gone()
		}, false},
		{"archived", "repository", githubtest.RepositoryPayload(5, 99, "o", "r", "archived", ""), func(ev Event) bool {
			e, ok := ev.(*RepositoryEvent)
			return ok && e.Repo == Repo{"o", "r"} && e.Archived && e.Gone()
		}, false},
		{"deleted", "repository", githubtest.RepositoryPayload(5, 99, "o", "r", "deleted", ""), func(ev Event) bool {
			e, ok := ev.(*RepositoryEvent)
			return ok && e.Gone() && e.From == Repo{}
		}, false},
		{"unarchived", "repository", githubtest.RepositoryPayload(5, 99, "o", "r", "unarchived", ""), func(ev Event) bool {
			e, ok := ev.(*RepositoryEvent)
			return ok && !e.Gone()
		}, false},
		{"description edited", "repository", githubtest.RepositoryPayload(5, 99, "o", "r", "edited", ""), nil, true},
		{"publicized", "repository", githubtest.RepositoryPayload(5, 99, "o", "r", "publicized", ""), nil, true},
		{"check suite requested", "check_suite", githubtest.CheckSuiteRequestedPayload(5, "o", "r", 77, "main", sha), func(ev Event) bool {
			e, ok := ev.(*CheckSuiteEvent)
			return ok && e.Repo == Repo{"o", "r"} && e.HeadSHA == sha && e.HeadBranch == "main" && e.CheckSuiteID == 77 && e.Meta().Installation == 5
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := ParseEvent(tc.event, "d1", tc.payload)
			if tc.unhandled {
				if !errors.Is(err, ErrUnhandled) {
					t.Fatalf("got %+v, %v; want ErrUnhandled", ev, err)
				}
				return
			}
			if err != nil || !tc.want(ev) {
				t.Fatalf("got %+v, %v", ev, err)
			}
		})
	}
	t.Run("renamed without the old name", func(t *testing.T) {
		body := bytes.Replace(githubtest.RepositoryPayload(5, 99, "o", "new", "renamed", "old"), []byte(`"changes"`), []byte(`"changed"`), 1)
		if _, err := ParseEvent("repository", "d1", body); err == nil || !strings.Contains(err.Error(), "changes.repository.name.from") {
			t.Fatalf("err = %v, want one naming changes.repository.name.from", err)
		}
	})
}

// Which events can move a watched head: tags and pull request edits cannot.
func TestEventsThatMoveHeads(t *testing.T) {
	sha := strings.Repeat("3", 40)
	for _, tc := range []struct {
		name    string
		event   string
		payload []byte
		moves   bool
	}{
		{"branch push", "push", githubtest.PushPayload(5, "o", "r", "refs/heads/main", sha, sha), true},
		{"branch deleted", "push", githubtest.PushPayload(5, "o", "r", "refs/heads/old", sha, strings.Repeat("0", 40)), true},
		{"tag push", "push", githubtest.PushPayload(5, "o", "r", "refs/tags/v1.0", sha, sha), false},
		{"pull request opened", "pull_request", githubtest.PullRequestPayload(5, "o", "r", "opened", 4, "fix", sha, "main"), true},
		{"pull request synchronize", "pull_request", githubtest.PullRequestPayload(5, "o", "r", "synchronize", 4, "fix", sha, "main"), true},
		{"pull request reopened", "pull_request", githubtest.PullRequestPayload(5, "o", "r", "reopened", 4, "fix", sha, "main"), true},
		{"pull request closed", "pull_request", githubtest.PullRequestPayload(5, "o", "r", "closed", 4, "fix", sha, "main"), true},
		{"pull request title edited", "pull_request", githubtest.PullRequestPayload(5, "o", "r", "edited", 4, "fix", sha, "main"), false},
		{"pull request ready for review", "pull_request", githubtest.PullRequestPayload(5, "o", "r", "ready_for_review", 4, "fix", sha, "main"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := ParseEvent(tc.event, "d1", tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			var moves bool
			switch e := ev.(type) {
			case *PushEvent:
				_, moves = e.Branch()
			case *PullRequestEvent:
				moves = e.MovesHead()
			}
			if moves != tc.moves {
				t.Fatalf("moves a head = %v, want %v", moves, tc.moves)
			}
		})
	}
}
