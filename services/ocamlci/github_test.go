package ocamlci

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/github"
	"github.com/kiln-ci/kiln/forge/github/githubtest"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

func TestGitHubChecksRunsAndWebhooks(t *testing.T) {
	testenv.Short(t, "builds a dune project in a sandbox")
	repoDir := t.TempDir()
	gitRun(t, repoDir, "init", "-q", "-b", "main")
	good := commitTree(t, repoDir, "main", sampleProject("Hello", false), "hello")

	api := githubtest.New(t, 4242)
	api.AddInstallation(1, "ocaml")
	now := time.Now()
	repo := githubtest.Repo{Owner: "ocaml", Name: "hello", Installation: 1,
		Branches: map[string]string{"main": good}, CommitDates: map[string]time.Time{good: now}}
	api.SetRepo(repo)
	app, err := github.NewApp(github.AppConfig{AppID: 4242, PrivateKey: api.PrivateKeyPEM(), API: api.APIURL()})
	if err != nil {
		t.Fatal(err)
	}
	gh := &forges.GitHub{App: app, BaseURL: "http://ci.test", Remote: func(owner, name string) string { return repoDir }}
	secret := []byte("webhook-secret")
	hook := httptest.NewServer(gh.Webhook(secret, webhook.NewAllowList("ocaml"), webhook.Shared{}))
	t.Cleanup(hook.Close)

	h := startCI(t, repoDir, matrix.Default()[:1], func(s *Service) {
		s.Forges = forgeSet("github", gh)
	})
	h.repo = forge.RepoID{Forge: "github", Owner: "ocaml", Name: "hello"}
	h.svc.Forges.OnRerun(func(ctx context.Context, repo forge.RepoID, commit string) error {
		_, err := h.svc.RebuildCommit(h.engine, repo, commit)
		return err
	})
	c := h.waitCommit(good, 10*time.Minute)
	if c.State != forge.Passed {
		t.Fatalf("main: %s\n%s", c.State, c.Summary)
	}
	runs := waitCheckRun(t, api, "ocaml/hello", good, "success")
	if runs.Name != "kiln" || runs.DetailsURL != "http://ci.test/github/ocaml/hello/commit/"+good ||
		!strings.Contains(runs.Summary, "debian-12-4.13_amd64") {
		t.Errorf("check run = %+v", runs)
	}
	var sawCreate bool
	for _, r := range api.Requests() {
		if r.Method == "POST" && r.Path == "/repos/ocaml/hello/check-runs" {
			sawCreate = true
			if r.Auth != "token "+githubtest.TokenFor(1) {
				t.Errorf("check run created with %q, want the installation token", r.Auth)
			}
		}
	}
	if !sawCreate {
		t.Errorf("no check run was created: %+v", api.Requests())
	}

	// A forged delivery is refused and changes nothing.
	bad := commitTree(t, repoDir, "pr-3", sampleProject("Hi", false), "say hi")
	repo.PRs = []githubtest.PR{{Number: 3, Title: "Say hi", HeadSHA: bad, HeadRef: "pr-3"}}
	repo.CommitDates[bad] = now
	api.SetRepo(repo)
	payload := githubtest.PullRequestPayload(1, "ocaml", "hello", "opened", 3, "pr-3", bad, "main")
	before := gh.Reads()
	if code := githubtest.Deliver(t, hook.URL, []byte("wrong"), "pull_request", payload); code != http.StatusUnauthorized {
		t.Fatalf("forged delivery answered %d, want 401", code)
	}
	time.Sleep(500 * time.Millisecond)
	if gh.Reads() != before {
		t.Fatalf("a forged delivery made the refs be read again")
	}
	if c, _ := h.svc.Index.Commit(context.Background(), h.repo, bad); c != nil {
		t.Fatalf("a forged delivery got a commit built: %+v", c)
	}

	// The real delivery builds the pull request, which fails with the error in its check run.
	if code := githubtest.Deliver(t, hook.URL, secret, "pull_request", payload); code >= 300 {
		t.Fatalf("delivery answered %d", code)
	}
	c = h.waitCommit(bad, 10*time.Minute)
	if c.State != forge.Failed {
		t.Fatalf("PR: %s\n%s", c.State, c.Summary)
	}
	run := waitCheckRun(t, api, "ocaml/hello", bad, "failure")
	if !strings.Contains(run.Summary, `got "Hi, world"`) {
		t.Errorf("failed check run's summary lacks the error line:\n%s", run.Summary)
	}

	// "Re-run all checks" on GitHub runs the commit's jobs again.
	old, _ := h.svc.Index.Variant(context.Background(), h.repo, bad, "debian-12-4.13_amd64")
	rerun := githubtest.CheckSuiteRerequestedPayload(1, "ocaml", "hello", 77, "pr-3", bad)
	if code := githubtest.Deliver(t, hook.URL, secret, "check_suite", rerun); code >= 300 {
		t.Fatalf("re-run delivery answered %d", code)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		v, _ := h.svc.Index.Variant(context.Background(), h.repo, bad, "debian-12-4.13_amd64")
		if v != nil && v.JobID != old.JobID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("re-run did not start a new job (still %s)", old.JobID)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitCheckRun(t *testing.T, api *githubtest.API, repo, commit, conclusion string) githubtest.CheckRun {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, r := range api.CheckRuns(repo, commit) {
			if r.Conclusion == conclusion {
				return r
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no check run with conclusion %s on %s: %+v", conclusion, commit, api.CheckRuns(repo, commit))
	return githubtest.CheckRun{}
}
