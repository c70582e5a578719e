package github

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	gh "github.com/google/go-github/v89/github"
)

// RateLimitError is matched (errors.As) by the error of a request refused because
// GitHub's rate limit for the client is spent: no request is sent until Until.
type RateLimitError struct {
	Until time.Time
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("github rate limit reached: no request until %s (in %s)",
		e.Until.UTC().Format(time.TimeOnly), time.Until(e.Until).Round(time.Second))
}

// secondaryDefault is how long to wait after a 429 that says neither when to retry nor
// when the limit resets (GitHub's advice: at least a minute).
const secondaryDefault = time.Minute

// rateGate is the transport of one client (one installation, one rate limit): it reads
// the rate-limit headers of every answer and, once the limit is spent, refuses requests
// without sending them until the limit resets.
type rateGate struct {
	next http.RoundTripper

	mu    sync.Mutex
	until time.Time
}

func (g *rateGate) RoundTrip(req *http.Request) (*http.Response, error) {
	if until := g.blockedUntil(); !until.IsZero() {
		return nil, &RateLimitError{Until: until}
	}
	resp, err := g.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	until, limited := limitOf(resp, time.Now())
	if !until.IsZero() {
		g.mu.Lock()
		if until.After(g.until) {
			g.until = until
		}
		g.mu.Unlock()
	}
	if limited {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, &RateLimitError{Until: until}
	}
	return resp, nil
}

// blockedUntil is the end of the current back-off, or zero when requests may go.
func (g *rateGate) blockedUntil() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Now().Before(g.until) {
		return g.until
	}
	return time.Time{}
}

// limitOf reads an answer's rate-limit headers: until is when requests may be sent
// again (zero when the limit is not spent), limited whether this answer itself was
// refused for the limit (403 or 429).
func limitOf(resp *http.Response, now time.Time) (until time.Time, limited bool) {
	h := resp.Header
	refused := resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests
	if ra := h.Get("Retry-After"); ra != "" && refused {
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
			return now.Add(time.Duration(s) * time.Second), true
		}
		if t, err := http.ParseTime(ra); err == nil {
			return t, true
		}
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if s, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil && time.Unix(s, 0).After(now) {
			return time.Unix(s, 0), refused
		}
		if refused {
			return now.Add(secondaryDefault), true
		}
		return time.Time{}, false
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return now.Add(secondaryDefault), true
	}
	return time.Time{}, false
}

// rateLimited turns go-github's own rate-limit refusals into a RateLimitError.
func rateLimited(err error) error {
	var rl *gh.RateLimitError
	if errors.As(err, &rl) && rl.Rate.Reset.After(time.Now()) {
		return &RateLimitError{Until: rl.Rate.Reset.Time}
	}
	var ab *gh.AbuseRateLimitError
	if errors.As(err, &ab) && ab.RetryAfter != nil {
		return &RateLimitError{Until: time.Now().Add(*ab.RetryAfter)}
	}
	return nil
}
