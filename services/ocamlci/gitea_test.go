package ocamlci

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
	"github.com/kiln-ci/kiln/forge/webhook"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/internal/matrix"
)

func TestGiteaCommitStatusesThroughWebhooks(t *testing.T) {
	testenv.Short(t, "runs a Gitea server and builds in a sandbox")
	srv := giteatest.Start(t)
	srv.CreateRepo(t, "hello", false)
	work := t.TempDir()
	gitRun(t, work, "init", "-q", "-b", "main")
	good := commitTree(t, work, "main", sampleProject("Hello", false), "hello")
	gitRun(t, work, "push", "-q", srv.PushURL(srv.Admin, "hello"), "main")

	ctx := context.Background()
	client, err := gitea.NewClient(ctx, srv.URL, srv.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &forges.Gitea{Client: client, BaseURL: "http://ci.test", Poll: time.Hour}
	secret := []byte("gitea-secret")
	hook := httptest.NewServer(g.Webhook(secret, webhook.Shared{}))
	t.Cleanup(hook.Close)
	repo := gitea.Repo{Owner: srv.Admin, Name: "hello"}
	if err := client.EnsureWebhook(ctx, repo, hook.URL, secret); err != nil {
		t.Fatal(err)
	}

	h := startCI(t, "", matrix.Default()[:1], func(s *Service) {
		s.Forges = forgeSet("gitea", g)
	})
	h.repo = forge.RepoID{Forge: "gitea", Owner: srv.Admin, Name: "hello"}
	if c := h.waitCommit(good, 10*time.Minute); c.State != forge.Passed {
		t.Fatalf("main: %s\n%s", c.State, c.Summary)
	}
	st := waitGiteaStatus(t, client, repo, good, forge.Passed)
	if st.TargetURL != "http://ci.test/gitea/"+srv.Admin+"/hello/commit/"+good {
		t.Errorf("status target = %q", st.TargetURL)
	}

	// A forged delivery is refused and builds nothing.
	reads := g.Reads()
	body := []byte(`{"ref":"refs/heads/main","before":"` + good + `","after":"` + strings.Repeat("1", 40) + `","repository":{"name":"hello","owner":{"login":"` + srv.Admin + `"}}}`)
	req, _ := http.NewRequest("POST", hook.URL, strings.NewReader(string(body)))
	req.Header.Set("X-Gitea-Event", "push")
	req.Header.Set("X-Gitea-Signature", gitea.Sign([]byte("not the secret"), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged delivery answered %d, want 401", resp.StatusCode)
	}
	time.Sleep(500 * time.Millisecond)
	if g.Reads() != reads {
		t.Fatal("a forged delivery made the refs be read again")
	}

	// A push (delivered by Gitea's own webhook) with a failing test: the status fails
	// and its description names the failing line.
	bad := commitTree(t, work, "say-hi", sampleProject("Hi", false), "say hi")
	gitRun(t, work, "push", "-q", srv.PushURL(srv.Admin, "hello"), "say-hi")
	if c := h.waitCommit(bad, 10*time.Minute); c.State != forge.Failed {
		t.Fatalf("say-hi: %s\n%s", c.State, c.Summary)
	}
	st = waitGiteaStatus(t, client, repo, bad, forge.Failed)
	if !strings.Contains(st.Description, "debian-12-4.13_amd64") {
		t.Errorf("failed status description = %q, want the failing variant", st.Description)
	}
}

func waitGiteaStatus(t *testing.T, c *gitea.Client, repo gitea.Repo, commit string, want forge.State) gitea.Status {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last map[string]gitea.Status
	for time.Now().Before(deadline) {
		sts, err := c.Statuses(context.Background(), repo, commit)
		if err != nil {
			t.Fatal(err)
		}
		last = sts
		if st, ok := sts["kiln"]; ok && st.State == want {
			return st
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("no %s status on %s: %+v", want, commit, last)
	return gitea.Status{}
}
