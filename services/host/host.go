// Package host runs services in one process around one engine, one console, one build
// fleet and one set of forges. A service (ocaml-ci, the demo, …) contributes its
// pipeline, its web routes and the fleet pools it builds on; the host shares
// everything else between them, so a service never needs another service's code and
// adding one touches no other.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/current"
	"github.com/kiln-ci/kiln/git"
	"github.com/kiln-ci/kiln/plugins/forges"
)

// Env is what the host shares with every service it runs.
type Env struct {
	Engine *current.Engine
	// Fleet is the build fleet; nil when no service builds on it.
	Fleet *cluster.Client
	// Forges are the forges followed; a service may add sources of its own to follow
	// only for itself.
	Forges *forges.Set
	// Mirrors are the git mirrors, with the forges' credentials.
	Mirrors *git.Mirrors
	// StateDir is the server's state folder; each service keeps its files under it.
	StateDir string
	// Database is the database the services keep their tables in (their indexes): a
	// postgres:// URL or a SQLite file, shared with the engine. Empty, each service
	// keeps a SQLite file of its own in StateDir.
	Database string
	// BaseURL is the public address of the web UI, for links in statuses.
	BaseURL string
	// Images is the builder's image store folder, shared with the local workers.
	Images   string
	Logger   *slog.Logger
	Register prometheus.Registerer
	// MemoryIdle is how long the engine is idle before the memory kept from a burst of
	// work goes back to the system (default DefaultMemoryIdle; see MemoryReturner).
	MemoryIdle time.Duration
}

// Tables says where the service name keeps its tables: in Database, each table's name
// starting with name and "_", or else in the SQLite file file of StateDir, unprefixed.
func (e *Env) Tables(name, file string) (target, prefix string) {
	if e.Database != "" {
		return e.Database, name + "_"
	}
	return filepath.Join(e.StateDir, file), ""
}

// Service is one service a host can run.
type Service interface {
	// Start builds the service's pipeline on env. ctx ends when the host stops.
	Start(ctx context.Context, env *Env) (*Running, error)
}

// PoolUser is implemented by services that build on the fleet: the fleet pools their
// builds go to, which the host's fleet serves and its local workers join.
type PoolUser interface {
	Pools() []string
}

// Running is a started service.
type Running struct {
	Pipeline current.Term[current.Unit]
	// Routes are the service's pages and endpoints, by http.ServeMux pattern.
	Routes map[string]http.Handler
	// AdminRoutes are endpoints only the console's admins may use (a service's own
	// administration), by pattern.
	AdminRoutes map[string]http.Handler
	// Close releases what Start opened; nil when there is nothing to release.
	Close func()
}

// Kind is a service kiln serve knows by name.
type Kind struct {
	Name string // as given to --service
	Help string // one line
	// Flags adds the service's flags to fs and returns the service they configure.
	Flags func(fs *pflag.FlagSet) Service
}

// Pools is the sorted union of the pools the services build on.
func Pools(svcs []Service) []string {
	var out []string
	for _, s := range svcs {
		if p, ok := s.(PoolUser); ok {
			for _, pool := range p.Pools() {
				if !slices.Contains(out, pool) {
					out = append(out, pool)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// Route is one endpoint of the services or the forges.
type Route struct {
	Pattern string
	Handler http.Handler
	// Public routes authenticate their callers themselves (a forge's signed webhooks);
	// the others are pages, shown to whom the console lets see pages.
	Public bool
	// Admin routes are for the console's admins only.
	Admin bool
}

// Started is a set of running services, their pipelines joined as one.
type Started struct {
	Pipeline current.Term[current.Unit]
	// Routes are every service's pages and the forges' webhooks, sorted by pattern.
	Routes  []Route
	closers []func()
}

// Close stops the services, last started first.
func (s *Started) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Start starts every service on env. Two services claiming one route is an error
// that names both.
func Start(ctx context.Context, env *Env, names []string, svcs []Service) (*Started, error) {
	st := &Started{}
	owner := map[string]string{}
	var pipes []current.AnyTerm
	for i, svc := range svcs {
		r, err := svc.Start(ctx, env)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("service %s: %w", names[i], err)
		}
		if r.Close != nil {
			st.closers = append(st.closers, r.Close)
		}
		if r.Pipeline != (current.Term[current.Unit]{}) {
			pipes = append(pipes, r.Pipeline)
		}
		patterns := make([]string, 0, len(r.Routes)+len(r.AdminRoutes))
		for p := range r.Routes {
			patterns = append(patterns, p)
		}
		for p := range r.AdminRoutes {
			patterns = append(patterns, p)
		}
		sort.Strings(patterns)
		for _, p := range patterns {
			if o, dup := owner[p]; dup {
				st.Close()
				return nil, fmt.Errorf("service %s: route %q is already served by %s", names[i], p, o)
			}
			owner[p] = names[i]
			h, admin := r.AdminRoutes[p]
			if !admin {
				h = r.Routes[p]
			}
			st.Routes = append(st.Routes, Route{Pattern: p, Handler: h, Admin: admin})
		}
	}
	for p, h := range env.Forges.Routes() {
		if o, dup := owner[p]; dup {
			st.Close()
			return nil, fmt.Errorf("webhook route %q is already served by %s", p, o)
		}
		owner[p] = "forges"
		st.Routes = append(st.Routes, Route{Pattern: p, Handler: h, Public: true})
	}
	sort.Slice(st.Routes, func(i, j int) bool { return st.Routes[i].Pattern < st.Routes[j].Pattern })
	st.Pipeline = current.All(pipes...)
	mctx, stop := context.WithCancel(ctx)
	mdone := make(chan struct{})
	m := &MemoryReturner{Engine: env.Engine, Idle: env.MemoryIdle, Logger: env.Logger, Register: env.Register}
	go func() { defer close(mdone); m.Run(mctx) }()
	st.closers = append(st.closers, func() { stop(); <-mdone })
	return st, nil
}
