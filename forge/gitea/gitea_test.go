package gitea_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/git/gittest"
)

// kilnEndpoint is a stand-in for the CI service: it receives the forge's webhooks through
// gitea.Webhook, fetches the commit into a mirror with the forge's credentials and sets
// a commit status through the API.
type kilnEndpoint struct {
	*httptest.Server
	events chan gitea.Event
	mu     sync.Mutex
	errs   []error
}

func newKilnEndpoint(t *testing.T, c *gitea.Client, secret []byte) *kilnEndpoint {
	k := &kilnEndpoint{events: make(chan gitea.Event, 16)}
	mirrors := git.NewMirrors(t.TempDir(), git.MirrorsOptions{Credentials: c.Credentials()})
	hook := &gitea.Webhook{Secret: secret, Handle: func(ctx context.Context, ev gitea.Event) error {
		var repo gitea.Repo
		var url, commit string
		var refs []string
		switch e := ev.(type) {
		case *gitea.PushEvent:
			if e.Deleted {
				return nil
			}
			repo, url, commit, refs = e.Repo, e.CloneURL, e.After, []string{e.Ref}
		case *gitea.PullRequestEvent:
			repo, url, commit, refs = e.Repo, e.CloneURL, e.HeadSHA, []string{e.Ref()}
		}
		r, err := mirrors.FetchCommit(ctx, url, commit, refs...)
		if err == nil {
			var data []byte
			data, err = r.ReadFile(ctx, commit, "README.md")
			if err == nil {
				st := forge.Summarise([]forge.Variant{{Name: "debian-13-5.3_amd64", State: forge.Passed}})
				err = c.SetStatus(ctx, repo, commit, gitea.Status{Context: "kiln", State: st.State,
					Description: st.Title + " (" + strings.TrimSpace(string(data)) + ")", TargetURL: "http://127.0.0.1/kiln/" + commit})
			}
		}
		if err != nil {
			k.mu.Lock()
			k.errs = append(k.errs, err)
			k.mu.Unlock()
		}
		k.events <- ev
		return err
	}}
	k.Server = httptest.NewServer(hook)
	t.Cleanup(k.Close)
	return k
}

func (k *kilnEndpoint) next(t *testing.T, want func(gitea.Event) bool) gitea.Event {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case ev := <-k.events:
			k.mu.Lock()
			errs := k.errs
			k.mu.Unlock()
			if len(errs) > 0 {
				t.Fatalf("handling %T: %v", ev, errs)
			}
			if want(ev) {
				return ev
			}
		case <-timeout:
			t.Fatal("no webhook delivery from Gitea within 90s")
		}
	}
}

func TestGiteaWebhooksAndStatuses(t *testing.T) {
	ctx := context.Background()
	s := giteatest.Start(t)
	c, err := gitea.NewClient(ctx, s.URL, s.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix("v"+c.Version(), giteatest.Version) {
		t.Errorf("server version %s", c.Version())
	}
	admin, err := sdk.NewClient(strings.TrimSuffix(s.URL, "/"), sdk.SetToken(s.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.CreateRepo(sdk.CreateRepoOption{Name: "hello", Private: true, DefaultBranch: "main"}); err != nil {
		t.Fatal(err)
	}
	repo := gitea.Repo{Owner: s.Admin, Name: "hello"}
	cloneURL := s.RepoURL(s.Admin, "hello")
	pushURL := strings.Replace(cloneURL, "http://", "http://"+s.Admin+":"+s.Token+"@", 1)

	local := gittest.NewRepo(t)
	c1 := local.Commit("first", map[string]string{"README.md": "hello\n"})
	local.Git("push", "--quiet", pushURL, "main")

	// A private repository: no credentials, no access; the client's token works.
	_, err = git.NewMirrors(t.TempDir(), git.MirrorsOptions{}).Fetch(ctx, cloneURL)
	if !errors.Is(err, git.ErrAuth) && !errors.Is(err, git.ErrNotFound) {
		t.Fatalf("anonymous fetch of a private repository: %v", err)
	}
	heads, err := git.Heads(ctx, cloneURL, c.Credentials())
	if err != nil || heads["refs/heads/main"] != c1 {
		t.Fatalf("ls-remote with the token: %v %v", heads, err)
	}

	secret := []byte("kiln-webhook-secret")
	k := newKilnEndpoint(t, c, secret)
	for range 2 {
		if err := c.EnsureWebhook(ctx, repo, k.URL+"/webhooks/gitea", secret); err != nil {
			t.Fatal(err)
		}
	}
	hooks, _, err := admin.ListRepoHooks(repo.Owner, repo.Name, sdk.ListHooksOptions{})
	if err != nil || len(hooks) != 1 {
		t.Fatalf("webhooks after EnsureWebhook twice: %d %v", len(hooks), err)
	}

	// A push reaches kiln, which sets a status.
	c2 := local.Commit("second", map[string]string{"README.md": "hello again\n"})
	local.Git("push", "--quiet", pushURL, "main")
	ev := k.next(t, func(ev gitea.Event) bool { p, ok := ev.(*gitea.PushEvent); return ok && p.After == c2 })
	push := ev.(*gitea.PushEvent)
	if push.Repo != repo || push.Ref != "refs/heads/main" || push.Before != c1 || !push.Private || push.Meta().Delivery == "" {
		t.Errorf("push event = %+v", push)
	}
	st, err := c.Statuses(ctx, repo, c2)
	if err != nil {
		t.Fatal(err)
	}
	if got := st["kiln"]; got.State != forge.Passed || got.Description != "1 passed (hello again)" || got.TargetURL != "http://127.0.0.1/kiln/"+c2 {
		t.Fatalf("status of %s = %+v", c2, st)
	}

	// A pull request from a branch.
	local.Git("checkout", "--quiet", "-b", "fix")
	c3 := local.Commit("fix", map[string]string{"README.md": "fixed\n"})
	local.Git("push", "--quiet", pushURL, "fix")
	k.next(t, func(ev gitea.Event) bool { p, ok := ev.(*gitea.PushEvent); return ok && p.After == c3 })
	pr, _, err := admin.CreatePullRequest(repo.Owner, repo.Name, sdk.CreatePullRequestOption{Head: "fix", Base: "main", Title: "Fix it"})
	if err != nil {
		t.Fatal(err)
	}
	ev = k.next(t, func(ev gitea.Event) bool { _, ok := ev.(*gitea.PullRequestEvent); return ok })
	pe := ev.(*gitea.PullRequestEvent)
	if pe.Number != int(pr.Index) || pe.HeadSHA != c3 || pe.Meta().Action != "opened" || pe.Title != "Fix it" || pe.BaseRef != "main" || pe.HeadRef != "fix" {
		t.Errorf("pull request event = %+v", pe)
	}
	// A new commit on the pull request.
	c4 := local.Commit("fix more", map[string]string{"README.md": "fixed more\n"})
	local.Git("push", "--quiet", pushURL, "fix")
	ev = k.next(t, func(ev gitea.Event) bool { p, ok := ev.(*gitea.PullRequestEvent); return ok && p.HeadSHA == c4 })
	if a := ev.Meta().Action; a != "synchronized" {
		t.Errorf("action on a new PR commit = %q, want synchronized", a)
	}
	if st, _ := c.Statuses(ctx, repo, c4); st["kiln"].State != forge.Passed {
		t.Errorf("status of the PR's head = %+v", st)
	}

	label, _, err := admin.CreateLabel(repo.Owner, repo.Name, sdk.CreateLabelOption{Name: "benchmark", Color: "#00aabb"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.AddIssueLabels(repo.Owner, repo.Name, pr.Index, sdk.IssueLabelsOption{Labels: []int64{label.ID}}); err != nil {
		t.Fatal(err)
	}

	refs, err := c.Refs(ctx, repo, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.Name+"="+r.Commit)
	}
	want := []string{"refs/heads/fix=" + c4, "refs/heads/main=" + c2, "refs/pull/1/head=" + c4}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("refs = %v, want %v", names, want)
	}
	if refs[2].PR != 1 || refs[2].Title != "Fix it" || refs[2].Author != s.Admin || refs[2].Base != "main" ||
		!slices.Equal(refs[2].Labels, []string{"benchmark"}) {
		t.Errorf("PR ref = %+v", refs[2])
	}
	if refs, _ := c.Refs(ctx, repo, time.Now().Add(time.Hour)); len(refs) != 1 || refs[0].Name != "refs/heads/main" {
		t.Errorf("refs after a cut-off in the future = %+v, want only the default branch", refs)
	}
	repos, err := c.Repos(ctx)
	if err != nil || len(repos) != 1 || repos[0].Repo != repo || !repos[0].Private || repos[0].DefaultBranch != "main" {
		t.Errorf("repos = %+v, %v", repos, err)
	}

	// A forged delivery is rejected and changes nothing.
	forgedCommit := local.Commit("never pushed", map[string]string{"README.md": "x\n"})
	body := []byte(`{"ref":"refs/heads/main","before":"` + c2 + `","after":"` + c2 + `","repository":{"name":"hello","full_name":"` + repo.String() + `","owner":{"login":"` + s.Admin + `"},"clone_url":"` + cloneURL + `"}}`)
	for _, sig := range []string{"", gitea.Sign([]byte("guess"), body), strings.Repeat("0", 64)} {
		req, _ := http.NewRequest(http.MethodPost, k.URL+"/webhooks/gitea", bytes.NewReader(body))
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("forged delivery (signature %q): %s, want 401", sig, resp.Status)
		}
	}
	select {
	case ev := <-k.events:
		t.Fatalf("a forged delivery reached the handler: %+v", ev)
	default:
	}
	if st, err := c.Statuses(ctx, repo, forgedCommit); err == nil && len(st) != 0 {
		t.Errorf("statuses appeared on %s: %+v", forgedCommit, st)
	}

	if _, err := gitea.NewClient(ctx, s.URL, "0123456789abcdef0123456789abcdef01234567", nil); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("a wrong token: %v", err)
	}
	if err := c.SetStatus(ctx, repo, "main", gitea.Status{Context: "kiln"}); err == nil {
		t.Error("a status on a branch name was accepted")
	}
}
