package bench

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	sdk "code.gitea.io/sdk/gitea"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/forge/gitea"
	"github.com/kiln-ci/kiln/forge/gitea/giteatest"
	"github.com/kiln-ci/kiln/git/gittest"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// giteaBench is a Gitea repository with a pull request, and the service publishing its
// judgements there.
type giteaBench struct {
	client *gitea.Client
	repo   gitea.Repo
	pr     int64
	svc    *testService
	api    *API
	set    *forges.Set // the Gitea, polled every second once followed
}

// newGiteaBench pushes work's main and branch to the Gitea repository name (made
// already), opens a pull request of branch into main, and returns the service wired to
// publish on that Gitea.
func newGiteaBench(t *testing.T, srv *giteatest.Server, work *gittest.Repo, name, branch string) *giteaBench {
	t.Helper()
	work.Git("push", "-q", srv.PushURL(srv.Admin, name), "main", branch)
	admin, err := sdk.NewClient(strings.TrimSuffix(srv.URL, "/"), sdk.SetToken(srv.Token))
	if err != nil {
		t.Fatal(err)
	}
	g := &giteaBench{repo: gitea.Repo{Owner: srv.Admin, Name: name}}
	// Gitea records pushed branches in the background: until then it knows no head.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		pr, _, err := admin.CreatePullRequest(srv.Admin, name, sdk.CreatePullRequestOption{Head: branch, Base: "main", Title: branch})
		if err == nil {
			g.pr = pr.Index
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create the pull request: %v", err)
		}
	}
	if g.client, err = gitea.NewClient(context.Background(), srv.URL, srv.Token, nil); err != nil {
		t.Fatal(err)
	}
	g.set = &forges.Set{}
	g.set.Add("gitea", &forges.Gitea{Client: g.client, BaseURL: "http://ci.test", Poll: time.Second})
	g.svc = newTestService(t)
	pub := &Publisher{Store: g.svc.store, Forges: g.set, BaseURL: "http://ci.test", Target: "main"}
	g.api, err = NewAPI(API{Store: g.svc.store, Logger: quiet, OnJudged: func(ctx context.Context, c Comparison) {
		if err := pub.Publish(ctx, c); err != nil {
			t.Errorf("publish: %v", err)
		}
	}}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// benchScript prints the time from the file speed with about 1 % of noise, and an
// allocation figure that does not change.
const benchScript = `j=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
echo "benchmarking..."
printf '{"name": "suite", "results": [{"name": "sort", "metrics": [{"name": "time", "value": %s.%d, "units": "ms", "trend": "lower-is-better"}, {"name": "alloc", "value": 50, "units": "MB"}]}]}\n' "$(cat speed)" $((j % 10))
`

// TestGiteaPullRequest benchmarks a PR that makes one metric 30 % slower, interleaved
// with its base, and checks what a real Gitea shows: a failed status naming that
// metric only, and one comment, edited in place when the PR is benchmarked again.
func TestGiteaPullRequest(t *testing.T) {
	testenv.Short(t, "runs a Gitea server")
	testenv.RequireCommand(t, "git", "sh", "od")
	srv := giteatest.Start(t)
	srv.CreateRepo(t, "lib", false)
	work := gittest.NewRepo(t)
	write := func(speed string) string {
		return work.Commit("speed "+speed, map[string]string{"speed": speed, "bench.sh": benchScript, ".kiln.yml": "bench:\n  command: sh bench.sh\n  repeats: 5\n"})
	}
	base := write("100")
	work.Git("checkout", "-q", "-b", "slower")
	head := write("130")
	g := newGiteaBench(t, srv, work, "lib", "slower")
	ctx := context.Background()
	checkout := func(commit string) string {
		dir := filepath.Join(t.TempDir(), commit[:8])
		work.Git("worktree", "add", "-q", "--detach", dir, commit)
		return dir
	}
	cfg, ok, err := ParseConfig([]byte("bench:\n  command: sh bench.sh\n  repeats: 5\n"))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	headDir, baseDir := checkout(head), checkout(base)
	benchmarkPR := func() {
		o := Run(ctx, Job{Dir: headDir, BaseDir: baseDir, Command: cfg.Command, Repeats: cfg.Repeats, Timeout: time.Minute}, nil)
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		run := store.Run{Repo: "gitea/" + srv.Admin + "/lib", PR: g.pr, Commit: head, Base: base, Env: "x86_64"}
		if _, err := g.api.Record(ctx, run, o); err != nil {
			t.Fatal(err)
		}
	}
	benchmarkPR()
	t.Run("status flags the slower metric only", func(t *testing.T) {
		sts, err := g.client.Statuses(ctx, g.repo, head)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := sts["kiln-bench (x86_64)"]
		if !ok || s.State != forge.Failed || !regexp.MustCompile(`suite/sort/time \+(2[6-9]|3[0-4])\.`).MatchString(s.Description) || strings.Contains(s.Description, "alloc") {
			t.Errorf("statuses %+v", sts)
		}
	})
	ours := func() []gitea.Comment {
		cs, err := g.client.Comments(ctx, g.repo, int(g.pr))
		if err != nil {
			t.Fatal(err)
		}
		var out []gitea.Comment
		for _, c := range cs {
			if strings.Contains(c.Body, CommentMarker) {
				out = append(out, c)
			}
		}
		return out
	}
	first := ours()
	t.Run("comment lists the regression only", func(t *testing.T) {
		if len(first) != 1 || !strings.Contains(first[0].Body, "| suite/sort/time |") || strings.Contains(first[0].Body, "alloc") {
			t.Fatalf("comments %+v", first)
		}
	})
	t.Run("benchmarked again: the comment is edited in place", func(t *testing.T) {
		benchmarkPR()
		again := ours()
		if len(again) != 1 || len(first) != 1 || again[0].ID != first[0].ID {
			t.Errorf("comments after a second run: %+v (first %+v)", again, first)
		}
	})
}
