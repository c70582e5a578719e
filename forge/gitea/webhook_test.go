package gitea

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kiln-ci/kiln/forge/webhook"
)

// A pull_request payload in Gitea's format (abridged from what Gitea 1.26 sends).
const prPayload = `{
  "action": "synchronized",
  "number": 3,
  "pull_request": {
    "id": 12, "number": 3, "title": "Fix the build", "state": "open", "draft": false,
    "user": {"id": 2, "login": "alice", "username": "alice"},
    "updated_at": "2026-11-20T10:00:00Z",
    "head": {"label": "fix", "ref": "fix", "sha": "dddddddddddddddddddddddddddddddddddddddd", "repo_id": 5,
      "repo": {"id": 5, "name": "dune", "full_name": "alice/dune", "owner": {"login": "alice"}, "clone_url": "https://codeberg.org/alice/dune.git"}},
    "base": {"label": "main", "ref": "main", "sha": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "repo_id": 1,
      "repo": {"id": 1, "name": "dune", "full_name": "ocaml/dune", "owner": {"login": "ocaml"}}}
  },
  "repository": {"id": 1, "name": "dune", "full_name": "ocaml/dune", "owner": {"id": 1, "login": "ocaml", "username": "ocaml"},
    "private": false, "clone_url": "https://codeberg.org/ocaml/dune.git", "default_branch": "main"},
  "sender": {"id": 2, "login": "alice", "username": "alice"}
}`

func deliver(h http.Handler, headers map[string]string, body string) int {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader([]byte(body)))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

func TestForgejoAndGiteaHeaders(t *testing.T) {
	secret := []byte("s")
	var got []Event
	h := &Webhook{Secret: secret, Handle: func(_ context.Context, ev Event) error { got = append(got, ev); return nil }}
	sig := Sign(secret, []byte(prPayload))
	if code := deliver(h, map[string]string{"X-Forgejo-Event": "pull_request", "X-Forgejo-Signature": sig, "X-Forgejo-Delivery": "d1"}, prPayload); code != http.StatusNoContent {
		t.Fatalf("Forgejo delivery: %d", code)
	}
	if code := deliver(h, map[string]string{"X-Gitea-Event": "pull_request", "X-Gitea-Signature": sig, "X-Gitea-Event-Type": "pull_request_sync"}, prPayload); code != http.StatusNoContent {
		t.Fatalf("Gitea delivery: %d", code)
	}
	if len(got) != 2 {
		t.Fatalf("%d events handled", len(got))
	}
	pr := got[1].(*PullRequestEvent)
	if pr.Repo != (Repo{"ocaml", "dune"}) || pr.HeadRepo != (Repo{"alice", "dune"}) || pr.Number != 3 || pr.Ref() != "refs/pull/3/head" ||
		pr.Author != "alice" || pr.Meta().Type != "pull_request_sync" || pr.UpdatedAt.IsZero() || got[0].Meta().Delivery != "d1" {
		t.Errorf("event = %+v %+v", pr, pr.Meta())
	}
	// The GitHub-style header alone is not accepted: Gitea always sends its own.
	if code := deliver(h, map[string]string{"X-Gitea-Event": "pull_request", "X-Hub-Signature-256": "sha256=" + sig}, prPayload); code != http.StatusUnauthorized {
		t.Errorf("delivery with only X-Hub-Signature-256: %d, want 401", code)
	}
	tampered := strings.Replace(prPayload, "dddd", "eeee", 1)
	if code := deliver(h, map[string]string{"X-Gitea-Event": "pull_request", "X-Gitea-Signature": sig}, tampered); code != http.StatusUnauthorized || len(got) != 2 {
		t.Errorf("tampered delivery: %d", code)
	}
}

func TestOwnersAndUnhandled(t *testing.T) {
	secret := []byte("s")
	called := 0
	h := &Webhook{Secret: secret, Allow: webhook.NewAllowList("OCaml"), Handle: func(context.Context, Event) error { called++; return nil }}
	sig := Sign(secret, []byte(prPayload))
	if code := deliver(h, map[string]string{"X-Gitea-Event": "pull_request", "X-Gitea-Signature": sig}, prPayload); code != http.StatusNoContent || called != 1 {
		t.Fatalf("allowed owner: %d %d", code, called)
	}
	h.Allow = webhook.NewAllowList("someone")
	if code := deliver(h, map[string]string{"X-Gitea-Event": "pull_request", "X-Gitea-Signature": sig}, prPayload); code != http.StatusAccepted || called != 1 {
		t.Fatalf("owner not allowed: %d %d", code, called)
	}
	h.Allow = webhook.AllowList{}
	label := strings.Replace(prPayload, `"synchronized"`, `"label_updated"`, 1)
	if code := deliver(h, map[string]string{"X-Gitea-Event": "pull_request", "X-Gitea-Signature": Sign(secret, []byte(label))}, label); code != http.StatusAccepted || called != 1 {
		t.Fatalf("label_updated: %d %d", code, called)
	}
	if code := deliver(h, map[string]string{"X-Gitea-Event": "issues", "X-Gitea-Signature": Sign(secret, []byte("{}"))}, "{}"); code != http.StatusAccepted {
		t.Fatalf("issues: %d", code)
	}
	bad := `{"ref":"refs/heads/main","after":"nope","repository":{"full_name":"a/b"}}`
	if code := deliver(h, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": Sign(secret, []byte(bad))}, bad); code != http.StatusBadRequest {
		t.Fatalf("bad push: %d", code)
	}
	if _, err := ParseEvent("push", "", []byte(bad)); err == nil || !strings.Contains(err.Error(), "field after") {
		t.Errorf("error %v does not name the field", err)
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add("pull_request", []byte(prPayload))
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","repository":{"full_name":"a/b"}}`))
	f.Fuzz(func(t *testing.T, kind string, body []byte) {
		ev, err := ParseEvent(kind, "", body)
		if (err == nil) == (ev == nil) {
			t.Fatalf("event %v, error %v", ev, err)
		}
	})
}
