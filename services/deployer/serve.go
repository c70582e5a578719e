package deployer

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/services/host"
)

// ServiceKind is the deployer as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "deployer",
	Help: "builds, publishes and deploys the services of --deployer-config, with staging, health checks and rollback",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringVar(&s.config, "deployer-config", "", "the deployer's configuration file (docs/deployer.md); read again when it changes")
		return s
	},
}

type served struct{ config string }

// Start reads the configuration and starts the loop that polls, deploys and checks.
func (s *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	if s.config == "" {
		return nil, errors.New("--deployer-config: missing (the deployer has nothing to deploy without it)")
	}
	d, err := New(Options{ConfigFile: s.config, StateDir: filepath.Join(env.StateDir, "deployer"), Mirrors: env.Mirrors,
		Forges: env.Forges, BaseURL: env.BaseURL, Logger: env.Logger, Register: env.Register, Jobs: true})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(rctx)
	}()
	return &host.Running{Pipeline: d.Pipeline(), Routes: d.Routes(), AdminRoutes: d.AdminRoutes(), Close: func() {
		cancel()
		<-done
		d.Close()
	}}, nil
}
