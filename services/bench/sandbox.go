package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kiln-ci/kiln/builder"
	"github.com/kiln-ci/kiln/builder/spec"
	"github.com/kiln-ci/kiln/services/bench/benchfmt"
	"github.com/kiln-ci/kiln/services/bench/store"
	"github.com/kiln-ci/kiln/services/internal/opamenv"
)

// Sandbox runs benchmark jobs in the builder's sandbox on a base image (Debian's
// OCaml in the default one): both trees copied in, then one step that runs the base
// and the head alternately, each under setarch -R, in a tmpfs work dir.
type Sandbox struct {
	Builder *builder.Builder
	Image   string
	// Deps, when set, installs the opam dependencies of the head's opam files in a
	// layer of their own, before the benchmark's step.
	Deps *Deps
}

// armMarker starts the output of one run of an arm in the step's log; machineMarker
// starts a line of the machine's state as the step sees it.
const (
	armMarker     = "## kiln-bench repeat "
	machineMarker = "## kiln-bench machine "
)

// notCountedInSandbox is the machine's note on counters for runs in the sandbox.
const notCountedInSandbox = "not counted: counters are read around the host runner's runs only (the sandbox refuses perf_event_open)"

// workDir is the benchmark step's work dir, an in-memory file system the trees are
// copied to, so that the disk's latency is not measured.
const workDir = "/bench"

// Spec is the build spec of job, whose context holds head/ and (for a PR) base/, and
// the opam layer deps (nil: none) installs first.
func (s Sandbox) Spec(job Job, nonce string, deps *opamenv.Layer) (*spec.Spec, error) {
	var env strings.Builder
	keys := make([]string, 0, len(job.Env))
	for k := range job.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&env, "export %s=%s; ", k, shellQuote(job.Env[k]))
	}
	arms := "head"
	if job.BaseDir != "" {
		arms = "base head"
	}
	// The nonce makes every job's step new: a benchmark is never replayed from the cache.
	script := fmt.Sprintf(`: kiln-bench %s
echo "%scpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "%skernel=$(uname -r)"
echo "%sgovernor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo none exposed)"
echo "%scpus=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)"
cp -a /src/. %s/
cmd=%s
for i in $(seq 1 %d); do
  for arm in %s; do
    echo "%s$i/%d: $arm"
    (cd %s/$arm && %s timeout %d setarch "$(uname -m)" -R sh -c "$cmd") || { echo "kiln-bench: $arm failed in repeat $i" >&2; exit 1; }
  done
done`, nonce, machineMarker, machineMarker, machineMarker, machineMarker, workDir, shellQuote(job.Command), job.Repeats, arms, armMarker, job.Repeats, workDir, env.String(), int(job.Timeout.Seconds()))
	sp := &spec.Spec{From: s.Image}
	if deps != nil {
		sp.Ops = append(deps.Setup(), deps.InstallOp())
	}
	sp.Ops = append(sp.Ops,
		spec.Workdir{Path: "/src"},
		spec.Copy{Src: []string{"."}, Dst: "/src/", Exclude: []string{opamenv.ContextDir}},
		spec.Run{Shell: script, Tmpfs: []string{workDir}})
	if err := sp.Validate(); err != nil {
		return nil, fmt.Errorf("bench spec: %w", err)
	}
	return sp, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Run runs job in the sandbox, copying its log to log and each arm's output, as it is
// printed, to the arm's parser.
func (s Sandbox) Run(ctx context.Context, job Job, log io.Writer) (out Outcome) {
	if job.Repeats <= 0 {
		job.Repeats = 1
	}
	if job.Timeout <= 0 {
		job.Timeout = defaultTimeout
	}
	if log == nil {
		log = io.Discard
	}
	m := MachineState(job.CPUs)
	if m.CountersNote == "" {
		m.CountersNote = notCountedInSandbox
	}
	demux := newArmDemux(job, m)
	defer func() { out = demux.outcome(out.Err) }()
	log = io.MultiWriter(log, demux) // the demux counts every line of the log
	dir, sp, err := s.prepare(ctx, job, log)
	if err != nil {
		out.Err = err
		return out
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, job.total())
	defer cancel()
	if _, err := s.Builder.Build(ctx, sp, builder.BuildContext{Dir: dir}, log); err != nil {
		out.Err = fmt.Errorf("benchmark in the sandbox: %w", err)
	}
	return out
}

// total bounds a whole job: every run of every arm, and one more for the build.
func (job Job) total() time.Duration {
	arms := 1
	if job.BaseDir != "" {
		arms = 2
	}
	return time.Duration(job.Repeats*arms+1) * job.Timeout
}

// prepare makes job's build context (head/ and base/ copied, without .git; the opam
// layer of the head's dependencies with Deps) and spec.
func (s Sandbox) prepare(ctx context.Context, job Job, log io.Writer) (string, *spec.Spec, error) {
	dir, err := os.MkdirTemp("", "kiln-bench-context-")
	if err != nil {
		return "", nil, err
	}
	trees := map[string]string{"head": job.Dir}
	if job.BaseDir != "" {
		trees["base"] = job.BaseDir
	}
	for arm, src := range trees {
		if b, err := exec.CommandContext(ctx, "cp", "-a", src, filepath.Join(dir, arm)).CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("copy the %s tree: %v: %s", arm, err, b)
		}
		os.RemoveAll(filepath.Join(dir, arm, ".git"))
	}
	var layer *opamenv.Layer
	if s.Deps != nil {
		if layer, err = s.Deps.Layer(ctx, dir, filepath.Join(dir, "head"), log); err != nil {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("the opam layer of the dependencies: %w", err)
		}
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	sp, err := s.Spec(job, hex.EncodeToString(nonce), layer)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, sp, nil
}

// armDemux sends each line of a step's log to the parser of the arm whose run printed
// it, as the arm markers say, and reads the machine's state the step printed.
type armDemux struct {
	parsers map[string]*benchfmt.Parser
	current string // the arm printing now
	partial []byte
	machine store.Machine
	// lines counts the log's complete lines, armLines each arm's; log places the
	// arms' output in the log.
	lines    int
	armLines map[string]int
	log      []store.LogSpan
}

func newArmDemux(job Job, m store.Machine) *armDemux {
	d := &armDemux{parsers: map[string]*benchfmt.Parser{"head": benchfmt.NewParser(benchfmt.Limits{})}, machine: m, armLines: map[string]int{}}
	if job.BaseDir != "" {
		d.parsers["base"] = benchfmt.NewParser(benchfmt.Limits{})
	}
	return d
}

// outcome ends the parsing: what each arm printed, the machine, err.
func (d *armDemux) outcome(err error) Outcome {
	d.flush()
	o := Outcome{Head: d.parsers["head"].Close(), Machine: d.machine, Err: err, Log: d.log, logLines: d.lines}
	if p := d.parsers["base"]; p != nil {
		o.Base = p.Close()
	}
	return o
}

func (d *armDemux) Write(p []byte) (int, error) {
	d.partial = append(d.partial, p...)
	for {
		i := bytes.IndexByte(d.partial, '\n')
		if i < 0 {
			break
		}
		d.line(d.partial[:i+1])
		d.partial = d.partial[i+1:]
	}
	if len(d.partial) > 1<<20 { // a very long line: pass it on in pieces
		d.line(d.partial)
		d.partial = d.partial[:0]
	}
	return len(p), nil
}

func (d *armDemux) line(l []byte) {
	if len(l) > 0 && l[len(l)-1] == '\n' {
		d.lines++
	}
	if i := bytes.Index(l, []byte(machineMarker)); i >= 0 {
		k, v, _ := strings.Cut(strings.TrimSpace(string(l[i+len(machineMarker):])), "=")
		switch k {
		case "cpu":
			d.machine.CPU = v
		case "kernel":
			d.machine.Kernel = v
		case "governor":
			d.machine.Governor = v
		case "cpus":
			d.machine.CPUs = v
		}
		return
	}
	if i := bytes.Index(l, []byte(armMarker)); i >= 0 {
		arm := strings.TrimSpace(string(l[i+len(armMarker):]))
		if _, a, ok := strings.Cut(arm, ": "); ok && d.parsers[a] != nil {
			d.current = a
			d.log = append(d.log, store.LogSpan{Arm: armOf[a], Line: d.armLines[a] + 1, LogLine: d.lines + 1})
		}
		return
	}
	if p := d.parsers[d.current]; p != nil {
		p.Write(l)
		if l[len(l)-1] == '\n' {
			d.armLines[d.current]++
		}
	}
}

// armOf is the store's arm of each arm the step's markers name.
var armOf = map[string]store.Arm{"head": store.Head, "base": store.Base}

func (d *armDemux) flush() {
	if len(d.partial) > 0 {
		d.line(d.partial)
		d.partial = nil
	}
}
