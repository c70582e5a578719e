package deployer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/builder/snapshot"
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

// Pools are the fleet pools of the architectures the configuration's specs are built
// for (read at start: a pool added later needs a restart).
func (s *served) Pools() []string {
	c, err := LoadConfig(s.config)
	if err != nil {
		return nil
	}
	var pools []string
	for _, svc := range c.Services {
		if svc.Spec == "" {
			continue
		}
		for _, a := range svc.Archs {
			if !slices.Contains(pools, archPools[a]) {
				pools = append(pools, archPools[a])
			}
		}
	}
	return pools
}

// Start reads the configuration and starts the loop that polls, deploys and checks.
func (s *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	if s.config == "" {
		return nil, errors.New("--deployer-config: missing (the deployer has nothing to deploy without it)")
	}
	o := Options{ConfigFile: s.config, StateDir: filepath.Join(env.StateDir, "deployer"), Mirrors: env.Mirrors,
		Forges: env.Forges, BaseURL: env.BaseURL, Logger: env.Logger, Register: env.Register, Jobs: true}
	if env.Fleet != nil {
		// Specs are built on the fleet and published from the local workers' store.
		store, err := snapshot.Open(filepath.Join(env.StateDir, "builder", "store"), "")
		if err != nil {
			return nil, fmt.Errorf("deployer: the local workers' builder store: %w", err)
		}
		o.Specs = FleetBuilder{Fleet: env.Fleet, Store: store}
	}
	d, err := New(o)
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
