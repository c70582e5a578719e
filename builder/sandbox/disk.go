package sandbox

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// diskWatch measures what a command wrote (its root filesystem and its mounts, through
// Runc.DiskUsage) while it runs, and reports when it passes its budget.
type diskWatch struct {
	usage  func(dir string) (int64, bool)
	dirs   []string
	budget int64
}

// newDiskWatch returns a watch of cfg's budget, or nil when there is none or the
// sandbox cannot measure it.
func (r *Runc) newDiskWatch(cfg Config) *diskWatch {
	if cfg.Limits.Disk <= 0 || r.DiskUsage == nil {
		return nil
	}
	w := &diskWatch{usage: r.DiskUsage, budget: cfg.Limits.Disk, dirs: []string{cfg.Rootfs}}
	for _, m := range cfg.Mounts {
		if !m.ReadOnly {
			w.dirs = append(w.dirs, m.Source)
		}
	}
	return w
}

// used is the bytes written to the watched directories.
func (w *diskWatch) used() int64 {
	var total int64
	for _, d := range w.dirs {
		if n, ok := w.usage(d); ok {
			total += n
		}
	}
	return total
}

// run measures until stop is closed, and sends the usage on over (once) when it passes
// the budget. Measuring takes a walk of the written files, so the pause between two
// measurements grows with the time one takes (20 times it, from 100 ms to 2 s); a
// command can pass its budget by what it writes in that pause before it is killed.
func (w *diskWatch) run(stop <-chan struct{}, over chan<- int64) {
	pause := 100 * time.Millisecond
	for {
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
		start := time.Now()
		if n := w.used(); n > w.budget {
			over <- n
			return
		}
		pause = min(max(100*time.Millisecond, 20*time.Since(start)), 2*time.Second)
	}
}

// mountStubs are the mount points runc will create in a root filesystem for mounts
// whose targets do not exist in it: the files or directories to remove after the run
// so that they do not end up in the step's snapshot.
type mountStubs struct {
	rootfs string
	// paths to remove, deepest first, each relative to rootfs.
	paths []string
}

// findStubs records, for each target (absolute, inside rootfs), the missing part of its
// path.
func findStubs(rootfs string, targets []string) *mountStubs {
	st := &mountStubs{rootfs: rootfs}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return st
	}
	defer root.Close()
	for _, t := range targets {
		rel := strings.TrimPrefix(path.Clean(t), "/")
		if rel == "" {
			continue
		}
		var missing []string
		for p := rel; p != "."; p = path.Dir(p) {
			if _, err := root.Lstat(p); err == nil {
				break
			}
			missing = append(missing, p)
		}
		st.paths = append(st.paths, missing...)
	}
	return st
}

// remove deletes the stubs that are still empty.
func (st *mountStubs) remove() {
	if len(st.paths) == 0 {
		return
	}
	root, err := os.OpenRoot(st.rootfs)
	if err != nil {
		return
	}
	defer root.Close()
	for _, p := range st.paths {
		if fi, err := root.Lstat(p); err == nil && (fi.IsDir() || fi.Mode().IsRegular() && fi.Size() == 0) {
			root.Remove(filepath.FromSlash(p))
		}
	}
}
