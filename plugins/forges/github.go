package forges

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
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
	lastRefs map[string][]forge.Ref    // "owner/name" → its refs at the last read
	byRemote map[string]*github.Client // clone URL → the same
}

func (g *GitHub) init() {
	g.once.Do(func() {
		g.mon = watch("github refs", g.Poll, 10*time.Minute, g)
		g.clients = map[string]*github.Client{}
	})
}

func (g *GitHub) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

// Refs is the monitor of every branch and open pull request of every installation.
func (g *GitHub) Refs() current.Term[[]forge.Ref] {
	g.init()
	return g.mon.Term()
}

// ListRefs reads every branch and open pull request followed.
func (g *GitHub) ListRefs(ctx context.Context) ([]forge.Ref, error) {
	insts, err := g.App.Installations(ctx)
	if err != nil {
		return nil, fmt.Errorf("github installations: %w", err)
	}
	// The clients of repositories kept from the last read stay too.
	g.mu.Lock()
	last := g.lastRefs
	clients, byRemote := maps.Clone(g.clients), maps.Clone(g.byRemote)
	g.mu.Unlock()
	if clients == nil {
		clients = map[string]*github.Client{}
	}
	if byRemote == nil {
		byRemote = map[string]*github.Client{}
	}
	byRepo := map[string][]forge.Ref{}
	// One installation or repository that cannot be read keeps its refs of the last
	// read, so that its builds go on; the others are read as usual.
	keep := func(repo string) {
		byRepo[repo] = last[repo]
	}
	var failed []string
	for _, inst := range insts {
		c := g.App.Installation(inst.ID)
		repos, err := c.Repos(ctx)
		if err != nil {
			g.log().Warn("github installation unreadable; its refs stay as last read", "installation", inst.ID, "account", inst.Account, "err", err)
			failed = append(failed, fmt.Sprintf("installation %d (%s): %v", inst.ID, inst.Account, err))
			for repo, rs := range last {
				if len(rs) > 0 && strings.EqualFold(rs[0].Repo.Owner, inst.Account) {
					keep(repo)
				}
			}
			continue
		}
		for _, ri := range repos {
			if ri.Archived {
				continue
			}
			clients[ri.Repo.String()] = c
			byRemote[ri.CloneURL] = c
			remote := ri.CloneURL
			if g.Remote != nil {
				remote = g.Remote(ri.Repo.Owner, ri.Repo.Name)
				byRemote[remote] = c
			}
			rs, err := c.Refs(ctx, ri.Repo, since(g.Cutoff))
			if err != nil {
				g.log().Warn("github repository unreadable; its refs stay as last read", "repo", ri.Repo.String(), "err", err)
				failed = append(failed, fmt.Sprintf("%s: %v", ri.Repo, err))
				keep(ri.Repo.String())
				continue
			}
			for _, r := range rs {
				byRepo[ri.Repo.String()] = append(byRepo[ri.Repo.String()], forge.Ref{
					Repo: forge.RepoID{Forge: "github", Owner: ri.Repo.Owner, Name: ri.Repo.Name},
					Name: r.Name, PR: r.PR, Title: r.Title, Commit: r.Commit, Remote: remote,
				})
			}
		}
	}
	var refs []forge.Ref
	for _, rs := range byRepo {
		refs = append(refs, rs...)
	}
	if len(failed) > 0 && len(refs) == 0 {
		return nil, fmt.Errorf("github: nothing could be read: %s", strings.Join(failed, "; "))
	}
	g.mu.Lock()
	g.clients, g.byRemote, g.lastRefs = clients, byRemote, byRepo
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
