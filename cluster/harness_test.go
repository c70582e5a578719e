package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-ci/kiln/internal/testenv"
)

// kilnBinary is the kiln command, built once, for the worker processes.
func kilnBinary(t *testing.T) string {
	t.Helper()
	testenv.Short(t, "builds the kiln binary and runs worker processes")
	return testenv.KilnBinary(t)
}

// testFleet is an embedded fleet in the test process plus worker processes.
type testFleet struct {
	t       *testing.T
	dir     string
	listen  string
	opts    Options
	f       *Fleet
	ctx     context.Context
	workers map[string]*workerProc
}

type workerProc struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.Buffer
	done chan error
}

func testPolicyFast() Policy {
	return Policy{LeaseTTL: 2 * time.Second, WorkerTTL: 2 * time.Second, MaxAttempts: 3, DefaultCost: time.Second}
}

func newTestFleet(t *testing.T, o Options) *testFleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	if o.Listen == "" {
		o.Listen = testenv.FreeAddr(t)
	}
	if o.Policy.LeaseTTL == 0 {
		o.Policy = testPolicyFast()
	}
	tf := &testFleet{t: t, dir: o.StateDir, listen: o.Listen, opts: o, ctx: ctx, workers: map[string]*workerProc{}}
	tf.start()
	t.Cleanup(func() {
		for _, w := range tf.workers {
			w.stop()
		}
		if tf.f != nil {
			tf.f.Close()
		}
	})
	return tf
}

func (tf *testFleet) start() {
	tf.t.Helper()
	f, err := StartEmbedded(tf.ctx, tf.opts)
	if err != nil {
		tf.t.Fatal(err)
	}
	tf.f = f
}

// startInProcessWorker runs a shell worker in the test process on a worker connection of
// the fleet until the test ends.
func startInProcessWorker(t *testing.T, tf *testFleet, name string) *Worker {
	t.Helper()
	nc, err := Connect(tf.ctx, ConnOptions{URL: tf.f.URL, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(nc, WorkerOptions{Name: name, Pool: "linux-x86_64", Capacity: 2, StateDir: t.TempDir(),
		Runner: &ShellRunner{WorkDir: t.TempDir()}, HealthEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(tf.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done; nc.Close() })
	tf.waitWorkers(1)
	return w
}

// restart stops the scheduler and the NATS server and starts both again on the same
// state folder and address.
func (tf *testFleet) restart() {
	tf.t.Helper()
	tf.f.Close()
	tf.f = nil
	tf.start()
}

func (tf *testFleet) worker(name, pool string, capacity int, extra ...string) *workerProc {
	tf.t.Helper()
	bin := kilnBinary(tf.t)
	args := append([]string{"worker", "--nats", "nats://" + tf.listen, "--name", name, "--pool", pool,
		"--capacity", fmt.Sprint(capacity), "--runner", "shell", "--state-dir", filepath.Join(tf.dir, "w-"+name),
		"--health-every", "500ms"}, extra...)
	if !slices.Contains(extra, "--token") {
		args = append(args, "--token", tf.f.WorkerToken)
	}
	return tf.startProc(name, bin, args...)
}

func (tf *testFleet) startProc(name, bin string, args ...string) *workerProc {
	tf.t.Helper()
	w := startProcess(tf.t, name, bin, args...)
	tf.workers[name+fmt.Sprint(len(tf.workers))] = w
	return w
}

// startProcess runs a kiln process in a process group of its own; its output is logged
// when the test fails. The caller stops it.
func startProcess(t *testing.T, name, bin string, args ...string) *workerProc {
	t.Helper()
	w := &workerProc{name: name, out: &testenv.Buffer{}, done: make(chan error, 1)}
	w.cmd = exec.Command(bin, args...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, w.out.String())
		}
	})
	return w
}

func (w *workerProc) stop() {
	if w.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
}

// kill sends SIGKILL to the worker process alone (its running build is left orphaned,
// as when a machine dies, and killed by the test's cleanup).
func (w *workerProc) kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (tf *testFleet) waitFor(what string, timeout time.Duration, cond func() bool) {
	tf.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tf.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (tf *testFleet) waitWorkers(n int) {
	tf.t.Helper()
	tf.waitFor(fmt.Sprintf("%d active workers", n), 30*time.Second, func() bool {
		ws, err := tf.f.Client.Workers(tf.ctx)
		if err != nil {
			return false
		}
		c := 0
		for _, w := range ws {
			if w.State == "active" {
				c++
			}
		}
		return c >= n
	})
}

func (tf *testFleet) submit(r Request) *Job {
	tf.t.Helper()
	if r.Pool == "" {
		r.Pool = "linux-x86_64"
	}
	if r.Client == "" {
		r.Client = "test"
	}
	ctx, cancel := context.WithTimeout(tf.ctx, 30*time.Second)
	defer cancel()
	j, err := tf.f.Client.Submit(ctx, r)
	if err != nil {
		tf.t.Fatal(err)
	}
	return j
}

func (tf *testFleet) wait(id string) *Job {
	tf.t.Helper()
	ctx, cancel := context.WithTimeout(tf.ctx, 60*time.Second)
	defer cancel()
	j, err := tf.f.Client.Wait(ctx, id)
	if err != nil {
		tf.t.Fatal(err)
	}
	return j
}

func (tf *testFleet) job(id string) *Job {
	tf.t.Helper()
	j, err := tf.f.Client.Job(tf.ctx, id)
	if err != nil {
		tf.t.Fatal(err)
	}
	return j
}

func (tf *testFleet) log(id string) string {
	tf.t.Helper()
	var b bytes.Buffer
	ctx, cancel := context.WithTimeout(tf.ctx, 10*time.Second)
	defer cancel()
	if _, err := tf.f.Client.Log(ctx, id, 0, false, &b); err != nil {
		tf.t.Fatal(err)
	}
	return b.String()
}

func (tf *testFleet) admin(args ...string) (string, error) {
	if !slices.Contains(args, "--nats-token") {
		args = append(args, "--nats-token", tf.f.ClientToken)
	}
	cmd := exec.Command(kilnBinary(tf.t), append([]string{"admin", "--nats", "nats://" + tf.listen}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(p string) error  { return os.WriteFile(p, []byte("x"), 0o644) }
func removeFile(p string) error { return os.Remove(p) }

// processRuns reports whether pid is a live process: a killed one may linger as a zombie
// until its (new) parent reaps it, which does not count.
func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// checkTrace reads a trace of "start ID" and "end ID" lines written by jobs and fails
// when a job started again while it ran or when not n jobs ran; it returns the runs per job.
func checkTrace(t *testing.T, trace string, n int) map[string]int {
	t.Helper()
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]bool{}
	runs := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		what, id, _ := strings.Cut(line, " ")
		switch what {
		case "start":
			if open[id] {
				t.Fatalf("job %s started again while running:\n%s", id, b)
			}
			open[id] = true
			runs[id]++
		case "end":
			open[id] = false
		}
	}
	if len(runs) != n {
		t.Fatalf("%d jobs ran, want %d", len(runs), n)
	}
	return runs
}
