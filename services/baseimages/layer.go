package baseimages

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// layerWriter writes what differs in a root filesystem from the one below it as a
// layer's tar: changed and added entries (with the folders they are in) and
// whiteouts for removed ones, sorted, numeric owners, hard links within the layer,
// the security.capability attribute kept. registry.Assemble normalises it further.
type layerWriter struct {
	ctx   context.Context
	dir   string // the tree written
	old   string // the tree below ("" writes all of dir)
	tw    *tar.Writer
	links map[[2]uint64]string
	// pending are directories not yet written that a changed entry lies in.
	pending []*tar.Header
	entries int
}

// WriteDiff writes to w, as a layer's tar, the entries of the tree at dir that differ
// from those of the tree at old, and whiteouts for the entries old has and dir has
// not; it returns the number of entries written.
func WriteDiff(ctx context.Context, w io.Writer, dir, old string) (entries int, err error) {
	lw := &layerWriter{ctx: ctx, dir: dir, old: old, tw: tar.NewWriter(w), links: map[[2]uint64]string{}}
	if err := lw.walk(""); err != nil {
		return 0, err
	}
	return lw.entries, lw.tw.Close()
}

func sortedNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}

func (lw *layerWriter) walk(rel string) error {
	if err := lw.ctx.Err(); err != nil {
		return err
	}
	names, err := sortedNames(filepath.Join(lw.dir, rel))
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	if lw.old != "" {
		if oldNames, err := sortedNames(filepath.Join(lw.old, rel)); err == nil {
			for _, n := range oldNames {
				if _, found := slices.BinarySearch(names, n); !found {
					if err := lw.write(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(rel, ".wh."+n), ModTime: time.Unix(0, 0)}, ""); err != nil {
						return err
					}
				}
			}
		}
	}
	for _, n := range names {
		p := path.Join(rel, n)
		fi, err := os.Lstat(filepath.Join(lw.dir, p))
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		changed := lw.old == "" || lw.differs(p, fi)
		if fi.Mode()&fs.ModeSocket != 0 || !changed && !fi.IsDir() {
			continue
		}
		hdr, err := lw.header(p, fi)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if changed {
				if err := lw.write(hdr, ""); err != nil {
					return err
				}
			} else {
				lw.pending = append(lw.pending, hdr)
			}
			if err := lw.walk(p); err != nil {
				return err
			}
			if !changed && len(lw.pending) > 0 && lw.pending[len(lw.pending)-1] == hdr {
				lw.pending = lw.pending[:len(lw.pending)-1]
			}
			continue
		}
		src := ""
		if hdr.Typeflag == tar.TypeReg {
			src = filepath.Join(lw.dir, p)
		}
		if err := lw.write(hdr, src); err != nil {
			return err
		}
	}
	return nil
}

// header is the reproducible tar header of p.
func (lw *layerWriter) header(p string, fi fs.FileInfo) (*tar.Header, error) {
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(filepath.Join(lw.dir, p)); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return nil, fmt.Errorf("layer: %s: %w", p, err)
	}
	hdr.Name = p
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.ModTime = fi.ModTime().UTC().Truncate(time.Second)
	hdr.Format = tar.FormatUnknown
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := lw.links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				lw.links[key] = p
			}
		}
	}
	if fi.Mode().IsRegular() || fi.IsDir() {
		buf := make([]byte, 256)
		if n, err := unix.Lgetxattr(filepath.Join(lw.dir, p), "security.capability", buf); err == nil && n > 0 {
			hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(buf[:n])}
		}
	}
	return hdr, nil
}

// write writes hdr (after the directories it lies in that are not written yet) and
// the content of src.
func (lw *layerWriter) write(hdr *tar.Header, src string) error {
	for _, d := range lw.pending {
		if err := lw.tw.WriteHeader(d); err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		lw.entries++
	}
	lw.pending = lw.pending[:0]
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("layer: %s: %w", hdr.Name, err)
	}
	lw.entries++
	if src == "" || hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	defer f.Close()
	if n, err := io.Copy(lw.tw, f); err != nil {
		return fmt.Errorf("layer: %s: %w", hdr.Name, err)
	} else if n != hdr.Size {
		return fmt.Errorf("layer: %s changed while read", hdr.Name)
	}
	return nil
}

// differs says whether p in the tree differs from p in the old tree.
func (lw *layerWriter) differs(p string, fi fs.FileInfo) bool {
	op := filepath.Join(lw.old, p)
	ofi, err := os.Lstat(op)
	if err != nil || ofi.Mode() != fi.Mode() {
		return true
	}
	st, ok1 := fi.Sys().(*syscall.Stat_t)
	ost, ok2 := ofi.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 || st.Uid != ost.Uid || st.Gid != ost.Gid || !fi.ModTime().Equal(ofi.ModTime()) {
		return true
	}
	switch {
	case fi.IsDir():
		return false
	case fi.Mode()&fs.ModeSymlink != 0:
		a, _ := os.Readlink(filepath.Join(lw.dir, p))
		b, _ := os.Readlink(op)
		return a != b
	case fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		return st.Rdev != ost.Rdev
	case fi.Mode().IsRegular():
		if fi.Size() != ofi.Size() {
			return true
		}
		if st.Ino == ost.Ino {
			return false
		}
		same, err := sameContent(filepath.Join(lw.dir, p), op)
		return err != nil || !same
	}
	return false
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea != nil || eb != nil {
			return errors.Is(ea, io.ErrUnexpectedEOF) || errors.Is(ea, io.EOF), nil
		}
	}
}
