package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an embedded fleet: a NATS server with JetStream and a scheduler in the
// calling process.
type Options struct {
	StateDir string   // NATS data go in StateDir/nats, its tokens in StateDir/auth
	Listen   string   // host:port for NATS clients; default 127.0.0.1:4222 ("127.0.0.1:0" picks a port)
	Pools    []string // default linux-x86_64 and linux-arm64
	// WorkerToken admits workers: their NATS token, and checked in their hello when set.
	// When empty, one is made at the first start and kept in StateDir/auth/worker.token.
	WorkerToken string
	// NATSToken is the NATS token of clients (kiln admin, services on other machines).
	// When empty, one is made at the first start and kept in StateDir/auth/client.token.
	NATSToken string
	Policy    Policy
	Logger    *slog.Logger
	Registry  prometheus.Registerer // scheduler metrics (kiln_fleet_*) go here when set
}

// Fleet is an embedded NATS server with its scheduler.
type Fleet struct {
	// URL is what workers pass as --nats: it carries the worker token, so it is not for logs.
	URL string
	// Address is the server's URL without credentials, to show.
	Address   string
	Client    *Client
	Scheduler *Scheduler
	// WorkerToken and ClientToken are the NATS tokens of workers and of clients.
	WorkerToken, ClientToken string
	server                   *server.Server
	nc                       *nats.Conn
}

// DefaultPools are the pools an embedded fleet serves unless told otherwise.
var DefaultPools = []string{"linux-x86_64", "linux-arm64"}

// StartEmbedded starts a NATS server (JetStream on, data in the state folder, loopback
// only unless Listen says otherwise, every client authenticated) and a scheduler on it,
// and returns a client of it.
func StartEmbedded(ctx context.Context, o Options) (*Fleet, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	auth, err := loadAuth(o.StateDir, o.WorkerToken, o.NATSToken, log)
	if err != nil {
		return nil, err
	}
	srv, err := StartNATS(o.StateDir, o.Listen, auth, log)
	if err != nil {
		return nil, err
	}
	f := &Fleet{URL: tokenURL(srv.ClientURL(), auth.worker), Address: srv.ClientURL(), WorkerToken: auth.worker, ClientToken: auth.client, server: srv}
	f.nc, err = Connect(ctx, ConnOptions{URL: srv.ClientURL(), Name: "kiln-scheduler", Token: auth.scheduler, Logger: o.Logger})
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	pools := o.Pools
	if len(pools) == 0 {
		pools = DefaultPools
	}
	f.Scheduler, err = StartScheduler(ctx, f.nc, SchedulerOptions{Pools: pools, WorkerToken: o.WorkerToken, Policy: o.Policy, Logger: o.Logger, Registry: o.Registry})
	if err != nil {
		f.nc.Close()
		srv.Shutdown()
		return nil, err
	}
	f.Client, err = NewClient(f.nc)
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Close stops the scheduler and the NATS server; state stays in the state folder.
func (f *Fleet) Close() {
	if f.Client != nil {
		f.Client.Close()
	}
	if f.Scheduler != nil {
		f.Scheduler.Stop()
	}
	if f.nc != nil {
		_ = f.nc.Drain()
		f.nc.Close()
	}
	if f.server != nil {
		f.server.Shutdown()
		f.server.WaitForShutdown()
	}
}

// tokenURL puts a token in a NATS URL's user part, where NATS clients read it.
func tokenURL(raw, token string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User = url.User(token)
	return u.String()
}

// StartNATS checks the JetStream store in stateDir/nats (repairing the fleet's own
// streams, see checkStore), then starts a NATS server with JetStream on it, admitting the
// clients auth knows (every client when auth is nil), and returns it.
func StartNATS(stateDir, listen string, auth *NATSAuth, log *slog.Logger) (*server.Server, error) {
	if stateDir == "" {
		return nil, fmt.Errorf("embedded NATS: no state folder")
	}
	if log == nil {
		log = slog.Default()
	}
	if listen == "" {
		listen = "127.0.0.1:4222"
	}
	host, port, err := splitHostPort("listen", listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	storeDir := filepath.Join(stateDir, "nats")
	if err := checkStore(storeDir, log); err != nil {
		return nil, err
	}
	opts := natsOptions("kiln", host, port, storeDir)
	if auth != nil {
		opts.CustomClientAuthentication = auth
	}
	srv, err := runNATS(opts, log)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS on %s: %w", listen, err)
	}
	log.Info("embedded NATS started", "url", srv.ClientURL(), "store", opts.StoreDir)
	return srv, nil
}

// natsOptions are the settings of every NATS server kiln runs: JetStream on in storeDir.
func natsOptions(name, host string, port int, storeDir string) *server.Options {
	return &server.Options{
		ServerName:         name,
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxMemory: 256 << 20,
		MaxPayload:         maxMessageSize,
		NoSigs:             true,
		NoLog:              true,
		// Every follower of a running job's log is a consumer of the logs stream: the
		// fleet's size, not a default of 1,000, bounds them.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
	}
}

// runNATS starts a NATS server and waits until it takes clients.
func runNATS(opts *server.Options, log *slog.Logger) (*server.Server, error) {
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	srv.SetLoggerV2(natsLog{log.With("part", "nats")}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("did not start within 15s (store %s)", opts.StoreDir)
	}
	return srv, nil
}

// natsLog passes the NATS server's warnings and errors on; its notices are debug.
type natsLog struct{ log *slog.Logger }

func (l natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLog) Debugf(string, ...any)           {}
func (l natsLog) Tracef(string, ...any)           {}
