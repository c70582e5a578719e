package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-ci/kiln/builder/docker"
	"github.com/kiln-ci/kiln/builder/docker/dockertest"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge"
	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/registry/registrytest"
	"github.com/kiln-ci/kiln/services/internal/notify"
	"github.com/kiln-ci/kiln/web"
)

// world is everything an end-to-end test deploys with: a Docker engine behind sshd on
// loopback, a registry, two nginx front ends (staging and production), a git
// repository of a small web service, and a deployer configured for it.
type world struct {
	d          *Deployer
	cfg        *Config
	cfgFile    string
	repo       *webRepo
	ssh        *sshServer
	staging    *proxy
	production *proxy
	reg        *prometheus.Registry
	dockerHost string
	token      string
	hooks      *hookLog
	logs       *testenv.Buffer
	statuses   *statuses
	engine     *current.Engine
	console    string // the console's URL, serving the engine's job pages
}

// statuses is a forge that keeps the statuses published to it.
type statuses struct {
	mu  sync.Mutex
	got map[string][]string // commit → states
}

func (s *statuses) Refs() current.Term[[]forge.Ref] { return current.Return[[]forge.Ref](nil) }

func (s *statuses) Publish(_ context.Context, ref forge.Ref, st forge.Status, _ []forge.Variant) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got[ref.Commit] = append(s.got[ref.Commit], ref.Name+" "+string(st.State))
	return nil
}

func (s *statuses) of(commit string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.got[commit], ", ")
}

// hookLog is a JSON webhook that keeps the messages it receives.
type hookLog struct {
	mu   sync.Mutex
	msgs []notify.Message
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m notify.Message
	json.NewDecoder(r.Body).Decode(&m)
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
}

func (h *hookLog) titles() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.msgs {
		out = append(out, m.Title)
	}
	return out
}

func freePort(t testing.TB) int {
	_, p, _ := net.SplitHostPort(testenv.FreeAddr(t))
	n, _ := strconv.Atoi(p)
	return n
}

func newWorld(t testing.TB) *world {
	t.Helper()
	testenv.RequireRoot(t)
	engine := dockertest.Engine(t)
	reg := registrytest.Shared(t)
	w := &world{repo: newWebRepo(t), ssh: startSSH(t), staging: startNginx(t), production: startNginx(t),
		reg: prometheus.NewRegistry(), dockerHost: engine.Host, hooks: &hookLog{}, logs: &testenv.Buffer{},
		statuses: &statuses{got: map[string][]string{}}}
	dir := t.TempDir()
	w.token = "admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	os.WriteFile(filepath.Join(dir, "admin"), []byte(w.token+"\n"), 0o600)
	hook := httptest.NewServer(w.hooks)
	t.Cleanup(hook.Close)
	os.WriteFile(filepath.Join(dir, "hook"), []byte(hook.URL+"/hook\n"), 0o600)
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	target := func(name string, p *proxy) Target {
		return Target{Host: "remote", Container: &ContainerTarget{Name: "kiln-test-" + name + "-" + suffix, Network: "host",
			Slots: [2]int{freePort(t), freePort(t)}, Drain: Duration(300 * time.Millisecond),
			Proxy: ProxyConfig{UpstreamFile: p.UpstreamFile, Upstream: "web", Reload: p.Reload, URL: p.URL}}}
	}
	staging := target("staging", w.staging)
	w.cfg = &Config{
		Poll: Duration(time.Hour), HealthEvery: Duration(time.Hour), AdminTokenFile: filepath.Join(dir, "admin"),
		Retry:           RetryConfig{Attempts: 3, Backoff: Duration(50 * time.Millisecond)},
		BuildDockerHost: engine.Host,
		Registry:        RegistryConfig{Address: reg.Addr, CredentialsFile: reg.CredentialsFile, Insecure: true},
		// The remote docker client's own folder: docker login keeps the test registry's
		// credentials there, not in root's ~/.docker.
		Hosts: map[string]Host{"remote": {SSH: "root@" + w.ssh.Addr, KeyFile: w.ssh.KeyFile, KnownHostsFile: w.ssh.KnownHosts,
			DockerHost: engine.Host, DockerConfig: filepath.Join(dir, "docker-client")}},
		Notify: []notify.Webhook{{Name: "test", Kind: notify.JSON, URLFile: filepath.Join(dir, "hook")}},
		Services: []ServiceConfig{{Name: "web", Repo: w.repo.Dir, Branch: "main", Image: "deployer-test/web-" + suffix, Forge: "test/me/web",
			// Long enough for a healthy instance to start on a loaded machine: a broken
			// one is rolled back only after it.
			Health:  HealthConfig{Path: "/health", Expect: "ok", Deadline: Duration(20 * time.Second)},
			Staging: &staging, Production: target("production", w.production)}},
	}
	t.Cleanup(func() {
		removeInstances(engine.Host, staging.Container.Name, w.cfg.Services[0].Production.Container.Name)
	})
	w.cfgFile = filepath.Join(dir, "deployer.yaml")
	w.writeConfig(t)
	var err error
	fs := &forges.Set{}
	fs.Add("test", w.statuses)
	w.d, err = New(Options{ConfigFile: w.cfgFile, Forges: fs, StateDir: filepath.Join(dir, "state"), Register: w.reg,
		Logger: slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), BaseURL: "http://kiln.example.org", Jobs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.d.Close)
	w.engine, w.console = startEngine(t, w.d, dir)
	return w
}

// startEngine runs the deployer's pipeline in an engine, and the console on it, until
// the test ends.
func startEngine(t testing.TB, d *Deployer, dir string) (*current.Engine, string) {
	t.Helper()
	e, err := current.Open(current.Config{StateDir: filepath.Join(dir, "engine"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx, d.Pipeline()) }()
	t.Cleanup(func() { cancel(); <-done; e.Close() })
	auth, _, err := web.OpenAuth(web.AuthOptions{Dir: filepath.Join(dir, "console"), Anonymous: web.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	console, err := web.New(web.Options{Engine: web.CurrentEngine{E: e}, Auth: auth, Logger: slog.New(slog.DiscardHandler),
		Gatherer: prometheus.NewRegistry(), Register: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(console)
	t.Cleanup(srv.Close)
	return e, srv.URL
}

// job is the engine's job id once finished (the engine records it after the step's
// caller went on), whose state and failure kind must be as given.
func (w *world) job(t *testing.T, id string, state current.JobState, kind current.FailureKind) current.JobInfo {
	t.Helper()
	if id == "" {
		t.Fatal("no engine job recorded")
	}
	j := waitJob(t, w.engine, id)
	if j.State != state || j.FailureKind != kind {
		t.Errorf("job %s (%s %s): %s, failure kind %q (%s); want %s, %q", id, j.Op, j.Label, j.State, j.FailureKind, j.Message, state, kind)
	}
	return j
}

// jobPage reads a job's page and its log from the console; the log must hold each of want.
func (w *world) jobPage(t *testing.T, id string, want ...string) {
	t.Helper()
	page, err := getPage(w.console + "/job/" + id)
	if err != nil || !strings.Contains(page, id) {
		t.Fatalf("console page of job %s: %v\n%s", id, err, page)
	}
	log, err := getPage(w.console + "/job/" + id + "/log")
	if err != nil {
		t.Fatalf("console log of job %s: %v", id, err)
	}
	for _, s := range want {
		if !strings.Contains(log, s) {
			t.Errorf("the log of job %s lacks %q:\n%s", id, s, log)
		}
	}
}

// getPage returns the body of a GET of u that answers 200.
func getPage(u string) (string, error) {
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), err
}

func (w *world) writeConfig(t testing.TB) {
	t.Helper()
	b, err := yaml.Marshal(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// image is the registry reference of a digest of the service's image.
func (w *world) image(digest string) string {
	return w.cfg.Registry.Address + "/" + w.cfg.Services[0].Image + "@" + digest
}

// brokenDigest is the digest of the version that failed its health check.
func (w *world) brokenDigest(t *testing.T) string {
	for _, r := range w.d.st.history("web") {
		if r.Outcome == OutcomeRolledBack {
			return r.Digest
		}
	}
	t.Fatal("no rolled-back deploy")
	return ""
}

// change edits the configuration file and reloads it, until the test ends.
func (w *world) change(t *testing.T, edit func(*Config)) {
	t.Helper()
	b, _ := yaml.Marshal(w.cfg)
	var saved Config
	yaml.Unmarshal(b, &saved)
	edit(w.cfg)
	w.writeConfig(t)
	if _, err := w.d.Reload(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		*w.cfg = saved
		w.writeConfig(t)
		if _, err := w.d.Reload(); err != nil {
			t.Error(err)
		}
	})
}

// failsUntouched commits version, polls, and checks that the deploy failed at stage
// with a message saying why while both stages kept what they served.
func (w *world) failsUntouched(t *testing.T, version, stage, why string) Record {
	t.Helper()
	staging, production := w.d.st.live("web", "staging"), w.d.st.live("web", "production")
	wasProduction, _ := get(w.production.URL + "/")
	wasStaging, _ := get(w.staging.URL + "/")
	c := w.repo.commit(t, version)
	w.d.Poll(t.Context())
	h := lastRecords(w.d, 1)[0]
	if h.Commit != c || h.Stage != stage || h.Outcome != OutcomeFailed || !strings.Contains(h.Message, why) {
		t.Fatalf("record %+v, want %s failed saying %q", h, stage, why)
	}
	t.Logf("the error: %s", h.Message)
	if s, p := w.d.st.live("web", "staging"), w.d.st.live("web", "production"); s.Digest != staging.Digest || p.Digest != production.Digest {
		t.Errorf("live digests changed: staging %s → %s, production %s → %s", staging.Digest, s.Digest, production.Digest, p.Digest)
	}
	w.serves(t, w.production, wasProduction)
	w.serves(t, w.staging, wasStaging)
	return h
}

// waitServes waits for url to answer want; the two minutes only bound a hang.
func waitServes(t *testing.T, url, want string) {
	t.Helper()
	start := time.Now()
	for {
		got, err := get(url + "/")
		if got == want {
			return
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("%s answers %q (%v), want %q", url, got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get returns the body an HTTP GET of u answers with, or the error. The timeout only
// bounds a hang: a slow answer on a loaded machine is not a failed request.
func get(u string) (string, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", &url.Error{Op: "GET", URL: u, Err: io.ErrUnexpectedEOF}
	}
	return strings.TrimSpace(string(b)), nil
}

func (w *world) serves(t testing.TB, p *proxy, want string) {
	t.Helper()
	got, err := get(p.URL + "/")
	if err != nil || got != want {
		t.Fatalf("%s answers %q (%v), want %q\n%s", p.URL, got, err, want, w.logs.String())
	}
}

// load requests each URL in a loop until stopped and counts the answers that are not
// want.
type load struct {
	stop   chan struct{}
	done   sync.WaitGroup
	total  atomic.Int64
	failed atomic.Int64
	first  atomic.Value
}

func startLoad(want string, urls ...string) *load {
	l := &load{stop: make(chan struct{})}
	for _, u := range urls {
		l.done.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				got, err := get(u)
				l.total.Add(1)
				if err != nil || got != want {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, u+": "+got)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *load) end() (total, failed int64) {
	close(l.stop)
	l.done.Wait()
	return l.total.Load(), l.failed.Load()
}

func lastRecords(d *Deployer, n int) []Record {
	h := d.st.history("web")
	if len(h) > n {
		h = h[:n]
	}
	return h
}

func TestEndToEnd(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	var v2digest, v1digest string
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a commit is built, pushed, deployed to staging, promoted and served", func(t *testing.T) {
			start := time.Now()
			w.d.Poll(ctx)
			t.Logf("commit to live in production: %v", time.Since(start).Round(10*time.Millisecond))
			w.serves(t, w.staging, "v1")
			w.serves(t, w.production, "v1")
			h := lastRecords(w.d, 2)
			if len(h) != 2 || h[0].Stage != "production" || h[1].Stage != "staging" || h[0].Outcome != OutcomeLive || h[1].Outcome != OutcomeLive {
				t.Fatalf("history %+v", h)
			}
			v1digest = h[0].Digest
		}},
		{"its build, push, deploys and checks are engine jobs, with their logs on the console's job pages", func(t *testing.T) {
			h := lastRecords(w.d, 2)
			b := w.d.st.build("web", h[0].Commit)
			for _, c := range []struct {
				name, id, op string
				log          []string
			}{
				{"build", b.Job, OpBuild, []string{"build web " + short(b.Commit), "FROM scratch"}},
				{"push", b.PushJob, OpPush, []string{"pushed " + h[0].Digest}},
				{"deploy to staging", h[1].Job, OpDeploy, []string{"deploying", "health check passed", "live on staging"}},
				{"promotion to production", h[0].Job, OpDeploy, []string{"deploying", "health check passed", "live on production"}},
			} {
				t.Run(c.name, func(t *testing.T) {
					if j := w.job(t, c.id, current.JobOK, ""); j.Op != c.op {
						t.Errorf("job %s is an %s job, want %s", c.id, j.Op, c.op)
					}
					w.jobPage(t, c.id, c.log...)
				})
			}
			w.d.CheckHealth(ctx)
			live := w.d.st.live("web", "production")
			if j := w.job(t, live.CheckJob, current.JobOK, ""); j.Op != OpHealth {
				t.Errorf("the periodic check is an %s job", j.Op)
			}
			w.jobPage(t, live.CheckJob, "GET "+w.production.URL+"/health: 200 OK")
			srv := httptest.NewServer(routesMux(w.d))
			defer srv.Close()
			page, err := getPage(srv.URL + "/deployer")
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{b.Job, h[0].Job, h[1].Job, live.CheckJob} {
				if !strings.Contains(page, `href="/job/`+id+`"`) {
					t.Errorf("the status page does not link to job %s", id)
				}
			}
		}},
		{"the next commit goes live with the same digest on both stages", func(t *testing.T) {
			c := w.repo.commit(t, "v2")
			l := startLoad("", w.production.URL+"/") // counts nothing; keeps requests in flight through the switch
			start := time.Now()
			w.d.Poll(ctx)
			t.Logf("commit to live in production: %v", time.Since(start).Round(10*time.Millisecond))
			l.end()
			w.serves(t, w.production, "v2")
			h := lastRecords(w.d, 2)
			if h[0].Commit != c || h[1].Commit != c || h[0].Digest != h[1].Digest || h[0].Digest == v1digest {
				t.Fatalf("history %+v", h)
			}
			v2digest = h[0].Digest
		}},
		{"a commit failing its health check is rolled back while the old version serves", func(t *testing.T) {
			c := w.repo.commit(t, "v3 broken")
			l := startLoad("v2", w.production.URL+"/")
			ls := startLoad("v2", w.staging.URL+"/")
			start := time.Now()
			w.d.Poll(ctx)
			t.Logf("failed deploy to rolled back: %v", time.Since(start).Round(10*time.Millisecond))
			total, failed := l.end()
			stotal, sfailed := ls.end()
			t.Logf("requests during the attempt: production %d (%d failed), staging %d (%d failed)", total, failed, stotal, sfailed)
			if failed+sfailed != 0 {
				t.Errorf("%d requests failed during the attempt; first: %v", failed+sfailed, l.first.Load())
			}
			h := lastRecords(w.d, 1)
			if h[0].Commit != c || h[0].Stage != "staging" || h[0].Outcome != OutcomeRolledBack || !strings.Contains(h[0].Message, "broken on purpose") {
				t.Fatalf("history %+v", h)
			}
			w.serves(t, w.staging, "v2")
			w.serves(t, w.production, "v2")
			w.job(t, h[0].Job, current.JobFailed, current.FailWork)
			w.jobPage(t, h[0].Job, "health check failed", "broken on purpose")
			if got := testenv.Metrics(t, w.reg)["kiln_deployer_deploys_total{outcome=rolled-back,service=web,stage=staging}"]; got != 1 {
				t.Errorf("rolled-back deploys counted %v", got)
			}
		}},
		{"a branch is built for deployability but not deployed", func(t *testing.T) {
			w.repo.git(t, "checkout", "-q", "-b", "feature")
			c := w.repo.commit(t, "v4")
			w.repo.git(t, "checkout", "-q", "main")
			n := len(w.d.st.history("web"))
			w.d.Poll(ctx)
			if got := len(w.d.st.history("web")); got != n {
				t.Errorf("a deploy of the feature branch: %+v", lastRecords(w.d, 1))
			}
			if b := w.d.st.build("web", c); b == nil || b.State != "passed" {
				t.Errorf("feature build %+v", b)
			}
			if got := w.statuses.of(c); got != "refs/heads/feature running, refs/heads/feature passed" {
				t.Errorf("statuses of the feature commit: %s", got)
			}
			w.repo.git(t, "checkout", "-q", "-b", "bad")
			w.repo.git(t, "rm", "-q", "server")
			bad := w.repo.commit(t, "v4 without its server")
			w.repo.git(t, "checkout", "-q", "main")
			w.d.Poll(ctx)
			if b := w.d.st.build("web", bad); b == nil || b.State != "failed" || !strings.Contains(b.Message, "server") {
				t.Errorf("build of a commit that cannot build: %+v", b)
			}
			if got := w.statuses.of(bad); got != "refs/heads/bad running, refs/heads/bad failed" {
				t.Errorf("statuses of the commit that cannot build: %s", got)
			}
			w.repo.git(t, "branch", "-q", "-D", "bad")
			w.d.Poll(ctx)
			if refs := w.d.st.snapshot("web").Refs; refs["refs/heads/bad"] != "" || refs["refs/heads/feature"] != c {
				t.Errorf("refs after the branch bad was deleted: %v", refs)
			}
			w.serves(t, w.production, "v2")
		}},
		{"an admin rolls production back to an earlier digest", func(t *testing.T) {
			srv := httptest.NewServer(routesMux(w.d))
			defer srv.Close()
			form := url.Values{"stage": {"production"}, "digest": {v1digest}}
			resp, err := http.PostForm(srv.URL+"/deployer/web/rollback", form)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("rollback without the token: %s", resp.Status)
			}
			form.Set("token", w.token)
			start := time.Now()
			resp, err = http.PostForm(srv.URL+"/deployer/web/rollback", form)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("rollback: %s: %s", resp.Status, b)
			}
			t.Logf("admin rollback: %v", time.Since(start).Round(10*time.Millisecond))
			w.serves(t, w.production, "v1")
			h := lastRecords(w.d, 1)[0]
			if h.Kind != "rollback" || h.Digest != v1digest || h.Outcome != OutcomeLive {
				t.Errorf("history %+v", h)
			}
			if j := w.job(t, h.Job, current.JobOK, ""); j.Op != OpRollback {
				t.Errorf("the rollback is an %s job", j.Op)
			}
		}},
		{"the periodic check notices a dead production and its recovery", func(t *testing.T) {
			live := w.d.st.live("web", "production")
			name := w.cfg.Services[0].Production.Container.Name
			r := &runner{name: "remote", h: w.cfg.Hosts["remote"]}
			var inst string
			for _, n := range []string{name + "-a", name + "-b"} {
				if out, err := r.run(ctx, nil, "docker", "inspect", "--format", "{{.State.Running}}", n); err == nil && out == "true" {
					inst = n
				}
			}
			if _, err := r.run(ctx, nil, "docker", "stop", "-t", "0", inst); err != nil {
				t.Fatal(err)
			}
			w.d.CheckHealth(ctx)
			if l := w.d.st.live("web", "production"); l.Healthy || l.Digest != live.Digest {
				t.Errorf("after the instance stopped: %+v", l)
			}
			if _, err := r.run(ctx, nil, "docker", "start", inst); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(time.Minute)
			for !w.d.st.live("web", "production").Healthy && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
				w.d.CheckHealth(ctx)
			}
			if !w.d.st.live("web", "production").Healthy {
				t.Errorf("not healthy again: %+v", w.d.st.live("web", "production"))
			}
		}},
		{"the status page and its JSON show all of it", func(t *testing.T) {
			st := w.d.Status()
			b, _ := json.Marshal(st)
			for _, want := range []string{v1digest, v2digest, `"outcome":"rolled-back"`, "broken on purpose", `"refs/heads/feature"`} {
				if !strings.Contains(string(b), want) {
					t.Errorf("status JSON lacks %s", want)
				}
			}
			browseStatus(t, w, v1digest)
		}},
		{"notifications were sent for each deploy and health change", func(t *testing.T) {
			deadline := time.Now().Add(time.Minute)
			want := []string{"web production: ", "rolled-back", "web production is unhealthy", "web production is healthy again"}
			for {
				all := strings.Join(w.hooks.titles(), "\n")
				missing := ""
				for _, s := range want {
					if !strings.Contains(all, s) {
						missing = s
					}
				}
				if missing == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no notification %q among\n%s", missing, all)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}},
		{"secrets are not in the logs, the status or the notifications", func(t *testing.T) {
			creds, _ := os.ReadFile(w.cfg.Registry.CredentialsFile)
			_, pw, _ := strings.Cut(strings.TrimSpace(string(creds)), ":")
			st, _ := json.Marshal(w.d.Status())
			hooks, _ := json.Marshal(w.hooks.msgs)
			for what, s := range map[string]string{"log": w.logs.String(), "status": string(st), "notifications": string(hooks)} {
				for _, secret := range []string{pw, w.token} {
					if strings.Contains(s, secret) {
						t.Errorf("a secret is in the %s", what)
					}
				}
			}
		}},
		{"with promote: confirm, staging waits for an admin to promote the same digest", func(t *testing.T) {
			w.change(t, func(c *Config) { c.Services[0].Promote = "confirm" })
			was, _ := get(w.production.URL + "/")
			c := w.repo.commit(t, "v8")
			w.d.Poll(ctx)
			w.serves(t, w.staging, "v8")
			w.serves(t, w.production, was)
			p := w.d.st.pending("web")
			if p == nil || p.Commit != c {
				t.Fatalf("pending %+v", p)
			}
			srv := httptest.NewServer(routesMux(w.d))
			defer srv.Close()
			req, _ := http.NewRequest("POST", srv.URL+"/deployer/web/promote", nil)
			req.Header.Set(TokenHeader, w.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("promote: %s: %s", resp.Status, b)
			}
			w.serves(t, w.production, "v8")
			if h := lastRecords(w.d, 1)[0]; h.Kind != "promote" || h.Digest != p.Digest || h.Stage != "production" {
				t.Errorf("history %+v", h)
			}
		}},
		{"with promote: engine, production waits for an operator's confirmation in the engine", func(t *testing.T) {
			e := w.engine
			if err := e.SetConfirmLevel(current.LevelAboveAverage); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.SetConfirmLevel(current.LevelDangerous) })
			w.change(t, func(c *Config) { c.Services[0].Promote = "engine" })
			was, _ := get(w.production.URL + "/")
			c := w.repo.commit(t, "v11")
			w.d.Poll(ctx)
			w.serves(t, w.staging, "v11")
			var job current.JobInfo
			for deadline := time.Now().Add(2 * time.Minute); job.ID == ""; time.Sleep(100 * time.Millisecond) {
				for _, j := range e.Jobs() {
					if j.Op == "deployer-promote" && j.State == current.JobWaiting {
						job = j
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no promotion waits for confirmation: %+v", e.Jobs())
				}
			}
			w.serves(t, w.production, was)
			if err := e.Confirm(job.ID); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
				if got, _ := get(w.production.URL + "/"); got == "v11" && lastRecords(w.d, 1)[0].Outcome != OutcomeRunning {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("production does not serve v11 after the confirmation; jobs %+v", e.Jobs())
				}
			}
			h := lastRecords(w.d, 1)[0]
			if h.Kind != "promote" || h.By != "console" || h.Commit != c || h.Outcome != OutcomeLive || h.Job != job.ID {
				t.Errorf("history %+v; the promotion's job %s", h, job.ID)
			}
			w.job(t, job.ID, current.JobOK, "")
			w.jobPage(t, job.ID, "promoting", "deploying", "live on production")
		}},
		{"a command target gets the artifact, runs its command, and is restored when its check fails", func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "version")
			cfg := *w.d.config()
			svc := cfg.Services[0]
			svc.Production = Target{Host: "remote", Command: &CommandTarget{Artifact: "/version", Dest: dest,
				Run: []string{"sh", "-c", `cp "$0" "$0.ran"`, dest}}}
			svc.Health = HealthConfig{Command: []string{"grep", "-qv", "broken", dest + ".ran"}, Deadline: Duration(10 * time.Second)}
			s, err := w.d.stageOf(&cfg, &svc, "production")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.deploy(ctx, w.image(v2digest)); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(dest + ".ran"); strings.TrimSpace(string(b)) != "v2" {
				t.Fatalf("after the deploy the command saw %q", b)
			}
			var he *HealthError
			if err := s.deploy(ctx, w.image(w.brokenDigest(t))); !errors.As(err, &he) || he.Restore != nil {
				t.Fatalf("deploy of the broken version: %v", err)
			}
			if b, _ := os.ReadFile(dest + ".ran"); strings.TrimSpace(string(b)) != "v2" {
				t.Errorf("after the failed deploy the command saw %q", b)
			}
		}},
		{"a swarm service is updated, and restored when its health check fails", func(t *testing.T) {
			dir, err := os.MkdirTemp("", "kiln-swarm-") // short: the engine's socket path is limited
			if err != nil {
				t.Fatal(err)
			}
			var dlog testenv.Buffer
			dm, err := docker.StartDaemon(ctx, dir, &dlog)
			if err != nil {
				os.RemoveAll(dir)
				t.Fatalf("%v\n%s", err, dlog.String())
			}
			defer func() { dm.Stop(); os.RemoveAll(dir) }()
			cfg := *w.d.config()
			cfg.Hosts = maps.Clone(cfg.Hosts)
			h := cfg.Hosts["remote"]
			h.DockerHost = dm.Host
			cfg.Hosts["swarm"] = h
			r := &runner{name: "swarm", h: h}
			if _, err := r.run(ctx, nil, "docker", "swarm", "init", "--advertise-addr", "127.0.0.1"); err != nil {
				if testenv.InCI() {
					t.Fatal(err)
				}
				t.Skipf("docker swarm init: %v", err)
			}
			url := "http://" + testenv.FreeAddr(t)
			svc := cfg.Services[0]
			svc.Health.Deadline = Duration(15 * time.Second)
			svc.Production = Target{Host: "swarm", Swarm: &SwarmTarget{Service: "kiln-test-web", URL: url, UpdateOrder: "stop-first"}}
			s, err := w.d.stageOf(&cfg, &svc, "production")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.login(ctx, r); err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
			if _, err := r.run(ctx, nil, "docker", "service", "create", "--quiet", "--detach=false", "--with-registry-auth",
				"--name", "kiln-test-web", "--network", "host", "--env", "PORT="+port, w.image(v1digest)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := s.deploy(ctx, w.image(v2digest)); err != nil {
				t.Fatal(err)
			}
			t.Logf("swarm update to live: %v", time.Since(start).Round(10*time.Millisecond))
			if got, err := get(url + "/"); got != "v2" {
				t.Fatalf("the service answers %q (%v)", got, err)
			}
			start = time.Now()
			var he *HealthError
			if err := s.deploy(ctx, w.image(w.brokenDigest(t))); !errors.As(err, &he) || he.Restore != nil {
				t.Fatalf("deploy of the broken version: %v", err)
			}
			for got, _ := get(url + "/"); got != "v2"; got, _ = get(url + "/") {
				if time.Since(start) > 2*time.Minute {
					t.Fatalf("the service answers %q after the rollback", got)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("swarm: broken update to the previous version serving again: %v (health deadline %v)", time.Since(start).Round(10*time.Millisecond), svc.Health.Deadline.Or(0))
			if img, _ := r.run(ctx, nil, "docker", "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", "kiln-test-web"); !strings.HasSuffix(img, v2digest) {
				t.Errorf("the service runs %s after the rollback", img)
			}
		}},
		{"a compose service is updated, and restored when its health check fails", func(t *testing.T) {
			testenv.RequireCommand(t, "docker-compose")
			cfg := *w.d.config()
			r := &runner{name: "remote", h: w.d.host(&cfg, "remote"), control: w.d.control}
			url := "http://" + testenv.FreeAddr(t)
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
			file := filepath.Join(t.TempDir(), "docker-compose.yml")
			project := fmt.Sprintf("version: \"3.7\"\nservices:\n  web:\n    image: %s\n    network_mode: host\n    environment:\n      PORT: \"%s\"\n", w.image(v1digest), port)
			if err := os.WriteFile(file, []byte(project), 0o644); err != nil {
				t.Fatal(err)
			}
			svc := cfg.Services[0]
			svc.Health.Deadline = Duration(15 * time.Second)
			svc.Production = Target{Host: "remote", Compose: &ComposeTarget{File: file, Project: "kiln-test-compose", Service: "web", URL: url}}
			s, err := w.d.stageOf(&cfg, &svc, "production")
			if err != nil {
				t.Fatal(err)
			}
			compose := []string{"docker-compose", "--ansi", "never", "-f", file, "-p", "kiln-test-compose"}
			if err := s.login(ctx, r); err != nil {
				t.Fatal(err)
			}
			if _, err := r.run(ctx, nil, append(compose, "up", "-d")...); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.run(context.Background(), nil, append(compose, "down")...) })
			waitServes(t, url, "v1")
			start := time.Now()
			if err := s.deploy(ctx, w.image(v2digest)); err != nil {
				t.Fatal(err)
			}
			t.Logf("compose update to live: %v", time.Since(start).Round(10*time.Millisecond))
			if got, err := get(url + "/"); got != "v2" {
				t.Fatalf("the service answers %q (%v)", got, err)
			}
			var he *HealthError
			if err := s.deploy(ctx, w.image(w.brokenDigest(t))); !errors.As(err, &he) || he.Restore != nil {
				t.Fatalf("deploy of the broken version: %v", err)
			}
			waitServes(t, url, "v2")
			if o, _ := os.ReadFile(svc.Production.Compose.overrideFile()); !strings.Contains(string(o), v2digest) {
				t.Errorf("override file after the rollback:\n%s", o)
			}
		}},
		{"a proxy that fails to reload keeps its upstream file and the old instance", func(t *testing.T) {
			w.change(t, func(c *Config) {
				c.Services[0].Production.Container.Proxy.Reload = []string{"sh", "-c", "echo no reload for you >&2; exit 1"}
			})
			before, _ := os.ReadFile(w.production.UpstreamFile)
			was, _ := get(w.production.URL + "/")
			c := w.repo.commit(t, "v9")
			w.d.Poll(ctx)
			h := lastRecords(w.d, 1)[0]
			if h.Commit != c || h.Stage != "production" || h.Outcome != OutcomeFailed || !strings.Contains(h.Message, "no reload for you") {
				t.Fatalf("record %+v", h)
			}
			if after, _ := os.ReadFile(w.production.UpstreamFile); string(after) != string(before) {
				t.Errorf("upstream file %q, was %q", after, before)
			}
			w.serves(t, w.production, was)
			r := &runner{name: "remote", h: w.cfg.Hosts["remote"]}
			out, err := r.run(ctx, nil, "docker", "ps", "-q", "--filter", "name="+w.cfg.Services[0].Production.Container.Name)
			if n := len(strings.Fields(out)); err != nil || n != 1 {
				t.Errorf("%d production instances run after the failed switch (%v)", n, err)
			}
		}},
		{"a registry that refuses the push leaves every target as it was", func(t *testing.T) {
			ro := registrytest.Start(t, registrytest.Options{ReadOnly: true})
			w.change(t, func(c *Config) {
				c.Registry = RegistryConfig{Address: ro.Addr, CredentialsFile: ro.CredentialsFile, Insecure: true}
			})
			w.failsUntouched(t, "v5", "publish", "push")
		}},
		{"a host whose key changed is refused before anything changes", func(t *testing.T) {
			good, _ := os.ReadFile(w.ssh.KnownHosts)
			t.Cleanup(func() { os.WriteFile(w.ssh.KnownHosts, good, 0o600) })
			other := filepath.Join(t.TempDir(), "other")
			run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
			pub, _ := os.ReadFile(other + ".pub")
			os.WriteFile(w.ssh.KnownHosts, []byte(strings.Fields(string(good))[0]+" "+strings.Join(strings.Fields(string(pub))[:2], " ")+"\n"), 0o600)
			w.d.closeMasters(w.d.config()) // a connection made before the change would go on
			w.failsUntouched(t, "v6", "staging", "host key changed")
		}},
		{"an unreachable host fails the deploy and leaves production as it was", func(t *testing.T) {
			w.change(t, func(c *Config) {
				h := c.Hosts["remote"]
				h.SSH = "root@" + testenv.FreeAddr(t)
				c.Hosts["remote"] = h
			})
			h := w.failsUntouched(t, "v7", "staging", "host unreachable")
			if h.Infrastructure != "host-unreachable" || h.Attempts != 3 {
				t.Errorf("record %+v: want an infrastructure failure (host-unreachable) after 3 attempts", h)
			}
			w.job(t, h.Job, current.JobFailed, "host-unreachable")
			w.jobPage(t, h.Job, "attempt 1 of 3 failed (host-unreachable)", "attempt 2 of 3 failed (host-unreachable)")
		}},
		{"a registry that is down: the push is tried again, then fails as the infrastructure's", func(t *testing.T) {
			w.change(t, func(c *Config) { c.Registry = RegistryConfig{Address: testenv.FreeAddr(t), Insecure: true} })
			h := w.failsUntouched(t, "v7b", "publish", "infrastructure failure (registry-unreachable), 3 attempts")
			if h.Infrastructure != "registry-unreachable" {
				t.Errorf("record %+v: want an infrastructure failure (registry-unreachable)", h)
			}
			if j := w.job(t, h.Job, current.JobFailed, "registry-unreachable"); j.Op != OpPush {
				t.Errorf("the failed push is an %s job", j.Op)
			}
		}},
		{"a commit built on a branch deploys when the branch is merged", func(t *testing.T) {
			w.repo.git(t, "checkout", "-q", "-b", "next")
			c := w.repo.commit(t, "v10")
			w.repo.git(t, "checkout", "-q", "main")
			w.d.Poll(ctx)
			if b := w.d.st.build("web", c); b == nil || b.State != "passed" || (&docker.Engine{Host: w.dockerHost}).ImageExists(ctx, b.Tag) {
				t.Fatalf("the branch's build %+v: want passed, its image removed", b)
			}
			w.repo.git(t, "merge", "-q", "--ff-only", "next")
			w.d.Poll(ctx)
			w.serves(t, w.staging, "v10")
			w.serves(t, w.production, "v10")
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.FailNow()
		}
	}
}

// routesMux serves the deployer's routes alone, without the console (and its admin check).
func routesMux(d *Deployer) *http.ServeMux {
	mux := http.NewServeMux()
	for p, h := range d.Routes() {
		mux.Handle(p, h)
	}
	for p, h := range d.AdminRoutes() {
		mux.Handle(p, h)
	}
	return mux
}
