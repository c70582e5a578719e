package web

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// loginThrottle refuses logins from a client address after too many failures in a
// window, so that passwords cannot be guessed at speed.
type loginThrottle struct {
	mu       sync.Mutex
	window   time.Duration
	max      int
	failures map[string][]time.Time
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{window: 5 * time.Minute, max: 10, failures: map[string][]time.Time{}}
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// recent drops failures older than the window and returns those left for addr.
func (l *loginThrottle) recent(addr string, now time.Time) []time.Time {
	fs := l.failures[addr]
	i := 0
	for i < len(fs) && now.Sub(fs[i]) > l.window {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(l.failures, addr)
	} else {
		l.failures[addr] = fs
	}
	return fs
}

// allow reports whether addr may try to log in, and if not, after how long it may.
func (l *loginThrottle) allow(addr string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	fs := l.recent(addr, now)
	if len(fs) < l.max {
		return true, 0
	}
	return false, l.window - now.Sub(fs[0])
}

// failed records a failed login from addr.
func (l *loginThrottle) failed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if len(l.failures) > 10000 {
		for a := range l.failures {
			l.recent(a, now)
		}
	}
	l.failures[addr] = append(l.recent(addr, now), now)
}
