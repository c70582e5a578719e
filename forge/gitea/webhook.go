// Package gitea connects kiln to Gitea and Forgejo: a webhook handler that verifies
// deliveries (X-Gitea-Signature / X-Forgejo-Signature) and parses push and pull request
// events, and an API client that lists repositories, branches and pull requests and sets
// commit statuses.
package gitea

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/forge/webhook"
)

// MaxPayload is the largest webhook body accepted.
const MaxPayload = webhook.DefaultMaxPayload

// ErrSignature is matched by the error for a delivery whose signature is missing or
// wrong.
var ErrSignature = webhook.ErrSignature

// ErrUnhandled is returned by ParseEvent for events and actions CI has no use for.
var ErrUnhandled = webhook.ErrUnhandled

// Sign returns the signature Gitea sends for body under secret (hex HMAC-SHA256).
func Sign(secret, body []byte) string { return webhook.SignHMAC(secret, body, "") }

// VerifySignature checks sig (the X-Gitea-Signature or X-Forgejo-Signature value)
// against body under secret, in constant time.
func VerifySignature(secret, body []byte, sig string) error {
	return webhook.VerifyHMAC(secret, body, sig, "", "X-Gitea-Signature or X-Forgejo-Signature")
}

// Repo names a repository on a Gitea server.
type Repo struct {
	Owner string
	Name  string
}

func (r Repo) String() string { return r.Owner + "/" + r.Name }

// Event is a parsed delivery: *PushEvent or *PullRequestEvent.
type Event interface {
	Meta() Meta
}

// Meta is what every event carries.
type Meta struct {
	Delivery string // X-Gitea-Delivery
	Event    string // X-Gitea-Event
	Type     string // X-Gitea-Event-Type (e.g. "pull_request_sync")
	Action   string
}

// PushEvent: commits were pushed to a branch or tag (or it was deleted).
type PushEvent struct {
	meta          Meta
	Repo          Repo
	CloneURL      string
	Private       bool
	DefaultBranch string
	Ref           string
	Before, After string
	Deleted       bool // After is all zeros
}

// PullRequestEvent: a pull request was opened, updated (action "synchronized"), closed, …
type PullRequestEvent struct {
	meta      Meta
	Repo      Repo // the base repository
	CloneURL  string
	Private   bool
	Number    int
	Title     string
	State     string
	Draft     bool
	Author    string
	HeadSHA   string
	HeadRef   string
	HeadRepo  Repo
	BaseRef   string
	UpdatedAt time.Time
}

// Ref is the ref of the pull request's head in the base repository.
func (e *PullRequestEvent) Ref() string { return fmt.Sprintf("refs/pull/%d/head", e.Number) }

// Meta returns what every event carries.
func (e *PushEvent) Meta() Meta { return e.meta }

// Meta returns what every event carries.
func (e *PullRequestEvent) Meta() Meta { return e.meta }

type payloadUser struct {
	Login    string `json:"login"`
	Username string `json:"username"`
}

func (u *payloadUser) name() string {
	if u == nil {
		return ""
	}
	if u.Login != "" {
		return u.Login
	}
	return u.Username
}

type payloadRepo struct {
	Name          string       `json:"name"`
	FullName      string       `json:"full_name"`
	Owner         *payloadUser `json:"owner"`
	Private       bool         `json:"private"`
	CloneURL      string       `json:"clone_url"`
	DefaultBranch string       `json:"default_branch"`
}

func (r *payloadRepo) repo(field string) (Repo, error) {
	if r == nil {
		return Repo{}, fmt.Errorf("field %s is missing", field)
	}
	if owner, name, ok := strings.Cut(r.FullName, "/"); ok && owner != "" && name != "" && !strings.Contains(name, "/") {
		return Repo{owner, name}, nil
	}
	if o := r.Owner.name(); o != "" && r.Name != "" {
		return Repo{o, r.Name}, nil
	}
	return Repo{}, fmt.Errorf("field %s.full_name is missing or not owner/name", field)
}

type payloadBranch struct {
	Ref  string       `json:"ref"`
	SHA  string       `json:"sha"`
	Repo *payloadRepo `json:"repo"`
}

type payload struct {
	Action      string       `json:"action"`
	Ref         string       `json:"ref"`
	Before      string       `json:"before"`
	After       string       `json:"after"`
	Number      int          `json:"number"`
	Repository  *payloadRepo `json:"repository"`
	PullRequest *struct {
		Number    int           `json:"number"`
		Title     string        `json:"title"`
		State     string        `json:"state"`
		Draft     bool          `json:"draft"`
		User      *payloadUser  `json:"user"`
		UpdatedAt *time.Time    `json:"updated_at"`
		Head      payloadBranch `json:"head"`
		Base      payloadBranch `json:"base"`
	} `json:"pull_request"`
}

// ParseEvent parses a payload of the given X-Gitea-Event (or X-Forgejo-Event) type.
func ParseEvent(kind, delivery string, body []byte) (Event, error) {
	var p payload
	if kind != "push" && kind != "pull_request" {
		return nil, fmt.Errorf("%w: event %q", ErrUnhandled, kind)
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%s payload: %w", kind, err)
	}
	meta := Meta{Delivery: delivery, Event: kind, Action: p.Action}
	repo, err := p.Repository.repo("repository")
	if err != nil {
		return nil, fmt.Errorf("%s payload: %w", kind, err)
	}
	switch kind {
	case "push":
		if p.Ref == "" {
			return nil, fmt.Errorf("push payload: field ref is missing")
		}
		if !isSHA(p.After) {
			return nil, fmt.Errorf("push payload: field after is not a commit hash: %q", p.After)
		}
		return &PushEvent{meta: meta, Repo: repo, CloneURL: p.Repository.CloneURL, Private: p.Repository.Private,
			DefaultBranch: p.Repository.DefaultBranch, Ref: p.Ref, Before: p.Before, After: p.After,
			Deleted: strings.Trim(p.After, "0") == ""}, nil
	default:
		switch p.Action {
		case "opened", "reopened", "synchronized", "closed", "edited":
		default:
			return nil, fmt.Errorf("%w: pull_request action %q", ErrUnhandled, p.Action)
		}
		pr := p.PullRequest
		if pr == nil {
			return nil, fmt.Errorf("pull_request payload: field pull_request is missing")
		}
		if !isSHA(pr.Head.SHA) {
			return nil, fmt.Errorf("pull_request payload: field pull_request.head.sha is not a commit hash: %q", pr.Head.SHA)
		}
		n := p.Number
		if n == 0 {
			n = pr.Number
		}
		if n <= 0 {
			return nil, fmt.Errorf("pull_request payload: field number is missing")
		}
		ev := &PullRequestEvent{meta: meta, Repo: repo, CloneURL: p.Repository.CloneURL, Private: p.Repository.Private,
			Number: n, Title: pr.Title, State: pr.State, Draft: pr.Draft, Author: pr.User.name(),
			HeadSHA: pr.Head.SHA, HeadRef: pr.Head.Ref, BaseRef: pr.Base.Ref}
		if pr.UpdatedAt != nil {
			ev.UpdatedAt = *pr.UpdatedAt
		}
		if pr.Head.Repo != nil {
			ev.HeadRepo, _ = pr.Head.Repo.repo("pull_request.head.repo")
		}
		return ev, nil
	}
}

func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Webhook is an http.Handler for Gitea and Forgejo webhook deliveries (see
// webhook.Receiver for its answers): it calls Handle with every verified push and pull
// request event of a repository whose owner is allowed.
type Webhook struct {
	// Secret is the webhook's secret, as configured on the forge.
	Secret []byte
	// Allow limits the repository owners served.
	Allow webhook.AllowList
	// Handle receives each verified, parsed event; an error answers 500.
	Handle func(ctx context.Context, ev Event) error
	// Shared are the metrics and the bound on deliveries read at once.
	Shared webhook.Shared
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := &webhook.Receiver[Event]{
		Forge: "gitea", Secret: h.Secret, Allow: h.Allow, Handle: h.Handle, Metrics: h.Shared.Metrics, Limit: h.Shared.Limit, Logger: h.Logger,
		Events: []string{"push", "pull_request"},
		Describe: func(hd http.Header) webhook.Delivery {
			return webhook.Delivery{Event: firstHeader(hd, "X-Forgejo-Event", "X-Gitea-Event"),
				ID: firstHeader(hd, "X-Forgejo-Delivery", "X-Gitea-Delivery"), Signature: firstHeader(hd, "X-Forgejo-Signature", "X-Gitea-Signature")}
		},
		Signature: webhook.Signature{Header: "X-Gitea-Signature or X-Forgejo-Signature"},
		Parse: func(d webhook.Delivery, hd http.Header, body []byte) (Event, error) {
			ev, err := ParseEvent(d.Event, d.ID, body)
			if pe, ok := ev.(*PullRequestEvent); ok {
				pe.meta.Type = hd.Get("X-Gitea-Event-Type")
			}
			return ev, err
		},
		Account: func(ev Event) string { return repoOf(ev).Owner },
	}
	rc.ServeHTTP(w, r)
}

func repoOf(ev Event) Repo {
	switch e := ev.(type) {
	case *PushEvent:
		return e.Repo
	case *PullRequestEvent:
		return e.Repo
	}
	return Repo{}
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}
