// Package notify sends short messages about what a service did (a deploy, a health
// change, a benchmark result) to Slack-compatible incoming webhooks and to generic JSON
// webhooks. Sending never blocks: each webhook has a bounded queue delivered in the
// background with retries and backoff; what does not fit is dropped and counted.
// Webhook URLs are secrets: they are read from files and never logged.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Severity says how much a message matters.
type Severity string

// The severities, from least to most urgent.
const (
	Info    Severity = "info"
	Success Severity = "success"
	Warning Severity = "warning"
	Error   Severity = "error"
)

// Field is one named value shown with a message (a commit, a digest, a target).
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Message is one notification.
type Message struct {
	Title    string    `json:"title"`
	Text     string    `json:"text,omitempty"`
	Fields   []Field   `json:"fields,omitempty"`
	Link     string    `json:"link,omitempty"`
	Severity Severity  `json:"severity"`
	Time     time.Time `json:"time"`
}

// Kind is the format a webhook expects.
type Kind string

// The webhook formats.
const (
	// Slack is a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, …).
	Slack Kind = "slack"
	// JSON is a generic webhook that receives the Message as JSON.
	JSON Kind = "json"
)

// Webhook names one destination. Its URL is read from URLFile.
type Webhook struct {
	// Name identifies the webhook in logs and metrics (never its URL).
	Name    string `yaml:"name" json:"name"`
	Kind    Kind   `yaml:"kind" json:"kind"`
	URLFile string `yaml:"url_file" json:"url_file"`
}

// Options configure a Notifier. Only Webhooks is required.
type Options struct {
	Webhooks []Webhook
	// QueueSize bounds the messages waiting per webhook (default 100).
	QueueSize int
	// Attempts is the number of tries per message (default 5).
	Attempts int
	// Backoff is the wait before the first retry, doubled after each (default 1s, at most 1m).
	Backoff time.Duration
	// Timeout bounds one attempt (default 10s).
	Timeout  time.Duration
	Client   *http.Client
	Logger   *slog.Logger
	Register prometheus.Registerer
}

// Notifier delivers messages to its webhooks in the background until Close.
type Notifier struct {
	sinks   []*sink
	results *prometheus.CounterVec
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.RWMutex
	closed  bool
}

type sink struct {
	name, kind string
	url        string
	queue      chan Message
}

// New reads the webhooks' URLs and starts delivering. A webhook with an unknown kind, no
// name or an unreadable URL file is an error naming it.
func New(o Options) (*Notifier, error) {
	if o.QueueSize <= 0 {
		o.QueueSize = 100
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	n := &Notifier{results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_notify_messages_total",
		Help: "Notifications by webhook and result: delivered, failed (after every retry) or dropped (queue full or closed).",
	}, []string{"webhook", "result"})}
	if o.Register != nil {
		if err := o.Register.Register(n.results); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("notify: metrics: %w", err)
			}
			n.results = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	seen := map[string]bool{}
	for i, w := range o.Webhooks {
		if w.Name == "" {
			return nil, fmt.Errorf("notify: webhook %d: no name", i+1)
		}
		if seen[w.Name] {
			return nil, fmt.Errorf("notify: webhook %q: named twice", w.Name)
		}
		seen[w.Name] = true
		if w.Kind != Slack && w.Kind != JSON {
			return nil, fmt.Errorf("notify: webhook %q: kind %q: want %q or %q", w.Name, w.Kind, Slack, JSON)
		}
		u, err := ReadSecretURL(w.URLFile)
		if err != nil {
			return nil, fmt.Errorf("notify: webhook %q: %w", w.Name, err)
		}
		n.sinks = append(n.sinks, &sink{name: w.Name, kind: string(w.Kind), url: u, queue: make(chan Message, o.QueueSize)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	for _, s := range n.sinks {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.deliver(ctx, o, s)
		}()
	}
	return n, nil
}

// ReadSecretURL reads an http(s) URL from a file (surrounding space trimmed). Errors
// name the file, never its content.
func ReadSecretURL(file string) (string, error) {
	if file == "" {
		return "", errors.New("no url_file")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("url_file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("url_file %s: not an http(s) URL", file)
	}
	return s, nil
}

// Send queues m for every webhook and returns at once. It reports whether every webhook
// took it; a full queue drops the message for that webhook (counted).
func (n *Notifier) Send(m Message) bool {
	if n == nil {
		return true
	}
	if m.Time.IsZero() {
		m.Time = time.Now().UTC()
	}
	if m.Severity == "" {
		m.Severity = Info
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	all := true
	for _, s := range n.sinks {
		if n.closed {
			n.results.WithLabelValues(s.name, "dropped").Inc()
			all = false
			continue
		}
		select {
		case s.queue <- m:
		default:
			n.results.WithLabelValues(s.name, "dropped").Inc()
			all = false
		}
	}
	return all
}

// Close stops taking messages, delivers what is queued until ctx ends, then stops.
func (n *Notifier) Close(ctx context.Context) {
	if n == nil {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	for _, s := range n.sinks {
		close(s.queue)
	}
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		n.cancel()
		<-done
	}
	n.cancel()
}

func (n *Notifier) deliver(ctx context.Context, o Options, s *sink) {
	for m := range s.queue {
		if ctx.Err() != nil {
			n.results.WithLabelValues(s.name, "dropped").Inc()
			continue
		}
		body, err := encode(s.kind, m)
		if err != nil {
			n.results.WithLabelValues(s.name, "failed").Inc()
			o.Logger.Error("notify: encode", "webhook", s.name, "err", err)
			continue
		}
		wait := o.Backoff
		for attempt := 1; ; attempt++ {
			err = post(ctx, o, s.url, body)
			if err == nil {
				n.results.WithLabelValues(s.name, "delivered").Inc()
				break
			}
			var perm permanent
			if attempt >= o.Attempts || errors.As(err, &perm) || ctx.Err() != nil {
				n.results.WithLabelValues(s.name, "failed").Inc()
				o.Logger.Warn("notify: not delivered", "webhook", s.name, "title", m.Title, "attempts", attempt, "err", err)
				break
			}
			o.Logger.Debug("notify: retrying", "webhook", s.name, "attempt", attempt, "err", err)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			wait = min(2*wait, time.Minute)
		}
	}
}

type permanent struct{ error }

// post sends body; its errors never contain the URL.
func post(ctx context.Context, o Options, u string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return permanent{errors.New("bad webhook URL")}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("webhook answered %s: %s", resp.Status, strings.TrimSpace(string(snippet)))
	default:
		return permanent{fmt.Errorf("webhook refused the message: %s: %s", resp.Status, strings.TrimSpace(string(snippet)))}
	}
}

var slackColours = map[Severity]string{Info: "#439FE0", Success: "good", Warning: "warning", Error: "danger"}

func encode(kind string, m Message) ([]byte, error) {
	if kind == string(JSON) {
		return json.Marshal(m)
	}
	type field struct {
		Title string `json:"title"`
		Value string `json:"value"`
		Short bool   `json:"short"`
	}
	type attachment struct {
		Fallback  string  `json:"fallback"`
		Color     string  `json:"color,omitempty"`
		Title     string  `json:"title"`
		TitleLink string  `json:"title_link,omitempty"`
		Text      string  `json:"text,omitempty"`
		Fields    []field `json:"fields,omitempty"`
		Ts        int64   `json:"ts"`
	}
	a := attachment{Fallback: m.Title, Color: slackColours[m.Severity], Title: m.Title, TitleLink: m.Link, Text: m.Text, Ts: m.Time.Unix()}
	for _, f := range m.Fields {
		a.Fields = append(a.Fields, field{Title: f.Name, Value: f.Value, Short: len(f.Value) < 40})
	}
	return json.Marshal(struct {
		Text        string       `json:"text"`
		Attachments []attachment `json:"attachments"`
	}{Text: m.Title, Attachments: []attachment{a}})
}
