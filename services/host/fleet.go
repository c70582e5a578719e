package host

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
)

// FleetOptions configure the host's build fleet.
type FleetOptions struct {
	// External, when set, joins a fleet whose NATS and scheduler run elsewhere
	// (`kiln scheduler`, or another kiln serve); otherwise the fleet is embedded: a NATS
	// server and a scheduler in this process, listening on Listen.
	External    *cluster.ConnOptions
	Listen      string
	WorkerToken string
	// Pools are the pools the embedded scheduler serves and local workers join.
	Pools []string
	// LocalWorkers is the number of workers run in this process per pool (0: only
	// `kiln worker` processes build), each running Capacity jobs at once.
	LocalWorkers, Capacity int
	// WorkerPrefix names the local workers, <prefix>-<pool>-<n> (default "local"):
	// processes sharing one fleet need different prefixes.
	WorkerPrefix string
	StateDir     string // fleet data, local workers' state and builder store go under it
	Images       string // the builder's image store folder
	Logger       *slog.Logger
}

// Fleet is the host's running fleet.
type Fleet struct {
	Client *cluster.Client
	// URL is what workers pass as --nats (empty for an external fleet).
	URL   string
	close []func()
}

// Close stops the local workers and the fleet.
func (f *Fleet) Close() {
	for i := len(f.close) - 1; i >= 0; i-- {
		f.close[i]()
	}
	f.close = nil
}

// StartFleet starts (or joins) the fleet and its local workers; they stop with Close.
func StartFleet(ctx context.Context, o FleetOptions) (*Fleet, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	f := &Fleet{}
	url := ""
	if o.External != nil {
		nc, err := cluster.Connect(ctx, *o.External)
		if err != nil {
			return nil, fmt.Errorf("fleet at %s: %w", o.External.URL, err)
		}
		f.close = append(f.close, nc.Close)
		if f.Client, err = cluster.NewClient(nc); err != nil {
			f.Close()
			return nil, fmt.Errorf("fleet at %s: %w", o.External.URL, err)
		}
		url = o.External.URL
	} else {
		emb, err := cluster.StartEmbedded(ctx, cluster.Options{StateDir: filepath.Join(o.StateDir, "fleet"), Listen: o.Listen,
			Pools: o.Pools, WorkerToken: o.WorkerToken, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		f.close = append(f.close, emb.Close)
		f.Client, f.URL, url = emb.Client, emb.URL, emb.URL
	}
	if o.LocalWorkers <= 0 || len(o.Pools) == 0 {
		return f, nil
	}
	runner, err := buildrun.New(buildrun.Options{Root: filepath.Join(o.StateDir, "builder"), Images: o.Images})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("builder: %w", err)
	}
	prefix := o.WorkerPrefix
	if prefix == "" {
		prefix = "local"
	}
	workerCtx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	f.close = append(f.close, func() { stopWorkers(); wg.Wait() })
	for _, pool := range o.Pools {
		for i := 0; i < o.LocalWorkers; i++ {
			name := fmt.Sprintf("%s-%s-%d", prefix, pool, i+1)
			co := cluster.ConnOptions{URL: url, Name: name, Logger: log}
			if o.External != nil {
				co = *o.External
				co.Name = name
			}
			nc, err := cluster.Connect(ctx, co)
			if err != nil {
				f.Close()
				return nil, err
			}
			w, err := cluster.NewWorker(nc, cluster.WorkerOptions{Name: name, Pool: pool, Capacity: o.Capacity, Token: o.WorkerToken,
				StateDir: filepath.Join(o.StateDir, "workers", name), Runner: runner, Logger: log})
			if err != nil {
				nc.Close()
				f.Close()
				return nil, err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				if err := w.Run(workerCtx); err != nil && workerCtx.Err() == nil {
					log.Error("local worker stopped", "worker", name, "err", err)
				}
			}()
		}
	}
	return f, nil
}
