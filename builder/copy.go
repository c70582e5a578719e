package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// copyItem is one file, directory or symbolic link a (copy …) step writes.
type copyItem struct {
	src  string // path inside the source root
	dst  string // absolute path inside the new root filesystem
	mode fs.FileMode
	link string // symlink target
}

// copyPlan lists what a copy writes, from a source root opened as an os.Root so that no
// path (.., symbolic links) can lead outside it.
type copyPlan struct {
	root  *os.Root
	items []copyItem
}

// cleanSource checks a (src …) path: '/'-separated, relative to the source root, not
// leading outside it.
func cleanSource(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty source path")
	}
	c := path.Clean("/" + s)[1:]
	if c == "" {
		c = "."
	}
	for _, part := range strings.Split(s, "/") {
		if part == ".." {
			return "", fmt.Errorf("source %q escapes the context (..)", s)
		}
	}
	return c, nil
}

// planCopy lists the items of op, read from root, with dst already resolved against the
// workdir.
func planCopy(root *os.Root, srcs []string, dst string, exclude []string) (*copyPlan, error) {
	p := &copyPlan{root: root}
	intoDir := strings.HasSuffix(dst, "/")
	dst = path.Clean(dst)
	if !intoDir && len(srcs) != 1 {
		return nil, fmt.Errorf("destination %q must end with '/' to copy %d sources into it", dst, len(srcs))
	}
	for _, s := range srcs {
		rel, err := cleanSource(s)
		if err != nil {
			return nil, err
		}
		target := dst
		if intoDir && rel != "." {
			target = path.Join(dst, path.Base(rel))
		}
		if err := p.walk(rel, target, exclude); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *copyPlan) walk(rel, target string, exclude []string) error {
	if rel != "." && slices.Contains(exclude, path.Base(rel)) {
		return nil
	}
	fi, err := p.root.Lstat(rel)
	if err != nil {
		if strings.Contains(err.Error(), "escapes") {
			return fmt.Errorf("source %q escapes the context through a symbolic link", rel)
		}
		return fmt.Errorf("source %q: %w", rel, unwrapPath(err))
	}
	it := copyItem{src: rel, dst: target, mode: fi.Mode()}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		if it.link, err = p.root.Readlink(rel); err != nil {
			return err
		}
		p.items = append(p.items, it)
	case fi.Mode().IsRegular():
		p.items = append(p.items, it)
	case fi.IsDir():
		p.items = append(p.items, it)
		d, err := p.root.Open(rel)
		if err != nil {
			return err
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, n := range names {
			if err := p.walk(path.Join(rel, n), path.Join(target, n), exclude); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("source %q: unsupported file type %s", rel, fi.Mode().Type())
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// digest hashes what the copy writes: paths, types, permissions, link targets and file
// contents (not times or owners, which the builder sets).
func (p *copyPlan) digest() (string, error) {
	h := sha256.New()
	for _, it := range p.items {
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00", it.dst, it.mode.Type(), it.mode.Perm()|it.mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		switch {
		case it.link != "":
			fmt.Fprintf(h, "link\x00%s\x00", it.link)
		case it.mode.IsRegular():
			if err := p.hashFile(h, it.src); err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (p *copyPlan) hashFile(h hash.Hash, rel string) error {
	f, err := p.root.Open(rel)
	if err != nil {
		return fmt.Errorf("source %q: %w", rel, unwrapPath(err))
	}
	defer f.Close()
	fh := sha256.New()
	n, err := io.Copy(fh, f)
	if err != nil {
		return fmt.Errorf("source %q: %w", rel, err)
	}
	h.Write([]byte(strconv.FormatInt(n, 10) + "\x00"))
	h.Write(fh.Sum(nil))
	return nil
}

// write copies the items into the root filesystem rootfs, owned by uid:gid. Paths are
// resolved inside rootfs (its symbolic links cannot lead out of it).
func (p *copyPlan) write(rootfs string, uid, gid int) error {
	dst, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer dst.Close()
	dirs := map[string]string{} // resolved parent directories
	for _, it := range p.items {
		rel, err := resolveDest(dst, strings.TrimPrefix(it.dst, "/"), it.mode.IsDir(), dirs)
		if err != nil {
			return fmt.Errorf("copy to %s: %w", it.dst, err)
		}
		if err := mkdirParents(dst, path.Dir(rel), uid, gid); err != nil {
			return fmt.Errorf("copy to %s: %w", it.dst, err)
		}
		perm := it.mode.Perm() | it.mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		switch {
		case it.mode.IsDir():
			if fi, err := dst.Lstat(rel); err == nil && !fi.IsDir() {
				if err := dst.Remove(rel); err != nil {
					return fmt.Errorf("copy to %s: %w", it.dst, err)
				}
			}
			if err := dst.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("copy to %s: %w", it.dst, err)
			}
			if err := dst.Chmod(rel, perm); err != nil {
				return fmt.Errorf("copy to %s: %w", it.dst, err)
			}
		case it.link != "":
			removeNonDir(dst, rel)
			if err := dst.Symlink(it.link, rel); err != nil {
				return fmt.Errorf("copy to %s: %w", it.dst, err)
			}
		default:
			removeNonDir(dst, rel)
			if err := p.copyFile(dst, it.src, rel, perm); err != nil {
				return fmt.Errorf("copy to %s: %w", it.dst, err)
			}
		}
		if err := dst.Lchown(rel, uid, gid); err != nil {
			return fmt.Errorf("copy to %s: %w", it.dst, err)
		}
		if it.mode.IsRegular() && perm&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			dst.Chmod(rel, perm) // chown clears set-id bits
		}
	}
	return nil
}

// resolveDest resolves the symbolic links of the parent directories of rel inside the
// root filesystem, and of rel itself when a directory is copied onto a link to one, as
// Docker does for COPY destinations (/var/run/x is /run/x on Debian). dirs remembers
// resolved parents.
func resolveDest(r *os.Root, rel string, isDir bool, dirs map[string]string) (string, error) {
	if rel == "" || rel == "." {
		return ".", nil
	}
	parent, ok := dirs[path.Dir(rel)]
	if !ok {
		var err error
		if parent, err = resolveInRoot(r, path.Dir(rel)); err != nil {
			return "", err
		}
		dirs[path.Dir(rel)] = parent
	}
	rel = path.Join(parent, path.Base(rel))
	if fi, err := r.Lstat(rel); isDir && err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if to, err := resolveInRoot(r, rel); err == nil {
			if fi, err := r.Stat(to); err == nil && fi.IsDir() {
				return to, nil
			}
		}
	}
	return rel, nil
}

// resolveInRoot resolves the symbolic links along rel (relative to r) as if r were
// "/": an absolute target starts again at r, ".." stops at r. Parts that do not exist
// are kept as they are. The result is clean and relative ("." for r itself).
func resolveInRoot(r *os.Root, rel string) (string, error) {
	var done []string
	todo := strings.Split(rel, "/")
	for links := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := path.Join(path.Join(done...), c)
		fi, err := r.Lstat(cur)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", rel)
		}
		target, err := r.Readlink(cur)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			done = done[:0]
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

func removeNonDir(r *os.Root, rel string) {
	if fi, err := r.Lstat(rel); err == nil && !fi.IsDir() {
		r.Remove(rel)
	}
}

// mkdirParents makes the missing directories of dir (relative to r), owned by uid:gid.
func mkdirParents(r *os.Root, dir string, uid, gid int) error {
	if dir == "." || dir == "/" || dir == "" {
		return nil
	}
	if fi, err := r.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if err := mkdirParents(r, path.Dir(dir), uid, gid); err != nil {
		return err
	}
	if err := r.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return r.Lchown(dir, uid, gid)
}

func (p *copyPlan) copyFile(dst *os.Root, src, rel string, perm fs.FileMode) error {
	in, err := p.root.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := dst.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, perm.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(perm); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
