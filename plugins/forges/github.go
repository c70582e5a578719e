package forges

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/git"
)

// GitHub follows the repositories of a GitHub App's installations: their branches and
// open pull requests, and shows one check run per commit. A webhook re-reads only the
// repository it names, and only when it can have moved a head; the periodic poll reads
// everything. Once an installation's rate limit is spent, nothing is asked of GitHub for
// it until the limit resets; then what was put off is read.
type GitHub struct {
	App *github.App
	// Cutoff leaves out refs whose head is older (default 30 days).
	Cutoff time.Duration
	// Poll re-reads everything this often even without webhooks (default 10 minutes).
	Poll time.Duration
	// CheckName is the check run's name (default "kiln").
	CheckName string
	// Rerun is called when someone asks GitHub to re-run the checks of a commit.
	Rerun func(ctx context.Context, repo forge.RepoID, commit string) error
	// Renamed is called when a repository followed was renamed or transferred, before
	// its refs are given under the new name, so that its history can follow it.
	Renamed func(ctx context.Context, from, to forge.RepoID) error
	Logger  *slog.Logger
	// Registerer, when set, receives the metrics kiln_forge_github_reads_total and
	// kiln_forge_github_rate_limited_until_seconds.
	Registerer prometheus.Registerer
	// BaseURL is the web UI's address, for the check runs' details links.
	BaseURL string
	// Remote, when set, gives the URL to fetch a repository from instead of the clone
	// URL GitHub reports (a local mirror, say).
	Remote func(owner, name string) string

	once     sync.Once
	mon      *current.Monitor[[]forge.Ref]
	metrics  *githubMetrics
	mu       sync.Mutex
	clients  map[string]*github.Client // "owner/name" → the installation that can access it
	lastRefs map[string][]forge.Ref    // "owner/name" → its refs at the last read
	byRemote map[string]*github.Client // clone URL → the same
	ids      map[int64]string          // GitHub's repository number → "owner/name" at the last read
	work     githubWork                // what the next read does
	retryAt  time.Time                 // when a read put off for a rate limit is due
	wake     chan struct{}             // tells the watch that retryAt changed
}

// githubWork is what webhooks asked of the next read.
type githubWork struct {
	full    bool
	repos   map[string]int64  // "owner/name" → the installation to read it as (0: the last one)
	drop    map[string]bool   // "owner/name" no longer followed (deleted, archived, removed)
	renamed map[string]string // new "owner/name" → the old one, from a repository event
	titles  map[prTitle]string
}

type prTitle struct {
	repo string
	pr   int
}

func (w *githubWork) read(repo string, inst int64) {
	if w.repos == nil {
		w.repos = map[string]int64{}
	}
	if inst != 0 || w.repos[repo] == 0 {
		w.repos[repo] = inst
	}
	delete(w.drop, repo)
}

func (w *githubWork) forget(repo string) {
	if w.drop == nil {
		w.drop = map[string]bool{}
	}
	w.drop[repo] = true
	delete(w.repos, repo)
}

func (w *githubWork) empty() bool {
	return !w.full && len(w.repos) == 0 && len(w.drop) == 0 && len(w.titles) == 0
}

type githubMetrics struct {
	reads   *prometheus.CounterVec
	limited *prometheus.GaugeVec
}

func newGitHubMetrics(reg prometheus.Registerer) *githubMetrics {
	m := &githubMetrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_forge_github_reads_total",
			Help: "Reads of GitHub refs: scope=all is the poll of every repository, repo one repository a webhook named."}, []string{"scope"}),
		limited: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_forge_github_rate_limited_until_seconds",
			Help: "Unix time until which an installation's rate limit was last found spent (nothing is asked of GitHub for it until then)."}, []string{"account"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.reads, m.limited} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					slog.Warn("github metrics not registered", "err", err)
				}
			}
		}
	}
	return m
}

func (g *GitHub) init() {
	g.once.Do(func() {
		every := g.Poll
		if every <= 0 {
			every = 10 * time.Minute
		}
		g.mon = &current.Monitor[[]forge.Ref]{Name: "github refs", Read: g.read, Watch: func(ctx context.Context, refresh func()) error {
			return g.watch(ctx, every, refresh)
		}}
		g.metrics = newGitHubMetrics(g.Registerer)
		g.wake = make(chan struct{}, 1)
		g.mu.Lock()
		if g.clients == nil {
			g.clients = map[string]*github.Client{}
		}
		g.mu.Unlock()
	})
}

// watch asks for a full read every interval, and for a read when one put off for a rate
// limit is due.
func (g *GitHub) watch(ctx context.Context, every time.Duration, refresh func()) error {
	poll := time.NewTicker(every)
	defer poll.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			g.mu.Lock()
			g.work.full = true
			g.mu.Unlock()
			refresh()
		case <-g.wake:
			g.mu.Lock()
			at := g.retryAt
			g.mu.Unlock()
			if !at.IsZero() {
				retry.Reset(time.Until(at))
			}
		case <-retry.C:
			refresh()
		}
	}
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

// read is the monitor's read: everything at first and on the poll, otherwise what the
// webhooks since the last read asked for.
func (g *GitHub) read(ctx context.Context) ([]forge.Ref, error) {
	g.mu.Lock()
	w := g.work
	g.work = githubWork{}
	first := g.lastRefs == nil
	g.mu.Unlock()
	if w.full || first {
		return g.ListRefs(ctx)
	}
	return g.readSome(ctx, w)
}

// putOff remembers work a rate limit stopped, and has it done when the limit resets.
func (g *GitHub) putOff(rl *github.RateLimitError, account string, work func(w *githubWork)) {
	g.mu.Lock()
	work(&g.work)
	// The soonest reset is waited for; what is still limited then is put off again.
	sooner := !g.retryAt.After(time.Now()) || rl.Until.Before(g.retryAt)
	if sooner {
		g.retryAt = rl.Until
	}
	g.mu.Unlock()
	g.metrics.limited.WithLabelValues(account).Set(float64(rl.Until.UnixMilli()) / 1000)
	if sooner {
		g.log().Warn("github rate limit spent: reads put off until it resets", "account", account, "until", rl.Until.UTC().Format(time.RFC3339))
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

func (g *GitHub) remote(ri github.RepoInfo) string {
	if g.Remote != nil {
		return g.Remote(ri.Repo.Owner, ri.Repo.Name)
	}
	return ri.CloneURL
}

func refsOf(ri github.RepoInfo, remote string, rs []github.Ref) []forge.Ref {
	out := make([]forge.Ref, 0, len(rs))
	for _, r := range rs {
		out = append(out, forge.Ref{
			Repo: forge.RepoID{Forge: "github", Owner: ri.Repo.Owner, Name: ri.Repo.Name},
			Name: r.Name, PR: r.PR, Title: r.Title, Labels: r.Labels, Commit: r.Commit, Remote: remote,
		})
	}
	return out
}

// readState is the maps a read works on, copied from the last read's.
type readState struct {
	clients, byRemote map[string]*github.Client
	byRepo            map[string][]forge.Ref
	prev              map[string][]forge.Ref // byRepo of the last read
	ids               map[int64]string
	renames           [][2]string // old, new "owner/name"
}

func (g *GitHub) state() readState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := readState{clients: maps.Clone(g.clients), byRemote: maps.Clone(g.byRemote), byRepo: maps.Clone(g.lastRefs), prev: g.lastRefs, ids: maps.Clone(g.ids)}
	if st.clients == nil {
		st.clients = map[string]*github.Client{}
	}
	if st.byRemote == nil {
		st.byRemote = map[string]*github.Client{}
	}
	if st.byRepo == nil {
		st.byRepo = map[string][]forge.Ref{}
	}
	if st.ids == nil {
		st.ids = map[int64]string{}
	}
	return st
}

// add records a repository read under the name GitHub gives it now; hint is the old
// name a repository event gave, for a repository not seen under it.
func (st *readState) add(c *github.Client, ri github.RepoInfo, remote string, refs []forge.Ref, hint string) {
	name := ri.Repo.String()
	old := st.ids[ri.ID]
	if old == "" || ri.ID == 0 {
		old = hint
	}
	if old != "" && old != name {
		if _, followed := st.prev[old]; followed {
			st.renames = append(st.renames, [2]string{old, name})
		}
		delete(st.byRepo, old)
	}
	if ri.ID != 0 {
		st.ids[ri.ID] = name
	}
	st.clients[name] = c
	st.byRemote[ri.CloneURL] = c
	st.byRemote[remote] = c
	if ri.Archived {
		delete(st.byRepo, name)
		return
	}
	st.byRepo[name] = refs
}

// commit tells Renamed of the renames found, makes st the last read and returns its refs.
func (g *GitHub) commit(ctx context.Context, st readState) []forge.Ref {
	for _, rn := range st.renames {
		from, to := githubRepoID(rn[0]), githubRepoID(rn[1])
		g.log().Info("github repository renamed: its refs and history follow it", "from", rn[0], "to", rn[1])
		if g.Renamed != nil {
			if err := g.Renamed(ctx, from, to); err != nil {
				g.log().Warn("github repository renamed: its history stays under the old name", "from", rn[0], "to", rn[1], "err", err)
			}
		}
	}
	g.mu.Lock()
	g.clients, g.byRemote, g.lastRefs, g.ids = st.clients, st.byRemote, st.byRepo, st.ids
	g.mu.Unlock()
	var refs []forge.Ref
	for _, rs := range st.byRepo {
		refs = append(refs, rs...)
	}
	sortRefs(refs)
	return refs
}

func githubRepoID(full string) forge.RepoID {
	owner, name, _ := strings.Cut(full, "/")
	return forge.RepoID{Forge: "github", Owner: owner, Name: name}
}

// ListRefs reads every branch and open pull request followed.
func (g *GitHub) ListRefs(ctx context.Context) ([]forge.Ref, error) {
	g.init()
	g.metrics.reads.WithLabelValues("all").Inc()
	insts, err := g.App.Installations(ctx)
	st := g.state()
	if err != nil {
		var rl *github.RateLimitError
		if errors.As(err, &rl) {
			g.putOff(rl, "(app)", func(w *githubWork) { w.full = true })
			if st.prev != nil {
				return g.commit(ctx, st), nil // as last read, until the reset
			}
		}
		return nil, fmt.Errorf("github installations: %w", err)
	}
	last := st.prev
	st.byRepo = map[string][]forge.Ref{}
	// One installation or repository that cannot be read keeps its refs of the last
	// read, so that its builds go on; the others are read as usual.
	keep := func(repo string) {
		if rs, ok := last[repo]; ok {
			st.byRepo[repo] = rs
		}
	}
	var failed []string
	for _, inst := range insts {
		c := g.App.Installation(inst.ID)
		repos, err := c.Repos(ctx)
		if err != nil {
			var rl *github.RateLimitError
			if errors.As(err, &rl) {
				g.putOff(rl, inst.Account, func(w *githubWork) { w.full = true })
			} else {
				g.log().Warn("github installation unreadable; its refs stay as last read", "installation", inst.ID, "account", inst.Account, "err", err)
			}
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
			remote := g.remote(ri)
			rs, err := c.Refs(ctx, ri.Repo, since(g.Cutoff))
			if err != nil {
				var rl *github.RateLimitError
				if errors.As(err, &rl) {
					g.putOff(rl, inst.Account, func(w *githubWork) { w.read(ri.Repo.String(), inst.ID) })
				} else {
					g.log().Warn("github repository unreadable; its refs stay as last read", "repo", ri.Repo.String(), "err", err)
				}
				failed = append(failed, fmt.Sprintf("%s: %v", ri.Repo, err))
				st.clients[ri.Repo.String()] = c
				keep(ri.Repo.String())
				continue
			}
			st.add(c, ri, remote, refsOf(ri, remote, rs), "")
		}
	}
	if len(failed) > 0 && len(st.byRepo) == 0 {
		return nil, fmt.Errorf("github: nothing could be read: %s", strings.Join(failed, "; "))
	}
	for id, name := range st.ids {
		if _, ok := st.byRepo[name]; !ok {
			delete(st.ids, id)
		}
	}
	return g.commit(ctx, st), nil
}

// readSome does what webhooks asked for: forget the repositories gone, patch pull
// request titles, and read again the repositories named, each alone.
func (g *GitHub) readSome(ctx context.Context, w githubWork) ([]forge.Ref, error) {
	st := g.state()
	for repo := range w.drop {
		delete(st.byRepo, repo)
	}
	for t, title := range w.titles {
		rs := slices.Clone(st.byRepo[t.repo])
		for i := range rs {
			if rs[i].PR == t.pr {
				rs[i].Title = title
			}
		}
		if rs != nil {
			st.byRepo[t.repo] = rs
		}
	}
	for _, repo := range slices.Sorted(maps.Keys(w.repos)) {
		c := st.clients[repo]
		if inst := w.repos[repo]; inst != 0 {
			c = g.App.Installation(inst)
		}
		if c == nil {
			// Not seen before and no installation named: the next poll finds it.
			g.log().Info("github repository unknown: left to the next poll", "repo", repo)
			continue
		}
		g.metrics.reads.WithLabelValues("repo").Inc()
		r, err := github.ParseRepo(repo)
		if err != nil {
			g.log().Warn("github webhook named no repository", "err", err)
			continue
		}
		ri, rs, err := c.RepoRefs(ctx, r, since(g.Cutoff))
		var rl *github.RateLimitError
		switch {
		case err == nil:
			remote := g.remote(ri)
			st.add(c, ri, remote, refsOf(ri, remote, rs), w.renamed[repo])
		case errors.As(err, &rl):
			inst := w.repos[repo]
			old := w.renamed[repo]
			g.putOff(rl, r.Owner, func(w *githubWork) {
				w.read(repo, inst)
				if old != "" {
					if w.renamed == nil {
						w.renamed = map[string]string{}
					}
					w.renamed[repo] = old
				}
			})
		case errors.Is(err, github.ErrNotFound):
			g.log().Info("github repository gone or out of reach: no longer followed", "repo", repo)
			delete(st.byRepo, repo)
		default:
			g.log().Warn("github repository unreadable; its refs stay as last read", "repo", repo, "err", err)
		}
	}
	return g.commit(ctx, st), nil
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

// Webhook is the handler GitHub delivers events to. An event that can have moved a head
// (a branch push, a pull request opened, pushed to, closed or reopened, a check suite
// requested) has its repository read again; a pull request's new title is taken from
// the event; a repository renamed or transferred is followed under its new name, one
// deleted or archived no longer; tag pushes and other pull request edits change
// nothing. Re-run requests rebuild the commit. sh counts and bounds the deliveries.
func (g *GitHub) Webhook(secret []byte, allow webhook.AllowList, sh webhook.Shared) http.Handler {
	g.init()
	return &github.Webhook{Secret: secret, Allow: allow, Shared: sh, Logger: g.Logger, Handle: g.handle}
}

func (g *GitHub) handle(ctx context.Context, ev github.Event) error {
	if e, ok := ev.(*github.RerunEvent); ok {
		if g.Rerun != nil {
			return g.Rerun(ctx, forge.RepoID{Forge: "github", Owner: e.Repo.Owner, Name: e.Repo.Name}, e.HeadSHA)
		}
		return nil
	}
	if g.ask(ev) {
		g.mon.Refresh()
	}
	return nil
}

// ask records what ev asks of the next read, and reports whether it asks anything.
func (g *GitHub) ask(ev github.Event) bool {
	inst := ev.Meta().Installation
	g.mu.Lock()
	defer g.mu.Unlock()
	w := &g.work
	switch e := ev.(type) {
	case *github.PushEvent:
		if _, branch := e.Branch(); !branch {
			return false
		}
		w.read(e.Repo.String(), inst)
	case *github.PullRequestEvent:
		if !e.MovesHead() {
			if e.Meta().Action != "edited" {
				return false
			}
			if w.titles == nil {
				w.titles = map[prTitle]string{}
			}
			w.titles[prTitle{e.Repo.String(), e.Number}] = e.Title
			return true
		}
		w.read(e.Repo.String(), inst)
	case *github.CheckSuiteEvent:
		w.read(e.Repo.String(), inst)
	case *github.RepositoryEvent:
		if e.Gone() {
			w.forget(e.Repo.String())
			return true
		}
		w.read(e.Repo.String(), inst)
		if e.From != (github.Repo{}) {
			if w.renamed == nil {
				w.renamed = map[string]string{}
			}
			w.renamed[e.Repo.String()] = e.From.String()
		}
	case *github.InstallationEvent:
		if e.Meta().Event != "installation_repositories" {
			w.full = true
			return true
		}
		for _, r := range e.Added {
			w.read(r.String(), inst)
		}
		for _, r := range e.Removed {
			w.forget(r.String())
		}
	default:
		return false
	}
	return !w.empty()
}

// Publish sets the commit's check run.
func (g *GitHub) Publish(ctx context.Context, ref forge.Ref, st forge.Status, variants []forge.Variant) error {
	return g.PublishCheck(ctx, ref, forge.Check{}, st, variants)
}

// Reads is how many times the refs have been read.
func (g *GitHub) Reads() int {
	g.init()
	return g.mon.Reads()
}
