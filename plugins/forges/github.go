package forges

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/git"
)

// GitHub follows the repositories of a GitHub App's installations: their branches and
// open pull requests (read when a webhook says something changed, and by polling as a
// safety net), and shows one check run per commit.
type GitHub struct {
	App *github.App
	// Cutoff leaves out refs whose head is older (default 30 days).
	Cutoff time.Duration
	// Poll re-reads everything this often even without webhooks (default 10 minutes).
	Poll time.Duration
	// CheckName is the check run's name (default "kiln").
	CheckName string
	// Rerun is called when someone asks GitHub to re-run the checks of a commit.
	Rerun  func(ctx context.Context, repo forge.RepoID, commit string) error
	Logger *slog.Logger
	// BaseURL is the web UI's address, for the check runs' details links.
	BaseURL string
	// Remote, when set, gives the URL to fetch a repository from instead of the clone
	// URL GitHub reports (a local mirror, say).
	Remote func(owner, name string) string

	once     sync.Once
	mon      *current.Monitor[[]forge.Ref]
	mu       sync.Mutex
	clients  map[string]*github.Client // "owner/name" → the installation that can access it
	byRemote map[string]*github.Client // clone URL → the same
}

func (g *GitHub) init() {
	g.once.Do(func() {
		every := g.Poll
		if every <= 0 {
			every = 10 * time.Minute
		}
		g.mon = current.Poll("github refs", every, g.ListRefs)
		g.clients = map[string]*github.Client{}
	})
}

// Refs is the monitor of every branch and open pull request of every installation.
func (g *GitHub) Refs() current.Term[[]forge.Ref] {
	g.init()
	return g.mon.Term()
}

// ListRefs reads every branch and open pull request followed.
func (g *GitHub) ListRefs(ctx context.Context) ([]forge.Ref, error) {
	cutoff := g.Cutoff
	if cutoff <= 0 {
		cutoff = 30 * 24 * time.Hour
	}
	insts, err := g.App.Installations(ctx)
	if err != nil {
		return nil, fmt.Errorf("github installations: %w", err)
	}
	clients, byRemote := map[string]*github.Client{}, map[string]*github.Client{}
	var refs []forge.Ref
	for _, inst := range insts {
		c := g.App.Installation(inst.ID)
		repos, err := c.Repos(ctx)
		if err != nil {
			return nil, fmt.Errorf("github installation %d (%s): %w", inst.ID, inst.Account, err)
		}
		for _, ri := range repos {
			if ri.Archived {
				continue
			}
			rs, err := c.Refs(ctx, ri.Repo, time.Now().Add(-cutoff))
			if err != nil {
				return nil, fmt.Errorf("github %s: %w", ri.Repo, err)
			}
			clients[ri.Repo.String()] = c
			byRemote[ri.CloneURL] = c
			remote := ri.CloneURL
			if g.Remote != nil {
				remote = g.Remote(ri.Repo.Owner, ri.Repo.Name)
				byRemote[remote] = c
			}
			for _, r := range rs {
				refs = append(refs, forge.Ref{
					Repo: forge.RepoID{Forge: "github", Owner: ri.Repo.Owner, Name: ri.Repo.Name},
					Name: r.Name, PR: r.PR, Title: r.Title, Commit: r.Commit, Remote: remote,
				})
			}
		}
	}
	g.mu.Lock()
	g.clients, g.byRemote = clients, byRemote
	g.mu.Unlock()
	sortRefs(refs)
	return refs, nil
}

// Credentials lets the mirrors fetch private repositories with the installation's token.
func (g *GitHub) Credentials() git.CredentialSource {
	return func(ctx context.Context, remote string) (git.Credentials, bool, error) {
		g.mu.Lock()
		c := g.byRemote[remote]
		g.mu.Unlock()
		if c == nil {
			return git.Credentials{}, false, nil
		}
		return c.Credentials(remote)(ctx, remote)
	}
}

// Webhook is the handler GitHub delivers events to: pushes and pull-request changes make
// the refs be read again at once; re-run requests rebuild the commit. sh counts and
// bounds the deliveries.
func (g *GitHub) Webhook(secret []byte, allow webhook.AllowList, sh webhook.Shared) http.Handler {
	g.init()
	return &github.Webhook{Secret: secret, Allow: allow, Shared: sh, Logger: g.Logger, Handle: func(ctx context.Context, ev github.Event) error {
		switch e := ev.(type) {
		case *github.PushEvent, *github.PullRequestEvent, *github.InstallationEvent:
			g.mon.Refresh()
		case *github.RerunEvent:
			if g.Rerun != nil {
				return g.Rerun(ctx, forge.RepoID{Forge: "github", Owner: e.Repo.Owner, Name: e.Repo.Name}, e.HeadSHA)
			}
		}
		return nil
	}}
}

// Publish sets the commit's check run.
func (g *GitHub) Publish(ctx context.Context, ref forge.Ref, st forge.Status, _ []forge.Variant) error {
	g.init()
	g.mu.Lock()
	c := g.clients[ref.Repo.Owner+"/"+ref.Repo.Name]
	g.mu.Unlock()
	if c == nil {
		return fmt.Errorf("no installation of the App can access %s/%s", ref.Repo.Owner, ref.Repo.Name)
	}
	name := g.CheckName
	if name == "" {
		name = "kiln"
	}
	_, err := c.SetCheckRun(ctx, github.Repo{Owner: ref.Repo.Owner, Name: ref.Repo.Name}, ref.Commit, github.CheckRun{
		Name: name, Status: st, ExternalID: ref.Commit,
		DetailsURL: fmt.Sprintf("%s/github/%s/%s/commit/%s", g.BaseURL, ref.Repo.Owner, ref.Repo.Name, ref.Commit),
	})
	return err
}

// Reads is how many times the refs have been read.
func (g *GitHub) Reads() int {
	g.init()
	return g.mon.Reads()
}
