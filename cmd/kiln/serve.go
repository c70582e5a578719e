package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/plugins/fleetjob"
	"github.com/kiln-ci/kiln/plugins/forges"
	"github.com/kiln-ci/kiln/services/baseimages"
	"github.com/kiln-ci/kiln/services/bench"
	"github.com/kiln-ci/kiln/services/demo"
	"github.com/kiln-ci/kiln/services/deployer"
	"github.com/kiln-ci/kiln/services/healthcheck"
	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/ocamlci"
	"github.com/kiln-ci/kiln/services/opamrepoci"
	"github.com/kiln-ci/kiln/web"
)

// serviceKinds are the services `kiln serve` can run.
var serviceKinds = []host.Kind{ocamlci.ServiceKind, opamrepoci.ServiceKind, demo.ServiceKind, deployer.ServiceKind, baseimages.ServiceKind, bench.ServiceKind, healthcheck.ServiceKind}

func serveCommand() *cobra.Command {
	var o struct {
		stateDir, listen, confirm, adminPassword, anonymous, baseURL string
		services                                                     []string
		autoRelease, logMaxAge                                       time.Duration
		logMaxBytes                                                  int64
		slots                                                        int
		secureCookies                                                bool
		natsListen, workerToken, workerPrefix                        string
		localWorkers, workerCapacity                                 int
	}
	var ff forgeFlags
	var nf natsFlags
	var help strings.Builder
	for _, k := range serviceKinds {
		fmt.Fprintf(&help, "  %-10s %s\n", k.Name, k.Help)
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the pipeline engine, its web console and services (ocaml-ci by default)",
		Long: `Run the pipeline engine and its web console on the embedded defaults (SQLite and job
logs in --state-dir), with one or more services (--service a,b) sharing the engine,
the console, the forges followed, one webhook endpoint per forge and the build fleet:
embedded (NATS, scheduler, local workers building with runc) unless --nats names an
external one. The services:

` + help.String() + `
On first start the local admin password is made, printed once, and stored hashed in
<state-dir>/console/admin.password; --admin-password (or KILN_ADMIN_PASSWORD) sets it.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	services := map[string]host.Service{}
	for _, k := range serviceKinds {
		services[k.Name] = k.Flags(f)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		slog.SetDefault(log)

		var names []string
		var svcs []host.Service
		for _, n := range o.services {
			for _, n := range strings.Split(n, ",") {
				n = strings.TrimSpace(n)
				svc, ok := services[n]
				if !ok {
					known := make([]string, 0, len(serviceKinds))
					for _, k := range serviceKinds {
						known = append(known, k.Name)
					}
					return fmt.Errorf("--service %q: want one or more of %s", n, strings.Join(known, ", "))
				}
				if !slices.Contains(names, n) {
					names, svcs = append(names, n), append(svcs, svc)
				}
			}
		}
		if len(svcs) == 0 {
			return fmt.Errorf("--service: no service named")
		}
		level, err := current.ParseLevel(o.confirm)
		if err != nil {
			return fmt.Errorf("--confirm: %w", err)
		}
		anon, err := web.ParseRole(o.anonymous)
		if err != nil {
			return fmt.Errorf("--anonymous: %w", err)
		}
		if o.adminPassword == "" {
			o.adminPassword = os.Getenv("KILN_ADMIN_PASSWORD")
		}
		if err := os.MkdirAll(o.stateDir, 0o755); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
		// The addresses are checked before anything is made or printed (the admin password).
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return fmt.Errorf("--listen %s: %w (is another kiln serve running? give another address with --listen HOST:PORT)", o.listen, err)
		}
		defer ln.Close()
		external := cmd.Flags().Changed("nats") || os.Getenv("KILN_NATS") != ""
		if !external && len(host.Pools(svcs)) > 0 {
			if err := addressFree(o.natsListen); err != nil {
				return fmt.Errorf("--nats-listen %s: the embedded fleet's NATS server cannot listen there: %w (is another kiln serve running? give it another address with --nats-listen HOST:PORT, or HOST:0 for any free port)", o.natsListen, err)
			}
		}
		auth, generated, err := web.OpenAuth(web.AuthOptions{
			Dir: filepath.Join(o.stateDir, "console"), AdminPassword: o.adminPassword,
			Anonymous: anon, SecureCookies: o.secureCookies,
		})
		if err != nil {
			return err
		}
		if generated != "" {
			fmt.Fprintf(os.Stderr, "\nkiln: the console's admin password (shown this once; stored hashed in %s):\n\n    %s\n\n",
				filepath.Join(o.stateDir, "console", "admin.password"), generated)
		}
		token, err := secretFlag(o.workerToken)
		if err != nil {
			return fmt.Errorf("--worker-token: %w", err)
		}

		consoleReg := prometheus.NewRegistry()
		sb, ln, err := standbyUntilActive(ctx, ln, databaseFlag(cmd), names, standbyID(o.baseURL, ln), log, consoleReg)
		if err != nil && ctx.Err() != nil {
			return nil // stopped while standing by
		} else if err != nil {
			return err
		}
		defer ln.Close()
		if sb != nil {
			defer sb.Close()
		}
		ctx, stopLost := untilLost(ctx, sb)
		defer stopLost()

		eng, err := current.Open(current.Config{
			StateDir: o.stateDir, ConfirmLevel: level, AutoRelease: o.autoRelease,
			LogMaxAge: o.logMaxAge, LogMaxBytes: o.logMaxBytes, DefaultPoolSlots: o.slots, Logger: log,
			Pools: fleetjob.EnginePools(),
		})
		if err != nil {
			return err
		}
		defer eng.Close()

		baseURL := o.baseURL
		if baseURL == "" {
			baseURL = "http://" + ln.Addr().String()
		}
		set, err := ff.open(ctx, log, baseURL, consoleReg)
		if err != nil {
			return err
		}
		env := &host.Env{
			Engine: eng, Forges: set, StateDir: o.stateDir, Database: databaseFlag(cmd), BaseURL: baseURL, Logger: log,
			Images: filepath.Join(o.stateDir, "images"), Register: consoleReg,
			Mirrors: git.NewMirrors(filepath.Join(o.stateDir, "mirrors"), git.MirrorsOptions{Logger: log, Credentials: set.Credentials()}),
		}
		var fleet *host.Fleet
		if pools := host.Pools(svcs); len(pools) > 0 {
			fo := host.FleetOptions{Listen: o.natsListen, WorkerToken: token, Pools: pools, LocalWorkers: o.localWorkers,
				Capacity: o.workerCapacity, WorkerPrefix: o.workerPrefix, StateDir: o.stateDir, Images: env.Images, Logger: log}
			if external {
				co, err := nf.options("kiln-serve", "")
				if err != nil {
					return err
				}
				co.Logger = log
				fo.External = &co
			}
			if fleet, err = host.StartFleet(ctx, fo); err != nil {
				return err
			}
			defer fleet.Close()
			env.Fleet = fleet.Client
		}
		started, err := host.Start(ctx, env, names, svcs)
		if err != nil {
			return err
		}
		defer started.Close()

		wo := web.Options{
			Engine: web.CurrentEngine{E: eng}, Auth: auth, Logger: log, Register: consoleReg,
			Gatherer: prometheus.Gatherers{eng.Registry(), consoleReg, prometheus.DefaultGatherer},
		}
		if fleet != nil {
			wo.Fleet = fleet.Client
		}
		wo.Links = repositoryLinks(started.Routes, followedForges(&ff, set))
		srv, err := web.New(wo)
		if err != nil {
			return err
		}
		// Every route goes through the console: its headers, metrics and access control.
		for _, r := range started.Routes {
			min := web.RoleViewer
			switch {
			case r.Public:
				min = web.RoleNone
			case r.Admin:
				min = web.RoleAdmin
			}
			srv.Mount(r.Pattern, min, r.Handler)
		}
		srv.Mount("GET /healthz", web.RoleNone, activeHealthz(sb))
		if fleet != nil {
			srv.Mount("/api/fleet/", web.RoleViewer, http.StripPrefix("/api/fleet", cluster.Handler(fleet.Client)))
		}
		// Timeouts and a bound on connections keep slow or idle clients from holding the console.
		hs, hln := srv.HTTPServer(ln, web.ServeOptions{})
		hs.BaseContext = func(net.Listener) context.Context { return ctx }
		httpDone := make(chan error, 1)
		go func() { httpDone <- hs.Serve(hln) }()
		log.Info("console listening", "url", "http://"+ln.Addr().String(), "state_dir", o.stateDir, "services", strings.Join(names, ","))

		runErr := eng.Run(ctx, started.Pipeline)
		stop()
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(shutCtx)
		if err := <-httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("console: %w", err)
		}
		if sb != nil && sb.Err() != nil {
			return sb.Err()
		}
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			return runErr
		}
		return nil
	}
	f.StringSliceVar(&o.services, "service", []string{"ocaml-ci"}, "the services run, comma-separated (see above)")
	ff.add(f)
	nf.add(f)
	f.Lookup("nats").Usage = "NATS URL of an external fleet to join instead of embedding one (its scheduler runs elsewhere: kiln scheduler)"
	f.StringVar(&o.stateDir, "state-dir", "var", "folder for the database, job logs, checkouts and console secrets")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address of the web console")
	f.StringVar(&o.baseURL, "base-url", "", "public address of this server, for links in statuses (default http://LISTEN)")
	f.StringVar(&o.confirm, "confirm", "dangerous", "hold jobs above this level until an operator confirms them (harmless, mostly-harmless, average, above-average, dangerous)")
	f.DurationVar(&o.autoRelease, "auto-release", 0, "raise the confirm level to dangerous this long after start-up, releasing held jobs (0: never)")
	f.StringVar(&o.adminPassword, "admin-password", "", "set the console's admin password (env KILN_ADMIN_PASSWORD); by default one is made on first start")
	f.StringVar(&o.anonymous, "anonymous", "viewer", "role of visitors who have not logged in (none, viewer, builder, admin)")
	f.BoolVar(&o.secureCookies, "secure-cookies", false, "mark cookies Secure (set when the console is served over HTTPS)")
	f.DurationVar(&o.logMaxAge, "log-max-age", 0, "delete logs of jobs finished longer ago (0: keep)")
	f.Int64Var(&o.logMaxBytes, "log-max-bytes", 0, "delete the oldest finished logs while all logs take more bytes (0: no limit)")
	f.IntVar(&o.slots, "slots", 4, "jobs run at once per pool")
	f.StringVar(&o.natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded fleet's NATS server, which kiln worker --nats connects to (HOST:0 for any free port)")
	f.StringVar(&o.workerToken, "worker-token", os.Getenv("KILN_WORKER_TOKEN"), "token workers must present (@FILE reads a file; env KILN_WORKER_TOKEN)")
	f.IntVar(&o.localWorkers, "local-workers", 1, "workers run inside the server per pool (0: only kiln worker processes build)")
	f.IntVar(&o.workerCapacity, "local-worker-capacity", 2, "jobs each local worker runs at once")
	f.StringVar(&o.workerPrefix, "local-worker-name", "local", "local workers are named NAME-POOL-N (servers sharing one fleet need different names)")
	return cmd
}

// repositoryLinks are the console's menu entries to the services' repository pages of
// the forges followed (a service's results pages are at /FORGE/).
func repositoryLinks(routes []host.Route, followed []string) []web.Link {
	labels := map[string]string{"github": "GitHub repositories", "gitea": "Gitea repositories", "git": "Git repositories"}
	var links []web.Link
	for _, f := range followed {
		if slices.ContainsFunc(routes, func(r host.Route) bool { return r.Pattern == "/"+f+"/" }) {
			links = append(links, web.Link{Text: labels[f], URL: "/" + f})
		}
	}
	return links
}

// followedForges names the forges the flags follow ("github", "gitea", "git"); a
// service given none builds a sample of its own, as plain git.
func followedForges(f *forgeFlags, set *forges.Set) []string {
	var out []string
	if f.githubAppID != 0 {
		out = append(out, "github")
	}
	if f.giteaURL != "" {
		out = append(out, "gitea")
	}
	if len(f.repos) > 0 || set.Empty() {
		out = append(out, "git")
	}
	return out
}

// addressFree reports why a TCP server cannot listen on addr, or nil when it can.
func addressFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

func init() { addCommand(serveCommand()) }
