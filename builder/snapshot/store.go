// Package snapshot is the builder's store of root filesystem snapshots: one per build
// step, each on top of its parent, kept as overlayfs layers where the kernel allows it and
// as plain copies elsewhere.
package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Driver says how snapshots are kept.
type Driver string

const (
	// Overlay keeps each step as the upper layer of an overlay mount over its parents:
	// committing a step costs the same whatever the size of the root filesystem.
	Overlay Driver = "overlay"
	// Copy keeps every snapshot as a full copy (cp -a, with reflinks where the file
	// system has them), for file systems overlayfs cannot use.
	Copy Driver = "copy"
)

// Meta describes one committed snapshot. It is stored as meta.json beside the snapshot.
type Meta struct {
	ID     string `json:"id"`
	Parent string `json:"parent,omitempty"`
	// Full is true when the snapshot holds a whole root filesystem (a base, a copy-store
	// snapshot or a flattened one) rather than an overlay layer on its parent.
	Full bool `json:"full"`
	// Depth counts the layers an overlay mount of this snapshot stacks (1 when Full).
	Depth int `json:"depth"`
	// Description says what made the snapshot (a step, a base image).
	Description string `json:"description,omitempty"`
	// Config is what the builder keeps with a snapshot (for a base: its image config).
	Config map[string]string `json:"config,omitempty"`
	// Size is the disk use of the snapshot's own files, in bytes.
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	// Boot is the boot of the machine the snapshot was made in; its files are not
	// synced at commit: see Store.Sync.
	Boot string `json:"boot,omitempty"`
	// LastUsed is when a build last used the snapshot (the time of the "used" file).
	LastUsed time.Time `json:"-"`
}

// Store is a directory of snapshots. It is safe for use by several goroutines and
// processes at once: a snapshot appears by an atomic rename and is never changed after.
type Store struct {
	root   string
	driver Driver
	mu     sync.Mutex
	works  map[string]*Work // by root filesystem
	// volatile: step overlays are mounted with overlayfs's volatile option (no sync on
	// unmount); see Open.
	volatile bool
	// MaxDepth is the deepest overlay stack a new step may sit on; past it the step
	// starts from a flattened full copy. Overlay's mount options also limit it.
	MaxDepth int
}

// Open opens (creating it if needed) the store in root, with driver, or with the best
// driver the file system supports when driver is "". Work left by a crashed process is
// removed.
func Open(root string, driver Driver) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"snapshots", "tmp", "trash"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("snapshot store %s: %w", root, err)
		}
	}
	s := &Store{root: root, driver: driver, MaxDepth: 32, works: map[string]*Work{}}
	s.cleanStale()
	defer s.dropUnsynced()
	switch driver {
	case "":
		if err := s.probeOverlay(); errors.Is(err, ErrNoSpace) {
			return nil, err
		} else if err != nil {
			slog.Info("snapshot store: overlayfs unavailable, using copies", "root", root, "reason", err)
			s.driver = Copy
		} else {
			s.driver = Overlay
		}
	case Overlay:
		if err := s.probeOverlay(); err != nil {
			return nil, fmt.Errorf("snapshot store %s: overlay driver: %w", root, err)
		}
	case Copy:
	default:
		return nil, fmt.Errorf("snapshot store %s: unknown driver %q (overlay or copy)", root, driver)
	}
	return s, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// Driver is how the store keeps snapshots.
func (s *Store) Driver() Driver { return s.driver }

func (s *Store) snapDir(id string) string { return filepath.Join(s.root, "snapshots", id) }

// FS is the directory of a snapshot's own files (its layer, or its full tree).
func (s *Store) FS(id string) string { return filepath.Join(s.snapDir(id), "fs") }

// probeOverlay mounts a tiny overlay in the store's file system, volatile if the kernel
// allows it, and writes to it. Running out of space is an error naming the disk.
func (s *Store) probeOverlay() error {
	s.volatile = true
	w, err := s.probeWork()
	if err != nil && !errors.Is(err, unix.ENOSPC) {
		s.volatile = false
		w, err = s.probeWork()
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(w.rootfs, "probe"), []byte("x"), 0o644)
		w.Discard()
	}
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w: the disk of %s (%s) is full", ErrNoSpace, s.root, diskName(s.root))
	}
	return err
}

// ErrNoSpace is wrapped by the error of Open when the store's disk has no space left.
var ErrNoSpace = errors.New("no space left on the store's disk")

// diskName names the file system holding dir: its device and mount point.
func diskName(dir string) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown"
	}
	best, name := "", "unknown"
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "-")
		if len(f) < 5 || i < 0 || i+2 >= len(f) {
			continue
		}
		mp := unescapeMount(f[4])
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, name = mp, f[i+2]+" mounted on "+mp
		}
	}
	return name
}

// newTemp makes a fresh directory under tmp/, named after this process so that a later
// process can tell abandoned work from work in progress.
func (s *Store) newTemp() (string, error) {
	var b [6]byte
	rand.Read(b[:])
	dir := filepath.Join(s.root, "tmp", fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(b[:])))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("snapshot store: %w", err)
	}
	return dir, nil
}

// cleanStale removes temporary work (and unmounts its mounts) of processes that are
// gone, and empties the trash.
func (s *Store) cleanStale() {
	tmp := filepath.Join(s.root, "tmp")
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		pidStr, _, _ := strings.Cut(e.Name(), "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && processAlive(pid) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		unmountUnder(dir)
		if err := os.RemoveAll(dir); err != nil {
			slog.Warn("snapshot store: remove stale work", "dir", dir, "err", err)
		}
	}
	trash := filepath.Join(s.root, "trash")
	entries, _ = os.ReadDir(trash)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(trash, e.Name()))
	}
}

func processAlive(pid int) bool {
	return unix.Kill(pid, 0) == nil || errors.Is(unix.Kill(pid, 0), unix.EPERM)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMount(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		unix.Unmount(points[i], unix.MNT_DETACH)
	}
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Get returns the metadata of snapshot id; ok is false when there is none.
func (s *Store) Get(id string) (m Meta, ok bool, err error) {
	if !validID(id) {
		return Meta{}, false, fmt.Errorf("snapshot id %q: not a valid id", id)
	}
	data, err := os.ReadFile(filepath.Join(s.snapDir(id), "meta.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("snapshot %s: %w", id, err)
	}
	if err := json.Unmarshal(data, &m); err != nil || m.ID != id {
		// Cut short by a power loss: the snapshot is treated as absent and replaced
		// when its step runs again.
		slog.Warn("snapshot store: damaged snapshot ignored", "id", id, "err", err)
		return Meta{}, false, nil
	}
	if st, err := os.Stat(filepath.Join(s.snapDir(id), "used")); err == nil {
		m.LastUsed = st.ModTime()
	} else {
		m.LastUsed = m.Created
	}
	return m, true, nil
}

// Log returns the stored log of snapshot id's step.
func (s *Store) Log(id string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(s.snapDir(id), "log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// Touch records that snapshot id was used now (for least-recently-used collection).
func (s *Store) Touch(id string) error {
	now := time.Now()
	p := filepath.Join(s.snapDir(id), "used")
	if err := os.Chtimes(p, now, now); errors.Is(err, fs.ErrNotExist) {
		return os.WriteFile(p, nil, 0o600)
	} else {
		return err
	}
}

// List returns the metadata of every snapshot.
func (s *Store) List() ([]Meta, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "snapshots"))
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	var out []Meta
	for _, e := range entries {
		if !validID(e.Name()) {
			continue
		}
		m, ok, err := s.Get(e.Name())
		if err != nil {
			slog.Warn("snapshot store: unreadable snapshot", "id", e.Name(), "err", err)
			continue
		}
		if ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// Remove deletes snapshot id. The caller makes sure no other snapshot has it as parent
// and no build uses it.
func (s *Store) Remove(id string) error {
	if !validID(id) {
		return fmt.Errorf("snapshot id %q: not a valid id", id)
	}
	t := filepath.Join(s.root, "trash", id+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(s.snapDir(id), t); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", id, err)
	}
	return os.RemoveAll(t)
}

// chain returns the layer directories an overlay of id stacks, top first.
func (s *Store) chain(id string) ([]string, error) {
	var layers []string
	for cur := id; ; {
		m, ok, err := s.Get(cur)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("snapshot %s: missing (parent of %s)", cur, id)
		}
		layers = append(layers, s.FS(cur))
		if m.Full {
			return layers, nil
		}
		if len(layers) > 1000 {
			return nil, fmt.Errorf("snapshot %s: parent chain too deep or cyclic", id)
		}
		cur = m.Parent
	}
}

// overlayFits reports whether an overlay over layers (plus upper and work dirs of the
// given length) fits in the single page mount(2) accepts.
func overlayFits(layers []string, extra int) bool {
	n := len("lowerdir=,upperdir=,workdir=") + extra
	for _, l := range layers {
		n += len(l) + 1
	}
	return n < 4000
}

// Import makes snapshot id from the full root filesystem in src, sharing its files by
// hard links where src is on the store's file system and copying them otherwise: src
// may go away later, but its files must not be changed in place. It does nothing if id
// already exists.
func (s *Store) Import(ctx context.Context, id, src string, m Meta) error {
	if !validID(id) {
		return fmt.Errorf("snapshot id %q: not a valid id", id)
	}
	if _, ok, err := s.Get(id); err != nil || ok {
		return err
	}
	dir, err := s.newTemp()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Snapshots are never written after they are made, so a base on the same file
	// system is shared by hard links rather than copied.
	err = copyTree(ctx, src, filepath.Join(dir, "fs"), "--link")
	if err != nil && !errors.Is(err, unix.ENOSPC) {
		slog.Debug("snapshot store: import by hard links failed, copying", "src", src, "err", err)
		os.RemoveAll(filepath.Join(dir, "fs"))
		err = copyTree(ctx, src, filepath.Join(dir, "fs"))
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	m.ID, m.Parent, m.Full, m.Depth = id, "", true, 1
	return s.commit(dir, m, nil)
}

// copyTree copies the tree src to a new directory dst, keeping owners, modes, links,
// extended attributes and sparse files, with reflinks where the file system has them;
// flags replace the last two (--link: hard links instead of copies).
func copyTree(ctx context.Context, src, dst string, flags ...string) error {
	args := []string{"-a", "--reflink=auto", "--sparse=always"}
	if len(flags) > 0 {
		args = append([]string{"-a"}, flags...)
	}
	cmd := exec.CommandContext(ctx, "cp", append(args, "--", src+"/.", dst)...)
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	if st, err := os.Lstat(src); err == nil {
		os.Chmod(dst, st.Mode().Perm())
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			os.Lchown(dst, int(sys.Uid), int(sys.Gid))
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "No space left") {
			return fmt.Errorf("cp: %s: %w", firstLine(msg), unix.ENOSPC)
		}
		return fmt.Errorf("cp: %v: %s", err, firstLine(msg))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// commit writes meta and log into the prepared directory dir (holding fs/) and renames
// it into place. If another process committed id first, dir is discarded.
func (s *Store) commit(dir string, m Meta, log []byte) error {
	size, err := diskUsage(filepath.Join(dir, "fs"))
	if err != nil {
		return fmt.Errorf("snapshot %s: size: %w", m.ID, err)
	}
	m.Size = size
	m.Created = time.Now().UTC()
	m.Boot = bootID()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "meta.json"), data); err != nil {
		return fmt.Errorf("snapshot %s: %w", m.ID, err)
	}
	if err := writeFile(filepath.Join(dir, "log"), log); err != nil {
		return fmt.Errorf("snapshot %s: %w", m.ID, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "used"), nil, 0o600); err != nil {
		return fmt.Errorf("snapshot %s: %w", m.ID, err)
	}
	err = os.Rename(dir, s.snapDir(m.ID))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		if _, ok, _ := s.Get(m.ID); !ok {
			// A damaged snapshot is in the way: move it to the trash and retry.
			t := filepath.Join(s.root, "trash", m.ID+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
			if os.Rename(s.snapDir(m.ID), t) == nil {
				os.RemoveAll(t)
				err = os.Rename(dir, s.snapDir(m.ID))
			}
		}
	}
	if err != nil {
		if _, ok, _ := s.Get(m.ID); ok {
			// Another process committed the same step first; its result stands.
			unmountUnder(dir)
			os.RemoveAll(dir)
			return nil
		}
		return fmt.Errorf("snapshot %s: commit: %w", m.ID, err)
	}
	return nil
}

func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// diskUsage sums the blocks used by the files under dir (hard links once).
func diskUsage(dir string) (int64, error) {
	var total int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			total += info.Size()
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

// validID accepts the ids the builder makes: lower-case hex (or short names for tests),
// never a path.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
