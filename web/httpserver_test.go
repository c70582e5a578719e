package web

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/internal/testenv"
)

// serve serves c's console on a loopback port through Server.HTTPServer with o.
func (c *console) serve(t *testing.T, o ServeOptions) (string, *connLimiter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs, lln := c.s.HTTPServer(ln, o)
	go hs.Serve(lln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String(), lln.(*connLimiter)
}

// idleConn opens a connection, makes one request on it and leaves it open, idle.
func idleConn(addr string) (net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	// An answer that has not come in 10 s will not come: the server is not accepting.
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	fmt.Fprintf(conn, "GET /api/whoami HTTP/1.1\r\nHost: kiln\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return conn, nil
}

// limitOpenFiles lowers this process's limit of open files to n until the test ends.
func limitOpenFiles(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Skipf("cannot read the limit of open files: %v", err)
	}
	lim := old
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot lower the limit of open files: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// Idle keep-alive connections beyond what the process may open do not make the
// console unreachable: the idle ones make way.
func TestIdleConnectionsMakeWay(t *testing.T) {
	cases := []struct {
		name     string
		idle     int
		maxConns int
	}{
		{"fewer idle connections than the limit", 20, 40},
		{"250 idle connections, more than the open files allow", 250, 60},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newConsole(t)
			addr, lim := c.serve(t, ServeOptions{MaxConns: tc.maxConns})
			// Room for this process's files, the clients' ends of the idle connections,
			// the server's ends up to the limit, and a few more: not for both ends of all.
			limitOpenFiles(t, uint64(testenv.OpenFiles(t)+tc.idle+tc.maxConns+20))
			var conns []net.Conn
			defer func() {
				for _, conn := range conns {
					conn.Close()
				}
			}()
			for i := range tc.idle {
				conn, err := idleConn(strings.TrimPrefix(addr, "http://"))
				if err != nil {
					t.Fatalf("idle connection %d: %v", i, err)
				}
				conns = append(conns, conn)
			}
			if n := lim.open(); n > tc.maxConns {
				t.Errorf("%d connections open on the server, want at most %d", n, tc.maxConns)
			}
			hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			resp, err := hc.Get(addr + "/api/jobs")
			if err != nil {
				t.Fatalf("a request after %d idle connections: %v", tc.idle, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("a request after %d idle connections: %s", tc.idle, resp.Status)
			}
		})
	}
}

// A body sent slowly is cut off at the read timeout; a live log stream outlasts the
// read and write timeouts.
func TestTimeouts(t *testing.T) {
	c := newConsole(t, "slow-stream")
	addr, _ := c.serve(t, ServeOptions{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	t.Run("a slow body is cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(addr, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const size = 200
		fmt.Fprintf(conn, "POST /api/login HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer none\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
		answered := make(chan struct{})
		go func() {
			io.Copy(io.Discard, conn)
			close(answered)
		}()
		sent := 0
	send:
		for ; sent < size; sent++ {
			select {
			case <-answered:
				break send
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				break
			}
		}
		if sent == size {
			t.Fatalf("the server waited for all %d bytes of a body sent one every 50 ms", size)
		}
	})
	t.Run("a live log stream outlasts the timeouts", func(t *testing.T) {
		id := c.jobOf("slow-stream", current.JobRunning)
		url, _ := c.followURL(id)
		resp, err := http.Get(strings.Replace(url, c.srv.URL, addr, 1))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		time.Sleep(time.Second)
		c.lines <- "a line after the timeouts"
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "a line after the timeouts") {
				return
			}
		}
		t.Fatalf("the stream ended before the line (%v)", sc.Err())
	})
}
