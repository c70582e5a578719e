package docker

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Daemon is a dockerd started by this process, with its own data under one directory.
type Daemon struct {
	// Host is the daemon's address, for Engine.Host.
	Host string
	dir  string
	cmd  *exec.Cmd
	done chan error
}

// StartDaemon starts dockerd with its socket, data and state under dir and waits until
// it answers. It needs root. The daemon has no default bridge network (containers use
// --network none or host) and leaves the host's iptables alone.
func StartDaemon(ctx context.Context, dir string, log io.Writer) (*Daemon, error) {
	if _, err := exec.LookPath("dockerd"); err != nil {
		return nil, fmt.Errorf("dockerd is not installed (apt-get install docker.io)")
	}
	for _, d := range []string{"data", "exec"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	sock := filepath.Join(dir, "docker.sock")
	if log == nil {
		log = io.Discard
	}
	cmd := exec.Command("dockerd",
		"--host", "unix://"+sock,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--bridge=none", "--iptables=false", "--ip-masq=false",
		"--storage-driver=overlay2")
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dockerd: %w", err)
	}
	d := &Daemon{Host: "unix://" + sock, dir: dir, cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	e := &Engine{Host: d.Host}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := e.Version(ctx); err == nil {
			return d, nil
		}
		select {
		case err := <-d.done:
			return nil, fmt.Errorf("dockerd exited while starting: %v", err)
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("dockerd did not answer within 60s")
		}
	}
}

// Stop ends the daemon (SIGTERM, then SIGKILL after 20 s), waits for it, and unmounts
// what it left mounted under its directory (its network namespace).
func (d *Daemon) Stop() error {
	if d.cmd.Process == nil {
		return nil
	}
	defer unmountUnder(d.dir)
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return nil
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		err := <-d.done
		d.done <- err
		return fmt.Errorf("dockerd did not stop on SIGTERM; killed")
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}
