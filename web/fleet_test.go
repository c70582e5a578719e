package web

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
)

// newFleetConsole serves a console over an idle engine with fleet f (nil: none).
func newFleetConsole(t *testing.T, f Fleet) *console {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := current.Open(current.Config{StateDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	auth, _, err := OpenAuth(AuthOptions{Dir: filepath.Join(dir, "console"), AdminPassword: testPassword, Anonymous: RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Engine: CurrentEngine{eng}, Auth: auth, Logger: log, Register: reg, Gatherer: reg, Fleet: f})
	if err != nil {
		t.Fatal(err)
	}
	c := &console{t: t, eng: eng, srv: httptest.NewServer(s)}
	t.Cleanup(func() {
		c.srv.CloseClientConnections()
		c.srv.Close()
		eng.Close()
	})
	return c
}

const testPool = "linux-x86_64"

// startTestFleet starts an embedded fleet with one in-process shell worker "w1" of
// capacity 1 and waits until the worker has joined.
func startTestFleet(t *testing.T) *cluster.Fleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The fleet's context outlives the test: Close stops it (a cancel racing Close is
	// the scheduler's to survive, not this test's).
	f, err := cluster.StartEmbedded(context.Background(), cluster.Options{StateDir: t.TempDir(), Listen: "127.0.0.1:0",
		Pools: []string{testPool}, Logger: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	nc, err := cluster.Connect(ctx, cluster.ConnOptions{URL: f.URL})
	if err != nil {
		cancel()
		f.Close()
		t.Fatal(err)
	}
	w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: "w1", Pool: testPool, Capacity: 1,
		Labels: map[string]string{"disk": "ssd"}, StateDir: t.TempDir(),
		Runner: &cluster.ShellRunner{WorkDir: t.TempDir()}, Logger: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		cancel()
		f.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop")
		}
		nc.Close()
		f.Close()
	})
	waitUntil(t, "worker w1 to join", func() bool {
		wi, err := f.Client.Worker(ctx, "w1")
		return err == nil && wi.State == "active"
	})
	return f
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func workerState(t *testing.T, f *cluster.Fleet, name string) string {
	t.Helper()
	wi, err := f.Client.Worker(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return wi.State
}

// TestFleetPage runs a real embedded fleet with a shell worker, fills its queue beyond
// its capacity, and checks the fleet page, its JSON twin and the admin's pause/unpause.
func TestFleetPage(t *testing.T) {
	f := startTestFleet(t)
	ctx := context.Background()
	fc := f.Client

	// A real job runs to the end on the worker.
	first, err := fc.Submit(ctx, cluster.Request{Pool: testPool, Client: "tests", Spec: "echo built"})
	if err != nil {
		t.Fatal(err)
	}
	if j, err := fc.Wait(ctx, first.ID); err != nil || j.Result.Outcome != cluster.OutcomeOK {
		t.Fatalf("first job: %+v, %v", j, err)
	}
	// Capacity 1: one sleeping job runs, the others wait.
	var ids []string
	for range 3 {
		j, err := fc.Submit(ctx, cluster.Request{Pool: testPool, Client: "tests", Spec: "sleep 60", CacheHint: "hint-a"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_ = fc.Cancel(context.Background(), id)
		}
	})
	var q *cluster.QueueInfo
	waitUntil(t, "one running and two queued jobs", func() bool {
		q, err = fc.Queue(ctx, testPool, 100)
		return err == nil && len(q.Running) == 1 && len(q.Queued) == 2
	})

	c := newFleetConsole(t, fc)
	viewer := c.client()
	code, body := viewer.get("/fleet")
	if code != 200 {
		t.Fatalf("GET /fleet: %d %s", code, body)
	}
	text := html.UnescapeString(body)
	for _, want := range []string{`href="/fleet" aria-current="page"`, testPool, `id="worker-w1"`, "disk=ssd", ">active<", "1 / 1", q.Running[0].ID} {
		if !strings.Contains(text, want) {
			t.Errorf("fleet page lacks %q:\n%s", want, body)
		}
	}
	for _, e := range q.Queued {
		row := mustRegexp(`<td>` + strconv.Itoa(e.Position) + `</td><td><code>` + e.ID + `</code></td>[^\n]*\n<td[^>]*>[^<]*</td><td class="why">` + regexp.QuoteMeta(e.Why) + `</td>`)
		if e.Why == "" || !row.MatchString(text) {
			t.Errorf("fleet page lacks queued job %s at position %d waiting because %q:\n%s", e.ID, e.Position, e.Why, body)
		}
	}
	if strings.Contains(body, "/worker/w1/pause") {
		t.Error("a viewer sees the Pause button")
	}

	// The JSON twin has the same pools, workers and queue.
	var api fleetView
	viewer.getJSON("/api/fleet", &api)
	if !api.Attached || len(api.Pools) != 1 || api.Pools[0].Name != testPool || api.Pools[0].Running != 1 || api.Pools[0].Queued != 2 {
		t.Errorf("api pools: %+v", api)
	}
	if len(api.Workers) != 1 || api.Workers[0].Name != "w1" || api.Workers[0].State != "active" || len(api.Workers[0].Running) != 1 {
		t.Errorf("api workers: %+v", api.Workers)
	}
	if len(api.Queues) != 1 || len(api.Queues[0].Queued) != 2 || len(api.Queues[0].Running) != 1 {
		t.Fatalf("api queues: %+v", api.Queues)
	}
	for i, e := range api.Queues[0].Queued {
		if e.ID != q.Queued[i].ID || e.Position != i+1 || e.Why != q.Queued[i].Why || e.EstimatedStart.IsZero() {
			t.Errorf("api queued job %d: %+v, want %+v", i, e, q.Queued[i])
		}
	}
	if _, raw := viewer.get("/api/fleet"); strings.Contains(raw, `"session"`) {
		t.Error("the console shows the worker's session")
	}
	if api.Workers[0].Running[0] != api.Queues[0].Running[0].ID || api.Queues[0].Running[0].Worker != "w1" {
		t.Errorf("running job of w1: worker %v, queue %+v", api.Workers[0].Running, api.Queues[0].Running)
	}

	// A viewer may not pause, even with a CSRF token.
	tok := viewer.csrf("/login")
	if code, body, _ := viewer.do("POST", "/worker/w1/pause", url.Values{"csrf": {tok}}, nil); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("viewer pause: %d %s", code, body)
	}
	if st := workerState(t, f, "w1"); st != "active" {
		t.Fatalf("after a viewer's pause: %s", st)
	}

	admin := c.client()
	admin.login()
	// Without the CSRF token the admin's POST is refused and nothing changes.
	if code, body, _ := admin.do("POST", "/worker/w1/pause", url.Values{}, nil); code != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Errorf("pause without CSRF: %d %s", code, body)
	}
	if code, body, _ := admin.do("POST", "/worker/w1/pause", url.Values{"csrf": {"forged"}}, nil); code != http.StatusForbidden {
		t.Errorf("pause with a forged CSRF token: %d %s", code, body)
	}
	if st := workerState(t, f, "w1"); st != "active" {
		t.Fatalf("a refused pause changed the worker: %s", st)
	}

	// The admin's page has the button; pressing it pauses the worker, which drains.
	_, body = admin.get("/fleet")
	if !strings.Contains(body, `action="/worker/w1/pause"`) {
		t.Fatalf("admin's fleet page has no Pause button:\n%s", body)
	}
	tok = csrfField.FindStringSubmatch(body)[1]
	code, body, hdr := admin.do("POST", "/worker/w1/pause", url.Values{"csrf": {tok}}, nil)
	if code != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/fleet") {
		t.Fatalf("pause: %d %s", code, body)
	}
	if st := workerState(t, f, "w1"); st != "draining" {
		t.Fatalf("after pause with a job running: %s, want draining", st)
	}
	q, err = fc.Queue(ctx, testPool, 100)
	if err != nil {
		t.Fatal(err)
	}
	_, body = admin.get("/fleet")
	text = html.UnescapeString(body)
	if !strings.Contains(text, ">draining<") || !strings.Contains(body, `action="/worker/w1/unpause"`) {
		t.Errorf("fleet page after pause:\n%s", body)
	}
	if len(q.Queued) == 0 || !strings.Contains(q.Queued[0].Why, "paused") || !strings.Contains(text, q.Queued[0].Why) {
		t.Errorf("after pause the queue says %+v; page:\n%s", q.Queued, body)
	}

	// The API twin unpauses, with the token in a header.
	var tj map[string]string
	admin.getJSON("/api/csrf", &tj)
	code, body, _ = admin.do("POST", "/api/worker/w1/unpause", nil, map[string]string{"X-CSRF-Token": tj["csrf"]})
	var res struct{ Worker cluster.WorkerInfo }
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || res.Worker.Name != "w1" || res.Worker.State != "active" {
		t.Fatalf("api unpause: %d %s", code, body)
	}
	if st := workerState(t, f, "w1"); st != "active" {
		t.Fatalf("after unpause: %s", st)
	}

	// Bad input.
	for path, want := range map[string]int{
		"/fleet?limit=0": 400, "/fleet?limit=x": 400, "/fleet?pool=nope": 404, "/fleet?colour=red": 400,
		"/fleet?pool=" + testPool + "&limit=1": 200,
	} {
		if code, body := admin.get(path); code != want {
			t.Errorf("GET %s: %d, want %d: %s", path, code, want, body)
		}
	}
	var one fleetView
	admin.getJSON("/api/fleet?limit=1", &one)
	if len(one.Queues) != 1 || len(one.Queues[0].Queued) != 1 || one.Queues[0].Total != 2 {
		t.Errorf("limit=1: %+v", one.Queues)
	}
	if code, body, _ := admin.do("POST", "/api/worker/nobody/pause", nil, map[string]string{"X-CSRF-Token": tj["csrf"]}); code != 404 || !strings.Contains(body, "nobody") {
		t.Errorf("pause of an unknown worker: %d %s", code, body)
	}
}

// TestFleetPageWithoutFleet checks that a console without a fleet says so and hides the link.
func TestFleetPageWithoutFleet(t *testing.T) {
	c := newFleetConsole(t, nil)
	cl := c.client()
	code, body := cl.get("/fleet")
	if code != 200 || !strings.Contains(body, `id="no-fleet"`) {
		t.Fatalf("GET /fleet: %d %s", code, body)
	}
	if _, body := cl.get("/jobs"); strings.Contains(body, `href="/fleet"`) {
		t.Error("the nav links to /fleet without a fleet")
	}
	var v fleetView
	cl.getJSON("/api/fleet", &v)
	if v.Attached || v.Pools == nil || len(v.Pools) != 0 {
		t.Errorf("api: %+v", v)
	}
	cl.login()
	tok := cl.csrf("/fleet")
	if code, body, _ := cl.do("POST", "/worker/w1/pause", url.Values{"csrf": {tok}}, nil); code != 404 {
		t.Errorf("pause without a fleet: %d %s", code, body)
	}
}
