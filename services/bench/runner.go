package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/detect"
	"github.com/kiln-ci/kiln/services/bench/store"
)

// Job is one benchmark run on a slot: the head's checkout and, for a PR, the base's,
// run alternately (base, head, base, head, …) so that the machine's drift hits both.
type Job struct {
	Dir     string // the head's checkout
	BaseDir string // the base's checkout; "" for a branch run
	Command string // run with sh -c in the checkout
	Env     map[string]string
	Repeats int
	// Timeout ends one run of the command that takes longer (default 1h).
	Timeout time.Duration
	// CPUs pins the runs to these CPUs (the slot's cpuset, "2" or "2,3"); "" runs
	// anywhere.
	CPUs string
	// Count is the performance counter read around each run by the host runner, its
	// counts recorded as the metric kiln/counters/EVENT: "" counts instructions
	// retired where the CPU exposes them, "task-clock" the CPU time, "none" nothing.
	Count string
}

// counted is the benchmark and test of the counts read around the runs.
const countedBench, countedTest = "kiln", "counters"

// Outcome is what a job printed and measured.
type Outcome struct {
	Head    *benchfmt.Output
	Base    *benchfmt.Output // nil for a branch run
	Machine store.Machine
	// Log places each arm's output in the log the job wrote, whose first line is 1.
	Log []store.LogSpan
	// logLines is how many lines the runner's log had; logTail, how many lines were
	// written to the engine job's log after them (a fleet job's retries).
	logLines, logTail int
	// Err is why the job stopped early (a failing or never-ending command); the results
	// printed before it are kept in Head and Base.
	Err error
}

// defaultTimeout ends one run of a benchmark that gives no timeout.
const defaultTimeout = time.Hour

// ErrTimeout is the error of a run that did not finish within the job's timeout.
var ErrTimeout = errors.New("the benchmark did not finish in time")

// Run runs job, copying everything printed to log, with ASLR off where setarch is
// installed. The results are parsed while the command prints them.
func Run(ctx context.Context, job Job, log io.Writer) (out Outcome) {
	if job.Repeats <= 0 {
		job.Repeats = 1
	}
	if job.Timeout <= 0 {
		job.Timeout = defaultTimeout
	}
	if log == nil {
		log = io.Discard
	}
	out = Outcome{Machine: MachineState(job.CPUs)}
	ev, count := counterOf(job.Count, out.Machine)
	head := benchfmt.NewParser(benchfmt.Limits{})
	var base *benchfmt.Parser
	if job.BaseDir != "" {
		base = benchfmt.NewParser(benchfmt.Limits{})
	}
	logc := &lineCount{w: log}
	type arm struct {
		arm    store.Arm
		name   string
		dir    string
		out    *lineCount
		parser *benchfmt.Parser
		counts []float64
	}
	var arms []*arm
	if base != nil {
		arms = append(arms, &arm{store.Base, "base", job.BaseDir, &lineCount{w: base}, base, nil})
	}
	arms = append(arms, &arm{store.Head, "head", job.Dir, &lineCount{w: head}, head, nil})
	defer func() {
		for _, a := range arms {
			o := a.parser.Close()
			if len(a.counts) > 0 {
				o.Benchmarks = append(o.Benchmarks, benchfmt.Benchmark{Name: countedBench, Version: 3, Results: []benchfmt.Result{{Test: countedTest,
					Metrics: []benchfmt.Metric{{Name: ev.Name, Units: ev.Units, Trend: benchfmt.LowerIsBetter, Value: benchfmt.Value{Kind: benchfmt.List, Samples: a.counts}}}}}})
			}
			if a.arm == store.Base {
				out.Base = o
			} else {
				out.Head = o
			}
		}
		out.logLines = logc.n
	}()
	for i := range job.Repeats {
		for _, a := range arms {
			fmt.Fprintf(logc, "## repeat %d/%d: %s\n", i+1, job.Repeats, a.name)
			out.Log = append(out.Log, store.LogSpan{Arm: a.arm, Line: a.out.next(), LogLine: logc.next()})
			n, err := runOnce(ctx, job, a.dir, io.MultiWriter(logc, a.out), ev, count)
			if err != nil {
				out.Err = fmt.Errorf("repeat %d of the %s: %w", i+1, a.name, err)
				return out
			}
			switch {
			case n.err != nil:
				count = false
				out.Machine.Counters, out.Machine.CountersNote = false, n.err.Error()
				fmt.Fprintf(logc, "kiln-bench: %v: no longer counted\n", n.err)
			case count:
				a.counts = append(a.counts, float64(n.n))
				out.Machine.Counters, out.Machine.CountersNote = true, ev.Name+" counted around each run"
			}
		}
	}
	return out
}

// counterOf is the event job.Count asks for, and whether to count it on machine m.
func counterOf(name string, m store.Machine) (detect.Event, bool) {
	switch name {
	case "none":
		return detect.Event{}, false
	case "":
		return detect.Instructions, m.CountersNote == "" // MachineState notes a missing PMU
	}
	return detect.EventNamed(name)
}

// lineCount counts the lines written through it to w.
type lineCount struct {
	w io.Writer
	n int
}

func (c *lineCount) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += bytes.Count(p[:n], []byte{'\n'})
	return n, err
}

// next is the line (1-based) the next byte written goes on.
func (c *lineCount) next() int { return c.n + 1 }

// count is what a counter read around one run: n, or why nothing.
type count struct {
	n   uint64
	err error
}

// runOnce runs job's command once in dir, its output to w; with count, ev is counted
// for the command and everything it starts.
func runOnce(ctx context.Context, job Job, dir string, w io.Writer, ev detect.Event, withCount bool) (c count, err error) {
	ctx, cancel := context.WithTimeout(ctx, job.Timeout)
	defer cancel()
	args := []string{"sh", "-c", job.Command}
	if p, err := exec.LookPath("setarch"); err == nil {
		args = append([]string{p, archName(), "-R"}, args...) // -R: no address space randomisation
	}
	if job.CPUs != "" {
		if p, err := exec.LookPath("taskset"); err == nil {
			args = append([]string{p, "-c", job.CPUs}, args...)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(job.Env))
	for k := range job.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+job.Env[k])
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if withCount {
		// The process inherits a counter of this thread: it is started from it, and
		// the thread serves nothing else until the process has ended.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if counter, err := detect.Open(ev, true); err != nil {
			c.err = err
		} else {
			defer counter.Close()
			defer func() {
				if c.err == nil {
					c.n, c.err = counter.Read()
				}
			}()
		}
	}
	if err := cmd.Start(); err != nil {
		return c, fmt.Errorf("start %q: %w", job.Command, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return c, fmt.Errorf("%q: %w", job.Command, err)
		}
		return c, nil
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return c, fmt.Errorf("%w: %q ran for %s and was killed", ErrTimeout, job.Command, job.Timeout)
		}
		return c, ctx.Err()
	}
}

func archName() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return runtime.GOARCH
	}
	return unix.ByteSliceToString(u.Machine[:])
}

// MachineState is the state of this machine recorded with each result: the CPU model,
// the frequency governor, the kernel and the CPUs of the slot.
func MachineState(cpus string) store.Machine {
	m := store.Machine{CPUs: cpus, Worker: hostname()}
	if ok, why := detect.CountersAvailable(); !ok {
		m.CountersNote = "instructions not counted: " + why
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"); err == nil {
		m.Governor = strings.TrimSpace(string(b))
	} else {
		m.Governor = "none exposed"
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
