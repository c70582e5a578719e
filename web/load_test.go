package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/forge/webhook"
)

// The load test repeats what issue 17 found (items 4–7) against a console in a process
// of its own, on loopback: forged webhook posts, followers of a log without a newline,
// idle keep-alive connections and concurrent login guesses. It reports the server's
// memory (RSS) and CPU after each, and fails when a normal request is not served.
//
//	KILN_LOAD_TEST=1 go test -run '^TestLoad$' -v ./web/
const (
	loadWebhooks      = 30
	loadWebhookBytes  = 24 << 20
	loadFollowers     = 15
	loadLogBytes      = 40 << 20
	loadIdleConns     = 250
	loadGuesses       = 150
	loadServerNoFiles = 256 // the server's limit of open files
)

// TestLoadServer is the server of TestLoad, run by it in a process of its own.
func TestLoadServer(t *testing.T) {
	if os.Getenv("KILN_LOAD_SERVER") != "1" {
		t.Skip("the server of TestLoad: runs only as its child process")
	}
	lim := syscall.Rlimit{Cur: loadServerNoFiles, Max: loadServerNoFiles}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := current.Open(current.Config{StateDir: dir, Logger: log, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	finish := make(chan struct{})
	op := &current.Op[string, string]{Name: "print", Run: func(ctx context.Context, j *current.Job, _ string) (string, error) {
		chunk := bytes.Repeat([]byte("forty megabytes without a newline "), 1<<20/34)
		for n := 0; n < loadLogBytes; n += len(chunk) {
			j.Write(chunk)
		}
		select {
		case <-finish:
		case <-ctx.Done():
		}
		j.Write([]byte("\n"))
		return "", nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx, current.Do(op, current.Return("x"))) }()
	defer func() { cancel(); <-done }()

	auth, _, err := OpenAuth(AuthOptions{Dir: filepath.Join(dir, "console"), AdminPassword: testPassword, Anonymous: RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Engine: CurrentEngine{eng}, Auth: auth, Logger: log, Register: prometheus.NewRegistry(), Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := webhook.NewMetrics(prometheus.NewRegistry())
	s.Mount("/webhooks/github", RoleNone, &webhook.Receiver[string]{
		Forge: "github", Secret: []byte("webhook secret"), Metrics: m, Limit: webhook.NewLimiter(4), Logger: log,
		Describe: func(h http.Header) webhook.Delivery {
			return webhook.Delivery{Event: h.Get("X-GitHub-Event"), ID: h.Get("X-GitHub-Delivery"), Signature: h.Get("X-Hub-Signature-256")}
		},
		Signature: webhook.Signature{Prefix: "sha256=", Header: "X-Hub-Signature-256"},
		Parse:     func(webhook.Delivery, http.Header, []byte) (string, error) { return "", nil },
		Account:   func(string) string { return "" },
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs, hln := loadHTTPServer(s, ln)
	go hs.Serve(hln)
	defer hs.Close()
	var id string
	for id == "" {
		for _, j := range eng.Jobs() {
			if j.State == current.JobRunning {
				id = j.ID
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("serving %s job %s\n", ln.Addr(), id)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "finish" {
			close(finish)
		}
	}
}

// loadServer is TestLoadServer seen from TestLoad.
type loadServer struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	addr string
	job  string
}

func startLoadServer(t *testing.T) *loadServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadServer$", "-test.v")
	cmd.Env = append(os.Environ(), "KILN_LOAD_SERVER=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ls := &loadServer{t: t, cmd: cmd, in: in}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "serving %s job %s", &ls.addr, &ls.job); err == nil {
			go io.Copy(io.Discard, out)
			return ls
		}
	}
	t.Fatalf("the server process did not start: %v", sc.Err())
	return nil
}

// usage reads the server's resident memory and the CPU time it has used.
func (ls *loadServer) usage() (rss int64, cpu time.Duration) {
	pid := strconv.Itoa(ls.cmd.Process.Pid)
	status, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb << 10
		}
	}
	stat, _ := os.ReadFile("/proc/" + pid + "/stat")
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 13 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			cpu = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
		}
	}
	return rss, cpu
}

// watch samples the server's resident memory until the returned func is called, which
// gives the most seen.
func (ls *loadServer) watch() (most func() int64) {
	var top atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			rss, _ := ls.usage()
			top.Store(max(top.Load(), rss))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return top.Load()
	}
}

// available makes a normal request on a new connection and reports how it went.
func (ls *loadServer) available() (bool, string) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	start := time.Now()
	resp, err := hc.Get("http://" + ls.addr + "/api/jobs")
	if err != nil {
		return false, err.Error()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200, fmt.Sprintf("%s in %s", resp.Status, time.Since(start).Round(time.Millisecond))
}

// status is the status of an answer, which it closes.
func status(resp *http.Response, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestLoad(t *testing.T) {
	if os.Getenv("KILN_LOAD_TEST") != "1" {
		t.Skip("loopback load test (about a minute, 1.5 GB of loopback traffic): set KILN_LOAD_TEST=1")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skipf("needs /proc to read the server's memory: %v", err)
	}
	ls := startLoadServer(t)
	mb := func(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/1e6) }
	_, cpu0 := ls.usage()
	most := ls.watch()
	// report logs the server's memory during and after a scenario, and whether it
	// serves a normal request.
	report := func(what, detail string) {
		t.Helper()
		ok, how := ls.available()
		rss, cpu := ls.usage()
		t.Logf("%-38s RSS at most %7s, after %7s; CPU %5.1f s in all; a normal request: %s; %s", what, mb(most()), mb(rss), (cpu - cpu0).Seconds(), how, detail)
		most = ls.watch()
		if !ok {
			t.Errorf("%s: the console did not serve a normal request: %s", what, how)
		}
	}
	report("started", "")

	t.Run("followers of a log without a newline", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var received [loadFollowers]atomic.Int64
		var wg sync.WaitGroup
		for i := range loadFollowers {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ls.addr+"/job/"+ls.job+"/log/events", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				defer resp.Body.Close()
				r := bufio.NewReaderSize(resp.Body, 1<<20)
				for {
					l, err := r.ReadSlice('\n')
					if err == bufio.ErrBufferFull {
						// a line event longer than 1 MB: the whole line at once
						received[i].Add(int64(len(l)))
						continue
					}
					if err != nil {
						return
					}
					if d, ok := bytes.CutPrefix(l, []byte("data: ")); ok {
						var ll logLine
						if json.Unmarshal(d, &ll) == nil {
							received[i].Add(int64(len(ll.HTML)))
						}
					}
				}
			})
		}
		// The log is written at once; the followers get it in parts, or (held whole)
		// nothing until the line ends.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			all := true
			for i := range received {
				all = all && received[i].Load() >= loadLogBytes-(1<<20)
			}
			if all {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		least := received[0].Load()
		for i := range received {
			least = min(least, received[i].Load())
		}
		report(fmt.Sprintf("%d followers of a %d MB line", loadFollowers, loadLogBytes>>20), fmt.Sprintf("the slowest follower had %s of it", mb(least)))
		cancel()
		wg.Wait()
	})

	t.Run("idle keep-alive connections", func(t *testing.T) {
		var conns []net.Conn
		failed := 0
		for range loadIdleConns {
			conn, err := idleConn(ls.addr)
			if err != nil {
				failed++
				continue
			}
			conns = append(conns, conn)
		}
		report(fmt.Sprintf("%d idle keep-alive connections", loadIdleConns), fmt.Sprintf("%d of them not answered", failed))
		for _, c := range conns {
			c.Close()
		}
	})

	t.Run("concurrent login guesses", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 20, MaxConnsPerHost: 50}}
		resp, err := hc.Get("http://" + ls.addr + "/api/csrf")
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ CSRF string }
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		cookie := resp.Header.Get("Set-Cookie")
		_, before := ls.usage()
		guesses := make([]func() (int, error), loadGuesses)
		for i := range guesses {
			guesses[i] = func() (int, error) {
				req, _ := http.NewRequest("POST", "http://"+ls.addr+"/api/login", strings.NewReader(`{"user":"admin","password":"guess"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-CSRF-Token", v.CSRF)
				req.Header.Set("Cookie", strings.Split(cookie, ";")[0])
				return status(hc.Do(req))
			}
		}
		codes := atOnce(t, guesses)
		_, after := ls.usage()
		report(fmt.Sprintf("%d concurrent login guesses", loadGuesses), fmt.Sprintf("answers %v, %.1f s of CPU", codes, (after-before).Seconds()))
	})
	t.Run("forged webhook posts", func(t *testing.T) {
		body := bytes.Repeat([]byte("x"), loadWebhookBytes)
		posts := make([]func() (int, error), loadWebhooks)
		for i := range posts {
			posts[i] = func() (int, error) {
				req, _ := http.NewRequest("POST", "http://"+ls.addr+"/webhooks/github", bytes.NewReader(body))
				req.Header.Set("X-GitHub-Event", "push")
				req.Header.Set("X-GitHub-Delivery", fmt.Sprint("d", i))
				req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
				return status(http.DefaultClient.Do(req))
			}
		}
		codes := atOnce(t, posts)
		report(fmt.Sprintf("%d forged %d MB webhook posts", loadWebhooks, loadWebhookBytes>>20), fmt.Sprintf("answers %v", codes))
	})

	most()
	fmt.Fprintln(ls.in, "finish")
}
