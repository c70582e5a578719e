// Package github connects kiln to GitHub: a webhook handler that verifies and parses the
// events CI needs, and an API client for GitHub App installations (repositories, branches
// and open pull requests, one check run per commit, re-run requests).
package github

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var webhooksTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "kiln_github_webhooks_total",
	Help: "GitHub webhook deliveries received, by event and outcome.",
}, []string{"event", "outcome"})

// MaxPayload is the largest webhook body accepted (GitHub caps payloads at 25 MB).
const MaxPayload = 25 << 20

// ErrSignature is returned for a delivery whose X-Hub-Signature-256 is missing or wrong.
var ErrSignature = errors.New("bad webhook signature")

// VerifySignature checks header (the X-Hub-Signature-256 value, "sha256=<hex>") against
// the HMAC-SHA256 of body under secret, in constant time.
func VerifySignature(secret, body []byte, header string) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: no webhook secret is configured", ErrSignature)
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return fmt.Errorf("%w: X-Hub-Signature-256 header missing or not sha256=…", ErrSignature)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: X-Hub-Signature-256 is not hex", ErrSignature)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: X-Hub-Signature-256 does not match the payload", ErrSignature)
	}
	return nil
}

// Sign returns the X-Hub-Signature-256 value for body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// AllowList limits which accounts (users or organisations) kiln serves. The zero value
// (no names) allows every account.
type AllowList struct {
	names map[string]bool
}

// NewAllowList allows the accounts named (logins, compared without regard to case).
func NewAllowList(accounts ...string) AllowList {
	a := AllowList{names: map[string]bool{}}
	for _, n := range accounts {
		if n = strings.TrimSpace(n); n != "" {
			a.names[strings.ToLower(n)] = true
		}
	}
	return a
}

// Allows reports whether account may use kiln.
func (a AllowList) Allows(account string) bool {
	return len(a.names) == 0 || a.names[strings.ToLower(account)]
}

// Webhook is an http.Handler for GitHub webhook deliveries. It answers 401 to a delivery
// whose signature does not verify (and does nothing else with it), 400 to a payload it
// cannot parse, 202 to events it does not handle or from accounts not allowed, and calls
// Handle with every other event.
type Webhook struct {
	// Secret is the webhook secret configured on GitHub.
	Secret []byte
	// Allow limits the accounts whose events are handled.
	Allow AllowList
	// Handle receives each verified, parsed event of an allowed account. An error answers 500,
	// so GitHub shows the delivery as failed.
	Handle func(ctx context.Context, ev Event) error
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	kind := r.Header.Get("X-GitHub-Event")
	delivery := r.Header.Get("X-GitHub-Delivery")
	outcome := func(o string) { webhooksTotal.WithLabelValues(metricEvent(kind), o).Inc() }
	if r.Method != http.MethodPost {
		outcome("bad-request")
		http.Error(w, "webhooks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPayload+1))
	if err != nil {
		outcome("bad-request")
		http.Error(w, "reading the payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > MaxPayload {
		outcome("bad-request")
		http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := VerifySignature(h.Secret, body, r.Header.Get("X-Hub-Signature-256")); err != nil {
		outcome("forged")
		log.Warn("github webhook rejected", "delivery", delivery, "event", kind, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	ev, err := ParseEvent(kind, delivery, body)
	if errors.Is(err, ErrUnhandled) {
		outcome("ignored")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "event %q not handled\n", kind)
		return
	}
	if err != nil {
		outcome("bad-request")
		log.Warn("github webhook unreadable", "delivery", delivery, "event", kind, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, ok := ev.(*PingEvent); ok {
		outcome("ok")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if acct := ev.Meta().Account; !h.Allow.Allows(acct) {
		outcome("not-allowed")
		log.Info("github webhook from an account not allowed", "delivery", delivery, "account", acct)
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "account %q is not served here\n", acct)
		return
	}
	if h.Handle != nil {
		if err := h.Handle(r.Context(), ev); err != nil {
			outcome("error")
			log.Error("github webhook handling failed", "delivery", delivery, "event", kind, "err", err)
			http.Error(w, "handling the event failed", http.StatusInternalServerError)
			return
		}
	}
	outcome("ok")
	w.WriteHeader(http.StatusNoContent)
}

func metricEvent(kind string) string {
	switch kind {
	case "push", "pull_request", "check_run", "check_suite", "installation", "installation_repositories", "ping":
		return kind
	}
	return "other"
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
	case "check_run", "check_suite":
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

// ErrUnhandled is returned by ParseEvent for events and actions CI has no use for.
var ErrUnhandled = errors.New("event not handled")

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
