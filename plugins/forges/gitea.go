package forges

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/git"
)

// Gitea follows the repositories a Gitea or Forgejo account can see: their branches
// and open pull requests (read when a webhook says something changed, and by polling),
// and sets one commit status per commit.
type Gitea struct {
	Client *gitea.Client
	// Owners, when not empty, limits the repositories followed to these owners.
	Owners []string
	// Cutoff leaves out refs whose head is older (default 30 days).
	Cutoff time.Duration
	// Poll re-reads everything this often even without webhooks (default 10 minutes).
	Poll time.Duration
	// Context is the status's context (default "kiln").
	Context string
	// BaseURL is the web UI's address, for the statuses' target links.
	BaseURL string
	// WebhookURL is where the forge delivers events (default BaseURL/webhooks/gitea).
	// Once Webhook has given the endpoint a secret, every repository followed gets a
	// webhook there (gitea.Client.EnsureWebhook) when its refs are first read.
	WebhookURL string
	Logger     *slog.Logger

	once sync.Once
	mon  *current.Monitor[[]forge.Ref]

	hookMu     sync.Mutex
	hookSecret []byte
	hooked     map[gitea.Repo]bool // repositories whose webhook is in place
}

func (g *Gitea) init() {
	g.once.Do(func() {
		g.mon = watch("gitea refs", g.Poll, 10*time.Minute, g)
	})
}

// Refs is the monitor of every branch and open pull request followed.
func (g *Gitea) Refs() current.Term[[]forge.Ref] {
	g.init()
	return g.mon.Term()
}

// ListRefs reads every branch and open pull request followed.
func (g *Gitea) ListRefs(ctx context.Context) ([]forge.Ref, error) {
	repos, err := g.Client.Repos(ctx)
	if err != nil {
		return nil, fmt.Errorf("gitea repositories: %w", err)
	}
	owners := webhook.NewAllowList(g.Owners...)
	var refs []forge.Ref
	for _, ri := range repos {
		if ri.Archived || !owners.Allows(ri.Repo.Owner) {
			continue
		}
		g.ensureWebhook(ctx, ri.Repo)
		rs, err := g.Client.Refs(ctx, ri.Repo, since(g.Cutoff))
		if err != nil {
			return nil, fmt.Errorf("gitea %s: %w", ri.Repo, err)
		}
		for _, r := range rs {
			refs = append(refs, forge.Ref{Repo: forge.RepoID{Forge: "gitea", Owner: ri.Repo.Owner, Name: ri.Repo.Name},
				Name: r.Name, PR: r.PR, Title: r.Title, Labels: r.Labels, Commit: r.Commit, Remote: ri.CloneURL})
		}
	}
	sortRefs(refs)
	return refs, nil
}

// ensureWebhook adds kiln's webhook to repo once, when an endpoint is served; a
// failure is logged and tried again at the next read.
func (g *Gitea) ensureWebhook(ctx context.Context, repo gitea.Repo) {
	g.hookMu.Lock()
	secret, done := g.hookSecret, g.hooked[repo]
	g.hookMu.Unlock()
	target := g.WebhookURL
	if target == "" && g.BaseURL != "" {
		target = strings.TrimRight(g.BaseURL, "/") + "/webhooks/gitea"
	}
	if secret == nil || done || target == "" {
		return
	}
	if err := g.Client.EnsureWebhook(ctx, repo, target, secret); err != nil {
		g.log().Warn("gitea: cannot add the webhook; changes are seen by polling only", "repo", repo.String(), "url", target, "err", err)
		return
	}
	g.log().Info("gitea: webhook in place", "repo", repo.String(), "url", target)
	g.hookMu.Lock()
	if g.hooked == nil {
		g.hooked = map[gitea.Repo]bool{}
	}
	g.hooked[repo] = true
	g.hookMu.Unlock()
}

func (g *Gitea) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

// Credentials lets the mirrors fetch private repositories with the client's token.
func (g *Gitea) Credentials() git.CredentialSource { return g.Client.Credentials() }

// Webhook is the handler the forge delivers events to: pushes and pull-request changes
// make the refs be read again at once. sh counts and bounds the deliveries. Once it is
// served, every repository followed gets its webhook (see WebhookURL).
func (g *Gitea) Webhook(secret []byte, sh webhook.Shared) http.Handler {
	g.init()
	g.hookMu.Lock()
	g.hookSecret = secret
	g.hookMu.Unlock()
	return &gitea.Webhook{Secret: secret, Allow: webhook.NewAllowList(g.Owners...), Shared: sh, Logger: g.Logger, Handle: func(ctx context.Context, ev gitea.Event) error {
		g.mon.Refresh()
		return nil
	}}
}

// Publish sets the commit's status, its description naming the first failure.
func (g *Gitea) Publish(ctx context.Context, ref forge.Ref, st forge.Status, variants []forge.Variant) error {
	return g.PublishCheck(ctx, ref, forge.Check{}, st, variants)
}

// Reads is how many times the refs have been read.
func (g *Gitea) Reads() int {
	g.init()
	return g.mon.Reads()
}
