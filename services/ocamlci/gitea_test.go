package ocamlci

import (
	sdk "code.gitea.io/sdk/gitea"
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
	// Polled once an hour: only the webhook kiln adds itself tells it of a push.
	g := &forges.Gitea{Client: client, BaseURL: "http://ci.test", Poll: time.Hour}
	secret := []byte("gitea-secret")
	hook := httptest.NewServer(g.Webhook(secret, webhook.Shared{}))
	t.Cleanup(hook.Close)
	g.WebhookURL = hook.URL
	repo := gitea.Repo{Owner: srv.Admin, Name: "hello"}

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
	admin, err := sdk.NewClient(strings.TrimSuffix(srv.URL, "/"), sdk.SetToken(srv.Token))
	if err != nil {
		t.Fatal(err)
	}
	hooks, _, err := admin.ListRepoHooks(repo.Owner, repo.Name, sdk.ListHooksOptions{})
	if err != nil || len(hooks) != 1 || hooks[0].Config["url"] != hook.URL {
		t.Fatalf("webhooks of %s: %d %v, want kiln's own at %s", repo, len(hooks), err, hook.URL)
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

	// A push (delivered by the webhook kiln added) with a test whose output differs
	// from the expected: a status at once, then a failure whose description gives the
	// test's diff.
	files := sampleProject("Hello", false)
	files["test/expect/dune"] = "(executable (name show) (libraries hello))\n(rule (with-stdout-to greeting.out (run ./show.exe)))\n(rule (alias runtest) (action (diff greeting.ref greeting.out)))\n"
	files["test/expect/show.ml"] = "let () = print_endline (Hello.greet \"banana\")\n"
	files["test/expect/greeting.ref"] = "Hello, bananas\n"
	bad := commitTree(t, work, "expect", files, "an expect test that fails")
	pushed := time.Now()
	gitRun(t, work, "push", "-q", srv.PushURL(srv.Admin, "hello"), "expect")
	first := waitGiteaStatus(t, client, repo, bad, "")
	t.Logf("first status of the pushed commit after %s: %s", time.Since(pushed).Round(10*time.Millisecond), first.State)
	if c := h.waitCommit(bad, 10*time.Minute); c.State != forge.Failed {
		t.Fatalf("expect: %s\n%s", c.State, c.Summary)
	}
	st = waitGiteaStatus(t, client, repo, bad, forge.Failed)
	t.Logf("failed status: %s", st.Description)
	for _, want := range []string{"debian-12-4.13_amd64", `File "test/expect/greeting.ref"`, "-Hello, bananas", "+Hello, banana"} {
		if !strings.Contains(st.Description, want) {
			t.Errorf("failed status description = %q, want %q in it", st.Description, want)
		}
	}
	for _, own := range []string{"--- failed", "command failed with exit status"} {
		if strings.Contains(st.Description, own) {
			t.Errorf("failed status description = %q, has kiln's own %q", st.Description, own)
		}
	}
}

// waitGiteaStatus waits for kiln's status on commit to be want (any state when want is
// empty).
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
		if st, ok := sts["kiln"]; ok && (st.State == want || want == "") {
			return st
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("no %s status on %s: %+v", want, commit, last)
	return gitea.Status{}
}
