package gitea

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/git"
)

// Client calls a Gitea or Forgejo server's API with a token.
type Client struct {
	base    string // server root, ending in "/"
	token   string
	version string
	hc      *http.Client
}

// NewClient connects to the server at base (e.g. "https://codeberg.org/") with an access
// token, checking that the server answers.
func NewClient(ctx context.Context, base, token string, hc *http.Client) (*Client, error) {
	if _, err := url.Parse(base); err != nil || !strings.HasPrefix(base, "http") {
		return nil, fmt.Errorf("gitea server %q: not an http(s) URL", base)
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	c := &Client{base: base, token: token, hc: hc}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"api/v1/version", nil)
	if err != nil {
		return nil, fmt.Errorf("gitea server %s: %w", base, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gitea server %s: network: %w", base, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || v.Version == "" {
		return nil, fmt.Errorf("gitea server %s: GET api/v1/version answered %s: not a Gitea or Forgejo server?", base, resp.Status)
	}
	c.version = v.Version
	if _, sresp, err := c.api(ctx).GetMyUserInfo(); err != nil {
		return nil, fmt.Errorf("gitea server %s: %w", base, apiError(sresp, err))
	}
	return c, nil
}

// api returns an SDK client bound to ctx (the SDK takes the context per client).
func (c *Client) api(ctx context.Context) *sdk.Client {
	api, _ := sdk.NewClient(strings.TrimSuffix(c.base, "/"), sdk.SetToken(c.token), sdk.SetHTTPClient(c.hc),
		sdk.SetContext(ctx), sdk.SetUserAgent("kiln"), sdk.SetGiteaVersion(c.version))
	return api
}

// Version is the server's version.
func (c *Client) Version() string { return c.version }

// Credentials is a git.CredentialSource that gives the client's token for clones from
// this server.
func (c *Client) Credentials() git.CredentialSource {
	return git.StaticCredentials(c.base, git.Credentials{Username: "kiln", Token: c.token})
}

// RepoInfo describes a repository.
type RepoInfo struct {
	Repo          Repo
	CloneURL      string
	Private       bool
	Archived      bool
	DefaultBranch string
}

// Repos lists the repositories the token's user can access.
func (c *Client) Repos(ctx context.Context) ([]RepoInfo, error) {
	api := c.api(ctx)
	var out []RepoInfo
	for page := 1; ; page++ {
		rs, resp, err := api.ListMyRepos(sdk.ListReposOptions{ListOptions: sdk.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return nil, fmt.Errorf("list repositories on %s: %w", c.base, apiError(resp, err))
		}
		for _, r := range rs {
			out = append(out, RepoInfo{Repo: Repo{r.Owner.UserName, r.Name}, CloneURL: r.CloneURL, Private: r.Private,
				Archived: r.Archived, DefaultBranch: r.DefaultBranch})
		}
		if len(rs) == 0 || resp == nil || resp.NextPage == 0 {
			return out, nil
		}
	}
}

// Ref is a branch or an open pull request to test.
type Ref struct {
	Repo   Repo
	Name   string    // "refs/heads/main" or "refs/pull/3/head"
	Commit string    // head commit
	Date   time.Time // the head commit's time (branches) or the pull request's last update
	PR     int
	Title  string
	Base   string
	Author string
	Labels []string // the pull request's labels
}

// Refs lists the branches and open pull requests of repo updated at or after cutoff (the
// default branch is always kept; a zero cutoff keeps everything), sorted by name.
func (c *Client) Refs(ctx context.Context, repo Repo, cutoff time.Time) ([]Ref, error) {
	api := c.api(ctx)
	info, resp, err := api.GetRepo(repo.Owner, repo.Name)
	if err != nil {
		return nil, fmt.Errorf("refs of %s: %w", repo, apiError(resp, err))
	}
	var refs []Ref
	for page := 1; ; page++ {
		bs, resp, err := api.ListRepoBranches(repo.Owner, repo.Name, sdk.ListRepoBranchesOptions{ListOptions: sdk.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return nil, fmt.Errorf("branches of %s: %w", repo, apiError(resp, err))
		}
		for _, b := range bs {
			r := Ref{Repo: repo, Name: "refs/heads/" + b.Name}
			if b.Commit != nil {
				r.Commit, r.Date = b.Commit.ID, b.Commit.Timestamp
			}
			refs = append(refs, r)
		}
		if len(bs) == 0 || resp == nil || resp.NextPage == 0 {
			break
		}
	}
	for page := 1; ; page++ {
		prs, resp, err := api.ListRepoPullRequests(repo.Owner, repo.Name, sdk.ListPullRequestsOptions{State: sdk.StateOpen, ListOptions: sdk.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return nil, fmt.Errorf("pull requests of %s: %w", repo, apiError(resp, err))
		}
		for _, pr := range prs {
			r := Ref{Repo: repo, Name: fmt.Sprintf("refs/pull/%d/head", pr.Index), PR: int(pr.Index), Title: pr.Title}
			if pr.Head != nil {
				r.Commit = pr.Head.Sha
			}
			if pr.Base != nil {
				r.Base = pr.Base.Ref
			}
			if pr.Poster != nil {
				r.Author = pr.Poster.UserName
			}
			for _, l := range pr.Labels {
				r.Labels = append(r.Labels, l.Name)
			}
			if pr.Updated != nil {
				r.Date = *pr.Updated
			}
			refs = append(refs, r)
		}
		if len(prs) == 0 || resp == nil || resp.NextPage == 0 {
			break
		}
	}
	kept := refs[:0]
	for _, r := range refs {
		if cutoff.IsZero() || r.Name == "refs/heads/"+info.DefaultBranch || !r.Date.Before(cutoff) {
			kept = append(kept, r)
		}
	}
	slices.SortFunc(kept, func(a, b Ref) int { return strings.Compare(a.Name, b.Name) })
	return kept, nil
}

// StatusState maps a commit's state to Gitea's commit status states.
func StatusState(s forge.State) sdk.StatusState {
	switch s {
	case forge.Passed, forge.Skipped:
		return sdk.StatusSuccess
	case forge.Failed:
		return sdk.StatusFailure
	case forge.Error, forge.Cancelled:
		return sdk.StatusError
	}
	return sdk.StatusPending
}

// Status is one commit status.
type Status struct {
	Context     string // e.g. "kiln" (one status per context and commit)
	State       forge.State
	Description string // one line; cut to what Gitea stores
	TargetURL   string // the commit's page on kiln
}

// SetStatus sets the commit status named st.Context on commit.
func (c *Client) SetStatus(ctx context.Context, repo Repo, commit string, st Status) error {
	if !isSHA(commit) {
		return fmt.Errorf("status on %s: %q is not a commit hash", repo, commit)
	}
	if st.Context == "" {
		return fmt.Errorf("status on %s@%s: no context", repo, commit)
	}
	_, resp, err := c.api(ctx).CreateStatus(repo.Owner, repo.Name, commit, sdk.CreateStatusOption{
		State: StatusState(st.State), TargetURL: st.TargetURL, Description: forge.Truncate(st.Description, 255), Context: st.Context})
	if err != nil {
		return fmt.Errorf("set status %q on %s@%s: %w", st.Context, repo, commit[:12], apiError(resp, err))
	}
	return nil
}

// Statuses returns the latest status per context of commit.
func (c *Client) Statuses(ctx context.Context, repo Repo, commit string) (map[string]Status, error) {
	cs, resp, err := c.api(ctx).GetCombinedStatus(repo.Owner, repo.Name, commit)
	if err != nil {
		return nil, fmt.Errorf("statuses of %s@%s: %w", repo, commit, apiError(resp, err))
	}
	out := map[string]Status{}
	for _, s := range cs.Statuses {
		st := forge.Queued
		switch s.State {
		case sdk.StatusSuccess:
			st = forge.Passed
		case sdk.StatusFailure:
			st = forge.Failed
		case sdk.StatusError:
			st = forge.Error
		case sdk.StatusPending:
			st = forge.Running
		}
		out[s.Context] = Status{Context: s.Context, State: st, Description: s.Description, TargetURL: s.TargetURL}
	}
	return out, nil
}

// EnsureWebhook makes sure repo sends push and pull request events to target, signed
// with secret: it updates a webhook already pointing there, or creates one.
func (c *Client) EnsureWebhook(ctx context.Context, repo Repo, target string, secret []byte) error {
	api := c.api(ctx)
	cfg := map[string]string{"url": target, "content_type": "json", "secret": string(secret)}
	events := []string{"push", "pull_request", "pull_request_sync"}
	hooks, resp, err := api.ListRepoHooks(repo.Owner, repo.Name, sdk.ListHooksOptions{})
	if err != nil {
		return fmt.Errorf("webhooks of %s: %w", repo, apiError(resp, err))
	}
	for _, h := range hooks {
		if h.Config["url"] == target {
			active := true
			if resp, err := api.EditRepoHook(repo.Owner, repo.Name, h.ID, sdk.EditHookOption{Config: cfg, Events: events, Active: &active}); err != nil {
				return fmt.Errorf("update webhook %d of %s: %w", h.ID, repo, apiError(resp, err))
			}
			return nil
		}
	}
	if _, resp, err := api.CreateRepoHook(repo.Owner, repo.Name, sdk.CreateHookOption{Type: sdk.HookTypeGitea, Config: cfg, Events: events, Active: true}); err != nil {
		return fmt.Errorf("create webhook on %s: %w", repo, apiError(resp, err))
	}
	return nil
}

func apiError(resp *sdk.Response, err error) error {
	if resp != nil && resp.Response != nil {
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("authentication failed (401): %w", err)
		case http.StatusForbidden:
			return fmt.Errorf("forbidden (403): %w", err)
		case http.StatusNotFound:
			return fmt.Errorf("not found (404): %w", err)
		}
		return err
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("network: %w", err)
	}
	return err
}
