package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an embedded fleet: a NATS server with JetStream and a scheduler in the
// calling process.
type Options struct {
	StateDir    string   // NATS data go in StateDir/nats
	Listen      string   // host:port for NATS clients; default 127.0.0.1:4222 ("127.0.0.1:0" picks a port)
	Pools       []string // default linux-x86_64 and linux-arm64
	WorkerToken string   // workers must present it when set
	NATSToken   string   // when set, every NATS client (workers, admin, services) must present it
	Policy      Policy
	Logger      *slog.Logger
	Registry    prometheus.Registerer // scheduler metrics (kiln_fleet_*) go here when set
}

// Fleet is an embedded NATS server with its scheduler.
type Fleet struct {
	URL       string // what workers and other processes pass as --nats
	Client    *Client
	Scheduler *Scheduler
	server    *server.Server
	nc        *nats.Conn
}

// DefaultPools are the pools an embedded fleet serves unless told otherwise.
var DefaultPools = []string{"linux-x86_64", "linux-arm64"}

// StartEmbedded starts a NATS server (JetStream on, data in the state folder, loopback
// only unless Listen says otherwise) and a scheduler on it, and returns a client of it.
func StartEmbedded(ctx context.Context, o Options) (*Fleet, error) {
	srv, url, err := StartNATS(o.StateDir, o.Listen, o.NATSToken, o.Logger)
	if err != nil {
		return nil, err
	}
	f := &Fleet{URL: url, server: srv}
	f.nc, err = Connect(ctx, ConnOptions{URL: url, Name: "kiln-scheduler", Token: o.NATSToken, Logger: o.Logger})
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

// StartNATS checks the JetStream store in stateDir/nats (repairing the fleet's own
// streams, see checkStore), then starts a NATS server with JetStream on it and returns it
// with its client URL; a non-empty token is required from every client.
func StartNATS(stateDir, listen, token string, log *slog.Logger) (*server.Server, string, error) {
	if stateDir == "" {
		return nil, "", fmt.Errorf("embedded NATS: no state folder")
	}
	if listen == "" {
		listen = "127.0.0.1:4222"
	}
	host, portS, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, "", fmt.Errorf("embedded NATS: listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return nil, "", fmt.Errorf("embedded NATS: listen port %q: %w", portS, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if log == nil {
		log = slog.Default()
	}
	storeDir := filepath.Join(stateDir, "nats")
	if err := checkStore(storeDir, log); err != nil {
		return nil, "", err
	}
	opts := &server.Options{
		ServerName:         "kiln",
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxMemory: 256 << 20,
		MaxPayload:         maxMessageSize,
		NoSigs:             true,
		NoLog:              true,
		Authorization:      token,
		// Every follower of a running job's log is a consumer of the logs stream: the
		// fleet's size, not a default of 1,000, bounds them.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, "", fmt.Errorf("embedded NATS: %w", err)
	}
	srv.SetLoggerV2(natsLog{log.With("part", "nats")}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, "", fmt.Errorf("embedded NATS on %s did not start within 15s (store %s)", listen, storeDir)
	}
	log.Info("embedded NATS started", "url", srv.ClientURL(), "store", opts.StoreDir)
	return srv, srv.ClientURL(), nil
}

// natsLog passes the NATS server's warnings and errors on; its notices are debug.
type natsLog struct{ log *slog.Logger }

func (l natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLog) Debugf(string, ...any)           {}
func (l natsLog) Tracef(string, ...any)           {}
