// Package webhook is what every forge's webhook endpoint does before its events reach
// kiln: it takes POSTs only, bounds the payload, checks the signature in constant time,
// parses the event, drops events from accounts not served, hands the rest on, and
// counts each delivery by outcome. A forge package supplies how its deliveries are
// signed, named and parsed.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxPayload is the largest payload accepted unless a Receiver says otherwise
// (GitHub caps its payloads at 25 MB).
const DefaultMaxPayload = 25 << 20

// ErrSignature is matched by every error about a missing or wrong signature.
var ErrSignature = errors.New("bad webhook signature")

// ErrUnhandled is returned by a parser for events (or actions) kiln has no use for;
// the delivery is answered 202 Accepted.
var ErrUnhandled = errors.New("event not handled")

// ErrNothingToDo is returned by a parser for events that need no handling but are
// well formed (a ping); the delivery is answered 204 No Content.
var ErrNothingToDo = errors.New("nothing to do")

// VerifyHMAC checks sig, the hex HMAC-SHA256 of body under secret (after prefix, when
// the forge puts one first, as "sha256="), in constant time. header names where the
// signature came from, for the error.
func VerifyHMAC(secret, body []byte, sig, prefix, header string) error {
	s := Signature{Prefix: prefix, Header: header}
	want, err := s.decode(secret, sig)
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return s.check(want, mac.Sum(nil))
}

// Signature is how a forge signs its deliveries: the hex HMAC-SHA256 of the payload
// under the webhook's secret, after Prefix, in the header named Header.
type Signature struct {
	Prefix string // what comes before the hex digits, e.g. "sha256="; may be empty
	Header string // the header's name, for errors
}

// decode reads the HMAC a delivery claims from sig, the header's value.
func (s Signature) decode(secret []byte, sig string) ([]byte, error) {
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w: no webhook secret is configured", ErrSignature)
	}
	hexSig, ok := strings.CutPrefix(sig, s.Prefix)
	if !ok || sig == "" {
		return nil, fmt.Errorf("%w: %s header missing or not %s…", ErrSignature, s.Header, s.Prefix)
	}
	want, err := hex.DecodeString(hexSig)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not hex", ErrSignature, s.Header)
	}
	return want, nil
}

// check compares the HMAC a delivery claims with the one computed, in constant time.
func (s Signature) check(want, got []byte) error {
	if !hmac.Equal(want, got) {
		return fmt.Errorf("%w: %s does not match the payload", ErrSignature, s.Header)
	}
	return nil
}

// SignHMAC returns prefix followed by the hex HMAC-SHA256 of body under secret.
func SignHMAC(secret, body []byte, prefix string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return prefix + hex.EncodeToString(mac.Sum(nil))
}

// AllowList limits the accounts (users or organisations) served. The zero value (no
// names) allows every account.
type AllowList struct {
	names map[string]bool
}

// NewAllowList allows the accounts named (compared without regard to case).
func NewAllowList(accounts ...string) AllowList {
	a := AllowList{names: map[string]bool{}}
	for _, n := range accounts {
		if n = strings.TrimSpace(n); n != "" {
			a.names[strings.ToLower(n)] = true
		}
	}
	return a
}

// Allows reports whether account is served.
func (a AllowList) Allows(account string) bool {
	return len(a.names) == 0 || a.names[strings.ToLower(account)]
}

// Metrics count webhook deliveries: kiln_forge_webhooks_total{forge,event,outcome}.
type Metrics struct {
	deliveries *prometheus.CounterVec
}

// NewMetrics registers the webhook metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_forge_webhooks_total",
		Help: "Webhook deliveries received, by forge, event and outcome.",
	}, []string{"forge", "event", "outcome"})}
	if err := reg.Register(m.deliveries); err != nil {
		return nil, fmt.Errorf("webhook metrics: %w", err)
	}
	return m, nil
}

// Limiter admits the deliveries of the receivers sharing it. It bounds how many are read
// and verified at once, so that forged payloads cannot fill memory: a delivery waits for
// a slot before its body is read. And it refuses a verified delivery it has seen in the
// last ReplayWindow, so that a captured delivery cannot be replayed: one with the same
// delivery id, or with the same payload under another id (the id is not signed). The
// zero Limiter does neither.
type Limiter struct {
	slots chan struct{}
	seen  *seenDeliveries
}

// ReplayWindow is how long a Limiter remembers a delivery (it remembers at most
// maxRemembered, dropping the oldest first).
const ReplayWindow = 24 * time.Hour

const maxRemembered = 20000

// NewLimiter lets n deliveries be read at once, and refuses deliveries seen before.
func NewLimiter(n int) *Limiter {
	return &Limiter{slots: make(chan struct{}, n), seen: &seenDeliveries{
		window: ReplayWindow, max: 2 * maxRemembered, at: map[[sha256.Size]byte]time.Time{}, now: time.Now,
	}}
}

func (l *Limiter) acquire(ctx context.Context) error {
	if l == nil || l.slots == nil {
		return nil
	}
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Limiter) release() {
	if l != nil && l.slots != nil {
		<-l.slots
	}
}

// claim records a delivery of forge as being handled, unless it was seen before; mac is
// its payload's verified HMAC, which stands for the payload. done says whether it was
// handled (a delivery that failed may be sent again).
func (l *Limiter) claim(forge, id string, mac []byte) (done func(handled bool), fresh bool) {
	if l == nil || l.seen == nil {
		return func(bool) {}, true
	}
	keys := []([sha256.Size]byte){sha256.Sum256(slices.Concat([]byte(forge), []byte{0, 'p', 0}, mac))}
	if id != "" {
		keys = append(keys, sha256.Sum256([]byte(forge+"\x00i\x00"+id)))
	}
	return l.seen.claim(keys)
}

// seenDeliveries remembers keys of deliveries for a window of time, at most max of them.
type seenDeliveries struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	now    func() time.Time
	at     map[[sha256.Size]byte]time.Time
	order  []seenKey // oldest first
}

type seenKey struct {
	key [sha256.Size]byte
	at  time.Time
}

func (s *seenDeliveries) claim(keys [][sha256.Size]byte) (done func(handled bool), fresh bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	for _, k := range keys {
		if _, ok := s.at[k]; ok {
			return nil, false
		}
	}
	for _, k := range keys {
		s.at[k] = now
		s.order = append(s.order, seenKey{k, now})
	}
	return func(handled bool) {
		if handled {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, k := range keys {
			if s.at[k] == now {
				delete(s.at, k)
			}
		}
	}, true
}

// expire forgets the keys older than the window, and the oldest beyond max.
func (s *seenDeliveries) expire(now time.Time) {
	i := 0
	for ; i < len(s.order); i++ {
		e := s.order[i]
		if now.Sub(e.at) < s.window && len(s.order)-i < s.max {
			break
		}
		if s.at[e.key] == e.at {
			delete(s.at, e.key)
		}
	}
	if i > 0 {
		s.order = slices.Delete(s.order, 0, i)
	}
}

// DefaultReadTimeout bounds the time a delivery's body takes to arrive.
const DefaultReadTimeout = 30 * time.Second

// Shared is what the webhook endpoints of one server share: the metrics and the bound
// on deliveries read at once. The zero Shared counts nothing and bounds nothing.
type Shared struct {
	Metrics *Metrics
	Limit   *Limiter
}

// Delivery is what a forge's headers say of one delivery.
type Delivery struct {
	Event     string // the event type, e.g. "push"
	ID        string // the delivery's id, for logs
	Signature string // the signature header's value
}

// Receiver is an http.Handler for one forge's deliveries of events of type E. It
// answers 405 to anything but a POST, 413 to a payload over MaxPayload, 401 to a
// delivery whose signature does not verify (and does nothing else with it), 400 to a
// payload it cannot parse, 409 to a delivery its Limiter has seen before (a replay), 202
// to events not handled and to accounts not allowed, 204 when the event was handled (or
// needed nothing), and 500 when Handle failed or a large payload could not be held in
// SpoolDir (so the forge shows the delivery as failed and may send it again). A payload
// is held whole in memory only once its signature is verified.
type Receiver[E any] struct {
	Forge  string // the forge's name, in logs and metrics
	Secret []byte
	// Describe reads the delivery's event type, id and signature from its headers.
	Describe func(h http.Header) Delivery
	// Signature is how deliveries are signed. The signature is checked as the payload is
	// read, and before it is parsed.
	Signature Signature
	// Parse parses a verified payload; ErrUnhandled and ErrNothingToDo are answers, not
	// failures.
	Parse func(d Delivery, h http.Header, body []byte) (E, error)
	// Account is the account a parsed event belongs to, checked against Allow.
	Account func(E) string
	Allow   AllowList
	// Handle receives every verified, parsed event of an allowed account.
	Handle func(ctx context.Context, ev E) error
	// Events are the event types counted by name in metrics; others count as "other".
	Events     []string
	MaxPayload int64    // default DefaultMaxPayload
	Metrics    *Metrics // nil: not counted
	// Limit bounds the deliveries read at once (shared by the receivers of a forge);
	// nil: no bound.
	Limit *Limiter
	// SpoolDir holds payloads of MaxInMemoryPayload bytes or more while their signature
	// is checked (default os.TempDir()). Their files are removed as soon as they are
	// created, and closed once read back or when the request ends.
	SpoolDir string
	Logger   *slog.Logger
}

func (rc *Receiver[E]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := rc.Logger
	if log == nil {
		log = slog.Default()
	}
	d := rc.Describe(r.Header)
	outcome := func(o string) {
		if rc.Metrics == nil {
			return
		}
		ev := "other"
		for _, e := range rc.Events {
			if e == d.Event {
				ev = e
			}
		}
		rc.Metrics.deliveries.WithLabelValues(rc.Forge, ev, o).Inc()
	}
	forged := func(err error) {
		outcome("forged")
		log.Warn(rc.Forge+" webhook rejected", "delivery", d.ID, "event", d.Event, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
	}
	tooLarge := func(max int64) {
		outcome("bad-request")
		http.Error(w, fmt.Sprintf("payload larger than %d bytes", max), http.StatusRequestEntityTooLarge)
	}
	if r.Method != http.MethodPost {
		outcome("bad-request")
		http.Error(w, "webhooks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	max := rc.MaxPayload
	if max <= 0 {
		max = DefaultMaxPayload
	}
	if r.ContentLength > max {
		tooLarge(max)
		return
	}
	want, err := rc.Signature.decode(rc.Secret, d.Signature)
	if err != nil {
		forged(err)
		return
	}
	if err := rc.Limit.acquire(r.Context()); err != nil {
		outcome("bad-request")
		http.Error(w, "gave up waiting to be read", http.StatusServiceUnavailable)
		return
	}
	defer rc.Limit.release()
	// A slow body holds its slot no longer than this (where the server allows it).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(DefaultReadTimeout))
	p := &payload{}
	defer p.close()
	err = p.read(r.Body, r.ContentLength, rc.Secret, max, rc.SpoolDir)
	var spoolErr *spoolError
	switch {
	case errors.Is(err, errTooLarge):
		tooLarge(max)
		return
	case errors.As(err, &spoolErr):
		outcome("error")
		log.Error(rc.Forge+" webhook payload could not be held", "delivery", d.ID, "event", d.Event, "err", err)
		http.Error(w, "holding the payload failed", http.StatusInternalServerError)
		return
	case err != nil:
		outcome("bad-request")
		http.Error(w, "reading the payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := rc.Signature.check(want, p.mac); err != nil {
		forged(err)
		return
	}
	done, fresh := rc.Limit.claim(rc.Forge, d.ID, p.mac)
	if !fresh {
		outcome("replayed")
		log.Warn(rc.Forge+" webhook delivery received again: refused", "delivery", d.ID, "event", d.Event, "remote", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("delivery %q (or its payload) was received before", d.ID), http.StatusConflict)
		return
	}
	body, err := p.bytes()
	if err != nil {
		done(false)
		outcome("error")
		log.Error(rc.Forge+" webhook payload could not be read back", "delivery", d.ID, "event", d.Event, "err", err)
		http.Error(w, "reading the held payload failed", http.StatusInternalServerError)
		return
	}
	p.close()
	handled := false
	defer func() { done(handled) }()
	ev, err := rc.Parse(d, r.Header, body)
	handled = err == nil || errors.Is(err, ErrUnhandled) || errors.Is(err, ErrNothingToDo)
	switch {
	case errors.Is(err, ErrUnhandled):
		outcome("ignored")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "event %q not handled\n", d.Event)
		return
	case errors.Is(err, ErrNothingToDo):
		outcome("ok")
		w.WriteHeader(http.StatusNoContent)
		return
	case err != nil:
		outcome("bad-request")
		log.Warn(rc.Forge+" webhook unreadable", "delivery", d.ID, "event", d.Event, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if acct := rc.Account(ev); !rc.Allow.Allows(acct) {
		outcome("not-allowed")
		log.Info(rc.Forge+" webhook from an account not served", "delivery", d.ID, "account", acct)
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "account %q is not served here\n", acct)
		return
	}
	if rc.Handle != nil {
		if err := rc.Handle(r.Context(), ev); err != nil {
			handled = false
			outcome("error")
			log.Error(rc.Forge+" webhook handling failed", "delivery", d.ID, "event", d.Event, "err", err)
			http.Error(w, "handling the event failed", http.StatusInternalServerError)
			return
		}
	}
	outcome("ok")
	w.WriteHeader(http.StatusNoContent)
}

// MaxInMemoryPayload bounds the payloads a Receiver holds in memory while it checks the
// signature: one of this size or more goes to a file in its SpoolDir, so that the memory
// a delivery takes before it is verified does not grow with its size.
const MaxInMemoryPayload = 1 << 20

var errTooLarge = errors.New("payload too large")

// spoolError is a failure to hold a payload in a file (the server's fault, not the
// sender's).
type spoolError struct{ err error }

func (e *spoolError) Error() string { return "spooling the webhook payload: " + e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

// payload is a delivery's body as read, with its HMAC: in memory, or in a temporary
// file from MaxInMemoryPayload bytes on.
type payload struct {
	mem  []byte
	file *os.File
	name string // the file's name while it could not be removed
	size int64
	mac  []byte
}

// read reads body, at most limit bytes (errTooLarge beyond), computing its HMAC-SHA256
// under secret as it goes. A payload announced (size, -1 if unknown) or found to be
// MaxInMemoryPayload bytes or more goes to a file in dir. p must be closed, also after
// an error.
func (p *payload) read(body io.Reader, size int64, secret []byte, limit int64, dir string) error {
	mac := hmac.New(sha256.New, secret)
	in := io.TeeReader(io.LimitReader(body, limit+1), mac)
	var err error
	if size < MaxInMemoryPayload {
		p.mem, err = readUpTo(in, size, MaxInMemoryPayload)
		p.size = int64(len(p.mem))
	}
	if err == nil && (size >= MaxInMemoryPayload || p.size >= MaxInMemoryPayload) {
		err = p.spool(in, dir)
	}
	if err != nil {
		return err
	}
	if p.size > limit {
		return errTooLarge
	}
	p.mac = mac.Sum(nil)
	return nil
}

// readUpTo reads r to its end or to limit bytes, whichever comes first, starting with
// room for size bytes when that is known (not -1).
func readUpTo(r io.Reader, size int64, limit int) ([]byte, error) {
	room := 512
	if size >= 0 {
		room = int(size) + 1 // and the end is seen without growing
	}
	b := make([]byte, 0, min(room, limit))
	for len(b) < limit {
		if len(b) == cap(b) {
			b = append(make([]byte, 0, min(2*cap(b), limit)), b...)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// spool moves what was read so far to a temporary file in dir and copies the rest of in
// after it.
func (p *payload) spool(in io.Reader, dir string) error {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "kiln-webhook-*")
	if err != nil {
		return &spoolError{err}
	}
	p.file = f
	if os.Remove(f.Name()) != nil {
		p.name = f.Name() // removed when closed instead (where open files cannot be)
	}
	w := spoolWriter{f}
	if _, err := w.Write(p.mem); err != nil {
		return err
	}
	p.mem = nil
	n, err := io.Copy(w, in)
	p.size += n
	return err
}

// spoolWriter writes to a payload's file, telling its errors from the body's.
type spoolWriter struct{ f *os.File }

func (w spoolWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		err = &spoolError{err}
	}
	return n, err
}

// bytes is the whole payload, read back from its file if it has one.
func (p *payload) bytes() ([]byte, error) {
	if p.file == nil {
		return p.mem, nil
	}
	b := make([]byte, p.size)
	if _, err := p.file.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("reading back %s: %w", p.file.Name(), err)
	}
	return b, nil
}

// close closes and removes the payload's file, if it has one; it may be called again.
func (p *payload) close() {
	if p.file != nil {
		p.file.Close()
		p.file = nil
	}
	if p.name != "" {
		os.Remove(p.name)
		p.name = ""
	}
}
