package nixrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-ci/kiln/cluster"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Nix runner.
type Options struct {
	// WorkDir holds each run's garbage collector roots while it runs.
	WorkDir string
	// Store is the Nix store used (nix --store): "" is the system store (/nix/store),
	// a folder is a store kept below that folder (its paths still named /nix/store/…).
	Store string
	// SandboxPaths are host paths the Nix sandbox shows builders (extra-sandbox-paths),
	// as PATH or INSIDE=HOST, e.g. /usr and /bin=/usr/bin for the host's OCaml.
	SandboxPaths []string
	// Settings are further Nix settings (--option NAME VALUE), e.g. substituters set
	// to "" on a machine without network.
	Settings map[string]string
	// BuildUsersGroup is the group of Nix's build users; "" builds as the worker's own
	// user (root) inside the sandbox.
	BuildUsersGroup string
	// MinFree is the free space (bytes) garbage collection keeps on the store's file
	// system; Budget, when set, the largest store size (bytes) it keeps.
	MinFree, Budget int64
	// Bin is the folder of the Nix commands; "" finds them on PATH.
	Bin      string
	Logger   *slog.Logger
	Registry prometheus.Registerer // metrics kiln_nix_* go here when set
}

// Runner builds Nix expressions; it implements cluster.Runner, cluster.OutputRunner,
// cluster.HealthChecker and cluster.Pruner.
type Runner struct {
	o   Options
	log *slog.Logger
	m   *metrics
	// gc is held for writing while the store is collected, for reading while a run
	// evaluates an expression and until its derivations have a root.
	gc sync.RWMutex
}

// New checks the options and makes the work folder.
func New(o Options) (*Runner, error) {
	if o.WorkDir == "" {
		return nil, errors.New("nix runner: no work folder")
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("nix runner: %w", err)
	}
	for _, p := range o.SandboxPaths {
		if p == "" || strings.ContainsAny(p, " \t\n") {
			return nil, fmt.Errorf("nix runner: sandbox path %q: want PATH or INSIDE=HOST without blanks", p)
		}
	}
	if o.Store != "" && !strings.Contains(o.Store, "://") && !strings.Contains(o.Store, "?") {
		abs, err := filepath.Abs(o.Store)
		if err != nil {
			return nil, fmt.Errorf("nix runner: store %s: %w", o.Store, err)
		}
		o.Store = abs
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Runner{o: o, log: o.Logger.With("part", "nix"), m: newMetrics(o.Registry)}, nil
}

// Run implements cluster.Runner: the first output path is the snapshot.
func (r *Runner) Run(ctx context.Context, t cluster.Task, log io.Writer) (string, error) {
	snap, _, err := r.RunOutput(ctx, t, log)
	return snap, err
}

// RunOutput implements cluster.OutputRunner: it evaluates the job's expression, builds
// it and measures the outputs' closure. An expression that does not evaluate or a
// builder that fails is the project's fault (an Output with a Failure, and an error
// that is not marked as the infrastructure's); Nix failing for the machine's sake (no
// store access, a damaged store, downloads, the sandbox) is marked as infrastructure.
func (r *Runner) RunOutput(ctx context.Context, t cluster.Task, log io.Writer) (string, json.RawMessage, error) {
	s, err := ParseSpec(t.Spec)
	if err != nil {
		fmt.Fprintf(log, "%v\n", err)
		return "", nil, err
	}
	if t.Context == "" {
		return "", nil, fmt.Errorf("nix job %s: no source tree to build %s from", t.ID, s)
	}
	runDir, err := os.MkdirTemp(r.o.WorkDir, "run-"+t.ID+"-")
	if err != nil {
		return "", nil, cluster.Infrastructure(fmt.Errorf("nix work folder: %w", err))
	}
	defer os.RemoveAll(runDir) // the roots: the outputs stay in the store, as its cache
	out := Output{Spec: s.String()}
	fmt.Fprintf(log, "nix: building %s\n", s)
	paths, err := r.build(ctx, s, t.Context, runDir, log)
	var f *Failure
	if errors.As(err, &f) {
		out.Failure = f
		r.m.runs.WithLabelValues(string(f.Kind)).Inc()
		return "", encode(out), err
	}
	if err != nil {
		r.m.runs.WithLabelValues("infrastructure").Inc()
		return "", nil, err
	}
	out.Paths = paths
	if out.ClosureSize, out.ClosurePaths, err = r.closure(ctx, paths); err != nil {
		r.m.runs.WithLabelValues("infrastructure").Inc()
		return "", nil, cluster.Infrastructure(err)
	}
	r.m.runs.WithLabelValues("ok").Inc()
	r.m.closure.Observe(float64(out.ClosureSize))
	for _, p := range paths {
		fmt.Fprintf(log, "nix: output %s\n", p)
	}
	fmt.Fprintf(log, "nix: closure of %d store paths, %d bytes\n", out.ClosurePaths, out.ClosureSize)
	return paths[0], encode(out), nil
}

func encode(o Output) json.RawMessage {
	b, _ := json.Marshal(o) // strings, numbers and string slices always encode
	return b
}

// build evaluates and builds s in src, keeping the roots in runDir, and returns the
// output paths.
func (r *Runner) build(ctx context.Context, s Spec, src, runDir string, log io.Writer) ([]string, error) {
	if s.Flake != "" {
		return r.buildFlake(ctx, s, src, runDir, log)
	}
	drvRoot := filepath.Join(runDir, "drv")
	args := []string{s.file(), "--add-root", drvRoot}
	if s.Attr != "" {
		args = append(args, "-A", s.Attr)
	}
	r.gc.RLock()
	_, err := r.step(ctx, "nix-instantiate", src, args, log, FailEvaluation)
	r.gc.RUnlock()
	if err != nil {
		return nil, err
	}
	drvs, err := rootsIn(runDir, "drv")
	if err != nil {
		return nil, cluster.Infrastructure(err)
	}
	res, err := r.step(ctx, "nix-store", src, append([]string{"--realise", "--add-root", filepath.Join(runDir, "out")}, drvs...), log, FailBuild)
	if err != nil {
		return nil, err
	}
	return resolveRoots(res.stdout)
}

// buildFlake evaluates the flake output's derivation (so that an evaluation error is
// told from a failed build) and builds it.
func (r *Runner) buildFlake(ctx context.Context, s Spec, src, runDir string, log io.Writer) ([]string, error) {
	ref := "path:" + src + "#" + s.Flake
	common := []string{"--no-write-lock-file", "--print-build-logs"}
	if s.Impure {
		common = append(common, "--impure")
	}
	r.gc.RLock()
	_, err := r.step(ctx, "nix", src, append([]string{"eval", "--raw", ref + ".drvPath"}, common...), log, FailEvaluation)
	r.gc.RUnlock()
	if err != nil {
		return nil, err
	}
	res, err := r.step(ctx, "nix", src, append([]string{"build", "--json", "--out-link", filepath.Join(runDir, "out"), ref}, common...), log, FailBuild)
	if err != nil {
		return nil, err
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(res.stdout, &built); err != nil {
		return nil, cluster.Infrastructure(fmt.Errorf("nix build --json: %w: %q", err, res.stdout))
	}
	var paths []string
	for _, b := range built {
		for _, p := range b.Outputs {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		return nil, cluster.Infrastructure(fmt.Errorf("nix build %s: no output paths", ref))
	}
	return paths, nil
}

// rootsIn lists the store paths the roots named prefix* in dir point at.
func rootsIn(dir, prefix string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(dir, prefix+"*"))
	if err != nil || len(names) == 0 {
		return nil, fmt.Errorf("no garbage collector root %s* in %s", prefix, dir)
	}
	var out []string
	for _, n := range names {
		p, err := os.Readlink(n)
		if err != nil {
			return nil, fmt.Errorf("root %s: %w", n, err)
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// resolveRoots turns what nix-store --realise --add-root prints (the roots) into the
// store paths they point at.
func resolveRoots(stdout []byte) ([]string, error) {
	var paths []string
	for _, l := range strings.Fields(string(stdout)) {
		p := l
		if !strings.HasPrefix(l, "/nix/store/") {
			var err error
			if p, err = os.Readlink(l); err != nil {
				return nil, cluster.Infrastructure(fmt.Errorf("nix-store --realise printed %q: %w", l, err))
			}
		}
		paths = append(paths, p)
	}
	if len(paths) == 0 {
		return nil, cluster.Infrastructure(errors.New("nix-store --realise printed no output path"))
	}
	return paths, nil
}

// closure measures the outputs and everything they refer to.
func (r *Runner) closure(ctx context.Context, paths []string) (int64, int, error) {
	res, err := r.query(ctx, append([]string{"-q", "--requisites"}, paths...))
	if err != nil {
		return 0, 0, err
	}
	req := strings.Fields(string(res))
	if len(req) == 0 {
		return 0, 0, fmt.Errorf("nix-store -q --requisites %v: nothing", paths)
	}
	sizes, err := r.query(ctx, append([]string{"-q", "--size"}, req...))
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for _, f := range strings.Fields(string(sizes)) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("nix-store -q --size: %q is not a size", f)
		}
		total += n
	}
	return total, len(req), nil
}

// query runs a nix-store query and returns its output.
func (r *Runner) query(ctx context.Context, args []string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := r.command(ctx, "nix-store", "", args)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-store %s: %w: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// stepResult is what a Nix command printed on its standard output.
type stepResult struct{ stdout []byte }

// step runs a Nix command, its standard error (Nix's messages and the builders'
// output) streamed to log, and judges a failure: the infrastructure's when Nix says
// so, else a Failure of kind.
func (r *Runner) step(ctx context.Context, name, dir string, args []string, log io.Writer, kind FailureKind) (stepResult, error) {
	cmd := r.command(ctx, name, dir, args)
	var stdout bytes.Buffer
	tail := &lineTail{max: 200}
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(log, tail)
	err := cmd.Run()
	if err == nil {
		return stepResult{stdout: stdout.Bytes()}, nil
	}
	if ctx.Err() != nil {
		return stepResult{}, ctx.Err()
	}
	lines := tail.lines()
	if dir != "" {
		// The worker's copy of the tree means nothing to the project: name its files
		// as in the repository.
		for i, l := range lines {
			lines[i] = strings.ReplaceAll(strings.ReplaceAll(l, dir+"/", ""), dir, ".")
		}
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return stepResult{}, cluster.Infrastructure(fmt.Errorf("%s: %w", name, err))
	}
	if l := infrastructure(lines); l != "" {
		return stepResult{}, cluster.Infrastructure(fmt.Errorf("%s (exit %d): %s", name, exit.ExitCode(), l))
	}
	if kind == FailEvaluation {
		return stepResult{}, evaluationFailure(lines)
	}
	// nix-store --realise exits with 100 when builds failed, 102 on a wrong hash.
	if code := exit.ExitCode(); builderFault(lines) || code == 100 || code == 102 {
		return stepResult{}, buildFailure(lines)
	}
	return stepResult{}, cluster.Infrastructure(fmt.Errorf("%s (exit %d) failed with no builder failing: %s", name, exit.ExitCode(), strings.Join(lastLines(lines, 5), " | ")))
}

// command is a Nix command with the runner's store and settings, in its own process
// group, interrupted (then killed) when ctx ends.
func (r *Runner) command(ctx context.Context, name, dir string, args []string) *exec.Cmd {
	bin := name
	if r.o.Bin != "" {
		bin = filepath.Join(r.o.Bin, name)
	}
	var full []string
	if name == "nix" {
		full = append(full, args[0], "--extra-experimental-features", "nix-command flakes")
		args = args[1:]
	}
	full = append(full, r.settings()...)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	home := filepath.Join(r.o.WorkDir, "home")
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, ".cache"), "NIX_PATH="}
	return cmd
}

// settings are the options every Nix command takes.
func (r *Runner) settings() []string {
	var a []string
	if r.o.Store != "" {
		a = append(a, "--store", r.o.Store)
	}
	a = append(a, "--option", "sandbox", "true", "--option", "sandbox-fallback", "false",
		"--option", "build-users-group", r.o.BuildUsersGroup)
	if len(r.o.SandboxPaths) > 0 {
		a = append(a, "--option", "extra-sandbox-paths", strings.Join(r.o.SandboxPaths, " "))
	}
	names := make([]string, 0, len(r.o.Settings))
	for k := range r.o.Settings {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a = append(a, "--option", k, r.o.Settings[k])
	}
	return a
}

// lineTail keeps the last lines written to it.
type lineTail struct {
	mu      sync.Mutex
	max     int
	partial []byte
	done    []string
}

func (t *lineTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.done = append(t.done, string(t.partial[:i]))
		t.partial = t.partial[i+1:]
		if len(t.done) > 2*t.max {
			t.done = append([]string(nil), t.done[len(t.done)-t.max:]...)
		}
	}
	return len(p), nil
}

func (t *lineTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.done...)
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
	}
	return lastLines(out, t.max)
}
