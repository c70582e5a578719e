package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
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
		Verify: func(secret, body []byte, sig string) error { return VerifyHMAC(secret, body, sig, "sha256=", "X-Sig") },
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
