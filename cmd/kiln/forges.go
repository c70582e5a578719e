package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/plugins/forges"
)

// forgeFlags say which forges `kiln serve` follows, for every service it runs.
type forgeFlags struct {
	repos                   []string
	poll                    time.Duration
	githubAppID             int64
	githubKey, githubSecret string
	githubAPI               string
	githubAllow             []string
	giteaURL, giteaToken    string
	giteaSecret             string
	giteaOwners             []string
}

func (f *forgeFlags) add(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.repos, "repo", nil, "OWNER/NAME=URL-OR-PATH: a plain git repository to follow, polled (repeatable)")
	fs.DurationVar(&f.poll, "repo-poll", 30*time.Second, "how often plain git repositories are polled")
	fs.Int64Var(&f.githubAppID, "github-app-id", 0, "GitHub App id (with --github-key and --github-webhook-secret)")
	fs.StringVar(&f.githubKey, "github-key", "", "GitHub App private key file (PEM)")
	fs.StringVar(&f.githubSecret, "github-webhook-secret", "", "GitHub webhook secret (@FILE reads a file); webhooks go to /webhooks/github")
	fs.StringVar(&f.githubAPI, "github-api", github.DefaultAPI, "GitHub REST API root (GitHub Enterprise: https://HOST/api/v3/)")
	fs.StringArrayVar(&f.githubAllow, "github-account", nil, "GitHub account whose installations are served (repeatable; default all)")
	fs.StringVar(&f.giteaURL, "gitea-url", "", "Gitea or Forgejo server to follow (with --gitea-token)")
	fs.StringVar(&f.giteaToken, "gitea-token", "", "Gitea API token (@FILE reads a file)")
	fs.StringVar(&f.giteaSecret, "gitea-webhook-secret", "", "Gitea webhook secret (@FILE reads a file); webhooks go to /webhooks/gitea")
	fs.StringArrayVar(&f.giteaOwners, "gitea-owner", nil, "Gitea owner whose repositories are followed (repeatable; default all the token sees)")
}

// open makes the set of forges the flags name, with their webhook endpoints.
func (f *forgeFlags) open(ctx context.Context, log *slog.Logger, baseURL string, reg prometheus.Registerer) (*forges.Set, error) {
	set := &forges.Set{}
	metrics, err := webhook.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	// Four deliveries read at once bound what forged payloads can hold in memory.
	hooks := webhook.Shared{Metrics: metrics, Limit: webhook.NewLimiter(4)}
	if f.githubAppID != 0 {
		key, err := os.ReadFile(f.githubKey)
		if err != nil {
			return nil, fmt.Errorf("--github-key: %w", err)
		}
		secret, err := secretFlag(f.githubSecret)
		if err != nil || secret == "" {
			return nil, fmt.Errorf("--github-webhook-secret is required with --github-app-id (%v)", err)
		}
		allow := webhook.NewAllowList(f.githubAllow...)
		app, err := github.NewApp(github.AppConfig{AppID: f.githubAppID, PrivateKey: key, API: f.githubAPI, Allow: allow, Logger: log})
		if err != nil {
			return nil, err
		}
		gh := &forges.GitHub{App: app, BaseURL: baseURL, Logger: log, Registerer: reg}
		set.Add("github", gh)
		set.Handle("POST /webhooks/github", gh.Webhook([]byte(secret), allow, hooks))
	}
	if f.giteaURL != "" {
		tok, err := secretFlag(f.giteaToken)
		if err != nil {
			return nil, fmt.Errorf("--gitea-token: %w", err)
		}
		client, err := gitea.NewClient(ctx, f.giteaURL, tok, nil)
		if err != nil {
			return nil, fmt.Errorf("--gitea-url %s: %w", f.giteaURL, err)
		}
		g := &forges.Gitea{Client: client, Owners: f.giteaOwners, BaseURL: baseURL, Logger: log}
		set.Add("gitea", g)
		if f.giteaSecret != "" {
			secret, err := secretFlag(f.giteaSecret)
			if err != nil {
				return nil, fmt.Errorf("--gitea-webhook-secret: %w", err)
			}
			set.Handle("POST /webhooks/gitea", g.Webhook([]byte(secret), hooks))
		}
	}
	var plain []forges.GitRepo
	for _, r := range f.repos {
		id, remote, ok := strings.Cut(r, "=")
		owner, name, ok2 := strings.Cut(id, "/")
		if !ok || !ok2 || owner == "" || name == "" || remote == "" {
			return nil, fmt.Errorf("--repo %q: want OWNER/NAME=URL-OR-PATH", r)
		}
		plain = append(plain, forges.GitRepo{Owner: owner, Name: name, Remote: remote})
	}
	if len(plain) > 0 {
		set.Add("git", &forges.Git{Repos: plain, Every: f.poll})
	}
	return set, nil
}
