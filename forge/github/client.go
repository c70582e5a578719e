package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v89/github"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/git"
)

// DefaultAPI is the root of GitHub's REST API.
const DefaultAPI = "https://api.github.com/"

// AppConfig configures a GitHub App.
type AppConfig struct {
	// AppID is the App's numeric id.
	AppID int64
	// PrivateKey is the App's private key (PEM).
	PrivateKey []byte
	// API is the root of the REST API (default DefaultAPI; GitHub Enterprise:
	// https://HOST/api/v3/).
	API string
	// Allow limits the installations served to these accounts.
	Allow webhook.AllowList
	// Transport for API requests (default http.DefaultTransport).
	Transport http.RoundTripper
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// App is a GitHub App: it lists its installations and hands out a Client per installation.
type App struct {
	cfg  AppConfig
	apps *ghinstallation.AppsTransport
	api  *gh.Client
	gate *rateGate // the App's own requests (installations)

	mu       sync.Mutex
	installs map[int64]*Client
}

// NewApp returns the App described by cfg.
func NewApp(cfg AppConfig) (*App, error) {
	if cfg.AppID <= 0 {
		return nil, fmt.Errorf("github app: app id must be positive, not %d", cfg.AppID)
	}
	if cfg.API == "" {
		cfg.API = DefaultAPI
	}
	if !strings.HasSuffix(cfg.API, "/") {
		cfg.API += "/"
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	atr, err := ghinstallation.NewAppsTransport(cfg.Transport, cfg.AppID, cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("github app %d: private key: %w", cfg.AppID, err)
	}
	atr.BaseURL = strings.TrimSuffix(cfg.API, "/")
	gate := &rateGate{next: atr}
	api, err := newAPI(cfg.API, &http.Client{Transport: gate})
	if err != nil {
		return nil, err
	}
	return &App{cfg: cfg, apps: atr, api: api, gate: gate, installs: map[int64]*Client{}}, nil
}

func newAPI(root string, hc *http.Client, opts ...gh.ClientOptionsFunc) (*gh.Client, error) {
	c, err := gh.NewClient(append([]gh.ClientOptionsFunc{gh.WithHTTPClient(hc), gh.WithURLs(&root, &root), gh.WithUserAgent("kiln")}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("github api %s: %w", root, err)
	}
	return c, nil
}

// Installation is one installation of the App.
type Installation struct {
	ID      int64
	Account string
}

// Installations lists the App's installations on allowed accounts, but for suspended
// ones (which get no token).
func (a *App) Installations(ctx context.Context) ([]Installation, error) {
	var out []Installation
	for inst, err := range a.api.Apps.ListInstallationsIter(ctx, &gh.ListOptions{PerPage: 100}) {
		if err != nil {
			return nil, fmt.Errorf("list installations of app %d: %w", a.cfg.AppID, apiError(err))
		}
		acct := inst.GetAccount().GetLogin()
		if inst.SuspendedAt != nil {
			a.cfg.Logger.Info("github installation suspended: skipped", "account", acct, "installation", inst.GetID())
			continue
		}
		if !a.cfg.Allow.Allows(acct) {
			a.cfg.Logger.Debug("github installation not allowed", "account", acct, "installation", inst.GetID())
			continue
		}
		out = append(out, Installation{ID: inst.GetID(), Account: acct})
	}
	return out, nil
}

// Installation returns the client acting as installation id (one per id, reused).
func (a *App) Installation(id int64) *Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.installs[id]; ok {
		return c
	}
	tr := ghinstallation.NewFromAppsTransport(a.apps, id)
	tr.BaseURL = strings.TrimSuffix(a.cfg.API, "/")
	gate := &rateGate{next: tr}
	api, _ := newAPI(a.cfg.API, &http.Client{Transport: gate})
	c := newClient(api, gate, a.cfg.API, a.cfg.Logger)
	c.token = tr.Token
	a.installs[id] = c
	return c
}

// RateLimitedUntil is when the App may list its installations again after spending
// its rate limit (zero when it may now).
func (a *App) RateLimitedUntil() time.Time { return a.gate.blockedUntil() }

// Client calls the GitHub API as one App installation (or with a personal token). Once
// GitHub says the installation's rate limit is spent (X-RateLimit-Remaining: 0, or a
// 403 or 429 with Retry-After), its calls fail with a RateLimitError, sending nothing,
// until the limit resets.
type Client struct {
	api   *gh.Client
	gate  *rateGate
	root  string
	log   *slog.Logger
	token func(context.Context) (string, error)

	mu    sync.Mutex
	dates map[string]time.Time // commit date by hash (they never change)
	runs  map[runKey]int64     // check run id by (repo, commit, name)
}

// maxCachedDates bounds the commit date cache of a client.
const maxCachedDates = 100000

type runKey struct {
	repo   Repo
	commit string
	name   string
}

func newClient(api *gh.Client, gate *rateGate, root string, log *slog.Logger) *Client {
	return &Client{api: api, gate: gate, root: root, log: log, dates: map[string]time.Time{}, runs: map[runKey]int64{}}
}

// RateLimitedUntil is when the client may call GitHub again after spending its rate
// limit (zero when it may now).
func (c *Client) RateLimitedUntil() time.Time { return c.gate.blockedUntil() }

// NewTokenClient returns a client that authenticates with a personal access token.
func NewTokenClient(api, token string, transport http.RoundTripper) (*Client, error) {
	if api == "" {
		api = DefaultAPI
	}
	if !strings.HasSuffix(api, "/") {
		api += "/"
	}
	if transport == nil {
		transport = http.DefaultTransport
	}
	gate := &rateGate{next: transport}
	c, err := newAPI(api, &http.Client{Transport: gate}, gh.WithAuthToken(token))
	if err != nil {
		return nil, err
	}
	cl := newClient(c, gate, api, slog.Default())
	cl.token = func(context.Context) (string, error) { return token, nil }
	return cl, nil
}

// Token returns a token valid for git over HTTPS (an installation token is renewed
// before it expires).
func (c *Client) Token(ctx context.Context) (string, error) {
	t, err := c.token(ctx)
	if err != nil {
		return "", fmt.Errorf("github token: %w", apiError(err))
	}
	return t, nil
}

// Credentials is a git.CredentialSource giving the client's token for remotes on the
// host of cloneHost (e.g. "https://github.com").
func (c *Client) Credentials(cloneHost string) git.CredentialSource {
	host, err := url.Parse(cloneHost)
	return func(ctx context.Context, remote string) (git.Credentials, bool, error) {
		if err != nil {
			return git.Credentials{}, false, fmt.Errorf("clone host %q: %w", cloneHost, err)
		}
		r, perr := url.Parse(remote)
		if perr != nil || r.Host != host.Host || r.Scheme != host.Scheme {
			return git.Credentials{}, false, nil
		}
		t, err := c.Token(ctx)
		if err != nil {
			return git.Credentials{}, false, err
		}
		return git.Credentials{Username: "x-access-token", Token: t}, true, nil
	}
}

// RepoInfo describes a repository the installation can access.
type RepoInfo struct {
	Repo Repo
	// ID is GitHub's number for the repository, which a rename or a transfer keeps.
	ID            int64
	CloneURL      string
	Private       bool
	Archived      bool
	DefaultBranch string
}

// Repos lists the repositories the installation can access.
func (c *Client) Repos(ctx context.Context) ([]RepoInfo, error) {
	var out []RepoInfo
	for r, err := range c.api.Apps.ListReposIter(ctx, &gh.ListOptions{PerPage: 100}) {
		if err != nil {
			return nil, fmt.Errorf("list installation repositories: %w", apiError(err))
		}
		out = append(out, repoInfo(r))
	}
	return out, nil
}

func repoInfo(r *gh.Repository) RepoInfo {
	return RepoInfo{Repo: Repo{Owner: r.GetOwner().GetLogin(), Name: r.GetName()}, ID: r.GetID(),
		CloneURL: r.GetCloneURL(), Private: r.GetPrivate(), Archived: r.GetArchived(), DefaultBranch: r.GetDefaultBranch()}
}

// Ref is a branch or an open pull request to test.
type Ref struct {
	Repo   Repo
	Name   string    // "refs/heads/main" or "refs/pull/12/head" (fetchable from the base repository)
	Commit string    // the head commit
	Date   time.Time // the head commit's committer date
	PR     int       // the pull request number (0 for a branch)
	Title  string    // the pull request's title
	Base   string    // the pull request's base branch
	Author string    // the pull request's author
	Labels []string  // the pull request's labels
}

// Refs lists the branches and open pull requests of repo whose head commit is newer than
// cutoff (the default branch is always kept; a zero cutoff keeps everything), sorted by
// name. An archived repository has none.
func (c *Client) Refs(ctx context.Context, repo Repo, cutoff time.Time) ([]Ref, error) {
	_, refs, err := c.RepoRefs(ctx, repo, cutoff)
	return refs, err
}

// RepoRefs is Refs with the repository's description, as GitHub gives it now. An
// archived repository has no refs (and costs no further request); GitHub answers a
// renamed repository's old name with the repository under its new name.
func (c *Client) RepoRefs(ctx context.Context, repo Repo, cutoff time.Time) (RepoInfo, []Ref, error) {
	r, _, err := c.api.Repositories.Get(ctx, repo.Owner, repo.Name)
	if err != nil {
		return RepoInfo{}, nil, fmt.Errorf("refs of %s: %w", repo, apiError(err))
	}
	info := repoInfo(r)
	if info.Archived {
		return info, nil, nil
	}
	refs, err := c.refs(ctx, info.Repo, info.DefaultBranch, cutoff)
	return info, refs, err
}

func (c *Client) refs(ctx context.Context, repo Repo, def string, cutoff time.Time) ([]Ref, error) {
	var refs []Ref
	for b, err := range c.api.Repositories.ListBranchesIter(ctx, repo.Owner, repo.Name, &gh.BranchListOptions{ListOptions: gh.ListOptions{PerPage: 100}}) {
		if err != nil {
			return nil, fmt.Errorf("branches of %s: %w", repo, apiError(err))
		}
		refs = append(refs, Ref{Repo: repo, Name: "refs/heads/" + b.GetName(), Commit: b.GetCommit().GetSHA()})
	}
	for pr, err := range c.api.PullRequests.ListIter(ctx, repo.Owner, repo.Name, &gh.PullRequestListOptions{State: "open", ListOptions: gh.ListOptions{PerPage: 100}}) {
		if err != nil {
			return nil, fmt.Errorf("pull requests of %s: %w", repo, apiError(err))
		}
		r := Ref{Repo: repo, Name: fmt.Sprintf("refs/pull/%d/head", pr.GetNumber()), Commit: pr.GetHead().GetSHA(),
			PR: pr.GetNumber(), Title: pr.GetTitle(), Base: pr.GetBase().GetRef(), Author: pr.GetUser().GetLogin()}
		for _, l := range pr.Labels {
			r.Labels = append(r.Labels, l.GetName())
		}
		refs = append(refs, r)
	}
	kept := refs[:0]
	for _, r := range refs {
		isDefault := r.Name == "refs/heads/"+def
		if !cutoff.IsZero() || isDefault {
			d, err := c.commitDate(ctx, repo, r.Commit)
			if err != nil {
				return nil, err
			}
			r.Date = d
		}
		if isDefault || cutoff.IsZero() || !r.Date.Before(cutoff) {
			kept = append(kept, r)
		}
	}
	slices.SortFunc(kept, func(a, b Ref) int { return strings.Compare(a.Name, b.Name) })
	return kept, nil
}

func (c *Client) commitDate(ctx context.Context, repo Repo, sha string) (time.Time, error) {
	c.mu.Lock()
	d, ok := c.dates[sha]
	c.mu.Unlock()
	if ok {
		return d, nil
	}
	commit, _, err := c.api.Repositories.GetCommit(ctx, repo.Owner, repo.Name, sha, nil)
	if err != nil {
		return time.Time{}, fmt.Errorf("commit %s of %s: %w", sha, repo, apiError(err))
	}
	d = commit.GetCommit().GetCommitter().GetDate().Time
	c.mu.Lock()
	if len(c.dates) >= maxCachedDates {
		clear(c.dates) // old refs' commits are not asked again; the current ones refill it
	}
	c.dates[sha] = d
	c.mu.Unlock()
	return d, nil
}

// CheckRun is what one check run shows.
type CheckRun struct {
	Name       string // the check's name, e.g. "kiln"
	Status     forge.Status
	DetailsURL string // the commit's page on kiln
	ExternalID string
}

// SetCheckRun creates or updates the one check run named run.Name on commit: a
// commit has one check run per name, whatever the number of updates.
func (c *Client) SetCheckRun(ctx context.Context, repo Repo, commit string, run CheckRun) (int64, error) {
	if !isSHA(commit) {
		return 0, fmt.Errorf("check run on %s: %q is not a commit hash", repo, commit)
	}
	if run.Name == "" {
		return 0, fmt.Errorf("check run on %s@%s: no name", repo, commit)
	}
	status, conclusion := checkState(run.Status.State)
	if conclusion != nil && *conclusion == "action_required" && run.DetailsURL == "" {
		// GitHub wants a page to send the user to with action_required.
		conclusion = gh.Ptr("failure")
	}
	output := &gh.CheckRunOutput{Title: gh.Ptr(forge.Truncate(run.Status.Title, 1000)), Summary: gh.Ptr(run.Status.Summary)}
	var details, external *string
	if run.DetailsURL != "" {
		details = &run.DetailsURL
	}
	if run.ExternalID != "" {
		external = &run.ExternalID
	}
	var completed *gh.Timestamp
	if conclusion != nil {
		completed = &gh.Timestamp{Time: time.Now().UTC().Truncate(time.Second)}
	}

	key := runKey{repo, commit, run.Name}
	id, err := c.findCheckRun(ctx, key)
	if err != nil {
		return 0, err
	}
	if id != 0 {
		_, _, err := c.api.Checks.UpdateCheckRun(ctx, repo.Owner, repo.Name, id, gh.UpdateCheckRunOptions{
			Name: run.Name, DetailsURL: details, ExternalID: external, Status: &status, Conclusion: conclusion,
			CompletedAt: completed, Output: output})
		if err == nil {
			return id, nil
		}
		var gerr *gh.ErrorResponse
		if !errors.As(err, &gerr) || gerr.Response.StatusCode != http.StatusNotFound {
			return 0, fmt.Errorf("update check run %d on %s@%s: %w", id, repo, commit[:12], apiError(err))
		}
		// Deleted meanwhile: create a new one.
	}
	cr, _, err := c.api.Checks.CreateCheckRun(ctx, repo.Owner, repo.Name, gh.CreateCheckRunOptions{
		Name: run.Name, HeadSHA: commit, DetailsURL: details, ExternalID: external, Status: &status, Conclusion: conclusion,
		CompletedAt: completed, Output: output})
	if err != nil {
		return 0, fmt.Errorf("create check run on %s@%s: %w", repo, commit[:12], apiError(err))
	}
	c.mu.Lock()
	if len(c.runs) >= maxCachedDates {
		clear(c.runs) // a run not in the cache is found again by name
	}
	c.runs[key] = cr.GetID()
	c.mu.Unlock()
	return cr.GetID(), nil
}

func (c *Client) findCheckRun(ctx context.Context, key runKey) (int64, error) {
	c.mu.Lock()
	id, ok := c.runs[key]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	res, _, err := c.api.Checks.ListCheckRunsForRef(ctx, key.repo.Owner, key.repo.Name, key.commit, &gh.ListCheckRunsOptions{
		CheckName: gh.Ptr(key.name), Filter: gh.Ptr("latest")})
	if err != nil {
		return 0, fmt.Errorf("find check run %q on %s@%s: %w", key.name, key.repo, key.commit[:12], apiError(err))
	}
	for _, r := range res.CheckRuns {
		if r.GetName() == key.name {
			c.mu.Lock()
			c.runs[key] = r.GetID()
			c.mu.Unlock()
			return r.GetID(), nil
		}
	}
	return 0, nil
}

func checkState(s forge.State) (status string, conclusion *string) {
	switch s {
	case forge.Queued:
		return "queued", nil
	case forge.Running:
		return "in_progress", nil
	case forge.Passed:
		return "completed", gh.Ptr("success")
	case forge.Failed:
		return "completed", gh.Ptr("failure")
	case forge.Cancelled:
		return "completed", gh.Ptr("cancelled")
	case forge.Skipped:
		return "completed", gh.Ptr("skipped")
	case forge.Error:
		return "completed", gh.Ptr("action_required")
	}
	return "queued", nil
}

// RerunCheckSuite asks GitHub to re-run a check suite, as the "Re-run all checks"
// button does (GitHub then sends a check_suite rerequested event).
func (c *Client) RerunCheckSuite(ctx context.Context, repo Repo, suiteID int64) error {
	if _, err := c.api.Checks.ReRequestCheckSuite(ctx, repo.Owner, repo.Name, suiteID); err != nil {
		return fmt.Errorf("re-run check suite %d of %s: %w", suiteID, repo, apiError(err))
	}
	return nil
}

// ErrNotFound is matched (errors.Is) by the error for something GitHub does not know
// (404), or does not show the client: a deleted repository, or one the installation no
// longer has access to.
var ErrNotFound = errors.New("not found (404)")

// apiError shortens go-github's errors to what a reader needs.
func apiError(err error) error {
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return rl
	}
	if rl := rateLimited(err); rl != nil {
		return rl
	}
	var gerr *gh.ErrorResponse
	if errors.As(err, &gerr) && gerr.Response != nil {
		switch gerr.Response.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("authentication failed (401): %s", gerr.Message)
		case http.StatusForbidden:
			return fmt.Errorf("forbidden (403): %s", gerr.Message)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s %s", ErrNotFound, gerr.Response.Request.Method, gerr.Response.Request.URL.Path)
		}
		return fmt.Errorf("%s %s: %d %s", gerr.Response.Request.Method, gerr.Response.Request.URL.Path, gerr.Response.StatusCode, gerr.Message)
	}
	return err
}
