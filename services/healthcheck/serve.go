package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/services/host"
	"github.com/kiln-ci/kiln/services/internal/logarchive"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// Prefix is the path of the service's pages.
const Prefix = "/health-check"

// ServiceKind is the health check as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "health-check",
	Help: "builds every package of an opam repository against each configured switch, periodically and on candidates, with a matrix of the results, diffs between runs and a JSON API",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringVar(&s.config, "health-check-config", "", "the health check's configuration, a YAML file (see docs/health-check.md); changes made with kiln health-check are saved in the state dir and take precedence")
		fs.BoolVar(&s.noBaseImages, "health-check-no-base-images", false, "do not make the platform's Debian base image in the state dir (the workers have it)")
		return s
	},
}

type served struct {
	config       string
	noBaseImages bool
}

// savedConfig is where changes made through the admin API are kept.
func savedConfig(stateDir string) string {
	return filepath.Join(stateDir, "healthcheck", "config.yaml")
}

// load reads the configuration: the one saved in stateDir by changes made since,
// or the file given.
func (c *served) load(stateDir string) (*Config, error) {
	if c.config == "" {
		return nil, errors.New("the health check needs its configuration: give --health-check-config FILE (see docs/health-check.md)")
	}
	path := c.config
	if stateDir != "" {
		if _, err := os.Stat(savedConfig(stateDir)); err == nil {
			path = savedConfig(stateDir)
		}
	}
	return Load(path)
}

// Pools is the pool of the configured platform (none while the configuration does
// not read; Start says why).
func (c *served) Pools() []string {
	cfg, err := c.load("")
	if err != nil {
		return nil
	}
	p, err := cfg.platform()
	if err != nil {
		return nil
	}
	return []string{p.Pool}
}

// Start opens the store, the log archive and the archive cache, and builds the
// pipeline of the runs; with an interval set, a run starts every interval.
func (c *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	if env.Fleet == nil {
		return nil, errors.New("the health check builds on a fleet, and the host has none")
	}
	cfg, err := c.load(env.StateDir)
	if err != nil {
		return nil, err
	}
	target, prefix := env.Tables("healthcheck", "healthcheck.db")
	store, err := OpenStoreAt(ctx, target, prefix)
	if err != nil {
		return nil, err
	}
	closers := []func(){func() { store.Close() }}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	logs, err := logarchive.Open(filepath.Join(env.StateDir, "healthcheck", "logs"), logarchive.Options{Name: "health-check", Register: env.Register, Logger: env.Logger})
	if err != nil {
		closeAll()
		return nil, err
	}
	archives, err := opamenv.NewArchives(filepath.Join(env.StateDir, "opam-archives"), opamenv.ArchivesOptions{Logger: env.Logger, Register: env.Register})
	if err != nil {
		closeAll()
		return nil, err
	}
	svc := NewService(cfg)
	svc.Store, svc.Logs, svc.Archives, svc.Mirrors, svc.Fleet = store, logs, archives, env.Mirrors, env.Fleet
	svc.WorkDir, svc.ConfigPath = filepath.Join(env.StateDir, "healthcheck", "work"), savedConfig(env.StateDir)
	svc.BaseURL, svc.Prefix, svc.Logger, svc.Metrics = env.BaseURL, Prefix, env.Logger, NewMetrics(env.Register)
	if !c.noBaseImages {
		svc.Images = env.Images
	}
	if err := os.MkdirAll(svc.WorkDir, 0o755); err != nil {
		closeAll()
		return nil, fmt.Errorf("health check: %w", err)
	}
	if len(cfg.Webhooks) > 0 {
		n, err := NewWebhooks(cfg.Webhooks, env)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("health check: webhooks: %w", err)
		}
		svc.Notify = n
		closers = append(closers, n.Close)
	}
	pipe, err := svc.Pipeline(ctx)
	if err != nil {
		closeAll()
		return nil, err
	}
	ui, err := NewUI(store, logs, UIOptions{Prefix: Prefix, Logger: env.Logger})
	if err != nil {
		closeAll()
		return nil, err
	}
	routes := map[string]http.Handler{}
	for _, r := range ui.Routes() {
		routes[r] = ui
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); svc.Schedule(sctx, time.Minute) }()
	closers = append(closers, func() { stop(); <-done })
	env.Logger.Info("health-check: serving", "switches", cfg.SwitchNames(), "repository", cfg.Repository.URL, "ui", env.BaseURL+Prefix)
	return &host.Running{Pipeline: pipe, Routes: routes,
		AdminRoutes: map[string]http.Handler{Prefix + AdminPath: svc.AdminHandler(Prefix)}, Close: closeAll}, nil
}

// Schedule starts a baseline run every configured interval, checking every tick,
// until ctx ends. A run going on delays the next.
func (s *Service) Schedule(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if err := s.maybeStart(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("health-check: scheduled run not started", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) maybeStart(ctx context.Context) error {
	every := time.Duration(s.Config().Interval)
	if every <= 0 {
		return nil
	}
	cur, err := s.Store.Current(ctx)
	if err != nil || len(cur) > 0 {
		return err
	}
	last, err := s.Store.Runs(ctx, Baseline, 1)
	if err != nil {
		return err
	}
	if len(last) > 0 && time.Since(last[0].Started) < every {
		return nil
	}
	_, err = s.StartRun(ctx, RunOptions{})
	return err
}
