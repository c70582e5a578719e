package sandbox

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// IDRange is the host ids a sandbox's user namespace maps to: ids 0 to Size-1 inside
// are UID to UID+Size-1 (and GID to GID+Size-1) on the host.
type IDRange struct {
	UID, GID, Size uint32
}

// SubIDs reads the subordinate id ranges of user from /etc/subuid and /etc/subgid (the
// first range of each; both must have at least 65536 ids).
func SubIDs(user string) (IDRange, error) {
	uid, un, err := subIDs("/etc/subuid", user)
	if err != nil {
		return IDRange{}, err
	}
	gid, gn, err := subIDs("/etc/subgid", user)
	if err != nil {
		return IDRange{}, err
	}
	r := IDRange{UID: uid, GID: gid, Size: min(un, gn)}
	if r.Size < 65536 {
		return IDRange{}, fmt.Errorf("subordinate ids of %s: %d, want at least 65536", user, r.Size)
	}
	return r, nil
}

// ClaimSubIDs returns the subordinate ids of user, first giving it 65536 ids after
// every range of /etc/subuid and /etc/subgid (at 100000 or above) when it has none, as
// Docker's userns-remap=default does for its user.
func ClaimSubIDs(user string) (IDRange, error) {
	if r, err := SubIDs(user); err == nil {
		return r, nil
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	next := uint64(100000)
	for _, name := range []string{"/etc/subuid", "/etc/subgid"} {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return IDRange{}, fmt.Errorf("claim subordinate ids: %w", err)
		}
		files = append(files, f)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			return IDRange{}, fmt.Errorf("claim subordinate ids: %w", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
			if len(fields) != 3 {
				continue
			}
			if fields[0] == user { // claimed meanwhile by another process
				return SubIDs(user)
			}
			s, err1 := strconv.ParseUint(fields[1], 10, 32)
			c, err2 := strconv.ParseUint(fields[2], 10, 32)
			if err1 == nil && err2 == nil {
				next = max(next, s+c)
			}
		}
	}
	if next+65536 > 1<<32-1 {
		return IDRange{}, fmt.Errorf("claim subordinate ids: no free range after %d", next)
	}
	line := fmt.Sprintf("%s:%d:65536\n", user, next)
	for _, f := range files {
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			return IDRange{}, fmt.Errorf("claim subordinate ids: %w", err)
		}
		if _, err := f.WriteString(line); err != nil {
			return IDRange{}, fmt.Errorf("claim subordinate ids: %s: %w", f.Name(), err)
		}
	}
	slog.Info("sandbox: subordinate ids claimed", "user", user, "first", next, "count", 65536)
	return IDRange{UID: uint32(next), GID: uint32(next), Size: 65536}, nil
}

func subIDs(file, user string) (start, n uint32, err error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || fields[0] != user {
			continue
		}
		s, err1 := strconv.ParseUint(fields[1], 10, 32)
		c, err2 := strconv.ParseUint(fields[2], 10, 32)
		if err1 != nil || err2 != nil || s == 0 {
			return 0, 0, fmt.Errorf("%s: bad line %q", file, sc.Text())
		}
		return uint32(s), uint32(c), nil
	}
	return 0, 0, fmt.Errorf("%s: no range for %s", file, user)
}

// Shifter mounts at target a view of dir (a step's root filesystem or a mount source)
// whose files appear owned by their ids mapped through the sandbox's user namespace
// (Runc.UserNS), and returns how to undo it.
type Shifter func(dir, target string) (release func() error, err error)

// userNS is how a sandbox maps steps into a user namespace.
type userNS struct {
	ids IDRange
	// file holds a user namespace with the mapping open, for idmapped mounts.
	file  *os.File
	shift Shifter
}

// EnableUserNS makes every later command run in a user namespace mapping ids, its
// root filesystem and mounts shifted by shift. It fails when the kernel cannot make
// such a namespace.
func (r *Runc) EnableUserNS(ids IDRange, shift Shifter) error {
	f, err := newUserNS(ids)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.RunDir, 0o711); err != nil {
		f.Close()
		return fmt.Errorf("user namespace: %w", err)
	}
	// Every level must let the namespace's root through.
	for d := r.RunDir; d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o711); err != nil {
				f.Close()
				return fmt.Errorf("user namespace: %w", err)
			}
		}
	}
	r.userns = &userNS{ids: ids, file: f, shift: shift}
	return nil
}

// UserNS is the user namespace commands run in (nil without one).
func (r *Runc) UserNS() *os.File {
	if r.userns == nil {
		return nil
	}
	return r.userns.file
}

// newUserNS returns a user namespace with the mapping of ids, made by a short-lived
// process (cat, blocked on its input) whose namespace stays while the file is open.
func newUserNS(ids IDRange) (*os.File, error) {
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.UID), Size: int(ids.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.GID), Size: int(ids.Size)}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	in.Close()
	cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("user namespace: %w", err)
	}
	return f, nil
}

// shiftRun gives the run with bundle id the shifted views of cfg's root filesystem and
// mounts under RunDir, and changes sp to use them in the user namespace. The returned
// function undoes it.
func (r *Runc) shiftRun(id string, cfg Config, sp *specs.Spec) (undo func(), err error) {
	ns := r.userns
	dir := filepath.Join(r.RunDir, id)
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, err
	}
	var releases []func() error
	undo = func() {
		for i := len(releases) - 1; i >= 0; i-- {
			if err := releases[i](); err != nil {
				slog.Warn("sandbox: undo shifted mount", "id", id, "err", err)
			}
		}
		removeMountDirs(dir)
	}
	shift := func(src, name string) (string, error) {
		target := filepath.Join(dir, name)
		if err := os.Mkdir(target, 0o755); err != nil {
			return "", err
		}
		release, err := ns.shift(src, target)
		if err != nil {
			return "", err
		}
		releases = append(releases, release)
		return target, nil
	}
	if sp.Root.Path, err = shift(cfg.Rootfs, "rootfs"); err != nil {
		undo()
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	for i := range sp.Mounts {
		m := &sp.Mounts[i]
		for j, cm := range cfg.Mounts {
			if m.Type == "bind" && m.Source == cm.Source && m.Destination == cm.Target {
				if m.Source, err = shift(cm.Source, "m"+strconv.Itoa(j)); err != nil {
					undo()
					return nil, fmt.Errorf("mount %s: %w", cm.Target, err)
				}
			}
		}
		if m.Destination == "/sys" && cfg.HostNetwork {
			// sysfs cannot be mounted in a user namespace without its own network.
			*m = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
		}
	}
	sp.Linux.Namespaces = append(sp.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	sp.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: ns.ids.UID, Size: ns.ids.Size}}
	sp.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: ns.ids.GID, Size: ns.ids.Size}}
	return undo, nil
}

// removeMountDirs removes the (empty, unmounted) mount points in dir, then dir; it
// never removes anything through a mount that is still there.
func removeMountDirs(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		unix.Unmount(p, unix.MNT_DETACH)
		os.Remove(p)
	}
	os.Remove(dir)
}

// DisableUserNS makes later commands run without a user namespace.
func (r *Runc) DisableUserNS() {
	if r.userns != nil {
		r.userns.file.Close()
		r.userns = nil
	}
}
