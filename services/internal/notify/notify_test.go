package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// hook is a webhook receiver answering with the statuses in answers, then 200.
type hook struct {
	mu      sync.Mutex
	answers []int
	bodies  [][]byte
	got     chan struct{}
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.bodies = append(h.bodies, b)
	code := http.StatusOK
	if len(h.answers) > 0 {
		code, h.answers = h.answers[0], h.answers[1:]
	}
	h.mu.Unlock()
	w.WriteHeader(code)
	h.got <- struct{}{}
}

func secretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDelivery(t *testing.T) {
	msg := Message{Title: "deployed web", Text: "abc123 is live", Link: "http://kiln/deployer/web",
		Severity: Success, Fields: []Field{{Name: "digest", Value: "sha256:00"}}}
	for _, tc := range []struct {
		name       string
		kind       Kind
		answers    []int
		wantPosts  int
		wantResult string
		check      func(t *testing.T, body []byte)
	}{
		{name: "slack", kind: Slack, wantPosts: 1, wantResult: "delivered", check: func(t *testing.T, body []byte) {
			var v struct {
				Text        string
				Attachments []struct {
					Title, TitleLink, Color string
					Fields                  []struct{ Title, Value string }
				}
			}
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatal(err)
			}
			if v.Text != msg.Title || len(v.Attachments) != 1 || v.Attachments[0].Color != "good" ||
				len(v.Attachments[0].Fields) != 1 || v.Attachments[0].Fields[0].Value != "sha256:00" {
				t.Errorf("slack body %s", body)
			}
		}},
		{name: "json", kind: JSON, wantPosts: 1, wantResult: "delivered", check: func(t *testing.T, body []byte) {
			var v Message
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatal(err)
			}
			if v.Title != msg.Title || v.Link != msg.Link || v.Severity != Success || v.Time.IsZero() || len(v.Fields) != 1 {
				t.Errorf("json body %s", body)
			}
		}},
		{name: "retried after server errors", kind: JSON, answers: []int{500, 503}, wantPosts: 3, wantResult: "delivered"},
		{name: "given up after every attempt", kind: JSON, answers: []int{500, 500, 500}, wantPosts: 3, wantResult: "failed"},
		{name: "refused is not retried", kind: Slack, answers: []int{404}, wantPosts: 1, wantResult: "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &hook{answers: tc.answers, got: make(chan struct{}, 10)}
			srv := httptest.NewServer(h)
			defer srv.Close()
			reg := prometheus.NewRegistry()
			n, err := New(Options{Webhooks: []Webhook{{Name: "ops", Kind: tc.kind, URLFile: secretFile(t, srv.URL+"/hook")}},
				Attempts: 3, Backoff: time.Millisecond, Register: reg})
			if err != nil {
				t.Fatal(err)
			}
			if !n.Send(msg) {
				t.Fatal("Send refused the message")
			}
			for range tc.wantPosts {
				<-h.got
			}
			n.Close(context.Background())
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.bodies) != tc.wantPosts {
				t.Errorf("%d posts, want %d", len(h.bodies), tc.wantPosts)
			}
			if got := testenv.Metrics(t, reg)["kiln_notify_messages_total{result="+tc.wantResult+",webhook=ops}"]; got != 1 {
				t.Errorf("%s count %v, want 1; metrics %v", tc.wantResult, got, testenv.Metrics(t, reg))
			}
			if tc.check != nil {
				tc.check(t, h.bodies[0])
			}
		})
	}
}

func TestSendNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	reg := prometheus.NewRegistry()
	n, err := New(Options{Webhooks: []Webhook{{Name: "slow", Kind: JSON, URLFile: secretFile(t, srv.URL)}}, QueueSize: 2, Register: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n.Close(ctx)
	}()
	// One message is taken by the stuck delivery (or still queued), two fit in the queue,
	// so of ten at least seven are dropped.
	for range 10 {
		n.Send(Message{Title: "x"})
	}
	if got := testenv.Metrics(t, reg)["kiln_notify_messages_total{result=dropped,webhook=slow}"]; got < 7 {
		t.Errorf("dropped %v, want at least 7", got)
	}
}

func TestURLNeverLogged(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every attempt fails to connect
	const token = "T0KEN-s3cr3t"
	var logs testenv.Buffer
	n, err := New(Options{Webhooks: []Webhook{{Name: "gone", Kind: Slack, URLFile: secretFile(t, "http://"+addr+"/services/"+token)}},
		Attempts: 2, Backoff: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	n.Send(Message{Title: "x"})
	n.Close(context.Background())
	if !strings.Contains(logs.String(), "not delivered") {
		t.Errorf("the failure is not logged: %s", logs.String())
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the webhook URL is in the log: %s", logs.String())
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	const secret = "not a url but secret"
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	good := secretFile(t, "https://hooks.example.org/x")
	for _, tc := range []struct {
		name string
		hook Webhook
		want string
	}{
		{name: "missing file", hook: Webhook{Name: "a", Kind: Slack, URLFile: filepath.Join(dir, "absent")}, want: `webhook "a": url_file: open ` + filepath.Join(dir, "absent")},
		{name: "no file", hook: Webhook{Name: "a", Kind: Slack}, want: `webhook "a": no url_file`},
		{name: "not a URL", hook: Webhook{Name: "a", Kind: JSON, URLFile: bad}, want: `webhook "a": url_file ` + bad + `: not an http(s) URL`},
		{name: "unknown kind", hook: Webhook{Name: "a", Kind: "irc", URLFile: good}, want: `webhook "a": kind "irc"`},
		{name: "no name", hook: Webhook{Kind: JSON, URLFile: good}, want: "webhook 1: no name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{Webhooks: []Webhook{tc.hook}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the file's content is in the error: %v", err)
			}
		})
	}
}

func TestNilNotifier(t *testing.T) {
	var n *Notifier
	if !n.Send(Message{Title: "x"}) {
		t.Error("a nil Notifier refuses messages")
	}
	n.Close(context.Background())
}
