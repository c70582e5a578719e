package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnOptions say how a part of the fleet reaches NATS.
type ConnOptions struct {
	URL     string // nats://host:4222, several separated by commas
	Name    string // connection name shown by the server
	Creds   string // NATS credentials file (JWT + nkey), for an external cluster
	Token   string // NATS token, when the server uses token authentication
	TLSCA   string // CA bundle that signed the server's certificate
	TLSCert string // client certificate and key, for mutual TLS
	TLSKey  string
	Logger  *slog.Logger
}

// Connect dials NATS; the connection reconnects forever after a loss.
func Connect(ctx context.Context, o ConnOptions) (*nats.Conn, error) {
	if o.URL == "" {
		return nil, errors.New("no NATS URL (--nats)")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(o.URL), err)
	}
	// RetryOnFailedConnect returns at once; wait for the first connection
	for !nc.IsConnected() {
		if nc.IsClosed() { // the server refused the credentials twice
			err := nc.LastError()
			if err == nil {
				err = nats.ErrConnectionClosed
			}
			if errors.Is(err, nats.ErrAuthorization) {
				return nil, fmt.Errorf("connect to NATS at %s: the server refused the token or credentials (--token, --nats-token, --nats-creds): %w", redactURL(o.URL), err)
			}
			return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(o.URL), err)
		}
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(o.URL), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nc, nil
}

// redactURL hides the credentials of NATS URLs (several may be comma-separated).
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
