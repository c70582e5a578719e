package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// decompress returns a reader of r's content, undoing gzip, zstd or xz when r starts
// with their magic bytes.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(6)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return z, nil
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		z, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return z.IOReadCloser(), nil
	case len(magic) >= 6 && string(magic) == "\xfd7zXZ\x00":
		z, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(z), nil
	}
	return io.NopCloser(br), nil
}

// unpacker applies tar layers, one after the other, to a root directory.
type unpacker struct {
	root   *os.Root
	dir    string
	asRoot bool  // set owners (only root can)
	size   int64 // bytes of regular files written
	// dirs holds directories known to exist (made or seen); cleared on removals.
	dirs map[string]bool
	// empty: nothing exists in the root but what this unpacker wrote (recorded in
	// written), so a new name needs no check for an existing entry.
	empty   bool
	written map[string]bool
}

func newUnpacker(dir string) (*unpacker, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	u := &unpacker{root: r, dir: dir, asRoot: os.Geteuid() == 0, dirs: map[string]bool{".": true}, written: map[string]bool{}}
	if f, err := r.Open("."); err == nil {
		names, _ := f.Readdirnames(1)
		f.Close()
		u.empty = len(names) == 0
	}
	return u, nil
}

func (u *unpacker) Close() error { return u.root.Close() }

// cleanName turns a tar entry name into a path relative to the root, refusing names
// that climb out of it.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q: path leaves the root filesystem", name)
		}
	}
	n = path.Clean(n)
	if n == "" {
		n = "."
	}
	return n, nil
}

// layer applies one tar layer. Whiteout entries (.wh.NAME) delete NAME from the
// layers below; an opaque marker (.wh..wh..opq) hides everything the layers below
// had in its directory. Entries may not leave the root, directly, through "..", or
// through a symbolic link.
func (u *unpacker) layer(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	added := map[string]bool{} // paths this layer wrote, kept by an opaque marker
	type dirMeta struct {
		name string
		hdr  *tar.Header
	}
	var dirs []dirMeta
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if base == whiteoutOpaque {
			if err := u.opaque(dir, added); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			victim := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
			u.forget()
			if err := u.root.RemoveAll(victim); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			continue
		}
		if name == "." {
			if hdr.Typeflag == tar.TypeDir {
				dirs = append(dirs, dirMeta{name, hdr})
			}
			continue
		}
		if err := u.entry(tr, hdr, name, dir); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		added[name] = true
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirMeta{name, hdr})
		}
	}
	// Directory modes last, so a read-only directory could still be filled.
	for _, d := range dirs {
		if err := u.root.Chmod(d.name, d.hdr.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return fmt.Errorf("entry %q: %w", d.hdr.Name, err)
		}
		u.root.Chtimes(d.name, d.hdr.ModTime, d.hdr.ModTime)
	}
	return nil
}

// opaque removes what lower layers left in dir, keeping this layer's own entries.
func (u *unpacker) opaque(dir string, added map[string]bool) error {
	f, err := u.root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if !added[p] {
			u.forget()
			if err := u.root.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// forget drops what the unpacker knows of the tree, before something is removed.
func (u *unpacker) forget() {
	clear(u.dirs)
	u.dirs["."] = true
	u.empty = false
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header, name, dir string) error {
	err := u.entryOnce(tr, hdr, name, dir)
	if errors.Is(err, fs.ErrExist) && u.empty {
		// The same file reached by another path (through a symbolic link): check
		// existing entries from now on.
		u.forget()
		return u.entryOnce(tr, hdr, name, dir)
	}
	return err
}

func (u *unpacker) entryOnce(tr *tar.Reader, hdr *tar.Header, name, dir string) error {
	if !u.dirs[dir] {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if u.empty {
			for d := dir; d != "." && !u.written[d]; d = path.Dir(d) {
				u.written[d] = true
			}
		}
		u.dirs[dir] = true
	}
	var existing fs.FileInfo
	var err error
	if u.empty && !u.written[name] {
		err = fs.ErrNotExist
	} else {
		existing, err = u.root.Lstat(name)
	}
	if u.empty {
		u.written[name] = true
	}
	if err == nil {
		// A directory over a directory merges; anything else replaces.
		if !(hdr.Typeflag == tar.TypeDir && existing.IsDir()) {
			u.forget()
			if err := u.root.RemoveAll(name); err != nil {
				return err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if existing == nil || !existing.IsDir() {
			if err := u.root.Mkdir(name, 0o700); err != nil {
				return err
			}
		}
		u.dirs[name] = true
	case tar.TypeReg, tar.TypeRegA:
		f, err := u.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(f, tr)
		u.size += n
		if err == nil && u.asRoot {
			err = f.Chown(hdr.Uid, hdr.Gid)
		}
		if err == nil && u.asRoot {
			setXattrs(f, hdr)
		}
		if err == nil {
			err = f.Chmod(mode) // after chown, which clears setuid bits
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		u.root.Chtimes(name, hdr.ModTime, hdr.ModTime)
		return nil
	case tar.TypeSymlink:
		if err := u.symlink(hdr.Linkname, name); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := u.root.Link(target, name); err != nil {
			return err
		}
		return nil // a hard link shares its target's owner, mode and times
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := u.mknod(hdr, name, dir); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if u.asRoot {
		if err := u.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return nil
	}
	if hdr.Typeflag != tar.TypeDir {
		if err := u.root.Chmod(name, mode); err != nil {
			return err
		}
		u.root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	}
	return nil
}

// symlink creates a symbolic link; its target is stored as given, since it is
// resolved inside the container, never on the host.
func (u *unpacker) symlink(target, name string) error {
	d, err := u.parent(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Symlinkat(target, int(d.Fd()), path.Base(name))
}

func (u *unpacker) mknod(hdr *tar.Header, name, dir string) error {
	if !u.asRoot && hdr.Typeflag != tar.TypeFifo {
		return nil // device nodes need root; sandboxes provide their own /dev
	}
	d, err := u.parent(name)
	if err != nil {
		return err
	}
	defer d.Close()
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	default:
		mode |= unix.S_IFIFO
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	return unix.Mknodat(int(d.Fd()), path.Base(name), mode, int(dev))
}

// parent opens the directory holding name, inside the root.
func (u *unpacker) parent(name string) (*os.File, error) {
	dir := path.Dir(name)
	return u.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
}

// unpackTo applies the tar streams to dir in order.
func unpackTo(ctx context.Context, dir string, layers ...io.Reader) (int64, error) {
	u, err := newUnpacker(dir)
	if err != nil {
		return 0, err
	}
	defer u.Close()
	for i, l := range layers {
		if err := u.layer(ctx, l); err != nil {
			return 0, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return u.size, nil
}

// setXattrs applies the extended attributes a tar entry carries (file capabilities, for
// instance) to f; attributes the file system refuses are left out.
func setXattrs(f *os.File, hdr *tar.Header) {
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			unix.Fsetxattr(int(f.Fd()), name, []byte(v), 0)
		}
	}
}
