package snapshot

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Shift mounts at target a view of the work whose root filesystem is dir, in which
// each file appears owned by its id mapped through the user namespace userns (0 to
// the namespace's first host id, and so on): the root filesystem a step running in
// that namespace sees as its own. The files on disk keep their ids. An overlay work
// is not mounted at dir meanwhile; release mounts it back. ok is false when the store
// has no work at dir. uid and gid are the host ids of the namespace's root.
func (s *Store) Shift(dir, target string, userns *os.File, uid, gid uint32) (release func() error, ok bool, err error) {
	s.mu.Lock()
	w := s.works[dir]
	s.mu.Unlock()
	if w == nil {
		return nil, false, nil
	}
	if w.mount == "" {
		release, err := ShiftDir(w.rootfs, target, userns)
		return release, true, err
	}
	clone, err := idmapped(s.root, userns)
	if err != nil {
		return nil, true, err
	}
	defer unix.Close(clone)
	if err := unix.Unmount(w.mount, 0); err != nil {
		return nil, true, fmt.Errorf("shift %s: unmount: %w", dir, err)
	}
	// The overlay holds the layers it needs; the clone's descriptor can close. It
	// works on its upper layer with the credentials of whoever mounted it, which must
	// map to ids on disk through the idmapped layers: the namespace's root.
	opts, err := w.overlayOptions(fmt.Sprintf("/proc/self/fd/%d", clone))
	if err == nil {
		err = asOwner(uid, gid, func() error { return mountOverlay(target, opts) })
	}
	if err != nil {
		return nil, true, fmt.Errorf("shift %s: %w (mount back: %v)", dir, err, w.mountOverlay(w.mount))
	}
	return func() error {
		if err := unix.Unmount(target, 0); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
		}
		return w.mountOverlay(w.mount)
	}, true, nil
}

// asOwner calls f on a thread whose file system ids are uid and gid, with its
// capabilities kept, and then gives the thread back with its ids and capabilities as
// they were. A thread that cannot be restored ends with the goroutine instead; that
// is the exception, as a thread's end kills the children it started with a parent-death
// signal (runc, servers a test starts).
func asOwner(uid, gid uint32, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var saved [2]unix.CapUserData
		if err := unix.Capget(&hdr, &saved[0]); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		oldGID, _ := unix.SetfsgidRetGid(int(gid))
		oldUID, _ := unix.SetfsuidRetUid(int(uid))
		restore := func() bool {
			unix.SetfsuidRetUid(oldUID)
			unix.SetfsgidRetGid(oldGID)
			u, _ := unix.SetfsuidRetUid(-1) // -1 changes nothing and tells the current id
			g, _ := unix.SetfsgidRetGid(-1)
			h := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			return u == oldUID && g == oldGID && unix.Capset(&h, &saved[0]) == nil
		}
		// Changing the file system uid from 0 drops the file capabilities; raise them.
		data := saved
		for i := range data {
			data[i].Effective = data[i].Permitted
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			if restore() {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		err := f()
		if restore() {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// ShiftDir mounts at target an idmapped view of the directory dir (see Shift), on a
// file system that allows idmapped mounts (ext4, xfs, btrfs, tmpfs; not overlayfs).
func ShiftDir(dir, target string, userns *os.File) (release func() error, err error) {
	fd, err := idmapped(dir, userns)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return nil, fmt.Errorf("shift %s: attach at %s: %w", dir, target, err)
	}
	return func() error { return unix.Unmount(target, unix.MNT_DETACH) }, nil
}

// idmapped returns a detached mount of dir whose ids are mapped through userns.
func idmapped(dir string, userns *os.File) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("shift %s: open_tree: %w", dir, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("shift %s: idmapped mount: %w", dir, err)
	}
	return fd, nil
}

// ProbeShift checks that works of this store can be shifted into userns: an overlay
// over idmapped layers of the store's file system shows its files owned by uid, the
// host id of the namespace's root.
func (s *Store) ProbeShift(userns *os.File, uid, gid uint32) error {
	if s.driver != Overlay {
		dir, err := s.newTemp()
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		return checkShift(dir, func(target string) (func() error, error) { return ShiftDir(dir, target, userns) }, uid, gid)
	}
	w, err := s.probeWork()
	if err != nil {
		return err
	}
	defer w.Discard()
	return checkShift(w.dir, func(target string) (func() error, error) {
		release, _, err := s.Shift(w.rootfs, target, userns, uid, gid)
		return release, err
	}, uid, gid)
}

// checkShift mounts a shifted view (by shift) in dir and checks the owner of its root,
// and that the namespace's root can write to it.
func checkShift(dir string, shift func(target string) (func() error, error), uid, gid uint32) error {
	target := filepath.Join(dir, "shifted")
	if err := os.Mkdir(target, 0o755); err != nil {
		return err
	}
	release, err := shift(target)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	serr := unix.Stat(target, &st)
	if serr == nil && st.Uid == uid {
		serr = asOwner(uid, gid, func() error { return os.WriteFile(filepath.Join(target, "probe"), nil, 0o644) })
	}
	if err := release(); err != nil {
		return fmt.Errorf("shift probe: mount back: %w", err)
	}
	switch {
	case serr != nil:
		return fmt.Errorf("shift probe: %w", serr)
	case st.Uid != uid:
		return fmt.Errorf("shift probe: the shifted root is owned by %d, not %d", st.Uid, uid)
	}
	return nil
}

// probeWork is a work over a fresh one-layer snapshot-like directory (not in the
// store's list), for probes.
func (s *Store) probeWork() (*Work, error) {
	dir, err := s.newTemp()
	if err != nil {
		return nil, err
	}
	w := &Work{s: s, dir: dir, layers: []string{filepath.Join(dir, "lower")}, mount: filepath.Join(dir, "merged")}
	w.rootfs = w.mount
	for _, d := range []string{"lower", "fs", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := w.mountOverlay(w.mount); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s.track(w), nil
}
