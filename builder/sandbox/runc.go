package sandbox

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Runc runs commands with the runc command.
type Runc struct {
	// Binary is the runc executable.
	Binary string
	// Dir holds runc's state and the bundles of running commands.
	Dir string
	// CgroupParent is the cgroup (relative to the hierarchy root) under which each run
	// gets its own.
	CgroupParent string
	// DiskUsage, when set, returns the bytes written so far to a root filesystem or
	// mount source it was given (ok false for a directory it does not know): it enforces
	// Limits.Disk.
	DiskUsage func(dir string) (n int64, ok bool)
	// RunDir holds the shifted root filesystems and mounts of running commands when
	// they run in a user namespace (EnableUserNS); every level of it must let others
	// through (mode 0711), which a store in a private folder does not.
	RunDir string
	userns *userNS
	// NewPrivileges lets setuid programs (sudo, su) gain privileges in the sandbox; by
	// default every process runs with no_new_privs.
	NewPrivileges bool
}

// NewRunc returns a runc sandbox keeping its state under dir. It fails when runc is not
// installed.
func NewRunc(dir string) (*Runc, error) {
	bin, err := exec.LookPath("runc")
	if err != nil {
		return nil, fmt.Errorf("runc sandbox: %w (install the runc package)", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"state", "bundles"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("runc sandbox: %w", err)
		}
	}
	r := &Runc{Binary: bin, Dir: dir, CgroupParent: "kiln", RunDir: "/run/kiln/sandbox"}
	r.cleanStale()
	return r, nil
}

// cleanStale removes the containers, bundles and cgroups left by processes that died
// while running a command (container ids carry the pid of their process).
func (r *Runc) cleanStale() {
	stale := func(id string) bool {
		rest, ok := strings.CutPrefix(id, "kiln-")
		if !ok {
			return false
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			return false
		}
		return unix.Kill(pid, 0) == unix.ESRCH
	}
	if entries, err := os.ReadDir(r.RunDir); err == nil {
		for _, e := range entries {
			if stale(e.Name()) {
				removeMountDirs(filepath.Join(r.RunDir, e.Name()))
			}
		}
	}
	for _, sub := range []string{"state", "bundles"} {
		entries, _ := os.ReadDir(filepath.Join(r.Dir, sub))
		for _, e := range entries {
			if !stale(e.Name()) {
				continue
			}
			if sub == "state" {
				exec.Command(r.Binary, "--root", filepath.Join(r.Dir, "state"), "delete", "--force", e.Name()).Run()
			} else {
				unix.Unmount(filepath.Join(r.Dir, sub, e.Name(), "secrets"), unix.MNT_DETACH)
				os.RemoveAll(filepath.Join(r.Dir, sub, e.Name()))
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(cgroupRoot, "memory", r.CgroupParent))
	if CgroupVersion() == 2 {
		entries, _ = os.ReadDir(filepath.Join(cgroupRoot, r.CgroupParent))
	}
	for _, e := range entries {
		if e.IsDir() && stale(e.Name()) {
			(&memoryCgroup{version: CgroupVersion(), rel: path.Join(r.CgroupParent, e.Name())}).remove()
		}
	}
}

// Run runs cfg's command, writing its output (stdout and stderr together) to out line by
// line as it comes. A command that ran and failed returns an *ExitError; a timeout
// returns an error wrapping ErrTimeout; a fault of the sandbox itself wraps ErrSetup.
// Cancelling ctx kills the command.
func (r *Runc) Run(ctx context.Context, cfg Config, out io.Writer) (Result, error) {
	var b [8]byte
	rand.Read(b[:])
	id := fmt.Sprintf("kiln-%d-%s", os.Getpid(), hex.EncodeToString(b[:]))
	bundle := filepath.Join(r.Dir, "bundles", id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return Result{}, fmt.Errorf("%w: bundle: %v", ErrSetup, err)
	}
	defer os.RemoveAll(bundle)

	var mounts []specs.Mount
	if len(cfg.Secrets) > 0 {
		ms, cleanup, err := r.secretMounts(bundle, cfg)
		if err != nil {
			return Result{}, fmt.Errorf("%w: secrets: %v", ErrSetup, err)
		}
		defer cleanup()
		mounts = append(mounts, ms...)
		var targets []string
		for _, s := range cfg.Secrets {
			targets = append(targets, s.Target)
		}
		// Deferred before the shifted views are made, so that it runs after they are
		// undone, on the root filesystem as the store sees it.
		defer findStubs(cfg.Rootfs, targets).remove()
	}

	cgroupRel := path.Join(r.CgroupParent, id)
	mem, err := newMemoryCgroup(cgroupRel, cfg.Limits.Memory)
	if err != nil {
		return Result{}, fmt.Errorf("%w: memory limit: %v", ErrSetup, err)
	}
	defer mem.remove()

	sp := r.spec(cfg, path.Join("/", cgroupRel, "run"), mounts)
	if r.userns != nil {
		undo, err := r.shiftRun(id, cfg, sp)
		if err != nil {
			return Result{}, fmt.Errorf("%w: user namespace: %v", ErrSetup, err)
		}
		defer undo()
	}
	data, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrSetup, err)
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	state := filepath.Join(r.Dir, "state")
	logFile := filepath.Join(bundle, "runc.log")
	cmd := exec.Command(r.Binary, "--root", state, "--log", logFile, "--log-format", "json", "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return Result{}, fmt.Errorf("%w: start runc: %v", ErrSetup, err)
	}
	pw.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyLines(out, pr)
		pr.Close()
	}()

	// Kill the container when the context ends, the timeout passes or the disk budget
	// is spent.
	done := make(chan struct{})
	var timedOut, cancelled bool
	var diskUsed int64
	var mu sync.Mutex
	disk := r.newDiskWatch(cfg)
	overBudget := make(chan int64, 1)
	if disk != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			disk.run(done, overBudget)
		}()
	}
	var timeout <-chan time.Time
	if cfg.Timeout > 0 {
		t := time.NewTimer(cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-done:
			return
		case <-ctx.Done():
			mu.Lock()
			cancelled = true
			mu.Unlock()
		case <-timeout:
			mu.Lock()
			timedOut = true
			mu.Unlock()
		case n := <-overBudget:
			mu.Lock()
			diskUsed = n
			mu.Unlock()
		}
		for {
			exec.Command(r.Binary, "--root", state, "kill", "--all", id, "KILL").Run()
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	waitErr := cmd.Wait()
	close(done)
	wg.Wait()
	res := Result{Duration: time.Since(start)}
	if err := exec.Command(r.Binary, "--root", state, "delete", "--force", id).Run(); err != nil {
		slog.Debug("runc delete", "id", id, "err", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if msg := runcError(logFile); msg != "" && !cancelled && !timedOut && diskUsed == 0 {
		return res, fmt.Errorf("%w: runc: %s", ErrSetup, msg)
	}
	if waitErr != nil {
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			return res, fmt.Errorf("%w: runc: %v", ErrSetup, waitErr)
		}
		res.ExitCode = ee.ExitCode()
		if res.ExitCode < 0 { // runc itself killed by a signal
			res.ExitCode = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
		}
	}
	res.OOMKilled = cfg.Limits.Memory > 0 && res.ExitCode != 0 && mem.oomKilled(res.ExitCode)
	if disk != nil && diskUsed == 0 && !cancelled && !timedOut {
		// What was written since the last measurement counts too.
		if n := disk.used(); n > disk.budget {
			diskUsed = n
		}
	}
	switch {
	case cancelled:
		return res, fmt.Errorf("command cancelled: %w", ctx.Err())
	case timedOut:
		return res, fmt.Errorf("command ran past its %s limit: %w", cfg.Timeout, ErrTimeout)
	case diskUsed > 0:
		return res, &ExitError{Code: res.ExitCode, DiskUsed: diskUsed}
	case res.ExitCode != 0 && res.OOMKilled:
		return res, &ExitError{Code: res.ExitCode, OOMKilled: true}
	case res.ExitCode != 0:
		return res, &ExitError{Code: res.ExitCode}
	}
	return res, nil
}

// runcError returns the error runc logged, if any.
func runcError(logFile string) string {
	data, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	var msgs []string
	for _, line := range strings.Split(string(data), "\n") {
		var e struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msgs = append(msgs, e.Msg)
		}
	}
	return strings.Join(msgs, "; ")
}

// copyLines copies r to w one line at a time, as each line arrives (a very long line is
// passed on in pieces).
func copyLines(w io.Writer, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			w.Write(line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// secretMounts writes the secrets into a tmpfs private to this run and returns their
// read-only bind mounts.
func (r *Runc) secretMounts(bundle string, cfg Config) ([]specs.Mount, func(), error) {
	dir := filepath.Join(bundle, "secrets")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, nil, err
	}
	size := 1 << 20
	for _, s := range cfg.Secrets {
		size += len(s.Value) + 4096
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		return nil, nil, fmt.Errorf("mount tmpfs: %w", err)
	}
	cleanup := func() { unix.Unmount(dir, unix.MNT_DETACH) }
	var ms []specs.Mount
	for i, s := range cfg.Secrets {
		if !path.IsAbs(s.Target) {
			cleanup()
			return nil, nil, fmt.Errorf("secret target %q is not an absolute path", s.Target)
		}
		f := filepath.Join(dir, fmt.Sprintf("secret-%d", i))
		if err := os.WriteFile(f, s.Value, 0o400); err != nil {
			cleanup()
			return nil, nil, err
		}
		uid, gid := cfg.UID, cfg.GID
		if r.userns != nil {
			uid, gid = uid+r.userns.ids.UID, gid+r.userns.ids.GID
		}
		if err := os.Chown(f, int(uid), int(gid)); err != nil {
			cleanup()
			return nil, nil, err
		}
		ms = append(ms, specs.Mount{Destination: s.Target, Type: "bind", Source: f,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	}
	return ms, cleanup, nil
}

// defaultCaps are the capabilities of a sandboxed root user: Docker's default set
// without CAP_MKNOD (no device nodes), CAP_NET_RAW (no raw or packet sockets) and
// CAP_AUDIT_WRITE, which package builds do not use.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
	"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
}

// spec is the OCI runtime configuration of one run.
func (r *Runc) spec(cfg Config, cgroupsPath string, extra []specs.Mount) *specs.Spec {
	caps := &specs.LinuxCapabilities{Bounding: defaultCaps}
	if cfg.UID == 0 {
		caps.Effective, caps.Permitted = defaultCaps, defaultCaps
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	umask := uint32(0o022)
	nofile := uint64(1 << 16)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Max < nofile {
		nofile = rl.Max
	}
	sp := &specs.Spec{
		Version: "1.0.2",
		Process: &specs.Process{
			User:            specs.User{UID: cfg.UID, GID: cfg.GID, Umask: &umask},
			Args:            cfg.Args,
			Env:             cfg.Env,
			Cwd:             cwd,
			Capabilities:    caps,
			NoNewPrivileges: !r.NewPrivileges,
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}},
		},
		Root:     &specs.Root{Path: cfg.Rootfs},
		Hostname: "kiln",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Seccomp: seccompProfile(),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
			},
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi", "/sys/devices/virtual/powercap"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	if cfg.HostNetwork {
		for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
			if _, err := os.Stat(f); err == nil {
				sp.Mounts = append(sp.Mounts, specs.Mount{Destination: f, Type: "bind", Source: f,
					Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
			}
		}
	} else {
		sp.Linux.Namespaces = append(sp.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	for _, m := range cfg.Mounts {
		opts := []string{"rbind", "rw"}
		if m.ReadOnly {
			opts = []string{"rbind", "ro"}
		}
		sp.Mounts = append(sp.Mounts, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opts})
	}
	sp.Mounts = append(sp.Mounts, extra...)
	for _, d := range cfg.Tmpfs {
		sp.Mounts = append(sp.Mounts, specs.Mount{Destination: d, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}})
	}
	res := sp.Linux.Resources
	if cfg.Limits.Pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: &cfg.Limits.Pids}
	}
	if cfg.Limits.CPUs > 0 {
		period := uint64(100000)
		quota := int64(cfg.Limits.CPUs * float64(period))
		res.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if cfg.Limits.CPUSet != "" {
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		res.CPU.Cpus = cfg.Limits.CPUSet
	}
	return sp
}
