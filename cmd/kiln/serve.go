package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/image"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/current/gitlocal"
	"github.com/kiln-ci/kiln/services/demo"
	"github.com/kiln-ci/kiln/services/ocamlci"
	"github.com/kiln-ci/kiln/web"
)

func serveCommand() *cobra.Command {
	var o struct {
		stateDir, listen, confirm, adminPassword, anonymous, demoRepo, service string
		demoRunner, demoImage                                                  string
		autoRelease, demoPoll, demoCommitEvery, logMaxAge                      time.Duration
		logMaxBytes                                                            int64
		slots                                                                  int
		secureCookies                                                          bool
	}
	var ci ciFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the pipeline engine, its web console and a service (ocaml-ci by default)",
		Long: `Run the pipeline engine and its web console on the embedded defaults (SQLite and job
logs in --state-dir), with a service:

  ocaml-ci (default)  CI for OCaml repositories: an embedded build fleet (NATS, scheduler,
                      local workers building with runc), base images made from the Debian
                      mirror, and the public UI (/github, /gitea, /git, /badge). Without
                      --repo or a forge it builds a sample OCaml project made in the state dir.
  demo                a demonstration pipeline: watches a local git repository and runs a
                      few cached jobs per branch head.

On first start the local admin password is made, printed once, and stored hashed in
<state-dir>/console/admin.password; --admin-password (or KILN_ADMIN_PASSWORD) sets it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			slog.SetDefault(log)

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

			switch o.service {
			case "ocaml-ci", "demo":
			default:
				return fmt.Errorf("--service %q: want ocaml-ci or demo", o.service)
			}
			switch o.demoRunner {
			case "host", "sandbox", "auto":
			default:
				return fmt.Errorf("--demo-runner %q: want host, sandbox or auto", o.demoRunner)
			}
			demoOn := o.service == "demo"
			repo := o.demoRepo
			sample := demoOn && repo == ""
			if demoOn && !sample {
				if _, err := gitlocal.Read(ctx, repo); err != nil {
					return fmt.Errorf("--demo-repo: %w", err)
				}
			}
			if sample {
				repo = filepath.Join(o.stateDir, "demo", "sample")
				if err := demo.CreateSample(ctx, repo); err != nil {
					return err
				}
			}

			eng, err := current.Open(current.Config{
				StateDir: o.stateDir, ConfirmLevel: level, AutoRelease: o.autoRelease,
				LogMaxAge: o.logMaxAge, LogMaxBytes: o.logMaxBytes, DefaultPoolSlots: o.slots, Logger: log,
				// Builds wait on the fleet, which queues them with priorities and fair share.
				Pools: map[string]int{ocamlci.BuildPool: 1 << 20},
			})
			if err != nil {
				return err
			}
			defer eng.Close()

			ln, err := net.Listen("tcp", o.listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", o.listen, err)
			}
			var svc *ciService
			if !demoOn {
				svc, err = startCI(ctx, log, o.stateDir, ln.Addr().String(), eng, ci)
				if err != nil {
					ln.Close()
					return err
				}
				defer svc.Close()
			}
			consoleReg := prometheus.NewRegistry()
			wo := web.Options{
				Engine: web.CurrentEngine{E: eng}, Auth: auth, Logger: log, Register: consoleReg,
				Gatherer: prometheus.Gatherers{eng.Registry(), consoleReg, prometheus.DefaultGatherer},
			}
			if svc != nil {
				wo.Fleet = svc.Fleet.Client
			}
			srv, err := web.New(wo)
			if err != nil {
				ln.Close()
				return err
			}
			var handler http.Handler = srv
			var pipeline current.Term[current.Unit]
			if svc != nil {
				mux := http.NewServeMux()
				for _, r := range svc.Routes {
					mux.Handle(r, svc.Handler)
				}
				// The console's /api/fleet, beside the fleet's /api/fleet/ subtree (which
				// would otherwise redirect it there).
				mux.Handle("/api/fleet", srv)
				mux.Handle("/", srv)
				handler, pipeline = mux, svc.Pipeline
			}
			hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
			httpDone := make(chan error, 1)
			go func() { httpDone <- hs.Serve(ln) }()
			log.Info("console listening", "url", "http://"+ln.Addr().String(), "state_dir", o.stateDir, "service", o.service)

			if sample && o.demoCommitEvery > 0 {
				go func() {
					t := time.NewTicker(o.demoCommitEvery)
					defer t.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-t.C:
							if err := demo.CommitSample(ctx, repo); err != nil && ctx.Err() == nil {
								log.Warn("demo commit", "err", err)
							}
						}
					}
				}()
			}

			if demoOn {
				runner, err := demoRunner(ctx, log, o.demoRunner, o.stateDir, o.demoImage)
				if err != nil {
					return err
				}
				pipeline = demo.Pipeline(demo.Options{Repo: repo, WorkDir: filepath.Join(o.stateDir, "demo"), Poll: o.demoPoll, Runner: runner})
			}
			runErr := eng.Run(ctx, pipeline)
			stop()
			shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			hs.Shutdown(shutCtx)
			if err := <-httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("console: %w", err)
			}
			if runErr != nil && !errors.Is(runErr, context.Canceled) {
				return runErr
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.service, "service", "ocaml-ci", "the pipeline served: ocaml-ci or demo")
	ci.add(f)
	f.StringVar(&o.stateDir, "state-dir", "var", "folder for the database, job logs, checkouts and console secrets")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address of the web console")
	f.StringVar(&o.confirm, "confirm", "dangerous", "hold jobs above this level until an operator confirms them (harmless, mostly-harmless, average, above-average, dangerous)")
	f.DurationVar(&o.autoRelease, "auto-release", 0, "raise the confirm level to dangerous this long after start-up, releasing held jobs (0: never)")
	f.StringVar(&o.adminPassword, "admin-password", "", "set the console's admin password (env KILN_ADMIN_PASSWORD); by default one is made on first start")
	f.StringVar(&o.anonymous, "anonymous", "viewer", "role of visitors who have not logged in (none, viewer, builder, admin)")
	f.BoolVar(&o.secureCookies, "secure-cookies", false, "mark cookies Secure (set when the console is served over HTTPS)")
	f.StringVar(&o.demoRepo, "demo-repo", "", "git repository the demonstration pipeline watches (default: a sample made in the state dir)")
	f.DurationVar(&o.demoPoll, "demo-poll", 10*time.Second, "how often the demo reads the repository's branch heads, besides when they change")
	f.DurationVar(&o.demoCommitEvery, "demo-commit-every", 0, "add a commit to the sample repository this often, for a pipeline that keeps moving (0: never)")
	f.DurationVar(&o.logMaxAge, "log-max-age", 0, "delete logs of jobs finished longer ago (0: keep)")
	f.Int64Var(&o.logMaxBytes, "log-max-bytes", 0, "delete the oldest finished logs while all logs take more bytes (0: no limit)")
	f.IntVar(&o.slots, "slots", 4, "jobs run at once per pool")
	f.StringVar(&o.demoRunner, "demo-runner", "auto", "where demo jobs run: host, sandbox (the builder, with runc), or auto (sandbox when root, runc and --demo-image are available)")
	f.StringVar(&o.demoImage, "demo-image", "kiln/debian:bookworm", "base image of sandboxed demo jobs (make it with: kiln base debian)")
	return cmd
}

// demoRunner picks where the demo's jobs run.
func demoRunner(ctx context.Context, log *slog.Logger, mode, stateDir, img string) (demo.Runner, error) {
	why := ""
	switch mode {
	case "host":
		return demo.HostRunner{}, nil
	case "sandbox", "auto":
		if os.Geteuid() != 0 {
			why = "not running as root"
		} else if _, err := exec.LookPath("runc"); err != nil {
			why = "runc is not installed"
		}
	default:
		return nil, fmt.Errorf("--demo-runner %q: want host, sandbox or auto", mode)
	}
	var b *builder.Builder
	if why == "" {
		images, err := image.Open(filepath.Join(stateDir, "images"))
		if err == nil {
			if _, err = images.Resolve(ctx, img); err != nil && strings.HasPrefix(img, image.LocalPrefix) {
				err = fmt.Errorf("%w (make it with: kiln base debian --state-dir %s)", err, stateDir)
			}
		}
		if err == nil {
			b, err = builder.New(builder.Options{Root: filepath.Join(stateDir, "builder"), Images: images})
		}
		if err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		if mode == "sandbox" {
			return nil, fmt.Errorf("--demo-runner sandbox: %s", why)
		}
		log.Info("demo jobs run on the host", "why_not_sandboxed", why)
		return demo.HostRunner{}, nil
	}
	log.Info("demo jobs run in the sandbox", "image", img)
	return demo.SandboxRunner{Builder: b, Image: img}, nil
}

func init() { addCommand(serveCommand()) }
