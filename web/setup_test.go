package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
)

// console is a real engine running a small pipeline, served by a console on httptest.
//
// The pipeline maps over the items of a variable; each item's "build" job prints two
// coloured lines, fails for items starting with "bad", and for items starting with "slow"
// prints one line per value sent on the lines channel until it is closed (for items
// starting with "raw", each value as it is, without a newline).
type console struct {
	t     testing.TB
	eng   *current.Engine
	s     *Server
	srv   *httptest.Server
	items *current.Var[[]string]
	lines chan string
	mu    sync.Mutex
	runs  map[string]int // runs per item
}

const testPassword = "correct horse"

func newConsole(t testing.TB, items ...string) *console {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := current.Open(current.Config{StateDir: dir, Logger: log, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := &console{t: t, eng: eng, lines: make(chan string), runs: map[string]int{}}
	build := &current.Op[string, string]{
		Name: "build",
		Run: func(ctx context.Context, j *current.Job, item string) (string, error) {
			c.mu.Lock()
			c.runs[item]++
			c.mu.Unlock()
			j.Logf("\x1b[1mbuilding\x1b[0m %s", item)
			j.Logf("\x1b[32mstep one <ok>\x1b[0m")
			if raw := strings.HasPrefix(item, "raw"); raw || strings.HasPrefix(item, "slow") {
				for {
					select {
					case l, ok := <-c.lines:
						if !ok {
							return "done " + item, nil
						}
						if raw {
							j.Write([]byte(l))
						} else {
							j.Logf("%s", l)
						}
					case <-ctx.Done():
						return "", ctx.Err()
					}
				}
			}
			if strings.HasPrefix(item, "bad") {
				j.Logf("error: missing semicolon in %s", item)
				return "", fmt.Errorf("build of %s failed", item)
			}
			return "built " + item, nil
		},
	}
	// Items starting with "risky" are deployed after their build, at a level that needs
	// confirmation when the confirm level is below above-average.
	deploy := &current.Op[string, string]{
		Name: "deploy", Level: current.LevelAboveAverage,
		Run: func(ctx context.Context, j *current.Job, built string) (string, error) {
			j.Logf("deploying %s", built)
			return "deployed", nil
		},
	}
	c.items = current.NewVar("items", items)
	pipeline := current.ListIter(c.items.Term(), func(s string) string { return s }, func(it current.Term[string]) current.Term[current.Unit] {
		return current.Bind(it, func(item string) current.Term[current.Unit] {
			built := current.Do(build, current.Return(item))
			if strings.HasPrefix(item, "risky") {
				built = current.Do(deploy, built)
			}
			return current.Map(built, func(string) current.Unit { return current.Unit{} })
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, pipeline) }()
	auth, _, err := OpenAuth(AuthOptions{Dir: filepath.Join(dir, "console"), AdminPassword: testPassword, Anonymous: RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Engine: CurrentEngine{eng}, Auth: auth, Logger: log, Register: reg,
		Gatherer: prometheus.Gatherers{eng.Registry(), reg}})
	if err != nil {
		t.Fatal(err)
	}
	c.s = s
	c.srv = httptest.NewServer(s)
	t.Cleanup(func() {
		c.srv.CloseClientConnections()
		c.srv.Close()
		cancel()
		<-done
		eng.Close()
	})
	return c
}

// waitFor polls cond until it holds, failing the test after a minute.
func (c *console) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jobOf returns the id of the latest job of item, waiting for one in one of states.
func (c *console) jobOf(item string, states ...current.JobState) string {
	c.t.Helper()
	var id string
	c.waitFor(fmt.Sprintf("a job of %s in %v", item, states), func() bool {
		res, err := c.eng.Query(current.Query{Op: "build", KeyContains: item, Limit: 1})
		if err != nil || len(res) == 0 {
			return false
		}
		for _, st := range states {
			if res[0].State == st {
				id = res[0].ID
				return true
			}
		}
		return false
	})
	return id
}

// followURL waits for the first lines of job id's log and returns the URL of its page
// log stream from the end of those lines, and the number of the line it starts with.
func (c *console) followURL(id string) (string, int) {
	c.t.Helper()
	var start LogChunk
	c.waitFor("the first lines", func() bool {
		ch, err := CurrentEngine{c.eng}.ReadLog(context.Background(), id, 0, 1<<20)
		start = ch
		return err == nil && strings.Count(string(ch.Data), "\n") >= 3
	})
	line := strings.Count(string(start.Data), "\n") + 1
	return fmt.Sprintf("%s/job/%s/log/events?offset=%d&line=%d", c.srv.URL, id, start.Next, line), line
}

// client is a browser-like HTTP client with a cookie jar.
type client struct {
	t    testing.TB
	base string
	hc   *http.Client
}

func (c *console) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: c.t, base: c.srv.URL, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (cl *client) do(method, path string, form url.Values, hdr map[string]string) (int, string, http.Header) {
	cl.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, cl.base+path, body)
	if err != nil {
		cl.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		cl.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (cl *client) get(path string) (int, string) {
	cl.t.Helper()
	code, body, _ := cl.do("GET", path, nil, nil)
	return code, body
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token of a page's forms.
func (cl *client) csrf(page string) string {
	cl.t.Helper()
	_, body := cl.get(page)
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		cl.t.Fatalf("no CSRF token on %s:\n%s", page, body)
	}
	return m[1]
}

func (cl *client) login() {
	cl.t.Helper()
	tok := cl.csrf("/login")
	code, body, _ := cl.do("POST", "/login", url.Values{"csrf": {tok}, "user": {"admin"}, "password": {testPassword}, "next": {"/jobs"}}, nil)
	if code != http.StatusSeeOther {
		cl.t.Fatalf("login: %d %s", code, body)
	}
}

func (cl *client) getJSON(path string, v any) {
	cl.t.Helper()
	code, body := cl.get(path)
	if code != 200 {
		cl.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		cl.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

func mustRegexp(s string) *regexp.Regexp { return regexp.MustCompile(s) }

// nopRegisterer discards metrics, for a second console over one engine.
type nopRegisterer struct{}

func (nopRegisterer) Register(prometheus.Collector) error  { return nil }
func (nopRegisterer) MustRegister(...prometheus.Collector) {}
func (nopRegisterer) Unregister(prometheus.Collector) bool { return true }
