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
}

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
	head := benchfmt.NewParser(benchfmt.Limits{})
	var base *benchfmt.Parser
	if job.BaseDir != "" {
		base = benchfmt.NewParser(benchfmt.Limits{})
	}
	logc := &lineCount{w: log}
	defer func() {
		out.Head = head.Close()
		if base != nil {
			out.Base = base.Close()
		}
		out.logLines = logc.n
	}()
	type arm struct {
		arm  store.Arm
		name string
		dir  string
		out  *lineCount
	}
	var arms []arm
	if base != nil {
		arms = append(arms, arm{store.Base, "base", job.BaseDir, &lineCount{w: base}})
	}
	arms = append(arms, arm{store.Head, "head", job.Dir, &lineCount{w: head}})
	for i := range job.Repeats {
		for _, a := range arms {
			fmt.Fprintf(logc, "## repeat %d/%d: %s\n", i+1, job.Repeats, a.name)
			out.Log = append(out.Log, store.LogSpan{Arm: a.arm, Line: a.out.next(), LogLine: logc.next()})
			if err := runOnce(ctx, job, a.dir, io.MultiWriter(logc, a.out)); err != nil {
				out.Err = fmt.Errorf("repeat %d of the %s: %w", i+1, a.name, err)
				return out
			}
		}
	}
	return out
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

func runOnce(ctx context.Context, job Job, dir string, w io.Writer) error {
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
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %q: %w", job.Command, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%q: %w", job.Command, err)
		}
		return nil
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: %q ran for %s and was killed", ErrTimeout, job.Command, job.Timeout)
		}
		return ctx.Err()
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
	m.Counters, _ = detect.CountersAvailable()
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
