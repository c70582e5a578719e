package web

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ServeOptions are the limits of the console's HTTP server; zero values take the
// defaults.
type ServeOptions struct {
	ReadHeaderTimeout time.Duration // to read a request's headers; default 10s
	ReadTimeout       time.Duration // to read a whole request, body included; default 30s
	WriteTimeout      time.Duration // to write an answer; default 60s (streams extend their own)
	IdleTimeout       time.Duration // a kept-alive connection waits this long for a request; default 2m
	// MaxConns bounds the connections open at once; default a quarter of the open-file
	// limit, between 32 and 1024.
	MaxConns int
}

func (o ServeOptions) withDefaults() ServeOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ReadHeaderTimeout, 10*time.Second)
	def(&o.ReadTimeout, 30*time.Second)
	def(&o.WriteTimeout, time.Minute)
	def(&o.IdleTimeout, 2*time.Minute)
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
		var lim syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
			o.MaxConns = int(min(max(lim.Cur/4, 32), 1024))
		}
	}
	return o
}

// streamWriteTimeout is how long a streaming answer (server-sent events, a whole log)
// may take for each write; each write extends the deadline.
const streamWriteTimeout = 2 * heartbeat

// HTTPServer returns an http.Server serving the console with o's limits, and ln wrapped
// so that at most o.MaxConns connections are open at once. A connection arriving at the
// limit takes the place of the one idle the longest (kept alive between requests, or
// open a second without a request); when none is idle it is answered 503 and closed.
func (s *Server) HTTPServer(ln net.Listener, o ServeOptions) (*http.Server, net.Listener) {
	o = o.withDefaults()
	l := &connLimiter{Listener: ln, max: o.MaxConns, s: s, conns: map[net.Conn]*connEntry{}}
	hs := &http.Server{
		Handler: s, ReadHeaderTimeout: o.ReadHeaderTimeout, ReadTimeout: o.ReadTimeout,
		WriteTimeout: o.WriteTimeout, IdleTimeout: o.IdleTimeout, ConnState: l.connState,
	}
	return hs, l
}

// connLimiter is a listener that keeps at most max connections open.
type connLimiter struct {
	net.Listener
	max   int
	s     *Server
	mu    sync.Mutex
	conns map[net.Conn]*connEntry
}

type connEntry struct {
	state http.ConnState
	since time.Time
}

// newConnGrace is how long a new connection may wait before sending a request and still
// be safe from being closed for another.
const newConnGrace = time.Second

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit(c) {
			return c, nil
		}
	}
}

// admit takes c in, closing an idle connection for it at the limit; it refuses c when
// none is idle.
func (l *connLimiter) admit(c net.Conn) bool {
	now := time.Now()
	l.mu.Lock()
	var victim net.Conn
	if len(l.conns) >= l.max {
		var oldest time.Time
		for vc, e := range l.conns {
			idle := e.state == http.StateIdle || e.state == http.StateNew && now.Sub(e.since) > newConnGrace
			if idle && (victim == nil || e.since.Before(oldest)) {
				victim, oldest = vc, e.since
			}
		}
		if victim == nil {
			l.mu.Unlock()
			l.s.connsClosed.WithLabelValues("refused").Inc()
			refuseConn(c)
			return false
		}
		delete(l.conns, victim)
	}
	l.conns[c] = &connEntry{http.StateNew, now}
	l.s.conns.Set(float64(len(l.conns)))
	l.mu.Unlock()
	if victim != nil {
		victim.Close()
		l.s.connsClosed.WithLabelValues("idle").Inc()
	}
	return true
}

func refuseConn(c net.Conn) {
	const msg = "too many connections: try again\n"
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(msg)) + "\r\n\r\n" + msg))
	c.Close()
}

func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.conns[c]
	if !ok {
		return
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
		l.s.conns.Set(float64(len(l.conns)))
	default:
		e.state, e.since = st, time.Now()
	}
}

// open is the number of connections open.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}
