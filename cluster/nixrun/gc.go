package nixrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Health implements cluster.HealthChecker: the store answers, and every sandbox path
// the builders are promised exists on the host.
func (r *Runner) Health(ctx context.Context) error {
	for _, p := range r.o.SandboxPaths {
		host := p
		if _, h, ok := strings.Cut(p, "="); ok {
			host = h
		}
		host = strings.TrimSuffix(host, "?")
		if _, err := os.Stat(host); err != nil && !strings.HasSuffix(p, "?") {
			return fmt.Errorf("nix sandbox path %s: %w", p, err)
		}
	}
	out, err := r.command(ctx, "nix", "", []string{"store", "ping"}).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nix store ping: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Prune implements cluster.Pruner: when the store's file system has less than MinFree
// free, or the store is larger than Budget, it collects garbage (nix-store --gc
// --max-freed) for the difference. Only the outputs of builds that have ended can go:
// a running build's derivations and outputs have roots.
func (r *Runner) Prune(ctx context.Context) error {
	want, err := r.toFree(ctx)
	if err != nil || want <= 0 {
		return err
	}
	r.gc.Lock()
	defer r.gc.Unlock()
	out, err := r.command(ctx, "nix-store", "", []string{"--gc", "--max-freed", strconv.FormatInt(want, 10)}).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nix-store --gc --max-freed %d: %w: %s", want, err, lastLine(out))
	}
	paths, freed := gcReport(string(out))
	r.m.freed.Add(float64(freed))
	r.log.Info("nix store collected", "wanted", want, "paths", paths, "freed", freed)
	return nil
}

// toFree is how many bytes the store should give back.
func (r *Runner) toFree(ctx context.Context) (int64, error) {
	var want int64
	if r.o.MinFree > 0 {
		if dir := r.storeDir(); dir != "" {
			var st syscall.Statfs_t
			err := syscall.Statfs(dir, &st)
			if errors.Is(err, fs.ErrNotExist) {
				return 0, nil // no store yet, nothing to collect
			}
			if err != nil {
				return 0, fmt.Errorf("free space of %s: %w", dir, err)
			}
			if free := int64(st.Bavail) * st.Bsize; free < r.o.MinFree {
				want = r.o.MinFree - free
			}
		}
	}
	if r.o.Budget > 0 {
		size, err := r.storeSize(ctx)
		if err != nil {
			return 0, err
		}
		want = max(want, size-r.o.Budget)
	}
	return want, nil
}

// storeDir is the folder that holds the store's files, "" for a remote store.
func (r *Runner) storeDir() string {
	switch {
	case r.o.Store == "":
		return "/nix/store"
	case strings.Contains(r.o.Store, "://") || strings.Contains(r.o.Store, "?"):
		return ""
	default:
		return filepath.Join(r.o.Store, "nix", "store")
	}
}

// storeSize is the total size of the valid paths of the store.
func (r *Runner) storeSize(ctx context.Context) (int64, error) {
	out, err := r.command(ctx, "nix", "", []string{"path-info", "--all", "--json"}).Output()
	if err != nil {
		return 0, fmt.Errorf("nix path-info --all: %w", err)
	}
	var infos []struct {
		NarSize int64 `json:"narSize"`
	}
	if err := json.Unmarshal(out, &infos); err != nil {
		return 0, fmt.Errorf("nix path-info --all --json: %w", err)
	}
	var total int64
	for _, i := range infos {
		total += i.NarSize
	}
	return total, nil
}

var gcLine = regexp.MustCompile(`(\d+) store paths deleted, ([0-9.]+) MiB freed`)

// gcReport reads nix-store --gc's last words: the paths deleted and the bytes freed.
func gcReport(out string) (paths int, freed int64) {
	m := gcLine.FindStringSubmatch(out)
	if m == nil {
		return 0, 0
	}
	paths, _ = strconv.Atoi(m[1])
	mib, _ := strconv.ParseFloat(m[2], 64)
	return paths, int64(mib * (1 << 20))
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

type metrics struct {
	runs    *prometheus.CounterVec
	closure prometheus.Histogram
	freed   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_nix_runs_total",
			Help: "Nix jobs run, by result: ok, evaluation, build (the project's failures), infrastructure."}, []string{"result"}),
		closure: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kiln_nix_closure_size_bytes",
			Help: "Closure size of the outputs of successful Nix jobs.", Buckets: prometheus.ExponentialBuckets(1<<16, 4, 10)}),
		freed: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_nix_gc_freed_bytes_total",
			Help: "Bytes the Nix store's garbage collection freed."}),
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.closure, m.freed)
	}
	return m
}
