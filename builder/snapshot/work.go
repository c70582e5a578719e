package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Work is a writable root filesystem on top of a snapshot, where one step runs. It ends
// with Commit (it becomes a snapshot) or Discard.
type Work struct {
	s      *Store
	dir    string // tmp/<pid>-<rand>, holding fs/ (and work/, merged/ for overlay)
	rootfs string
	parent string
	full   bool
	depth  int
	mount  string // the overlay mount point, if any
	layers []string
	// base is the disk use of a full copy when it was made (what Usage does not count).
	base int64
}

// Usage returns the bytes written so far to the work whose root filesystem is rootfs
// (ok is false when no work of the store has it).
func (s *Store) Usage(rootfs string) (n int64, ok bool) {
	s.mu.Lock()
	w := s.works[rootfs]
	s.mu.Unlock()
	if w == nil {
		return 0, false
	}
	n, _ = diskUsage(filepath.Join(w.dir, "fs"))
	return max(0, n-w.base), true
}

// track records w under its root filesystem (for Usage) until it ends.
func (s *Store) track(w *Work) *Work {
	s.mu.Lock()
	s.works[w.rootfs] = w
	s.mu.Unlock()
	return w
}

func (s *Store) untrack(w *Work) {
	s.mu.Lock()
	if s.works[w.rootfs] == w {
		delete(s.works, w.rootfs)
	}
	s.mu.Unlock()
}

// Rootfs is the directory holding the work's root filesystem.
func (w *Work) Rootfs() string { return w.rootfs }

// Prepare returns a writable root filesystem with the contents of snapshot parent.
// With the overlay driver it is an overlay whose upper layer becomes the new snapshot,
// so its cost does not grow with the root filesystem; past MaxDepth (or overlay's mount
// option limit), and with the copy driver, it is a full copy.
func (s *Store) Prepare(ctx context.Context, parent string) (*Work, error) {
	pm, ok, err := s.Get(parent)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("prepare: snapshot %s does not exist", parent)
	}
	dir, err := s.newTemp()
	if err != nil {
		return nil, err
	}
	w := &Work{s: s, dir: dir, parent: parent}
	fail := func(err error) (*Work, error) {
		w.Discard()
		return nil, err
	}
	upper := filepath.Join(dir, "fs")
	if s.driver == Overlay {
		layers, err := s.chain(parent)
		if err != nil {
			return fail(err)
		}
		work, merged := filepath.Join(dir, "work"), filepath.Join(dir, "merged")
		if len(layers) < s.MaxDepth && overlayFits(layers, len(upper)+len(work)) {
			for _, d := range []string{upper, work, merged} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return fail(err)
				}
			}
			// The root of an overlay takes the upper directory's owner and mode.
			if err := copyOwnerMode(layers[0], upper); err != nil {
				return fail(err)
			}
			w.layers = layers
			if err := w.mountOverlay(merged); err != nil {
				return fail(fmt.Errorf("prepare %s: %d layers: %w", parent, len(layers), err))
			}
			w.mount, w.rootfs, w.depth = merged, merged, pm.Depth+1
			return s.track(w), nil
		}
	}
	// A full copy: of the parent's tree, or of the merged view of its layers.
	src, release, err := s.Mount(parent)
	if err != nil {
		return fail(err)
	}
	err = copyTree(ctx, src, upper)
	release()
	if err != nil {
		return fail(fmt.Errorf("prepare %s: %w", parent, err))
	}
	w.rootfs, w.full, w.depth = upper, true, 1
	w.base, _ = diskUsage(upper)
	return s.track(w), nil
}

// mountOverlay mounts the work's overlay at target.
func (w *Work) mountOverlay(target string) error {
	opts, err := w.overlayOptions(w.s.root)
	if err != nil {
		return err
	}
	return mountOverlay(target, opts)
}

func mountOverlay(target, opts string) error {
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

// overlayOptions are the mount options of the work's overlay, with the store's root
// directory seen at root (another path to it, such as an idmapped mount of it). The
// work directory is made afresh: a volatile overlay refuses one that was used before.
func (w *Work) overlayOptions(root string) (string, error) {
	at := func(p string) string { return root + strings.TrimPrefix(p, w.s.root) }
	lowers := make([]string, len(w.layers))
	for i, l := range w.layers {
		lowers[i] = at(l)
	}
	work := filepath.Join(w.dir, "work")
	if err := os.RemoveAll(work); err != nil {
		return "", err
	}
	if err := os.Mkdir(work, 0o755); err != nil {
		return "", err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), at(filepath.Join(w.dir, "fs")), at(work))
	if w.s.volatile {
		opts += ",volatile"
	}
	return opts, nil
}

// Commit turns the work into snapshot id (m describes it; log is the step's output) and
// ends the work. If id exists already (made by a concurrent build), the work is dropped.
func (w *Work) Commit(id string, m Meta, log []byte) error {
	if !validID(id) {
		w.Discard()
		return fmt.Errorf("snapshot id %q: not a valid id", id)
	}
	w.s.untrack(w)
	if w.mount != "" {
		if err := unix.Unmount(w.mount, 0); err != nil {
			w.Discard()
			return fmt.Errorf("commit %s: unmount: %w", id, err)
		}
		w.mount = ""
		os.RemoveAll(filepath.Join(w.dir, "work"))
		os.Remove(filepath.Join(w.dir, "merged"))
	}
	m.ID, m.Parent, m.Full, m.Depth = id, w.parent, w.full, w.depth
	err := w.s.commit(w.dir, m, log)
	if err != nil {
		w.Discard()
		return err
	}
	w.dir = ""
	return nil
}

// Discard drops the work.
func (w *Work) Discard() error {
	if w.dir == "" {
		return nil
	}
	w.s.untrack(w)
	if w.mount != "" {
		unix.Unmount(w.mount, unix.MNT_DETACH)
		w.mount = ""
	}
	unmountUnder(w.dir)
	err := os.RemoveAll(w.dir)
	w.dir = ""
	return err
}

// Mount returns a read-only view of snapshot id's root filesystem and a function that
// ends it.
func (s *Store) Mount(id string) (dir string, release func(), err error) {
	layers, err := s.chain(id)
	if err != nil {
		return "", nil, err
	}
	if len(layers) == 1 {
		return layers[0], func() {}, nil
	}
	tmp, err := s.newTemp()
	if err != nil {
		return "", nil, err
	}
	m := filepath.Join(tmp, "ro")
	if err := os.Mkdir(m, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	// Without an upper layer an overlay is read-only; it takes at most 500 lowers.
	if !overlayFits(layers, 0) {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("mount %s: %d layers exceed overlay's mount options", id, len(layers))
	}
	if err := unix.Mount("overlay", m, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(layers, ":")); err != nil {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("mount %s: overlay of %d layers: %w", id, len(layers), err)
	}
	return m, func() {
		unix.Unmount(m, unix.MNT_DETACH)
		os.RemoveAll(tmp)
	}, nil
}

// copyOwnerMode gives dst the owner and permissions of src.
func copyOwnerMode(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	return os.Chmod(dst, fi.Mode().Perm()|fi.Mode()&(os.ModeSticky|os.ModeSetgid|os.ModeSetuid))
}
