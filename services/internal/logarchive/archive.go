// Package logarchive keeps the logs of runs: one zstd-compressed file per log, named by
// its run and a key, written as each job finishes, read back one at a time, searched
// with a regexp across a run and pruned a whole run at a time.
//
// A key is a slash-separated path ("4.14/foo.1.0"); a search can be restricted to the
// keys under a prefix ("4.14/"). A log longer than Options.MaxLogBytes is cut there and
// ends with a line saying so; a log file that cannot be decompressed is an error for
// that log only.
package logarchive

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxLogBytes is how much of a log is kept when Options.MaxLogBytes is zero.
const DefaultMaxLogBytes = 64 << 20

// window is the compression window: what a log's encoder and decoder hold.
const window = 1 << 20

// ext is the suffix of a stored log's file.
const ext = ".zst"

// createdFile is the file in a run's directory holding the time the run was begun.
const createdFile = ".created"

// ErrNotFound is returned (wrapped) for a run or log the archive does not hold.
var ErrNotFound = errors.New("not in the log archive")

// ErrCorrupt is returned (wrapped) for a stored log that cannot be decompressed.
var ErrCorrupt = errors.New("corrupt log")

// Options vary an Archive.
type Options struct {
	// MaxLogBytes is how many bytes of a log are kept; the rest is counted, dropped and
	// replaced by a truncation line. Zero means DefaultMaxLogBytes.
	MaxLogBytes int64
	// Name tells two archives' metrics apart (the "archive" label), "logs" by default.
	Name string
	// Register receives the archive's metrics when set.
	Register prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now; it dates new runs.
	Now func() time.Time
}

// Archive is a directory of runs' logs, safe for concurrent use.
type Archive struct {
	dir  string
	opts Options
	log  *slog.Logger
	m    metrics

	encoders sync.Pool
	decoders sync.Pool
}

type metrics struct {
	written, truncated, corrupt, pruned prometheus.Counter
	rawBytes, storedBytes               prometheus.Counter
	search                              prometheus.Histogram
}

func newMetrics(name string, reg prometheus.Registerer) (metrics, error) {
	labels := prometheus.Labels{"archive": name}
	counter := func(n, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: n, Help: help, ConstLabels: labels})
	}
	m := metrics{
		written:     counter("kiln_logarchive_logs_written_total", "Logs stored in the archive."),
		truncated:   counter("kiln_logarchive_logs_truncated_total", "Logs cut at the archive's size limit."),
		corrupt:     counter("kiln_logarchive_logs_corrupt_total", "Stored logs found unreadable when read or searched."),
		pruned:      counter("kiln_logarchive_runs_pruned_total", "Runs removed by retention."),
		rawBytes:    counter("kiln_logarchive_raw_bytes_total", "Bytes of logs kept, before compression."),
		storedBytes: counter("kiln_logarchive_stored_bytes_total", "Bytes of logs kept, compressed on disk."),
		search: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kiln_logarchive_search_seconds", Help: "Time to search a run's logs.",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.written, m.truncated, m.corrupt, m.pruned, m.rawBytes, m.storedBytes, m.search} {
			if err := reg.Register(c); err != nil {
				return m, fmt.Errorf("log archive %q metrics: %w", name, err)
			}
		}
	}
	return m, nil
}

// Open opens (making it if needed) the archive in dir.
func Open(dir string, opts Options) (*Archive, error) {
	if opts.MaxLogBytes <= 0 {
		opts.MaxLogBytes = DefaultMaxLogBytes
	}
	if opts.Name == "" {
		opts.Name = "logs"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("log archive: %w", err)
	}
	m, err := newMetrics(opts.Name, opts.Register)
	if err != nil {
		return nil, err
	}
	a := &Archive{dir: dir, opts: opts, log: log.With("archive", opts.Name), m: m}
	a.encoders.New = func() any {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithWindowSize(window))
		if err != nil {
			panic(err) // only for invalid options
		}
		return e
	}
	a.decoders.New = func() any {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(window), zstd.WithDecoderMaxMemory(uint64(2*opts.MaxLogBytes+window)))
		if err != nil {
			panic(err)
		}
		return d
	}
	return a, nil
}

// Dir is the archive's directory.
func (a *Archive) Dir() string { return a.dir }

// MaxLogBytes is how much of a log the archive keeps.
func (a *Archive) MaxLogBytes() int64 { return a.opts.MaxLogBytes }

// CheckRun says what is wrong with a run's name: it must be one path element of
// letters, digits and "._-+:@", not starting with a dot.
func CheckRun(run string) error {
	if err := checkElem(run); err != nil {
		return fmt.Errorf("run name %q: %w", run, err)
	}
	return nil
}

// CheckKey says what is wrong with a key: slash-separated elements as CheckRun
// allows them.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("log key is empty")
	}
	for _, e := range strings.Split(key, "/") {
		if err := checkElem(e); err != nil {
			return fmt.Errorf("log key %q: %w", key, err)
		}
	}
	return nil
}

func checkElem(e string) error {
	switch {
	case e == "":
		return errors.New("empty element")
	case len(e) > 200:
		return errors.New("element longer than 200 bytes")
	case e[0] == '.':
		return fmt.Errorf("element %q starts with a dot", e)
	}
	for _, c := range e {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-+:@~", c)
		if !ok {
			return fmt.Errorf("element %q has %q", e, c)
		}
	}
	return nil
}

func (a *Archive) runDir(run string) (string, error) {
	if err := CheckRun(run); err != nil {
		return "", err
	}
	return filepath.Join(a.dir, run), nil
}

func (a *Archive) logPath(run, key string) (string, error) {
	d, err := a.runDir(run)
	if err != nil {
		return "", err
	}
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d, filepath.FromSlash(key)+ext), nil
}

// Begin records a run (dated now) if the archive does not hold it yet; Create does it
// too, so Begin is only needed to date a run before its first log.
func (a *Archive) Begin(run string) error {
	d, err := a.runDir(run)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("log archive: run %s: %w", run, err)
	}
	p := filepath.Join(d, createdFile)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	stamp := a.opts.Now().UTC().Format(time.RFC3339Nano) + "\n"
	if err := os.WriteFile(p, []byte(stamp), 0o644); err != nil {
		return fmt.Errorf("log archive: run %s: %w", run, err)
	}
	return nil
}
