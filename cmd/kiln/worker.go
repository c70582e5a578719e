package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/sandbox"
	"github.com/kiln-ci/kiln/cluster"
	"github.com/kiln-ci/kiln/cluster/buildrun"
	"github.com/kiln-ci/kiln/cluster/nixrun"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	var nf natsFlags
	var o cluster.WorkerOptions
	var labels []string
	var token, runner, shell, metrics, images, healthBase string
	var budget int64
	var stepMemory, stepDisk string
	var stepCPUs float64
	var stepPids int64
	var benchCPUs string
	var nix nixFlags
	c := &cobra.Command{
		Use:   "worker",
		Short: "Run a build worker: connect out to the fleet and run jobs of one pool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var err error
			if o.Token, err = secretFlag(token); err != nil {
				return err
			}
			o.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				o.Labels[k] = v
			}
			if o.Name == "" {
				o.Name, _ = os.Hostname()
			}
			o.StateDir, _ = filepath.Abs(o.StateDir)
			reg := prometheus.NewRegistry()
			switch runner {
			case "shell":
				o.Runner = &cluster.ShellRunner{WorkDir: filepath.Join(o.StateDir, "work"), Shell: shell}
			case "builder":
				root := filepath.Join(o.StateDir, "builder")
				lim, err := workerLimits(root, stepMemory, stepDisk, stepCPUs, stepPids, o.Capacity)
				if err != nil {
					return err
				}
				if benchCPUs != "" {
					if lim, err = benchSlotLimits(benchCPUs, lim); err != nil {
						return err
					}
					o.Capacity = 1 // one benchmark at a time on the slot
				}
				r, err := buildrun.New(buildrun.Options{Root: root, Images: images, HealthBase: healthBase, Budget: budget, Limits: lim})
				if err != nil {
					return err
				}
				o.Runner = r
			case "nix":
				if o.Runner, err = nix.runner(filepath.Join(o.StateDir, "nix"), budget, reg); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--runner %q: want builder, shell or nix", runner)
			}
			o.Registry = reg
			serveMetrics(ctx, metrics, reg)
			nc, err := nf.connect(ctx, "kiln-worker-"+o.Name, o.Token)
			if err != nil {
				return err
			}
			w, err := cluster.NewWorker(nc, o)
			if err != nil {
				return err
			}
			err = w.Run(ctx)
			nc.Close()
			if errors.Is(err, cluster.ErrRestart) {
				exe, xerr := os.Executable()
				if xerr != nil {
					return xerr
				}
				return syscall.Exec(exe, os.Args, os.Environ())
			}
			return err
		},
	}
	nf.add(c.Flags())
	f := c.Flags()
	f.StringVar(&o.Name, "name", "", "worker name (default the host name)")
	f.StringVar(&o.Pool, "pool", "linux-x86_64", "pool to serve")
	f.IntVar(&o.Capacity, "capacity", 2, "jobs run at once")
	f.StringArrayVar(&labels, "label", nil, "KEY=VALUE label shown to operators (repeatable)")
	f.StringVar(&token, "token", os.Getenv("KILN_WORKER_TOKEN"), "the scheduler's worker token (@FILE reads a file; env KILN_WORKER_TOKEN); also the NATS token unless --nats-token or --nats-creds is given")
	f.StringVar(&o.StateDir, "state-dir", "var/worker", "worker state: source cache, builder store, work folders")
	f.StringVar(&o.SecretsDir, "secrets-dir", "", "folder whose files are the secrets jobs may reference by name")
	f.StringVar(&runner, "runner", "builder", "how jobs run: builder (sandboxed builder spec), shell (spec text is a /bin/sh script) or nix (Nix expressions of the source tree, docs/nix.md)")
	f.StringVar(&shell, "shell", "", "shell runner: shell binary (default /bin/sh)")
	f.StringVar(&images, "images", "", "builder runner: base image store folder (default STATE-DIR/builder/images)")
	f.StringVar(&healthBase, "health-base", "", "builder runner: image the health check builds on (e.g. kiln/debian:bookworm); empty checks the store only")
	f.Int64Var(&budget, "store-budget", 0, "builder and nix runners: store size kept by pruning, in bytes (0: prune for free space only)")
	f.StringVar(&stepMemory, "memory", "", "builder runner: memory limit of each step, e.g. 4G (default: the builder's default divided by --capacity)")
	f.Float64Var(&stepCPUs, "cpus", 0, "builder runner: CPU limit of each step, in CPUs (default: the machine's CPUs divided by --capacity, at least 1)")
	f.StringVar(&benchCPUs, "bench-cpus", "", "builder runner: a benchmark slot: every step pinned to these CPUs (e.g. 1 or 2,3), one job at a time; keep builds off them")
	f.Int64Var(&stepPids, "pids", 0, "builder runner: process limit of each step (default 4096)")
	f.StringVar(&stepDisk, "disk", "", "builder runner: disk budget of each step, e.g. 20G (default: a quarter of the store's file system, at most 16G)")
	nix.add(f)
	f.DurationVar(&o.HealthEvery, "health-every", time.Minute, "how often the health check runs")
	f.StringVar(&o.HealthCommand, "health-command", "", "extra health check (/bin/sh -c); failing pauses the worker")
	f.DurationVar(&o.PruneEvery, "prune-every", time.Hour, "how often the store and source cache are pruned")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics (kiln_fleet_worker_*) on this address")
	addCommand(c)
}

// workerLimits are the step limits of a worker's builder: the flags, or the builder's
// defaults with memory and CPUs shared between the jobs it runs at once.
func workerLimits(root, memory, disk string, cpus float64, pids int64, capacity int) (sandbox.Limits, error) {
	mem, err := parseSize(memory)
	if err != nil {
		return sandbox.Limits{}, fmt.Errorf("--memory: %w", err)
	}
	dsk, err := parseSize(disk)
	if err != nil {
		return sandbox.Limits{}, fmt.Errorf("--disk: %w", err)
	}
	l := sandbox.Limits{Memory: mem, CPUs: cpus, Pids: pids, Disk: dsk}
	def := builder.DefaultLimits(root)
	n := int64(max(1, capacity))
	if l.Memory == 0 {
		l.Memory = def.Memory / n
	}
	if l.CPUs == 0 {
		l.CPUs = max(1, def.CPUs/float64(n))
	}
	return l, nil
}

var cpuList = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

// benchSlotLimits pins a benchmark slot's steps to cpus, without a time share quota
// (the slot's CPUs are the benchmark's own).
func benchSlotLimits(cpus string, lim sandbox.Limits) (sandbox.Limits, error) {
	if !cpuList.MatchString(cpus) {
		return lim, fmt.Errorf("--bench-cpus %q: want CPU numbers and ranges such as 1, 2,3 or 0-3", cpus)
	}
	lim.CPUSet, lim.CPUs = cpus, 0
	return lim, nil
}

// nixFlags configure the nix runner.
type nixFlags struct {
	store, minFree, usersGroup string
	sandboxPaths, options      []string
}

func (n *nixFlags) add(f *pflag.FlagSet) {
	f.StringVar(&n.store, "nix-store", "", "nix runner: folder of a Nix store of the worker's own (default the system store, /nix/store)")
	f.StringArrayVar(&n.sandboxPaths, "nix-sandbox-path", nil, "nix runner: host path shown to builders, PATH or INSIDE=HOST (repeatable; e.g. /usr and /bin=/usr/bin for the host's OCaml)")
	f.StringArrayVar(&n.options, "nix-option", nil, "nix runner: Nix setting NAME=VALUE (repeatable; e.g. substituters= on a machine without network)")
	f.StringVar(&n.usersGroup, "nix-build-users-group", "", "nix runner: group of Nix's build users (default none: builds run as the worker's user, in the sandbox)")
	f.StringVar(&n.minFree, "nix-min-free", "", "nix runner: free space kept on the store's file system by garbage collection, e.g. 10G (default none)")
}

// runner is the nix runner the flags describe, working in dir.
func (n *nixFlags) runner(dir string, budget int64, reg prometheus.Registerer) (*nixrun.Runner, error) {
	minFree, err := parseSize(n.minFree)
	if err != nil {
		return nil, fmt.Errorf("--nix-min-free: %w", err)
	}
	settings := map[string]string{}
	for _, kv := range n.options {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--nix-option %q: want NAME=VALUE", kv)
		}
		settings[k] = v
	}
	return nixrun.New(nixrun.Options{WorkDir: dir, Store: n.store, SandboxPaths: n.sandboxPaths, Settings: settings,
		BuildUsersGroup: n.usersGroup, MinFree: minFree, Budget: budget, Registry: reg})
}
