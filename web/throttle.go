package web

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// loginThrottle bounds password guessing. Each pair of user name and client gets max
// attempts in a window, counted when an attempt starts, before its password is checked,
// so concurrent guesses cannot all slip through; a successful login clears the pair's
// count. Pairs are counted apart, so a stranger's guesses do not lock the admin out of
// another client. At most checks passwords are checked at once (each check takes a
// PBKDF2's worth of CPU).
type loginThrottle struct {
	mu       sync.Mutex
	window   time.Duration
	max      int
	attempts map[string][]time.Time // by throttleKey
	checks   chan struct{}
	// checkWait bounds how long an attempt waits for a password check to be free.
	checkWait time.Duration
}

// maxPasswordChecks is how many passwords are checked at once.
const maxPasswordChecks = 2

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{window: 5 * time.Minute, max: 10, attempts: map[string][]time.Time{},
		checks: make(chan struct{}, maxPasswordChecks), checkWait: 10 * time.Second}
}

// clientAddr is the address a request comes from; IPv6 clients are counted by their /64
// network, which one host usually has whole.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return host
}

func throttleKey(user, client string) string { return user + "\x00" + client }

// recent drops attempts older than the window and returns those left for key.
func (l *loginThrottle) recent(key string, now time.Time) []time.Time {
	as := l.attempts[key]
	i := 0
	for i < len(as) && now.Sub(as[i]) > l.window {
		i++
	}
	as = as[i:]
	if len(as) == 0 {
		delete(l.attempts, key)
	} else {
		l.attempts[key] = as
	}
	return as
}

// attempt records an attempt of user from client, unless the pair has had its attempts
// in the window; then it says how long until the pair may try again.
func (l *loginThrottle) attempt(user, client string) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if len(l.attempts) > 10000 {
		for k := range l.attempts {
			l.recent(k, now)
		}
	}
	key := throttleKey(user, client)
	as := l.recent(key, now)
	if len(as) >= l.max {
		return false, l.window - now.Sub(as[0])
	}
	l.attempts[key] = append(as, now)
	return true, 0
}

// succeeded clears the attempts of user from client.
func (l *loginThrottle) succeeded(user, client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.attempts, throttleKey(user, client))
}

// check runs a password check when one of the few slots is free, waiting no longer than
// checkWait; ok is false when it gave up.
func (l *loginThrottle) check(ctx context.Context, f func()) (ok bool) {
	t := time.NewTimer(l.checkWait)
	defer t.Stop()
	select {
	case l.checks <- struct{}{}:
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
	defer func() { <-l.checks }()
	f()
	return true
}
