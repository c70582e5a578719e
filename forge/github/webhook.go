// Package github connects kiln to GitHub: a webhook handler that verifies and parses the
// events CI needs, and an API client for GitHub App installations (repositories, branches
// and open pull requests, one check run per commit, re-run requests).
package github

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/kiln-ci/kiln/forge/webhook"
)

// MaxPayload is the largest webhook body accepted (GitHub caps payloads at 25 MB).
const MaxPayload = webhook.DefaultMaxPayload

// ErrSignature is matched by the error for a delivery whose X-Hub-Signature-256 is
// missing or wrong.
var ErrSignature = webhook.ErrSignature

// VerifySignature checks header (the X-Hub-Signature-256 value, "sha256=<hex>") against
// the HMAC-SHA256 of body under secret, in constant time.
func VerifySignature(secret, body []byte, header string) error {
	return webhook.VerifyHMAC(secret, body, header, "sha256=", "X-Hub-Signature-256")
}

// Sign returns the X-Hub-Signature-256 value for body under secret.
func Sign(secret, body []byte) string { return webhook.SignHMAC(secret, body, "sha256=") }

// Webhook is an http.Handler for GitHub webhook deliveries (see webhook.Receiver for its
// answers): it calls Handle with every verified event of an allowed account; pings are
// answered without it.
type Webhook struct {
	// Secret is the webhook secret configured on GitHub.
	Secret []byte
	// Allow limits the accounts whose events are handled.
	Allow webhook.AllowList
	// Handle receives each verified, parsed event of an allowed account. An error answers 500,
	// so GitHub shows the delivery as failed.
	Handle func(ctx context.Context, ev Event) error
	// Shared are the metrics and the bound on deliveries read at once.
	Shared webhook.Shared
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := &webhook.Receiver[Event]{
		Forge: "github", Secret: h.Secret, Allow: h.Allow, Handle: h.Handle, Metrics: h.Shared.Metrics, Limit: h.Shared.Limit, Logger: h.Logger,
		Events: []string{"push", "pull_request", "check_run", "check_suite", "repository", "installation", "installation_repositories", "ping"},
		Describe: func(hd http.Header) webhook.Delivery {
			return webhook.Delivery{Event: hd.Get("X-GitHub-Event"), ID: hd.Get("X-GitHub-Delivery"), Signature: hd.Get("X-Hub-Signature-256")}
		},
		Signature: webhook.Signature{Prefix: "sha256=", Header: "X-Hub-Signature-256"},
		Parse: func(d webhook.Delivery, _ http.Header, body []byte) (Event, error) {
			ev, err := ParseEvent(d.Event, d.ID, body)
			if _, ping := ev.(*PingEvent); ping && err == nil {
				return nil, webhook.ErrNothingToDo
			}
			return ev, err
		},
		Account: func(ev Event) string { return ev.Meta().Account },
	}
	rc.ServeHTTP(w, r)
}

// ParseEvent parses a webhook payload of the given X-GitHub-Event type. Events CI does not
// use (and actions of handled events that change nothing for CI) give ErrUnhandled.
func ParseEvent(kind, delivery string, body []byte) (Event, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%s payload: %w", kind, err)
	}
	meta := Meta{Delivery: delivery, Event: kind, Action: p.Action}
	if p.Installation != nil {
		meta.Installation = p.Installation.ID
		if p.Installation.Account != nil {
			meta.Account = p.Installation.Account.Login
		}
	}
	var repo Repo
	if p.Repository != nil {
		r, err := p.Repository.repo("repository")
		if err != nil {
			return nil, fmt.Errorf("%s payload: %w", kind, err)
		}
		repo = r
		if meta.Account == "" {
			meta.Account = r.Owner
		}
	}
	need := func(field string, ok bool) error {
		if !ok {
			return fmt.Errorf("%s payload: field %s is missing", kind, field)
		}
		return nil
	}
	switch kind {
	case "ping":
		return &PingEvent{meta: meta, Zen: p.Zen}, nil
	case "push":
		if err := need("repository", p.Repository != nil); err != nil {
			return nil, err
		}
		if err := need("ref", p.Ref != ""); err != nil {
			return nil, err
		}
		if err := need("after", isSHA(p.After)); err != nil {
			return nil, err
		}
		return &PushEvent{meta: meta, Repo: repo, CloneURL: p.Repository.CloneURL, Private: p.Repository.Private,
			DefaultBranch: p.Repository.DefaultBranch, Ref: p.Ref, Before: p.Before, After: p.After, Deleted: p.Deleted}, nil
	case "pull_request":
		switch p.Action {
		case "opened", "reopened", "synchronize", "closed", "edited", "ready_for_review", "converted_to_draft":
		default:
			return nil, fmt.Errorf("%w: pull_request action %q", ErrUnhandled, p.Action)
		}
		pr := p.PullRequest
		if err := need("repository", p.Repository != nil); err != nil {
			return nil, err
		}
		if err := need("pull_request", pr != nil); err != nil {
			return nil, err
		}
		if err := need("pull_request.head.sha", isSHA(pr.Head.SHA)); err != nil {
			return nil, err
		}
		number := p.Number
		if number == 0 {
			number = pr.Number
		}
		if err := need("number", number > 0); err != nil {
			return nil, err
		}
		ev := &PullRequestEvent{meta: meta, Repo: repo, CloneURL: p.Repository.CloneURL, Private: p.Repository.Private,
			Number: number, Title: pr.Title, State: pr.State, Draft: pr.Draft, HeadSHA: pr.Head.SHA, HeadRef: pr.Head.Ref,
			BaseRef: pr.Base.Ref, BaseSHA: pr.Base.SHA, UpdatedAt: pr.UpdatedAt}
		if pr.User != nil {
			ev.Author = pr.User.Login
		}
		if pr.Head.Repo != nil {
			ev.HeadRepo, _ = pr.Head.Repo.repo("pull_request.head.repo")
		}
		return ev, nil
	case "repository":
		return parseRepository(p, meta, repo, need)
	case "check_run", "check_suite":
		if kind == "check_suite" && p.Action == "requested" {
			if err := need("check_suite", p.Repository != nil && p.CheckSuite != nil); err != nil {
				return nil, err
			}
			cs := p.CheckSuite
			if err := need("check_suite.head_sha", isSHA(cs.HeadSHA)); err != nil {
				return nil, err
			}
			return &CheckSuiteEvent{meta: meta, Repo: repo, CheckSuiteID: cs.ID, HeadSHA: cs.HeadSHA, HeadBranch: cs.HeadBranch}, nil
		}
		if p.Action != "rerequested" && p.Action != "requested_action" {
			return nil, fmt.Errorf("%w: %s action %q", ErrUnhandled, kind, p.Action)
		}
		if err := need("repository", p.Repository != nil); err != nil {
			return nil, err
		}
		ev := &RerunEvent{meta: meta, Repo: repo}
		if kind == "check_run" {
			cr := p.CheckRun
			if err := need("check_run", cr != nil); err != nil {
				return nil, err
			}
			ev.CheckRunID, ev.CheckName, ev.HeadSHA = cr.ID, cr.Name, cr.HeadSHA
			if cr.CheckSuite != nil {
				ev.CheckSuiteID, ev.HeadBranch = cr.CheckSuite.ID, cr.CheckSuite.HeadBranch
			}
			if p.RequestedAction != nil {
				ev.RequestedAction = p.RequestedAction.Identifier
			}
		} else {
			cs := p.CheckSuite
			if err := need("check_suite", cs != nil); err != nil {
				return nil, err
			}
			ev.CheckSuiteID, ev.HeadSHA, ev.HeadBranch = cs.ID, cs.HeadSHA, cs.HeadBranch
		}
		if err := need(kind+".head_sha", isSHA(ev.HeadSHA)); err != nil {
			return nil, err
		}
		return ev, nil
	case "installation", "installation_repositories":
		if err := need("installation.id", meta.Installation != 0); err != nil {
			return nil, err
		}
		if err := need("installation.account.login", meta.Account != ""); err != nil {
			return nil, err
		}
		ev := &InstallationEvent{meta: meta, Selection: p.RepositorySelection}
		if p.Installation.RepositorySelection != "" && ev.Selection == "" {
			ev.Selection = p.Installation.RepositorySelection
		}
		var added, removed []payloadRepo
		switch {
		case kind == "installation" && (p.Action == "created" || p.Action == "unsuspend" || p.Action == "new_permissions_accepted"):
			added = p.Repositories
		case kind == "installation" && (p.Action == "deleted" || p.Action == "suspend"):
			removed = p.Repositories
		case kind == "installation_repositories" && (p.Action == "added" || p.Action == "removed"):
			added, removed = p.RepositoriesAdded, p.RepositoriesRemoved
		default:
			return nil, fmt.Errorf("%w: %s action %q", ErrUnhandled, kind, p.Action)
		}
		for i, r := range added {
			rr, err := r.fromFullName(meta.Account)
			if err != nil {
				return nil, fmt.Errorf("%s payload: repositories_added[%d]: %w", kind, i, err)
			}
			ev.Added = append(ev.Added, rr)
		}
		for i, r := range removed {
			rr, err := r.fromFullName(meta.Account)
			if err != nil {
				return nil, fmt.Errorf("%s payload: repositories_removed[%d]: %w", kind, i, err)
			}
			ev.Removed = append(ev.Removed, rr)
		}
		return ev, nil
	}
	return nil, fmt.Errorf("%w: event %q", ErrUnhandled, kind)
}

// parseRepository reads the repository events that change what is built: renamed,
// transferred, archived, unarchived, deleted, and edited when the default branch changed.
func parseRepository(p payload, meta Meta, repo Repo, need func(string, bool) error) (Event, error) {
	switch p.Action {
	case "renamed", "transferred", "archived", "unarchived", "deleted":
	case "edited":
		if p.Changes == nil || p.Changes.DefaultBranch == nil {
			return nil, fmt.Errorf("%w: repository edited, default branch unchanged", ErrUnhandled)
		}
	default:
		return nil, fmt.Errorf("%w: repository action %q", ErrUnhandled, p.Action)
	}
	if err := need("repository", p.Repository != nil); err != nil {
		return nil, err
	}
	ev := &RepositoryEvent{meta: meta, Repo: repo, ID: p.Repository.ID, CloneURL: p.Repository.CloneURL, Archived: p.Repository.Archived}
	switch p.Action {
	case "renamed":
		ok := p.Changes != nil && p.Changes.Repository != nil && p.Changes.Repository.Name != nil && p.Changes.Repository.Name.From != ""
		if err := need("changes.repository.name.from", ok); err != nil {
			return nil, err
		}
		ev.From = Repo{Owner: repo.Owner, Name: p.Changes.Repository.Name.From}
	case "transferred":
		var from *payloadAccount
		if p.Changes != nil && p.Changes.Owner != nil {
			from = p.Changes.Owner.From.User
			if from == nil {
				from = p.Changes.Owner.From.Organization
			}
		}
		if err := need("changes.owner.from", from != nil && from.Login != ""); err != nil {
			return nil, err
		}
		ev.From = Repo{Owner: from.Login, Name: repo.Name}
	}
	return ev, nil
}

// ErrUnhandled is returned by ParseEvent for events and actions CI has no use for.
var ErrUnhandled = webhook.ErrUnhandled

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
