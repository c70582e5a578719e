package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// natsFlags are how every fleet command reaches NATS.
type natsFlags struct {
	url, creds, token, ca, cert, key string
}

func (f *natsFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "nats", envOr("KILN_NATS", "nats://127.0.0.1:4222"), "NATS URL of the fleet (env KILN_NATS)")
	fs.StringVar(&f.creds, "nats-creds", "", "NATS credentials file, for an external cluster")
	fs.StringVar(&f.token, "nats-token", os.Getenv("KILN_NATS_TOKEN"), "NATS token (@FILE reads a file; env KILN_NATS_TOKEN); for an embedded fleet, the client token in STATE-DIR/auth/client.token")
	fs.StringVar(&f.ca, "nats-ca", "", "CA bundle of the NATS servers' TLS certificates")
	fs.StringVar(&f.cert, "nats-cert", "", "client TLS certificate")
	fs.StringVar(&f.key, "nats-key", "", "client TLS key")
}

// options resolves the flags; a NATS connection without a token or credentials of its
// own presents defaultToken.
func (f *natsFlags) options(name, defaultToken string) (cluster.ConnOptions, error) {
	tok, err := secretFlag(f.token)
	if err != nil {
		return cluster.ConnOptions{}, fmt.Errorf("--nats-token: %w", err)
	}
	if tok == "" && f.creds == "" {
		tok = defaultToken
	}
	return cluster.ConnOptions{URL: f.url, Name: name, Creds: f.creds, Token: tok, TLSCA: f.ca, TLSCert: f.cert, TLSKey: f.key}, nil
}

func (f *natsFlags) connect(ctx context.Context, name, defaultToken string) (*nats.Conn, error) {
	o, err := f.options(name, defaultToken)
	if err != nil {
		return nil, err
	}
	return cluster.Connect(ctx, o)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// secretFlag reads a secret given directly or, with an @ prefix, from a file.
func secretFlag(v string) (string, error) {
	if p, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", p, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return v, nil
}

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			slog.Error("metrics server", "addr", addr, "err", err)
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
}

func init() {
	var nf natsFlags
	var pools []string
	var token, stateDir, listen, metrics string
	var embed bool
	var lease, leaderLease time.Duration
	var replicas int
	var id string
	c := &cobra.Command{
		Use:   "scheduler",
		Short: "Run the build scheduler alone (kiln serve embeds it)",
		Long: `Run the fleet's scheduler. With --embed-nats it starts its own NATS server (JetStream
data in --state-dir/nats, loopback only unless --listen says otherwise) that admits only
workers presenting the worker token and clients (kiln admin) presenting the client token
(--nats-token); either, when not given, is made at the first start and kept in
--state-dir/auth. Otherwise it connects to --nats (several URLs, comma-separated, for a
NATS cluster). Its state lives in JetStream, so a restart (or a replacement on another
machine) loses no job. With --nats several schedulers may run: one leads by a lease in
JetStream (--leader-lease), the others stand by and take over when it lapses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			tok, err := secretFlag(token)
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			serveMetrics(ctx, metrics, reg)
			policy := cluster.Policy{LeaseTTL: lease}
			if embed {
				clientTok, err := secretFlag(nf.token)
				if err != nil {
					return fmt.Errorf("--nats-token: %w", err)
				}
				f, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: stateDir, Listen: listen, Pools: pools, WorkerToken: tok, NATSToken: clientTok, Policy: policy, Registry: reg})
				if err != nil {
					return err
				}
				defer f.Close()
				fmt.Fprintln(cmd.OutOrStdout(), "fleet NATS at", f.Address)
				if tok == "" {
					fmt.Fprintln(cmd.OutOrStdout(), "worker token in", cluster.TokenPath(stateDir, "worker"))
				}
				if clientTok == "" {
					fmt.Fprintln(cmd.OutOrStdout(), "client token (kiln admin --nats-token @FILE) in", cluster.TokenPath(stateDir, "client"))
				}
				<-ctx.Done()
				return nil
			}
			nc, err := nf.connect(ctx, "kiln-scheduler", "")
			if err != nil {
				return err
			}
			defer nc.Close()
			s, err := cluster.StartHA(ctx, nc, cluster.SchedulerOptions{Pools: pools, WorkerToken: tok, Policy: policy, Registry: reg,
				Replicas: replicas, LeaderLease: leaderLease, ID: id})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "scheduler", s.ID(), "started; it leads while it holds the lease, else stands by")
			<-ctx.Done()
			s.Stop()
			return nil
		},
	}
	nf.add(c.Flags())
	c.Flags().StringSliceVar(&pools, "pool", cluster.DefaultPools, "pools jobs may be submitted to (repeat or comma-separate)")
	c.Flags().StringVar(&token, "worker-token", os.Getenv("KILN_WORKER_TOKEN"), "token workers must present (@FILE reads it from a file; env KILN_WORKER_TOKEN)")
	c.Flags().BoolVar(&embed, "embed-nats", false, "start an embedded NATS server instead of connecting to --nats")
	c.Flags().StringVar(&stateDir, "state-dir", "var", "state folder (embedded NATS data)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "embedded NATS listen address")
	c.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9101)")
	c.Flags().DurationVar(&lease, "lease", 30*time.Second, "job lease; a worker silent this long loses its jobs")
	c.Flags().IntVar(&replicas, "replicas", 1, "NATS nodes that keep each of the fleet's streams and buckets (3 on a 3-node cluster)")
	c.Flags().DurationVar(&leaderLease, "leader-lease", 10*time.Second, "a leading scheduler that cannot renew its lease this long is replaced by a standby")
	c.Flags().StringVar(&id, "id", "", "this scheduler's name in the leader lease (default host name and process id)")
	addCommand(c)
}
