package baseimages

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/builder/snapshot"
	"github.com/kiln-ci/kiln/registry"
	"github.com/kiln-ci/kiln/services/host"
)

// ServiceKind is the base-images service as kiln serve runs it.
var ServiceKind = host.Kind{
	Name: "base-images",
	Help: "builds the opam and OCaml images of a distro × compiler × architecture matrix on the fleet and publishes them to an OCI registry (--base-images-config)",
	Flags: func(fs *pflag.FlagSet) host.Service {
		s := &served{}
		fs.StringVar(&s.config, "base-images-config", "", "the base-images service's configuration, a YAML file (see docs/base-images.md)")
		return s
	},
}

type served struct {
	config string
	cfg    *Config
}

func (s *served) load() (*Config, error) {
	if s.cfg != nil {
		return s.cfg, nil
	}
	if s.config == "" {
		return nil, fmt.Errorf("base-images: --base-images-config is required")
	}
	c, err := LoadConfig(s.config)
	if err != nil {
		return nil, err
	}
	s.cfg = c
	return c, nil
}

// Pools are the pools of the configured architectures.
func (s *served) Pools() []string {
	c, err := s.load()
	if err != nil {
		return nil
	}
	return c.Plan().Pools
}

// Start reads the configuration, opens the registry client and builds the pipeline.
// Images are exported from the builder store of the host's local workers.
func (s *served) Start(ctx context.Context, env *host.Env) (*host.Running, error) {
	c, err := s.load()
	if err != nil {
		return nil, err
	}
	if env.Fleet == nil {
		return nil, fmt.Errorf("base-images builds on a fleet, and the host has none")
	}
	if c.OpamRepository.Git == "" {
		return nil, fmt.Errorf("%s: opam-repository.git: the git directory of the opam repository is required", s.config)
	}
	store, err := snapshot.Open(filepath.Join(env.StateDir, "builder", "store"), "")
	if err != nil {
		return nil, fmt.Errorf("base-images: the local workers' builder store: %w", err)
	}
	svc := &Service{Config: c, OpamGit: c.OpamRepository.Git, Images: env.Images,
		Runner:  FleetRunner{Fleet: env.Fleet, Store: store},
		WorkDir: filepath.Join(env.StateDir, "base-images"), Logger: env.Logger}
	if c.Registry.Repository != "" {
		if svc.Publisher, err = NewPublisher(c.Registry, env.Register, env.Logger); err != nil {
			return nil, err
		}
	}
	if _, err := NewService(svc, env.Register); err != nil {
		return nil, err
	}
	routes := svc.Index.Handlers()
	routes["POST /base-images/refresh"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		svc.Refresh()
		http.Redirect(w, r, "/base-images", http.StatusSeeOther)
	})
	return &host.Running{Pipeline: svc.Pipeline(), Routes: routes}, nil
}

// NewPublisher opens the registry client of a configuration.
func NewPublisher(rc RegistryConfig, reg prometheus.Registerer, log *slog.Logger) (*Publisher, error) {
	o := registry.Options{Insecure: rc.Insecure, Registerer: reg, Logger: log}
	if rc.CredentialsFile != "" {
		cr, err := registry.ReadCredentials(rc.CredentialsFile)
		if err != nil {
			return nil, err
		}
		o.Credentials = cr
	}
	cl, err := registry.New(o)
	if err != nil {
		return nil, err
	}
	p := &Publisher{Client: cl, Repository: rc.Repository, Staging: rc.Staging}
	if rc.SigningKey != "" {
		if p.Signer, err = registry.LoadSigner(rc.SigningKey); err != nil {
			return nil, err
		}
	}
	return p, nil
}
