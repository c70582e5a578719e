package healthcheck

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/notify"
)

// Webhooks sends notices through services/internal/notify.
type Webhooks struct{ N *notify.Notifier }

// NewWebhooks starts delivering to the configured webhooks.
func NewWebhooks(hooks []Webhook, env *host.Env) (*Webhooks, error) {
	var ws []notify.Webhook
	for _, h := range hooks {
		ws = append(ws, notify.Webhook{Name: h.Name, Kind: notify.Kind(h.Kind), URLFile: h.URLFile})
	}
	n, err := notify.New(notify.Options{Webhooks: ws, Logger: env.Logger, Register: env.Register})
	if err != nil {
		return nil, err
	}
	return &Webhooks{n}, nil
}

// Close delivers what is queued (for at most 10 seconds) and stops.
func (w *Webhooks) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.N.Close(ctx)
}

// Send says what a run found: its counts, and what broke and was fixed since the
// run it is compared with.
func (w *Webhooks) Send(n Notice) bool {
	m := notify.Message{Title: fmt.Sprintf("health check: run %d done", n.Run.ID), Link: n.URL, Severity: notify.Success}
	if n.Run.Candidate != nil {
		m.Title = fmt.Sprintf("health check: candidate %s (run %d) done", n.Run.Candidate.Name, n.Run.ID)
	}
	m.Fields = append(m.Fields, notify.Field{Name: "commit", Value: n.Run.Commit})
	for _, st := range States {
		if c := n.Run.Counts[st]; c > 0 {
			m.Fields = append(m.Fields, notify.Field{Name: string(st), Value: strconv.Itoa(c)})
		}
	}
	if n.Diff != nil {
		counts := n.Diff.Count()
		m.Text = fmt.Sprintf("against run %d: %d now broken, %d now fixed, %d now installable, %d no longer available",
			n.Diff.Old, counts[NowBroken], counts[NowFixed], counts[NowInstallable], counts[NoLongerAvailable])
		for i, c := range n.Diff.Of(NowBroken) {
			if i == 20 {
				m.Text += fmt.Sprintf("\n… and %d more", counts[NowBroken]-20)
				break
			}
			m.Text += fmt.Sprintf("\nnow broken: %s on %s (%s)", c.Package, c.Switch, c.New)
		}
		if counts[NowBroken] > 0 {
			m.Severity = notify.Warning
		}
	}
	return w.N.Send(m)
}
