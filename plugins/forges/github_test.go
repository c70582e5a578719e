package forges

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/forge/github/githubtest"
	"github.com/kiln-ci/kiln/forge/webhook"
)

// One installation or repository that cannot be read stops neither the others nor its
// own builds: a suspended installation is skipped, a broken one keeps its refs of the
// last read.
func TestGitHubReadsPastFailingInstallations(t *testing.T) {
	api := githubtest.New(t, 4242)
	now := time.Now()
	for i, acct := range []string{"healthy", "suspended", "flaky"} {
		id := int64(i + 1)
		api.AddInstallation(id, acct)
		commit := slices.Repeat([]byte{byte('a' + i)}, 40)
		api.SetRepo(githubtest.Repo{Owner: acct, Name: "lib", Installation: id,
			Branches: map[string]string{"main": string(commit)}, CommitDates: map[string]time.Time{string(commit): now}})
	}
	g := &GitHub{App: mustApp(t, api)}
	g.Refs() // as a pipeline does first: the monitor and its maps are set up
	owners := func(refs []forge.Ref) []string {
		var out []string
		for _, r := range refs {
			out = append(out, r.Repo.Owner)
		}
		slices.Sort(out)
		return out
	}
	ctx := context.Background()
	refs, err := g.ListRefs(ctx)
	if err != nil || !slices.Equal(owners(refs), []string{"flaky", "healthy", "suspended"}) {
		t.Fatalf("first read: %v %v", owners(refs), err)
	}
	api.SuspendInstallation(2)
	api.BreakInstallation(3)
	// A new client per installation, so that no token is cached from the first read.
	g = &GitHub{App: mustApp(t, api), lastRefs: g.lastRefs}
	refs, err = g.ListRefs(ctx)
	if err != nil {
		t.Fatalf("one broken installation failed the read: %v", err)
	}
	if got := owners(refs); !slices.Equal(got, []string{"flaky", "healthy"}) {
		t.Errorf("refs of %v, want the healthy installation's and the broken one's as last read (not the suspended one's)", got)
	}
	// Nothing readable and nothing to keep: the read fails, saying why.
	api.BreakInstallation(1)
	g = &GitHub{App: mustApp(t, api)}
	api.SuspendInstallation(3)
	if refs, err := g.ListRefs(ctx); err == nil {
		t.Errorf("every installation broken, yet the read gave %v", owners(refs))
	}
}

func mustApp(t *testing.T, api *githubtest.API) *github.App {
	t.Helper()
	app, err := github.NewApp(github.AppConfig{AppID: 4242, PrivateKey: api.PrivateKeyPEM(), API: api.APIURL()})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

const (
	headA  = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	headA2 = "abababababababababababababababababababab"
	headB  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	headB2 = "bcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbcbc"
	headPR = "cccccccccccccccccccccccccccccccccccccccc"
)

var hookSecret = []byte("webhook secret")

// ghWatch is a GitHub source watched by a running engine, as a service's pipeline
// watches it, with its webhook served.
type ghWatch struct {
	api  *githubtest.API
	g    *GitHub
	hook string
	refs chan []forge.Ref
}

// watchGitHub follows installation 1 of account "alpha" with the repositories a (a
// branch and a pull request) and b (two branches), and waits for the first read.
func watchGitHub(t *testing.T, g *GitHub) *ghWatch {
	t.Helper()
	api := githubtest.New(t, 4242)
	api.AddInstallation(1, "alpha")
	api.SetRepo(repoA(headA, "Fix the build"))
	api.SetRepo(githubtest.Repo{Owner: "alpha", Name: "b", Installation: 1, Branches: map[string]string{"main": headB, "dev": headB}})
	g.App = mustApp(t, api)
	if g.Logger == nil {
		g.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	g.Cutoff = 100 * 365 * 24 * time.Hour // the stand-in's commits are from 2026-01-01
	e, err := current.Open(current.Config{StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w := &ghWatch{api: api, g: g, refs: make(chan []forge.Ref, 100)}
	root := current.Map(g.Refs(), func(rs []forge.Ref) current.Unit { w.refs <- rs; return current.Unit{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, root) }()
	srv := httptest.NewServer(g.Webhook(hookSecret, webhook.AllowList{}, webhook.Shared{}))
	w.hook = srv.URL
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		e.Close()
	})
	w.next(t, "the first read", func(refs []forge.Ref) bool { return len(refs) == 4 })
	return w
}

// repoA is the repository alpha/a with the head of main and the title of its pull
// request 7.
func repoA(main, title string) githubtest.Repo {
	return githubtest.Repo{Owner: "alpha", Name: "a", Installation: 1, Branches: map[string]string{"main": main},
		PRs: []githubtest.PR{{Number: 7, Title: title, HeadSHA: headPR, HeadRef: "fix", Base: "main", Author: "bob"}}}
}

// editTitle renames pull request 7 of alpha/a on GitHub and delivers the event.
func (w *ghWatch) editTitle(t *testing.T, main, title string) {
	t.Helper()
	w.api.SetRepo(repoA(main, title))
	w.deliver(t, "pull_request", bytes.Replace(githubtest.PullRequestPayload(1, "alpha", "a", "edited", 7, "fix", headPR, "main"),
		[]byte("Change 7"), []byte(title), 1))
}

// next waits for refs that satisfy ok.
func (w *ghWatch) next(t *testing.T, what string, ok func([]forge.Ref) bool) []forge.Ref {
	t.Helper()
	timeout := time.After(30 * time.Second)
	var last []forge.Ref
	for {
		select {
		case refs := <-w.refs:
			if ok(refs) {
				return refs
			}
			last = refs
		case <-timeout:
			t.Fatalf("%s: no such refs; the last were %v", what, keys(last))
		}
	}
}

func (w *ghWatch) deliver(t *testing.T, event string, payload []byte) {
	t.Helper()
	if code := githubtest.Deliver(t, w.hook, hookSecret, event, payload); code >= 300 {
		t.Fatalf("%s delivery answered %d", event, code)
	}
}

// reads are the API requests after the first n, without the App's own.
func (w *ghWatch) reads(n int) []string {
	var out []string
	for _, r := range w.api.Requests()[n:] {
		if !strings.HasPrefix(r.Path, "/app/") {
			out = append(out, r.Method+" "+strings.SplitN(r.Path, "?", 2)[0])
		}
	}
	return out
}

func keys(refs []forge.Ref) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Key()+"@"+r.Commit[:4]+" "+r.Title)
	}
	return out
}

func head(refs []forge.Ref, key string) string {
	for _, r := range refs {
		if r.Key() == key {
			return r.Commit
		}
	}
	return ""
}

// A webhook re-reads the repository it names, and only when it can have moved a head.
func TestGitHubWebhookReadsOnlyItsRepository(t *testing.T) {
	w := watchGitHub(t, &GitHub{})
	titled := func(title string) func([]forge.Ref) bool {
		return func(refs []forge.Ref) bool {
			for _, r := range refs {
				if r.PR == 7 && r.Title == title {
					return true
				}
			}
			return false
		}
	}
	const (
		mainA = "github/alpha/a refs/heads/main"
		mainB = "github/alpha/b refs/heads/main"
		devB  = "github/alpha/b refs/heads/dev"
	)
	for _, tc := range []struct {
		name string
		// change is what happens on GitHub before the deliveries.
		change     func(api *githubtest.API)
		event      string
		payload    []byte
		want       func([]forge.Ref) bool
		wantReadOf string // the only repository read ("": none)
	}{
		{"push to a branch of a", func(api *githubtest.API) { api.SetRepo(repoA(headA2, "Fix the build")) }, "push", githubtest.PushPayload(1, "alpha", "a", "refs/heads/main", headA, headA2),
			func(refs []forge.Ref) bool { return head(refs, mainA) == headA2 }, "alpha/a"},
		{"pull request title edited", func(api *githubtest.API) { api.SetRepo(repoA(headA2, "Change 7")) }, "pull_request",
			githubtest.PullRequestPayload(1, "alpha", "a", "edited", 7, "fix", headPR, "main"), titled("Change 7"), ""},
		{"tag pushed", nil, "push", githubtest.PushPayload(1, "alpha", "a", "refs/tags/v1", headA, headA2), nil, ""},
		{"pull request ready for review", nil, "pull_request", githubtest.PullRequestPayload(1, "alpha", "a", "ready_for_review", 7, "fix", headPR, "main"), nil, ""},
		{"branch of b deleted", func(api *githubtest.API) {
			api.SetRepo(githubtest.Repo{Owner: "alpha", Name: "b", Installation: 1, Branches: map[string]string{"main": headB}})
		}, "push", githubtest.PushPayload(1, "alpha", "b", "refs/heads/dev", headB, strings.Repeat("0", 40)),
			func(refs []forge.Ref) bool { return head(refs, devB) == "" && head(refs, mainB) == headB }, "alpha/b"},
		{"check suite requested on b", func(api *githubtest.API) {
			api.SetRepo(githubtest.Repo{Owner: "alpha", Name: "b", Installation: 1, Branches: map[string]string{"main": headB2}})
		}, "check_suite", githubtest.CheckSuiteRequestedPayload(1, "alpha", "b", 12, "main", headB2),
			func(refs []forge.Ref) bool { return head(refs, mainB) == headB2 }, "alpha/b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.change != nil {
				tc.change(w.api)
			}
			before := len(w.api.Requests())
			w.deliver(t, tc.event, tc.payload)
			if tc.want == nil {
				// Nothing to see: a title edit, which costs no read, marks when a read
				// the event would have caused is over.
				title := "Marked by " + tc.name
				w.editTitle(t, headA2, title)
				tc.want = titled(title)
			}
			refs := w.next(t, tc.name, tc.want)
			reads := w.reads(before)
			if tc.wantReadOf == "" {
				if len(reads) > 0 {
					t.Fatalf("GitHub was asked %v, want nothing", reads)
				}
				return
			}
			if len(reads) == 0 {
				t.Fatalf("no request to GitHub, want reads of %s", tc.wantReadOf)
			}
			for _, r := range reads {
				if !strings.HasPrefix(r, "GET /repos/"+tc.wantReadOf+"/") && r != "GET /repos/"+tc.wantReadOf {
					t.Fatalf("GitHub was asked %v, want reads of %s only", reads, tc.wantReadOf)
				}
			}
			if len(refs) < 3 {
				t.Fatalf("refs of the other repository lost: %v", keys(refs))
			}
		})
	}
}

// Once GitHub says an installation's rate limit is spent, nothing is asked of GitHub for
// it until the limit resets (the metric shows until when); then the reads that waited
// are done.
func TestGitHubReadsWaitForRateLimitReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit func(api *githubtest.API, reset time.Time)
		sent  int // requests GitHub answers before the limit stops them
	}{
		{"limit spent (403, X-RateLimit-Remaining: 0)", func(api *githubtest.API, reset time.Time) { api.LimitInstallation(1, 0, reset) }, 1},
		{"last request of the limit", func(api *githubtest.API, reset time.Time) { api.LimitInstallation(1, 1, reset) }, 1},
		{"secondary limit (429, Retry-After)", func(api *githubtest.API, _ time.Time) { api.ThrottleInstallation(1, time.Second) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			w := watchGitHub(t, &GitHub{Registerer: reg})
			before := len(w.api.Requests())
			start := time.Now()
			tc.limit(w.api, time.Now().Truncate(time.Second).Add(2*time.Second))
			w.api.SetRepo(repoA(headA2, "Fix the build"))
			w.deliver(t, "push", githubtest.PushPayload(1, "alpha", "a", "refs/heads/main", headA, headA2))
			// A push while the limit is spent waits too.
			w.api.SetRepo(githubtest.Repo{Owner: "alpha", Name: "b", Installation: 1, Branches: map[string]string{"main": headB2}})
			w.deliver(t, "push", githubtest.PushPayload(1, "alpha", "b", "refs/heads/main", headB, headB2))
			w.next(t, "both pushes read after the reset", func(refs []forge.Ref) bool {
				return head(refs, "github/alpha/a refs/heads/main") == headA2 && head(refs, "github/alpha/b refs/heads/main") == headB2
			})
			var m dto.Metric
			if err := w.g.metrics.limited.WithLabelValues("alpha").Write(&m); err != nil {
				t.Fatal(err)
			}
			until := m.GetGauge().GetValue()
			if until < float64(start.Unix()) {
				t.Fatalf("kiln_forge_github_rate_limited_until_seconds = %v, want the reset time", until)
			}
			var early, late []string
			for _, r := range w.api.Requests()[before:] {
				if strings.HasPrefix(r.Path, "/app/") {
					continue
				}
				if float64(r.Time.UnixMilli())/1000 < until {
					early = append(early, fmt.Sprint(r.Status, " ", r))
				} else {
					late = append(late, r.String())
				}
			}
			if len(early) != tc.sent {
				t.Fatalf("GitHub was asked %v before the limit reset, want %d request(s)", early, tc.sent)
			}
			if len(late) == 0 {
				t.Fatal("nothing was read after the reset")
			}
		})
	}
}

// renameLog records the renames a GitHub source tells of.
type renameLog struct {
	mu  sync.Mutex
	log []string
}

func (l *renameLog) add(_ context.Context, from, to forge.RepoID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = append(l.log, from.String()+" → "+to.String())
	return nil
}

func (l *renameLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.log)
}

// A repository renamed or transferred is followed under its new name at once (its
// history told to follow it); one deleted or archived is no longer followed.
func TestGitHubRepositoryEvents(t *testing.T) {
	var renames renameLog
	w := watchGitHub(t, &GitHub{Renamed: renames.add})
	id := w.api.RepoID("alpha/a")
	repos := func(refs []forge.Ref) []string {
		var out []string
		for _, r := range refs {
			if !slices.Contains(out, r.Repo.String()) {
				out = append(out, r.Repo.String())
			}
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		change      func(api *githubtest.API)
		payload     []byte
		wantRepos   []string
		wantRenamed []string
		wantReadOf  string
	}{
		{"renamed", func(api *githubtest.API) { api.RenameRepo("alpha/a", "alpha", "a2") },
			githubtest.RepositoryPayload(1, id, "alpha", "a2", "renamed", "a"),
			[]string{"github/alpha/a2", "github/alpha/b"}, []string{"github/alpha/a → github/alpha/a2"}, "alpha/a2"},
		{"transferred", func(api *githubtest.API) { api.RenameRepo("alpha/a2", "gamma", "a2") },
			githubtest.RepositoryPayload(1, id, "gamma", "a2", "transferred", "alpha"),
			[]string{"github/alpha/b", "github/gamma/a2"}, []string{"github/alpha/a → github/alpha/a2", "github/alpha/a2 → github/gamma/a2"}, "gamma/a2"},
		{"archived", func(api *githubtest.API) { api.ArchiveRepo("alpha/b") },
			githubtest.RepositoryPayload(1, w.api.RepoID("alpha/b"), "alpha", "b", "archived", ""),
			[]string{"github/gamma/a2"}, nil, ""},
		{"deleted", func(api *githubtest.API) { api.DeleteRepo("gamma/a2") },
			githubtest.RepositoryPayload(1, id, "gamma", "a2", "deleted", ""),
			nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.change(w.api)
			before := len(w.api.Requests())
			w.deliver(t, "repository", tc.payload)
			refs := w.next(t, tc.name, func(refs []forge.Ref) bool { return slices.Equal(repos(refs), tc.wantRepos) })
			if got := renames.get(); tc.wantRenamed != nil && !slices.Equal(got, tc.wantRenamed) {
				t.Errorf("renames told: %v, want %v", got, tc.wantRenamed)
			}
			for _, r := range refs {
				if r.Remote != "https://github.com/"+r.Repo.Owner+"/"+r.Repo.Name+".git" {
					t.Errorf("%s fetched from %s", r.Key(), r.Remote)
				}
			}
			for _, r := range w.reads(before) {
				if tc.wantReadOf == "" || !strings.HasPrefix(r, "GET /repos/"+tc.wantReadOf) {
					t.Errorf("GitHub was asked %s, want reads of %q only", r, tc.wantReadOf)
				}
			}
		})
	}
}

// A rename no webhook told of is found by the poll, by the repository's number.
func TestGitHubRenameFoundByThePoll(t *testing.T) {
	var renames renameLog
	w := watchGitHub(t, &GitHub{Poll: 50 * time.Millisecond, Renamed: renames.add})
	w.api.RenameRepo("alpha/b", "alpha", "b2")
	w.next(t, "the rename", func(refs []forge.Ref) bool {
		return len(refs) == 4 && head(refs, "github/alpha/b2 refs/heads/main") == headB && head(refs, "github/alpha/b refs/heads/main") == ""
	})
	w.next(t, "a later poll", func(refs []forge.Ref) bool { return true })
	if got, want := renames.get(), []string{"github/alpha/b → github/alpha/b2"}; !slices.Equal(got, want) {
		t.Fatalf("renames told: %v, want %v", got, want)
	}
}

// The App's own rate limit spent, the poll keeps the refs of the last read and reads
// again when the limit resets, instead of failing.
func TestGitHubAppRateLimitKeepsRefs(t *testing.T) {
	api := githubtest.New(t, 4242)
	api.AddInstallation(1, "alpha")
	api.SetRepo(repoA(headA, "Fix the build"))
	g := &GitHub{App: mustApp(t, api), Cutoff: 100 * 365 * 24 * time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	g.Refs()
	ctx := context.Background()
	first, err := g.ListRefs(ctx)
	if err != nil || len(first) != 2 {
		t.Fatalf("first read: %v %v", keys(first), err)
	}
	api.LimitApp(0, time.Now().Add(time.Hour))
	for i := range 2 {
		refs, err := g.ListRefs(ctx)
		if err != nil || !slices.Equal(keys(refs), keys(first)) {
			t.Fatalf("read %d with the App's limit spent: %v %v, want the refs of the last read", i+1, keys(refs), err)
		}
	}
	var listed int
	for _, r := range api.Requests() {
		if r.Path == "/app/installations" || strings.HasPrefix(r.Path, "/app/installations?") {
			listed++
		}
	}
	if listed != 2 {
		t.Errorf("installations listed %d times, want twice (the first read, then the refused one)", listed)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.work.full || !g.retryAt.After(time.Now()) {
		t.Errorf("no full read put off until the reset (full %v, at %v)", g.work.full, g.retryAt)
	}
}
