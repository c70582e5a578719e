package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type event struct{ account, kind string }

func testReceiver(t *testing.T, handled *[]event) (*Receiver[event], *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return &Receiver[event]{
		Forge: "test", Secret: []byte("s3cret"), Metrics: m, MaxPayload: 64,
		Events: []string{"push"},
		Describe: func(h http.Header) Delivery {
			return Delivery{Event: h.Get("X-Event"), ID: h.Get("X-Id"), Signature: h.Get("X-Sig")}
		},
		Signature: Signature{Prefix: "sha256=", Header: "X-Sig"},
		Parse: func(d Delivery, _ http.Header, body []byte) (event, error) {
			switch {
			case d.Event == "ping":
				return event{}, ErrNothingToDo
			case d.Event == "issue":
				return event{}, ErrUnhandled
			case !strings.HasPrefix(string(body), "acct="):
				return event{}, errors.New("no account in the payload")
			}
			return event{account: strings.TrimPrefix(string(body), "acct="), kind: d.Event}, nil
		},
		Account: func(e event) string { return e.account },
		Allow:   NewAllowList("OCaml"),
		Handle: func(_ context.Context, e event) error {
			if e.account == "ocaml" && e.kind == "fail" {
				return errors.New("store down")
			}
			*handled = append(*handled, e)
			return nil
		},
	}, m
}

func TestReceiverAnswers(t *testing.T) {
	secret := []byte("s3cret")
	cases := []struct {
		name     string
		method   string
		event    string
		body     string
		sig      string // "" signs the body with the secret
		code     int
		handled  bool
		outcome  string
		metricEv string
	}{
		{"handled", "POST", "push", "acct=ocaml", "", http.StatusNoContent, true, "ok", "push"},
		{"account case differs", "POST", "push", "acct=OCAML", "", http.StatusNoContent, true, "ok", "push"},
		{"not a POST", "GET", "push", "acct=ocaml", "", http.StatusMethodNotAllowed, false, "bad-request", "push"},
		{"too large", "POST", "push", "acct=" + strings.Repeat("x", 100), "", http.StatusRequestEntityTooLarge, false, "bad-request", "push"},
		{"wrong signature", "POST", "push", "acct=ocaml", SignHMAC([]byte("other"), []byte("acct=ocaml"), "sha256="), http.StatusUnauthorized, false, "forged", "push"},
		{"no signature", "POST", "push", "acct=ocaml", "none", http.StatusUnauthorized, false, "forged", "push"},
		{"signature not hex", "POST", "push", "acct=ocaml", "sha256=zz", http.StatusUnauthorized, false, "forged", "push"},
		{"unhandled event", "POST", "issue", "acct=ocaml", "", http.StatusAccepted, false, "ignored", "other"},
		{"ping", "POST", "ping", "{}", "", http.StatusNoContent, false, "ok", "other"},
		{"unparsable", "POST", "push", "garbage", "", http.StatusBadRequest, false, "bad-request", "push"},
		{"account not served", "POST", "push", "acct=someone", "", http.StatusAccepted, false, "not-allowed", "push"},
		{"handler fails", "POST", "fail", "acct=ocaml", "", http.StatusInternalServerError, false, "error", "other"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var handled []event
			rc, m := testReceiver(t, &handled)
			req := httptest.NewRequest(c.method, "/webhooks/test", strings.NewReader(c.body))
			req.Header.Set("X-Event", c.event)
			switch c.sig {
			case "":
				req.Header.Set("X-Sig", SignHMAC(secret, []byte(c.body), "sha256="))
			case "none":
			default:
				req.Header.Set("X-Sig", c.sig)
			}
			rec := httptest.NewRecorder()
			rc.ServeHTTP(rec, req)
			if rec.Code != c.code {
				t.Errorf("answer %d (%s), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), c.code)
			}
			if (len(handled) > 0) != c.handled {
				t.Errorf("handled %v, want handled: %v", handled, c.handled)
			}
			var pb dto.Metric
			m.deliveries.WithLabelValues("test", c.metricEv, c.outcome).Write(&pb)
			if n := pb.GetCounter().GetValue(); n != 1 {
				t.Errorf("kiln_forge_webhooks_total{forge=test,event=%s,outcome=%s} = %v, want 1", c.metricEv, c.outcome, n)
			}
		})
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering the webhook metrics twice on one registry succeeded")
	}
}

func FuzzVerifyHMAC(f *testing.F) {
	secret := []byte("k")
	f.Add([]byte("body"), SignHMAC(secret, []byte("body"), "sha256="))
	f.Add([]byte(""), "sha256=")
	f.Add([]byte("x"), "garbage")
	f.Fuzz(func(t *testing.T, body []byte, sig string) {
		err := VerifyHMAC(secret, body, sig, "sha256=", "X-Sig")
		if err == nil && sig != SignHMAC(secret, body, "sha256=") && !strings.EqualFold(sig, SignHMAC(secret, body, "sha256=")) {
			t.Fatalf("signature %q accepted for %q", sig, body)
		}
		if err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("error %v is not an ErrSignature", err)
		}
	})
}

func TestReceiverBoundsWhatItReads(t *testing.T) {
	var handled []event
	rc, _ := testReceiver(t, &handled)
	rc.Limit = NewLimiter(1)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	post := func(body io.Reader, size int64, sig string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL, body)
		req.ContentLength = size
		req.Header.Set("X-Event", "push")
		req.Header.Set("X-Sig", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// A payload announced larger than the bound is refused.
	if resp := post(strings.NewReader(strings.Repeat("x", 1000)), 1000, "sha256=00"); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("announced 1000 bytes: %d, want 413", resp.StatusCode)
	}
	// While one delivery's body trickles in, the next waits for its turn before it is read.
	slowBody, slowWriter := io.Pipe()
	slowDone := make(chan *http.Response, 1)
	go func() { slowDone <- post(slowBody, -1, SignHMAC([]byte("s3cret"), []byte("acct=ocaml"), "sha256=")) }()
	slowWriter.Write([]byte("acct="))
	// The slow delivery holds the slot before the next one is sent.
	for deadline := time.Now().Add(time.Minute); len(rc.Limit.slots) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow delivery never took the slot")
		}
	}
	fastDone := make(chan *http.Response, 1)
	body := []byte("acct=OCaml")
	go func() {
		fastDone <- post(bytes.NewReader(body), int64(len(body)), SignHMAC([]byte("s3cret"), body, "sha256="))
	}()
	select {
	case resp := <-fastDone:
		t.Fatalf("a second delivery was read while the first held the only slot: %d", resp.StatusCode)
	case <-time.After(300 * time.Millisecond):
	}
	slowWriter.Write([]byte("ocaml"))
	slowWriter.Close()
	for _, ch := range []chan *http.Response{slowDone, fastDone} {
		select {
		case resp := <-ch:
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("delivery answered %d, want 204", resp.StatusCode)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a delivery was never answered")
		}
	}
	if len(handled) != 2 {
		t.Errorf("handled %v, want both deliveries", handled)
	}
}

// A delivery received again, under its id or with its payload under another id, is
// refused and counted; one that failed may be sent again; the window passes.
func TestReplayedDeliveriesAreRefused(t *testing.T) {
	var handled []event
	rc, m := testReceiver(t, &handled)
	rc.Limit = NewLimiter(4)
	clock := time.Now()
	rc.Limit.seen.now = func() time.Time { return clock }
	secret := []byte("s3cret")
	cases := []struct {
		name, id, event, body string
		forged                bool
		later                 time.Duration // the clock moves on this much first
		code                  int
		handled               bool
	}{
		{"a delivery whose handling fails", "d0", "fail", "acct=ocaml", false, 0, http.StatusInternalServerError, false},
		{"the failed delivery sent again", "d0", "fail", "acct=ocaml", false, 0, http.StatusInternalServerError, false},
		{"a delivery", "d1", "push", "acct=ocaml", false, 0, http.StatusNoContent, true},
		{"the same delivery again", "d1", "push", "acct=ocaml", false, 0, http.StatusConflict, false},
		{"its payload under another id", "d2", "push", "acct=ocaml", false, 0, http.StatusConflict, false},
		{"its payload without an id", "", "push", "acct=ocaml", false, 0, http.StatusConflict, false},
		{"its id with another payload", "d1", "push", "acct=OCaml", false, 0, http.StatusConflict, false},
		{"another delivery", "d3", "push", "acct=OCaml", false, 0, http.StatusNoContent, true},
		{"a forged delivery under a new id", "d4", "push", "acct=ocaml!", true, 0, http.StatusUnauthorized, false},
		{"the delivery of that id", "d4", "push", "acct=Ocaml", false, 0, http.StatusNoContent, true},
		{"the first delivery after the window", "d1", "push", "acct=ocaml", false, ReplayWindow, http.StatusNoContent, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock = clock.Add(c.later)
			handled = nil
			req := httptest.NewRequest("POST", "/webhooks/test", strings.NewReader(c.body))
			req.Header.Set("X-Event", c.event)
			req.Header.Set("X-Id", c.id)
			sig := SignHMAC(secret, []byte(c.body), "sha256=")
			if c.forged {
				sig = SignHMAC([]byte("guess"), []byte(c.body), "sha256=")
			}
			req.Header.Set("X-Sig", sig)
			rec := httptest.NewRecorder()
			rc.ServeHTTP(rec, req)
			if rec.Code != c.code || (len(handled) > 0) != c.handled {
				t.Errorf("answer %d (%s), handled %v; want %d, handled: %v", rec.Code, strings.TrimSpace(rec.Body.String()), handled, c.code, c.handled)
			}
		})
	}
	var pb dto.Metric
	m.deliveries.WithLabelValues("test", "push", "replayed").Write(&pb)
	if n := pb.GetCounter().GetValue(); n != 4 {
		t.Errorf("kiln_forge_webhooks_total{outcome=replayed} = %v, want 4", n)
	}
}

func TestReplayMemoryIsBounded(t *testing.T) {
	s := &seenDeliveries{window: time.Hour, max: 100, at: map[[32]byte]time.Time{}, now: time.Now}
	for i := range 1000 {
		if _, fresh := s.claim([][32]byte{{byte(i), byte(i >> 8)}}); !fresh {
			t.Fatalf("key %d seen before", i)
		}
	}
	if len(s.at) > 100 || len(s.order) > 100 {
		t.Errorf("remembers %d keys (%d in order), want at most 100", len(s.at), len(s.order))
	}
}

// pattern reads as n bytes of a repeating pattern without holding them; it panics when
// read past panicAt (when that is not 0).
type pattern struct{ n, off, panicAt int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if p.panicAt > 0 && p.off >= p.panicAt {
		panic("the body broke")
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	for i := range b {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// patternSum is the sha256 and the HMAC-SHA256 under secret of n bytes of pattern.
func patternSum(n int64, secret []byte) (sum [sha256.Size]byte, sig string) {
	h, mac := sha256.New(), hmac.New(sha256.New, secret)
	io.Copy(io.MultiWriter(h, mac), &pattern{n: n})
	return [sha256.Size]byte(h.Sum(nil)), "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// openIn lists the files of this process open under dir (none when /proc is missing).
func openIn(dir string) []string {
	fds, _ := os.ReadDir("/proc/self/fd")
	var open []string
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, dir+string(os.PathSeparator)) {
			open = append(open, target)
		}
	}
	return open
}

// Payloads of any size up to the bound: the signature is checked as the payload is read,
// a large one is held in a file (removed however the request ends), so that a forged one
// costs little memory; a verified one is parsed whole.
func TestLargePayloads(t *testing.T) {
	secret := []byte("s3cret")
	cases := []struct {
		name     string
		size     int64
		announce bool   // the size is in Content-Length (else the body is chunked)
		signed   bool   // signed with the secret (else with another)
		panicAt  int64  // the body's reader panics past this many bytes
		noSpool  bool   // the spool directory does not exist
		code     int    // 0: the request panics
		outcome  string // "": not counted
		maxAlloc uint64 // the most the request may allocate in all; 0: not measured
	}{
		{"small, signed", 1 << 10, true, true, 0, false, http.StatusNoContent, "ok", 0},
		{"small, forged", 1 << 10, true, false, 0, false, http.StatusUnauthorized, "forged", 0},
		{"just small enough to be held in memory, chunked", MaxInMemoryPayload - 1, false, true, 0, false, http.StatusNoContent, "ok", 0},
		{"just large enough to be held in a file, chunked", MaxInMemoryPayload, false, true, 0, false, http.StatusNoContent, "ok", 0},
		{"large, signed", 3 << 20, true, true, 0, false, http.StatusNoContent, "ok", 0},
		{"large, signed, chunked", 3<<20 + 17, false, true, 0, false, http.StatusNoContent, "ok", 0},
		{"as large as accepted, signed", DefaultMaxPayload, true, true, 0, false, http.StatusNoContent, "ok", 0},
		{"large, forged", 20 << 20, true, false, 0, false, http.StatusUnauthorized, "forged", 4 << 20},
		{"large, forged, chunked", 20 << 20, false, false, 0, false, http.StatusUnauthorized, "forged", 4 << 20},
		{"over the bound, chunked", DefaultMaxPayload + 1, false, true, 0, false, http.StatusRequestEntityTooLarge, "bad-request", 4 << 20},
		{"large, the body's reader panics", 3 << 20, true, true, 2 << 20, false, 0, "", 0},
		{"large, no spool directory", 3 << 20, true, true, 0, true, http.StatusInternalServerError, "error", 0},
		{"small, no spool directory", 1 << 10, true, true, 0, true, http.StatusNoContent, "ok", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			spool := t.TempDir()
			var parsed [][sha256.Size]byte
			rc := &Receiver[string]{
				Forge: "test", Secret: secret, Metrics: m, Limit: NewLimiter(1), SpoolDir: spool, Logger: slog.New(slog.DiscardHandler),
				Describe:  func(h http.Header) Delivery { return Delivery{Event: "push", Signature: h.Get("X-Sig")} },
				Signature: Signature{Prefix: "sha256=", Header: "X-Sig"},
				Parse: func(_ Delivery, _ http.Header, body []byte) (string, error) {
					parsed = append(parsed, sha256.Sum256(body))
					return "ocaml", nil
				},
				Account: func(a string) string { return a },
			}
			if c.noSpool {
				rc.SpoolDir = filepath.Join(spool, "missing")
			}
			sum, sig := patternSum(c.size, secret)
			if !c.signed {
				_, sig = patternSum(c.size, []byte("guess"))
			}
			req := httptest.NewRequest("POST", "/webhooks/test", &pattern{n: c.size, panicAt: c.panicAt})
			req.ContentLength = -1
			if c.announce {
				req.ContentLength = c.size
			}
			req.Header.Set("X-Sig", sig)
			rec := httptest.NewRecorder()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			panicked := func() (p any) {
				defer func() { p = recover() }()
				rc.ServeHTTP(rec, req)
				return nil
			}()
			runtime.ReadMemStats(&after)
			switch {
			case c.code == 0 && panicked == nil:
				t.Errorf("answer %d, want the request to panic", rec.Code)
			case c.code != 0 && panicked != nil:
				t.Fatalf("the request panicked: %v", panicked)
			case c.code != 0 && rec.Code != c.code:
				t.Errorf("answer %d (%s), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), c.code)
			}
			if want := c.code == http.StatusNoContent; want != (len(parsed) == 1) || want && parsed[0] != sum {
				t.Errorf("parsed %d payloads (the right one: %v), want the payload parsed: %v", len(parsed), len(parsed) == 1 && parsed[0] == sum, want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; c.maxAlloc > 0 && alloc > c.maxAlloc {
				t.Errorf("a %d MiB payload allocated %.1f MiB, want at most %d MiB", c.size>>20, float64(alloc)/(1<<20), c.maxAlloc>>20)
			}
			if left, _ := os.ReadDir(spool); len(left) > 0 {
				t.Errorf("left in the spool directory: %v", left)
			}
			if open := openIn(spool); len(open) > 0 {
				t.Errorf("files left open: %v", open)
			}
			if c.outcome != "" {
				var pb dto.Metric
				m.deliveries.WithLabelValues("test", "other", c.outcome).Write(&pb)
				if n := pb.GetCounter().GetValue(); n != 1 {
					t.Errorf("kiln_forge_webhooks_total{outcome=%s} = %v, want 1", c.outcome, n)
				}
			}
		})
	}
}

// A delivery whose signature header cannot be right is refused before its payload is read.
func TestUnsignedDeliveriesAreNotRead(t *testing.T) {
	cases := []struct {
		name, secret, sig string
	}{
		{"no signature header", "s3cret", ""},
		{"not hex", "s3cret", "sha256=zz"},
		{"another prefix", "s3cret", "sha1=" + strings.Repeat("0", 40)},
		{"no secret configured", "", "sha256=" + strings.Repeat("0", 64)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var handled []event
			rc, _ := testReceiver(t, &handled)
			rc.Secret = []byte(c.secret)
			rc.Logger = slog.New(slog.DiscardHandler)
			body := &pattern{n: 20 << 20}
			req := httptest.NewRequest("POST", "/webhooks/test", body)
			req.Header.Set("X-Event", "push")
			req.Header.Set("X-Sig", c.sig)
			rec := httptest.NewRecorder()
			rc.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized || body.off != 0 {
				t.Errorf("answer %d after reading %d bytes, want 401 before reading any", rec.Code, body.off)
			}
		})
	}
}
