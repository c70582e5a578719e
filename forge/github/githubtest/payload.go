package githubtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func repository(owner, name string, private bool) map[string]any {
	return repositoryWithID(186853002, owner, name, private)
}

func repositoryWithID(id int64, owner, name string, private bool) map[string]any {
	return map[string]any{
		"id": id, "name": name, "full_name": owner + "/" + name, "private": private,
		"owner":     map[string]any{"login": owner, "id": 21031067, "type": "Organization"},
		"html_url":  "https://github.com/" + owner + "/" + name,
		"clone_url": "https://github.com/" + owner + "/" + name + ".git",
		"ssh_url":   "git@github.com:" + owner + "/" + name + ".git", "default_branch": "main",
	}
}

// PushPayload is a push event payload in GitHub's documented format (a deletion when
// after is all zeros).
func PushPayload(installation int64, owner, name, ref, before, after string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ref": ref, "before": before, "after": after, "created": false, "deleted": strings.Trim(after, "0") == "", "forced": false,
		"repository":   repository(owner, name, false),
		"pusher":       map[string]any{"name": "octocat", "email": "octocat@example.com"},
		"sender":       map[string]any{"login": "octocat", "id": 1, "type": "User"},
		"installation": map[string]any{"id": installation},
		"head_commit":  map[string]any{"id": after, "message": "change", "timestamp": time.Now().UTC().Format(time.RFC3339)},
	})
	return b
}

// PullRequestPayload is a pull_request event payload in GitHub's documented format
// (action "opened", "synchronize", "reopened", "closed", or "edited": the title is then
// "Change <number>").
func PullRequestPayload(installation int64, owner, name, action string, number int, headRef, headSHA, base string) []byte {
	state := "open"
	if action == "closed" {
		state = "closed"
	}
	b, _ := json.Marshal(map[string]any{
		"action": action, "number": number,
		"pull_request": map[string]any{
			"number": number, "state": state, "title": fmt.Sprintf("Change %d", number), "draft": false,
			"user":       map[string]any{"login": "octocat", "id": 1, "type": "User"},
			"updated_at": time.Now().UTC().Format(time.RFC3339),
			"head":       map[string]any{"ref": headRef, "sha": headSHA, "label": owner + ":" + headRef, "repo": repository(owner, name, false)},
			"base":       map[string]any{"ref": base, "label": owner + ":" + base, "repo": repository(owner, name, false)},
		},
		"repository":   repository(owner, name, false),
		"sender":       map[string]any{"login": "octocat", "id": 1, "type": "User"},
		"installation": map[string]any{"id": installation},
	})
	return b
}

// CheckSuiteRerequestedPayload is a check_suite "rerequested" payload in GitHub's format.
func CheckSuiteRerequestedPayload(installation int64, owner, name string, suiteID int64, headBranch, headSHA string) []byte {
	return checkSuitePayload("rerequested", installation, owner, name, suiteID, headBranch, headSHA)
}

// CheckSuiteRequestedPayload is a check_suite "requested" payload in GitHub's format,
// as GitHub sends an App with the Checks permission after a push.
func CheckSuiteRequestedPayload(installation int64, owner, name string, suiteID int64, headBranch, headSHA string) []byte {
	return checkSuitePayload("requested", installation, owner, name, suiteID, headBranch, headSHA)
}

// RepositoryPayload is a repository event payload in GitHub's format for the
// repository id now named owner/name: action "renamed" (from is the old name),
// "transferred" (from is the old owner), "archived", "unarchived" or "deleted".
func RepositoryPayload(installation, id int64, owner, name, action, from string) []byte {
	repo := repositoryWithID(id, owner, name, false)
	repo["archived"] = action == "archived"
	p := map[string]any{
		"action": action, "repository": repo,
		"sender":       map[string]any{"login": "octocat", "id": 1, "type": "User"},
		"installation": map[string]any{"id": installation},
	}
	switch action {
	case "renamed":
		p["changes"] = map[string]any{"repository": map[string]any{"name": map[string]any{"from": from}}}
	case "transferred":
		p["changes"] = map[string]any{"owner": map[string]any{"from": map[string]any{"organization": map[string]any{"login": from, "id": 2}}}}
	}
	b, _ := json.Marshal(p)
	return b
}

func checkSuitePayload(action string, installation int64, owner, name string, suiteID int64, headBranch, headSHA string) []byte {
	b, _ := json.Marshal(map[string]any{
		"action": action,
		"check_suite": map[string]any{"id": suiteID, "head_branch": headBranch, "head_sha": headSHA, "status": "queued",
			"conclusion": nil, "pull_requests": []any{}, "app": map[string]any{"id": 1}},
		"repository":   repository(owner, name, false),
		"sender":       map[string]any{"login": "octocat", "id": 1, "type": "User"},
		"installation": map[string]any{"id": installation},
	})
	return b
}

// Deliver POSTs payload to url as GitHub delivers event, signed with secret (an empty
// secret sends no signature), and returns the status code.
func Deliver(t testing.TB, url string, secret []byte, event string, payload []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/044aadd")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("%d", time.Now().UnixNano()))
	if len(secret) > 0 {
		mac := hmac.New(sha256.New, secret)
		mac.Write(payload)
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("deliver %s to %s: %v", event, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
