package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Slot is a cgroup cpuset: the CPUs a benchmark (or the builds beside it) may run on.
// It uses the cpuset controller of cgroup v1 (/sys/fs/cgroup/cpuset) or, where the
// cpuset controller is on the unified hierarchy, of cgroup v2.
type Slot struct {
	Dir  string // the cgroup's folder
	CPUs string
}

// cpusetRoot finds the cpuset hierarchy: v1's own mount or a v2 mount with cpuset.
func cpusetRoot() (string, bool, error) {
	if _, err := os.Stat("/sys/fs/cgroup/cpuset/cpuset.cpus"); err == nil {
		return "/sys/fs/cgroup/cpuset", false, nil
	}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil && strings.Contains(string(b), "cpuset") {
			return root, true, nil
		}
	}
	return "", false, errors.New("no cgroup cpuset controller (neither /sys/fs/cgroup/cpuset nor a cgroup v2 mount with cpuset)")
}

// NewSlot makes (or takes again) the cpuset cgroup kiln-bench/NAME limited to cpus.
func NewSlot(name, cpus string) (*Slot, error) {
	root, v2, err := cpusetRoot()
	if err != nil {
		return nil, err
	}
	parent := filepath.Join(root, "kiln-bench")
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cpuset slot %s: %w", name, err)
	}
	write := func(d, file, v string) error {
		if err := os.WriteFile(filepath.Join(d, file), []byte(v), 0o644); err != nil {
			return fmt.Errorf("cpuset slot %s: %s = %q: %w", name, file, v, err)
		}
		return nil
	}
	if v2 {
		if err := write(root, "cgroup.subtree_control", "+cpuset"); err != nil {
			return nil, err
		}
		if err := write(parent, "cgroup.subtree_control", "+cpuset"); err != nil {
			return nil, err
		}
		return &Slot{Dir: dir, CPUs: cpus}, write(dir, "cpuset.cpus", cpus)
	}
	// v1: a child needs its parent's cpus and mems set before its own.
	mems, err := os.ReadFile(filepath.Join(root, "cpuset.mems"))
	if err != nil {
		return nil, err
	}
	all, err := os.ReadFile(filepath.Join(root, "cpuset.cpus"))
	if err != nil {
		return nil, err
	}
	for _, d := range []string{parent, dir} {
		if err := write(d, "cpuset.mems", strings.TrimSpace(string(mems))); err != nil {
			return nil, err
		}
	}
	if err := write(parent, "cpuset.cpus", strings.TrimSpace(string(all))); err != nil {
		return nil, err
	}
	return &Slot{Dir: dir, CPUs: cpus}, write(dir, "cpuset.cpus", cpus)
}

// Add moves process pid (and the threads and children it makes afterwards) into s.
func (s *Slot) Add(pid int) error {
	if err := os.WriteFile(filepath.Join(s.Dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("cpuset slot %s: add process %d: %w", s.CPUs, pid, err)
	}
	return nil
}

// Remove deletes the slot's cgroup; it must have no process left.
func (s *Slot) Remove() error {
	err := os.Remove(s.Dir)
	_ = os.Remove(filepath.Dir(s.Dir)) // the kiln-bench parent, once empty
	return err
}
