package detect

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Recording is the noise of a real CPU-bound benchmark on one machine: bursts of
// consecutive timings (one burst stands for one benchmark job), taken at intervals so
// that the machine's load changes between them as it does between commits.
type Recording struct {
	Benchmark string    `json:"benchmark"`
	CPU       string    `json:"cpu"`
	CPUs      int       `json:"cpus"`
	Kernel    string    `json:"kernel"`
	Recorded  time.Time `json:"recorded"`
	Gap       string    `json:"gap"` // the pause between bursts
	// Counters says why instructions retired were not recorded, when they were not.
	Counters string `json:"counters,omitempty"`
	// Load is the lowest and highest 1-minute load average seen before the bursts:
	// how quiet the machine was.
	Load []float64 `json:"load,omitempty"`
	// Bursts are the timings in nanoseconds.
	Bursts [][]float64 `json:"bursts"`
	// Instructions are the instructions retired per timing, where counted.
	Instructions [][]float64 `json:"instructions,omitempty"`
}

// RecordOptions say how much noise to record.
type RecordOptions struct {
	Bursts    int           // default 150
	BurstSize int           // default 20
	Gap       time.Duration // default 1s
	// Work is the benchmark's size: SHA-256 of this many MiB per timing (default 8).
	Work int
	// MaxLoad, when above 0, refuses to record when the 1-minute load average is above
	// it at the start: noise recorded on a busy machine is that of the other work.
	MaxLoad float64
}

// LoadAverage is this machine's 1-minute load average.
func LoadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, fmt.Errorf("load average: %w", err)
	}
	return parseLoadAvg(string(b))
}

func parseLoadAvg(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("load average: /proc/loadavg is empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("load average: %q in /proc/loadavg is not a load", f[0])
	}
	return v, nil
}

// ErrBusy is the error of a recording refused because the machine was not quiet.
var ErrBusy = errors.New("the machine is not quiet")

// Record times a CPU-bound benchmark (SHA-256 of a buffer) in bursts on this machine.
func Record(ctx context.Context, o RecordOptions) (*Recording, error) {
	if o.Bursts <= 0 {
		o.Bursts = 150
	}
	if o.BurstSize <= 0 {
		o.BurstSize = 20
	}
	if o.Gap <= 0 {
		o.Gap = time.Second
	}
	if o.Work <= 0 {
		o.Work = 8
	}
	load, err := LoadAverage()
	if err != nil {
		return nil, err
	}
	if o.MaxLoad > 0 && load > o.MaxLoad {
		return nil, fmt.Errorf("%w: load average %.2f, above %.2f", ErrBusy, load, o.MaxLoad)
	}
	rec := &Recording{Load: []float64{load, load},
		Benchmark: fmt.Sprintf("SHA-256 of %d MiB", o.Work),
		CPU:       cpuModel(), CPUs: runtime.NumCPU(), Kernel: kernel(),
		Recorded: time.Now().UTC().Truncate(time.Second), Gap: o.Gap.String(),
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var counter *Counter
	if ok, why := CountersAvailable(); ok {
		c, err := OpenInstructions(false)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		counter = c
	} else {
		rec.Counters = why
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var sink byte
	for b := range o.Bursts {
		if l, err := LoadAverage(); err == nil {
			rec.Load[0], rec.Load[1] = min(rec.Load[0], l), max(rec.Load[1], l)
		}
		times := make([]float64, o.BurstSize)
		var instrs []float64
		for i := range times {
			var before uint64
			if counter != nil {
				before, _ = counter.Read()
			}
			start := time.Now()
			h := sha256.New()
			for range o.Work {
				h.Write(buf)
			}
			sink ^= h.Sum(nil)[0]
			times[i] = float64(time.Since(start).Nanoseconds())
			if counter != nil {
				after, _ := counter.Read()
				instrs = append(instrs, float64(after-before))
			}
		}
		rec.Bursts = append(rec.Bursts, times)
		if counter != nil {
			rec.Instructions = append(rec.Instructions, instrs)
		}
		if b < o.Bursts-1 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(o.Gap):
			}
		}
	}
	_ = sink
	return rec, nil
}

// Load reads a recording written by Save.
func Load(path string) (*Recording, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Recording
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("noise recording %s: %w", path, err)
	}
	if len(r.Bursts) == 0 {
		return nil, fmt.Errorf("noise recording %s has no timings", path)
	}
	return &r, nil
}

// Save writes r to path as JSON.
func (r *Recording) Save(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
